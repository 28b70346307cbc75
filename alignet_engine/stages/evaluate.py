"""Stage 6 — evaluate: agreement of a representation with human judgments or matrices."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from alignet_engine.align.metrics import (
    accuracy_summary,
    levels_scores,
    noise_ceiling_matrix,
    noise_ceiling_oddone,
    noise_ceiling_twoafc,
    oddone_correct,
    rsa,
    rsa_bootstrap_ci,
    twoafc_correct,
)
from alignet_engine.config import EvaluateConfig
from alignet_engine.data.types import Judgments
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, StageDone
from alignet_engine.stages._tracking import tracked
from alignet_engine.stages.clusters import teacher_representation
from alignet_engine.stages.features import stored_features
from alignet_engine.stages.transform import stored_transform, transform_similarity
from alignet_engine.store import Project

STAGE = "evaluate"


def evaluation_slot(config: EvaluateConfig) -> str:
    target = f"judgments={config.judgments}" if config.judgments else f"matrix={config.matrix}"
    rep = config.model + (f"+T({config.transform})" if config.transform else "")
    return f"evaluate:{config.image_set}:{rep}:{target}"


def compute(project: Project, config: EvaluateConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The evaluation's result dict and the runs it read (no write)."""
    F, inputs = teacher_representation(project, config.image_set, config.model, config.transform)
    metric = config.metric or transform_similarity(project, config.transform)
    result: dict[str, Any] = {
        "representation": config.model,
        "transform": config.transform,
        "metric": metric,
    }
    if config.judgments is not None:
        j, image_set = project.judgments(config.judgments)
        if image_set != config.image_set:
            raise InputError(
                f"judgments '{config.judgments}' refer to image set '{image_set}', "
                f"not '{config.image_set}'",
                field="judgments",
            )
        if j.kind == "oddone" and j.meta.get("protocol") == "levels":
            result.update(_levels(F, j, metric, config))
            ceiling = result.pop("noise_ceiling")
            correct = None
        elif j.kind == "oddone":
            correct = oddone_correct(F, j.triplets, metric=metric)
            ceiling = noise_ceiling_oddone(j)
        else:
            # With vote counts, a tied triplet has no majority answer to agree with: score the
            # strict-majority triplets (as Lagunas et al. do) and report how many were tied.
            triplets = j.triplets
            if j.votes is not None:
                strict = j.votes[:, 0] > j.votes[:, 1]
                result["n_tied_excluded"] = int((~strict).sum())
                triplets = triplets[strict]
            correct = twoafc_correct(F, triplets, metric=metric)
            ceiling = noise_ceiling_twoafc(j)
        if correct is not None:
            result.update(
                accuracy_summary(correct, n_boot=config.n_boot, random_state=config.random_state)
            )
        if j.types is not None and j.kind == "oddone" and correct is not None:
            result["by_type"] = _by_type(j, correct, config)
        if config.transform is not None:
            result["calibration"] = _calibration(project, config, j)
        result.update(
            {
                "task": j.kind,
                "judgments": config.judgments,
                "simulated": j.simulated,
                "noise_ceiling": ceiling,
            }
        )
    else:
        assert config.matrix is not None
        matrix, kind, image_set = project.matrix(config.matrix)
        if image_set != config.image_set:
            raise InputError(
                f"matrix '{config.matrix}' refers to image set '{image_set}', "
                f"not '{config.image_set}'",
                field="matrix",
            )
        ceiling = noise_ceiling_matrix(matrix, kind=kind) if matrix.ndim == 3 else None
        if matrix.ndim == 3:
            matrix = matrix.mean(axis=0)
        rsm_metric = "pearson" if metric == "pearson" else "cosine"
        lo, hi = rsa_bootstrap_ci(
            F,
            matrix,
            metric=rsm_metric,
            kind=kind,
            n_boot=config.n_boot,
            random_state=config.random_state,
        )
        result.update(
            {
                "task": "rsa",
                "matrix": config.matrix,
                "metric": rsm_metric,
                "spearman": float(rsa(F, matrix, kind=kind, metric=rsm_metric)),
                "ci_low": lo,
                "ci_high": hi,
                "n": int(matrix.shape[0]),
                "noise_ceiling": ceiling,
            }
        )
    return result, inputs


def _levels(F: np.ndarray, j: Judgments, metric: str, config: EvaluateConfig) -> dict[str, Any]:
    """The Levels authors' protocol: majority of 4 sampled responses per triplet, ties apart,
    leave-one-out ceilings with 0.5 credit in a tie; overall and per level."""
    lv = levels_scores(F, j, metric=metric, n_boot=config.n_boot, random_state=config.random_state)

    def ceiling(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "majority_agreement": d["ceiling_majority"],
            "leave_one_out": d["ceiling_leave_one_out"],
            "n_triplets": d["n_triplets"],
            "n_responses": d["n_responses"],
        }

    keys = ("accuracy", "ci_low", "ci_high", "n", "n_tied")
    overall = lv["overall"]
    return {
        **{k: overall[k] for k in keys},
        "noise_ceiling": ceiling(overall),
        "levels": lv,
        "ci_unit": "triplets (each scored against the majority of its sampled responses)",
        "by_type": {
            name: {**{k: d[k] for k in keys}, "noise_ceiling": ceiling(d)}
            for name, d in lv["by_level"].items()
        },
    }


def _by_type(j: Judgments, correct: np.ndarray, config: EvaluateConfig) -> dict[str, Any]:
    """Accuracy, CI and noise ceiling per triplet type (odd-one-out rows carrying a type)."""
    assert j.types is not None
    out: dict[str, Any] = {}
    for name in sorted(set(j.types.tolist())):
        rows = j.types == name
        subset = dataclasses.replace(
            j, triplets=j.triplets[rows], participant=j.participant[rows], types=j.types[rows]
        )
        out[name] = {
            **accuracy_summary(
                correct[rows], n_boot=config.n_boot, random_state=config.random_state
            ),
            "noise_ceiling": noise_ceiling_oddone(subset),
        }
    return out


def _calibration(project: Project, config: EvaluateConfig, j: Judgments) -> dict[str, Any] | None:
    """The transform's triplet probabilities against the human choice distributions.

    Only triplets answered at least twice carry a distribution; raw features have no
    temperature, so calibration is reported for fitted transforms only.
    """
    from alignet_engine.align.calibration import (
        entropy_correlation,
        expected_calibration_error,
        kl_to_humans,
    )
    from alignet_engine.align.metrics import oddone_choice_counts, twoafc_choice_counts

    assert config.transform is not None
    est, _ = stored_transform(project, config.transform)
    X, _ = stored_features(project, config.image_set, config.model)
    if j.kind == "oddone":
        keys, counts = oddone_choice_counts(j)
        counts = counts[:, ::-1]  # keys (a, b, c) → model order [p(c odd), p(b odd), p(a odd)]
    else:
        keys, counts = twoafc_choice_counts(j)  # [votes b, votes c] ↔ model [p(b), p(c)]
    n = counts.sum(axis=1)
    repeated = n >= 2
    if not repeated.any():
        return None
    human = counts[repeated] / n[repeated, None]
    model = est.predict_proba(X, keys[repeated], kind=j.kind)
    ece = expected_calibration_error(model, human)
    return {
        "ece": ece["ece"],
        "reliability": ece,
        **entropy_correlation(model, human),
        "kl_human_model": kl_to_humans(model, human),
        "n_triplets": int(repeated.sum()),
    }


def evaluate(
    project: Project, config: EvaluateConfig, control: JobControl | None = None
) -> Job[dict[str, Any]]:
    """Evaluate and store the result as a run; returns the result dict."""
    control = control or JobControl()

    def body(run_id: str) -> Job[dict[str, Any]]:
        control.check()
        result, inputs = compute(project, config)
        project.write_run(
            STAGE,
            run_id,
            slot=evaluation_slot(config),
            params=config.to_dict(),
            arrays={},
            inputs=inputs,
            summary=result,
        )
        yield StageDone(STAGE, run_id, result)
        return result

    return (yield from tracked(project, STAGE, config.to_dict(), body))
