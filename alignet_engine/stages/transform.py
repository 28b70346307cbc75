"""Stage 2 — transform: the affine map that aligns a model's features with human judgments.

The fitted model is the human-aligned *surrogate teacher* (method.md §2–3).
"""

from __future__ import annotations

import numpy as np

from alignet_engine.align import AffineTransform, choice_distributions
from alignet_engine.align.metrics import accuracy_summary, oddone_correct, twoafc_correct
from alignet_engine.config import TransformConfig, features_slot
from alignet_engine.data.types import Judgments
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, LossBatch, Message, Progress, StageDone, Throttle
from alignet_engine.stages._tracking import tracked
from alignet_engine.stages.features import stored_features
from alignet_engine.store import Project

STAGE = "transform"


def transform_slot(name: str) -> str:
    return f"transform:{name}"


def _merged_judgments(project: Project, config: TransformConfig) -> Judgments:
    parts = []
    for name in config.judgments:
        j, image_set = project.judgments(name)
        if image_set != config.image_set:
            raise InputError(
                f"judgments '{name}' refer to image set '{image_set}', not '{config.image_set}'",
                field="judgments",
            )
        parts.append(j)
    kinds = {j.kind for j in parts}
    if len(kinds) != 1:
        raise InputError(
            f"cannot fit one transform on mixed judgment kinds {sorted(kinds)}", field="judgments"
        )
    votes = [j.votes for j in parts]
    return Judgments(
        kind=parts[0].kind,
        triplets=np.concatenate([j.triplets for j in parts]),
        participant=np.concatenate([j.participant for j in parts]),
        votes=None if any(v is None for v in votes) else np.concatenate(votes),  # type: ignore[arg-type]
        simulated=all(j.simulated for j in parts),
    )


def fit_transform(
    project: Project, config: TransformConfig, control: JobControl | None = None
) -> Job[str]:
    """Fit the transform on ``config.judgments`` and store it in slot ``transform:<name>``."""
    control = control or JobControl()

    def body(run_id: str) -> Job[str]:
        X, feat_ref = stored_features(project, config.image_set, config.model)
        judgments = _merged_judgments(project, config)
        if config.objective == "soft":
            triplets, targets = choice_distributions(judgments)
        else:
            triplets, targets = judgments.triplets, None
        yield Message(
            STAGE,
            f"fitting a {config.objective} transform on {len(triplets)} "
            f"{judgments.kind} triplets, features {X.shape}",
        )
        est = AffineTransform(
            objective=config.objective,
            lam=config.lam,
            alpha=config.alpha,
            tau=config.tau,
            lr=config.lr,
            max_epochs=config.max_epochs,
            batch_size=config.batch_size,
            patience=config.patience,
            val_fraction=config.val_fraction,
            random_state=config.random_state,
        )
        fitting = est.iter_fit(X, triplets, kind=judgments.kind, targets=targets)
        throttle = Throttle(0.2)
        for epoch in fitting:  # the estimator is fitted when the generator is exhausted
            control.check()
            if throttle():
                yield Progress(
                    STAGE,
                    epoch.epoch,
                    config.max_epochs,
                    f"epoch {epoch.epoch}: val loss {epoch.val_loss:.4f}",
                )
                yield LossBatch(
                    STAGE,
                    np.array([epoch.epoch]),
                    {
                        "train_loss": np.array([epoch.train_loss]),
                        "val_loss": np.array([epoch.val_loss]),
                    },
                )
        Z = est.transform(X)
        correct = (oddone_correct if judgments.kind == "oddone" else twoafc_correct)(
            Z, judgments.triplets, metric="dot"
        )
        fit_acc = accuracy_summary(correct, random_state=config.random_state)
        arrays = {k: np.asarray(v) for k, v in est.to_arrays().items()}
        for key, values in est.history_.items():
            arrays[f"history_{key}"] = np.asarray(values, dtype=np.float64)
        summary = {
            "fit_accuracy": fit_acc["accuracy"],
            "n_triplets": len(triplets),
            "epochs": int(est.n_epochs_),
            "best_epoch": int(est.best_epoch_),
            "temperature": float(est.temperature_),
            "kind": judgments.kind,
        }
        slot = transform_slot(config.name)
        inputs = {features_slot(config.image_set, config.model): feat_ref}
        project.write_run(
            STAGE,
            run_id,
            slot=slot,
            params=config.to_dict(),
            arrays=arrays,
            inputs=inputs,
            summary=summary,
        )
        yield Progress(STAGE, config.max_epochs, config.max_epochs, "done")
        yield StageDone(STAGE, run_id, summary)
        return run_id

    return (yield from tracked(project, STAGE, config.to_dict(), body))


def stored_transform(project: Project, name: str) -> tuple[AffineTransform, str]:
    """The fitted transform in slot ``transform:<name>`` and its run ref."""
    run = project.run(transform_slot(name))
    arrays = {k: v for k, v in run.arrays.items() if not k.startswith("history_")}
    return AffineTransform.from_arrays(arrays), f"{run.stage}/{run.run_id}"
