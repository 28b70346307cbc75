"""Stage 2 — transform: the affine map that aligns a model's features with human judgments.

The fitted model is the human-aligned *surrogate teacher* (method.md §2–3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np

from alignet_engine.align import AffineTransform, choice_distributions
from alignet_engine.align.chunked import rows_for_budget
from alignet_engine.align.model_selection import TransformSearch
from alignet_engine.align.transform import PRESETS
from alignet_engine.base.similarity import SimilarityKind
from alignet_engine.base.types import JudgmentKind, Judgments
from alignet_engine.config import TransformConfig, features_slot
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, LossBatch, Message, Progress, StageDone, Throttle
from alignet_engine.stages._tracking import kept_current_message, tracked, write_unless_worse
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
    votes = [j.votes for j in parts if j.votes is not None]
    return Judgments(
        kind=parts[0].kind,
        triplets=np.concatenate([j.triplets for j in parts]),
        participant=np.concatenate([j.participant for j in parts]),
        # vote counts only when every part has them
        votes=np.concatenate(votes) if len(votes) == len(parts) else None,
        simulated=all(j.simulated for j in parts),
    )


@dataclass
class _TrainingRows:
    """What the transform is fitted on, wherever the targets came from."""

    kind: JudgmentKind
    triplets: np.ndarray
    targets: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)


def _training_rows(
    project: Project, config: TransformConfig, n_items: int, control: JobControl
) -> Job[_TrainingRows]:
    """Triplets and (soft) targets from the judgments, a VICE fit, or an imported embedding."""
    from alignet_engine.align.human_models import (
        VICE,
        EmbeddingHumanModel,
        sample_random_triplets,
        soft_targets_from_model,
    )

    judgments = _merged_judgments(project, config) if config.judgments else None
    if config.targets == "judgments":
        assert judgments is not None
        if config.objective == "soft":
            triplets, targets = choice_distributions(judgments)
        else:
            triplets, targets = judgments.triplets, None
        return _TrainingRows(judgments.kind, triplets, targets, {"targets": "judgments"})

    rows = _TrainingRows("oddone", np.empty((0, 3), np.int64), None)
    if config.targets == "vice":
        assert judgments is not None
        if judgments.kind != "oddone":
            raise InputError("a VICE human model needs odd-one-out judgments", field="targets")
        epochs = config.vice_max_epochs
        vice = VICE(
            max_epochs=epochs,
            burnin=epochs // 4,
            ws=max(5, min(200, epochs // 5)),
            n_threads=config.threads,
            random_state=config.random_state,
        )
        fitting = vice.iter_fit(judgments.triplets, n_items=n_items)
        throttle = Throttle(0.5)
        for epoch in fitting:
            control.check()
            if throttle():
                yield Progress(
                    STAGE,
                    epoch.epoch,
                    epochs,
                    f"VICE epoch {epoch.epoch}: {epoch.n_dims} dimensions",
                )
        model: Any = vice
        rows.arrays = {f"vice_{k}": np.asarray(v) for k, v in vice.to_arrays().items()}
        rows.info = {
            "targets": "vice",
            "vice_dims": int(vice.n_dims_),
            "vice_epochs": int(vice.n_epochs_),
        }
        yield Message(STAGE, f"VICE kept {vice.n_dims_} dimensions after {vice.n_epochs_} epochs")
    else:
        label = config.targets.removeprefix("embedding:")
        E, ref = stored_features(project, config.image_set, label)
        model = EmbeddingHumanModel(E)
        rows.inputs = {features_slot(config.image_set, label): ref}
        rows.info = {"targets": config.targets}
    sampled = sample_random_triplets(
        n_items, config.n_model_triplets, random_state=config.random_state
    )
    rows.triplets, probs = soft_targets_from_model(model, sampled)
    rows.targets = probs if config.objective == "soft" else None
    rows.info["n_model_triplets"] = config.n_model_triplets
    return rows


#: λ values the stage cross-validates when ``lam`` is automatic and the problem is small
LAM_CV_GRID = (1e-3, 1e-2, 1e-1, 1.0)
# Cross-validate λ only when the whole search (len(grid)·folds + 1 fits) stays cheap: rows·d²
# below _LAM_CV_MAX_WORK (THINGS-size, 500k × 384², is 7e10 and uses the size rule instead) and
# d <= _LAM_CV_MAX_DIM (every step updates d² weights; at the demo's 1408-d features 13 fits
# take minutes on a busy 2-core CPU), with enough objects for the folds.
_LAM_CV_MAX_WORK = 1e10
_LAM_CV_MAX_DIM = 512
_LAM_CV_MIN_OBJECTS = 24
_LAM_CV_MIN_TEST_ROWS = 30


def _estimator_params(config: TransformConfig) -> dict[str, Any]:
    """AffineTransform parameters of ``config``; ``None`` fields follow ``config.preset``."""
    params: dict[str, Any] = {
        "objective": config.objective,
        "lam": config.lam,
        "alpha": config.alpha,
        "tau": config.tau,
        "lr": config.lr,
        "max_epochs": config.max_epochs,
        "batch_size": config.batch_size,
        "patience": config.patience,
        "val_fraction": config.val_fraction,
        "standardize": config.standardize,
        "similarity": config.similarity,
        "n_threads": config.threads,
    }
    if config.preset == "glocal":
        for key, value in PRESETS["glocal"].items():
            if params.get(key) is None:
                params[key] = value
    return params


def _lambda_cv_grid(
    config: TransformConfig, n_items: int, n_dims: int, n_rows: int, triplets: np.ndarray
) -> tuple[float, ...] | None:
    """The λ grid to cross-validate, or None when λ is given or the data do not allow it
    (too costly, or too few objects/rows for object-disjoint folds)."""
    if config.lam is not None or config.preset != "auto" or config.search is not None:
        return None
    if n_rows * n_dims**2 > _LAM_CV_MAX_WORK or n_dims > _LAM_CV_MAX_DIM:
        return None
    n_objects = np.unique(triplets).size
    f = 1.0 / config.n_splits  # a fold keeps f³ of the rows for testing (model_selection.py)
    if n_objects < _LAM_CV_MIN_OBJECTS or n_rows * f**3 < _LAM_CV_MIN_TEST_ROWS:
        return None
    return LAM_CV_GRID


class _Searched(NamedTuple):
    """The search over settings and the estimator it refitted with the best of them."""

    search: TransformSearch
    best: AffineTransform


def _search_fit(
    config: TransformConfig,
    params: dict[str, Any],
    grid: Mapping[str, Sequence[Any]],
    X: np.ndarray,
    rows: _TrainingRows,
    pool: np.ndarray | None,
    control: JobControl,
) -> Job[_Searched]:
    """Cross-validate ``grid`` (object-disjoint folds), refit the best setting; progress per fit."""
    search = TransformSearch(
        grid, n_splits=config.n_splits, base_params=params, random_state=config.random_state
    )
    throttle = Throttle(0.2)
    for step in search.iter_fit(X, rows.triplets, kind=rows.kind, targets=rows.targets, pool=pool):
        control.check()
        if throttle():
            what = "refit" if step.refit else f"setting {step.setting}/{step.n_settings}"
            yield Progress(
                STAGE, step.done_fits, step.n_fits, f"{what}, fold {step.fold}/{step.n_splits}"
            )
    return _Searched(search, search.best_estimator_)


def _plain_fit(
    est: AffineTransform,
    X: np.ndarray,
    rows: _TrainingRows,
    pool: np.ndarray | None,
    control: JobControl,
) -> Job[None]:
    """Fit ``est`` in place; progress and the train / val loss curves once per epoch."""
    throttle = Throttle(0.2)
    for epoch in est.iter_fit(X, rows.triplets, kind=rows.kind, targets=rows.targets, pool=pool):
        control.check()
        if throttle():
            yield Progress(
                STAGE,
                epoch.epoch,
                epoch.max_epochs,
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


def _fit_results(
    est: AffineTransform, X: np.ndarray, rows: _TrainingRows
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The run's arrays (the transform, its history, the training rows) and summary."""
    arrays = {k: np.asarray(v) for k, v in est.to_arrays().items()}
    for key, values in est.history_.items():
        arrays[f"history_{key}"] = np.asarray(values, dtype=np.float64)
    arrays.update(rows.arrays)
    summary: dict[str, Any] = {}
    # accuracy on the rows held out for early stopping: the headline that decides
    # whether this fit may replace the current one (fit accuracy rewards overfitting)
    held_out = getattr(est, "val_mask_", None)
    if held_out is not None and held_out.any():
        summary["val_accuracy"] = float(est.score(X, rows.triplets[held_out], kind=rows.kind))
    summary.update(
        {
            **rows.info,
            "fit_accuracy": float(est.score(X, rows.triplets, kind=rows.kind)),
            "n_triplets": len(rows.triplets),
            "epochs": int(est.n_epochs_),
            "best_epoch": int(est.best_epoch_),
            "temperature": float(est.temperature_),
            "kind": rows.kind,
            "fit_settings": dataclasses.asdict(est.settings_),
        }
    )
    return arrays, summary


def _pool_rows(
    project: Project, config: TransformConfig
) -> tuple[np.ndarray, dict[str, str], dict[str, int]]:
    """The local term's pool features: (m, d) float32, m = min(n, ``pool_max_rows``).

    A pool that fits is read whole (:func:`stored_features`, bitwise as before). A larger one
    gives ``pool_max_rows`` rows drawn uniformly without replacement (seeded by
    ``random_state``), kept in pool order and read in one pass of row blocks: the local term
    only ever sees random batches of pool rows, and 1.28M × 1280 float32 would be 6.5 GB,
    held several times over by the fit.

    Returns ``(rows, inputs, summary)``: the slot read → run ref, and ``pool_rows`` (n) and
    ``pool_rows_used`` (m) for the run's summary.
    """
    assert config.pool is not None
    slot = features_slot(config.pool, config.model)
    run = project.run(slot, arrays=False)
    ref = f"{run.stage}/{run.run_id}"
    with project.open_array(ref, "X") as ds:
        n, d = int(ds.shape[0]), int(ds.shape[1])
        whole = n <= config.pool_max_rows
        if not whole:
            # a stream of its own: the fit's batches use random_state as given
            rng = np.random.default_rng([config.random_state, 0x9001])
            picked = np.sort(rng.choice(n, config.pool_max_rows, replace=False))
            out = np.empty((picked.size, d), dtype=np.float32)
            block = rows_for_budget(d * 4, 64 << 20)
            done = 0
            for start in range(0, n, block):
                stop = min(start + block, n)
                hi = int(np.searchsorted(picked, stop))
                if hi > done:
                    rows = np.asarray(ds[start:stop], dtype=np.float32)
                    out[done:hi] = rows[picked[done:hi] - start]
                    done = hi
    if whole:  # through stored_features, as every stage reads features: one NaN message
        X, ref = stored_features(project, config.pool, config.model)
        return X, {slot: ref}, {"pool_rows": n, "pool_rows_used": n}
    if np.isnan(out).any():
        stored_features(project, config.pool, config.model)  # raises, naming the missing rows
    return out, {slot: ref}, {"pool_rows": n, "pool_rows_used": int(picked.size)}


def fit_transform(
    project: Project, config: TransformConfig, control: JobControl | None = None
) -> Job[str]:
    """Fit the transform and store it in slot ``transform:<name>``."""
    control = control or JobControl()

    def body(run_id: str) -> Job[str]:
        X, feat_ref = stored_features(project, config.image_set, config.model)
        pool: np.ndarray | None = None
        pool_inputs: dict[str, str] = {}
        pool_summary: dict[str, int] = {}
        if config.pool is not None:
            pool, pool_inputs, pool_summary = _pool_rows(project, config)
            if pool_summary["pool_rows_used"] < pool_summary["pool_rows"]:
                yield Message(
                    STAGE,
                    f"local term: {pool_summary['pool_rows_used']} of "
                    f"{pool_summary['pool_rows']} rows of '{config.pool}' drawn at random "
                    "(pool_max_rows)",
                )
        rows = yield from _training_rows(project, config, len(X), control)
        yield Message(
            STAGE,
            f"fitting a {config.objective} transform on {len(rows.triplets)} "
            f"{rows.kind} triplets ({rows.info['targets']}), features {X.shape}",
        )
        params = _estimator_params(config)
        search_grid: Mapping[str, Sequence[Any]] | None = config.search
        lam_grid = _lambda_cv_grid(config, len(X), X.shape[1], len(rows.triplets), rows.triplets)
        if search_grid is None and lam_grid is not None:
            search_grid = {"lam": lam_grid}
            yield Message(
                STAGE,
                f"choosing λ among {lam_grid} by {config.n_splits}-fold object-disjoint "
                "cross-validation (give --lam to skip)",
            )
        summary: dict[str, Any] = dict(pool_summary)
        if search_grid:
            searched = yield from _search_fit(config, params, search_grid, X, rows, pool, control)
            est = searched.best
            summary["search"] = {
                "best_params": searched.search.best_params_,
                "cv_results": searched.search.cv_results_,
            }
        else:
            est = AffineTransform(random_state=config.random_state, **params)
            yield from _plain_fit(est, X, rows, pool, control)
        arrays, fit_summary = _fit_results(est, X, rows)
        summary.update(fit_summary)
        slot = transform_slot(config.name)
        inputs = {
            features_slot(config.image_set, config.model): feat_ref,
            **pool_inputs,
            **rows.inputs,
        }
        worse = write_unless_worse(
            project,
            STAGE,
            run_id,
            slot,
            params=config.to_dict(),
            arrays=arrays,
            inputs=inputs,
            summary=summary,
        )
        if worse is not None:
            yield kept_current_message(worse, slot, f"{STAGE}/{run_id}")
        if "search" in summary:
            yield Progress(STAGE, 1, 1, "done")
        else:
            # the epochs really run (early stopping ends before max_epochs), not max_epochs
            ran = int(est.n_epochs_)
            stopped = (
                f"; stopped early at epoch {ran} of {est.max_epochs} (best epoch "
                f"{int(est.best_epoch_)})"
                if ran < est.max_epochs
                else ""
            )
            yield Progress(STAGE, ran, ran, f"done{stopped}")
        yield StageDone(STAGE, run_id, summary)
        return run_id

    return (yield from tracked(project, STAGE, config.to_dict(), body))


def stored_transform(project: Project, name: str) -> tuple[AffineTransform, str]:
    """The fitted transform in slot ``transform:<name>`` and its run ref."""
    run = project.run(transform_slot(name))
    arrays = {k: v for k, v in run.arrays.items() if not k.startswith(("history_", "vice_"))}
    # Older runs have no similarity / standardize parameter: they were dot / scalar.
    params = {
        "similarity": run.params.get("similarity", "dot"),
        "standardize": run.params.get("standardize", "scalar"),
    }
    return AffineTransform.from_arrays(arrays, **params), f"{run.stage}/{run.run_id}"


def transform_similarity(project: Project, name: str | None) -> SimilarityKind:
    """How the transform named ``name`` compares items ("dot" or "cosine"); "cosine" if None.

    Raw features are compared by cosine (the zero-shot convention, method.md §6); a fitted
    transform by the similarity it was fitted with.
    """
    if name is None:
        return "cosine"
    similarity = project.run(transform_slot(name), arrays=False).params.get("similarity", "dot")
    # run params are untyped JSON; the stage stored a checked TransformConfig.similarity
    return cast(SimilarityKind, str(similarity))
