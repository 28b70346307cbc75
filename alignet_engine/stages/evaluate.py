"""Stage 6 — evaluate: agreement of a representation with human judgments or matrices."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, TypedDict, cast

import numpy as np

from alignet_engine.align.metrics import (
    clustered_accuracy_summary,
    levels_scores,
    noise_ceiling_matrix,
    noise_ceiling_oddone,
    noise_ceiling_twoafc,
    oddone_correct,
    paired_accuracy_test,
    paired_rsa_test,
    rsa,
    rsa_bootstrap_ci,
    twoafc_correct,
)
from alignet_engine.base.similarity import SimilarityKind, SimilarityMetric
from alignet_engine.base.types import Judgments
from alignet_engine.config import EvaluateConfig, EvaluateMetric, features_slot
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, StageDone
from alignet_engine.stages._tracking import tracked
from alignet_engine.stages.clusters import teacher_representation, teacher_rows
from alignet_engine.stages.transform import stored_transform, transform_similarity, transform_slot
from alignet_engine.store import Project

STAGE = "evaluate"


def evaluation_slot(config: EvaluateConfig) -> str:
    target = f"judgments={config.judgments}" if config.judgments else f"matrix={config.matrix}"
    return f"evaluate:{config.image_set}:{_label(config.model, config.transform)}:{target}"


def _label(model: str, transform: str | None) -> str:
    """A representation as slots and comparisons name it: ``model`` or ``model+T(transform)``."""
    return model + (f"+T({transform})" if transform else "")


def representation_similarity(
    project: Project, image_set: str, model: str, transform: str | None
) -> tuple[SimilarityKind, str]:
    """The similarity a representation is meant to be compared with, and where that comes from.

    Through a transform: the similarity it was fitted with. Raw features: the similarity
    recorded with the features run (``import-features --similarity``; a human embedding such
    as VICE is a dot-product model), else cosine (the zero-shot convention, method.md §6).

    Returns
    -------
    (metric, source) — source is a short phrase for the output.
    """
    if transform is not None:
        return (
            transform_similarity(project, transform),
            f"the similarity transform '{transform}' was fitted with",
        )
    run = project.run(features_slot(image_set, model), arrays=False)
    recorded = run.params.get("similarity")
    if recorded:
        # run params are untyped JSON; import_features records only "dot" or "cosine"
        return cast(SimilarityKind, str(recorded)), f"recorded with the features of {model}"
    return "cosine", "default for raw features"


def _representation(
    project: Project,
    image_set: str,
    model: str,
    transform: str | None,
    items: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, str]]:
    """The representation of ``image_set`` (all rows), or of the sorted item ids ``items`` only
    ((s, d) float32, rows in ``items`` order), and the runs it reads."""
    if items is None:
        return teacher_representation(project, image_set, model, transform)
    run = project.run(features_slot(image_set, model), arrays=False)
    inputs = {features_slot(image_set, model): f"{run.stage}/{run.run_id}"}
    if transform is not None:
        inputs[transform_slot(transform)] = stored_transform(project, transform)[1]
    return teacher_rows(project, image_set, model, transform, items), inputs


@dataclasses.dataclass(frozen=True)
class _Scored:
    """A representation an evaluation scores (or, with ``compare``, compares it with): (s, d)
    float32 rows (the judged items, or all items for a matrix) and the similarity it is
    scored with."""

    F: np.ndarray
    metric: EvaluateMetric

    @property
    def triplet_metric(self) -> SimilarityMetric:
        """:attr:`metric` for triplet judgments (EvaluateConfig refuses pearson without a
        matrix)."""
        assert self.metric != "pearson"
        return self.metric

    @property
    def rsm_metric(self) -> Literal["cosine", "pearson"]:
        """The model RSM's similarity for RSA on a matrix: pearson, else cosine."""
        return "pearson" if self.metric == "pearson" else "cosine"


class _Bootstrap(TypedDict):
    """The resampling settings every CI and paired test of one evaluation shares."""

    n_boot: int
    random_state: int


def _bootstrap(config: EvaluateConfig) -> _Bootstrap:
    return {"n_boot": config.n_boot, "random_state": config.random_state}


def compute(project: Project, config: EvaluateConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The evaluation's result dict and the runs it read (no write).

    Triplet judgments read the features of the judged items only, and renumber the triplets
    into those rows: judgments about a few thousand images of a 1.28 M-image pool read a few
    thousand rows, not the pool's (n, d) features (issue 9). A matrix needs every item.
    """
    # the representation is checked first: its error names the models the image set has
    project.run(features_slot(config.image_set, config.model), arrays=False)
    j, items = _judged(project, config)
    F, inputs = _representation(project, config.image_set, config.model, config.transform, items)
    metric, source = _similarity(project, config, config.model, config.transform)
    result: dict[str, Any] = {
        "representation": config.model,
        "transform": config.transform,
        "metric": metric,
        "metric_source": source,
    }
    scored = _Scored(F, metric)
    compared = None
    if config.compare is not None:
        Fb, inputs_b = _representation(
            project, config.image_set, config.compare, config.compare_transform, items
        )
        inputs.update(inputs_b)
        metric_b = _similarity(project, config, config.compare, config.compare_transform)[0]
        compared = _Scored(Fb, metric_b)
    if j is not None:
        assert items is not None
        result.update(_judgment_scores(project, config, j, items, scored, compared))
    else:
        result.update(_matrix_scores(project, config, scored, compared))
    if "comparison" in result:
        assert config.compare is not None and compared is not None
        result["comparison"]["against"] = _label(config.compare, config.compare_transform)
        result["comparison"]["metric_b"] = compared.metric
    return result, inputs


def _judged(project: Project, config: EvaluateConfig) -> tuple[Judgments | None, np.ndarray | None]:
    """The judgments ``config`` evaluates on, their triplets renumbered into the rows of the
    judged items, and those items' ids ((m,) sorted); ``(None, None)`` for a matrix."""
    if config.judgments is None:
        return None, None
    j, image_set = project.judgments(config.judgments)
    if image_set != config.image_set:
        raise InputError(
            f"judgments '{config.judgments}' refer to image set '{image_set}', "
            f"not '{config.image_set}'",
            field="judgments",
        )
    items = np.unique(j.triplets)
    return dataclasses.replace(j, triplets=np.searchsorted(items, j.triplets)), items


def _similarity(
    project: Project, config: EvaluateConfig, model: str, transform: str | None
) -> tuple[EvaluateMetric, str]:
    """``--metric`` if given, else :func:`representation_similarity`: (metric, source)."""
    if config.metric:
        return config.metric, "given"
    return representation_similarity(project, config.image_set, model, transform)


def _judgment_scores(
    project: Project,
    config: EvaluateConfig,
    j: Judgments,
    items: np.ndarray,
    s: _Scored,
    b: _Scored | None,
) -> dict[str, Any]:
    """Accuracy on triplet judgments ``j`` (triplets numbering the rows of ``items``), with
    CI, noise ceiling, paired comparison (against ``b``), per-type scores and the
    transform's calibration."""
    if j.kind == "oddone" and j.meta.get("protocol") == "levels":
        out = _levels(j, config, s, b)
        ceiling = out.pop("noise_ceiling")
    else:
        out, ceiling = _accuracy(config, j, s, b)
    if config.transform is not None:
        out["calibration"] = _calibration(project, config, j, items)
    out.update(
        {
            "task": j.kind,
            "judgments": config.judgments,
            "simulated": j.simulated,
            "noise_ceiling": ceiling,
        }
    )
    return out


def _accuracy(
    config: EvaluateConfig, j: Judgments, s: _Scored, b: _Scored | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Odd-one-out or two-alternative accuracy (clustered CI, paired comparison, per type)
    and the judgments' noise ceiling."""
    out: dict[str, Any] = {}
    triplets = j.triplets
    if j.kind == "oddone":
        score = oddone_correct
        ceiling = noise_ceiling_oddone(j)
    else:
        # With vote counts, a tied triplet has no majority answer to agree with: score
        # the strict-majority triplets (as Lagunas et al. do) and report how many tied.
        if j.votes is not None:
            strict = j.votes[:, 0] > j.votes[:, 1]
            out["n_tied_excluded"] = int((~strict).sum())
            triplets = triplets[strict]
        score = twoafc_correct
        ceiling = noise_ceiling_twoafc(j)
    boot = _bootstrap(config)
    correct = score(s.F, triplets, metric=s.triplet_metric)
    out.update(clustered_accuracy_summary(correct, triplets, unit=config.ci_unit, **boot))
    correct_b = None
    if b is not None:
        correct_b = score(b.F, triplets, metric=b.triplet_metric)
        out["comparison"] = paired_accuracy_test(
            correct, correct_b, triplets, unit=config.ci_unit, **boot
        )
    if j.types is not None and j.kind == "oddone":
        out["by_type"] = _by_type(j, correct, correct_b, config)
    return out, ceiling


def _matrix_scores(
    project: Project, config: EvaluateConfig, s: _Scored, b: _Scored | None
) -> dict[str, Any]:
    """RSA (Spearman of the representation's and the matrix's similarities) with bootstrap
    CI over items, the noise ceiling of a per-subject matrix set and the paired comparison
    (against ``b``)."""
    assert config.matrix is not None
    matrix, kind, image_set = project.matrix(config.matrix)
    if image_set != config.image_set:
        raise InputError(
            f"matrix '{config.matrix}' refers to image set '{image_set}', not '{config.image_set}'",
            field="matrix",
        )
    ceiling = noise_ceiling_matrix(matrix, kind=kind) if matrix.ndim == 3 else None
    if matrix.ndim == 3:
        matrix = matrix.mean(axis=0)
    rsm_metric = s.rsm_metric
    boot = _bootstrap(config)
    lo, hi = rsa_bootstrap_ci(s.F, matrix, metric=rsm_metric, kind=kind, **boot)
    out: dict[str, Any] = {
        "task": "rsa",
        "matrix": config.matrix,
        "metric": rsm_metric,
        "spearman": float(rsa(s.F, matrix, kind=kind, metric=rsm_metric)),
        "ci_low": lo,
        "ci_high": hi,
        "ci_unit": "items",
        "n": int(matrix.shape[0]),
        "noise_ceiling": ceiling,
    }
    if b is not None:
        out["comparison"] = paired_rsa_test(
            s.F,
            b.F,
            matrix,
            metric_a=rsm_metric,
            metric_b=b.rsm_metric,
            kind=kind,
            **boot,
        )
    return out


def _levels(j: Judgments, config: EvaluateConfig, s: _Scored, b: _Scored | None) -> dict[str, Any]:
    """The Levels authors' protocol: majority of 4 sampled responses per triplet, ties apart,
    leave-one-out ceilings with 0.5 credit in a tie; overall and per level (and the paired
    comparison against ``b``)."""
    lv = levels_scores(
        s.F,
        j,
        metric=s.triplet_metric,
        n_boot=config.n_boot,
        random_state=config.random_state,
        unit="items" if config.ci_unit == "items" else "triplets",
        features_b=None if b is None else b.F,
        metric_b=None if b is None else b.triplet_metric,
    )

    def ceiling(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "majority_agreement": d["ceiling_majority"],
            "leave_one_out": d["ceiling_leave_one_out"],
            "n_triplets": d["n_triplets"],
            "n_responses": d["n_responses"],
        }

    keys = ("accuracy", "ci_low", "ci_high", "n", "n_tied", "ci_unit")
    overall = lv["overall"]
    out: dict[str, Any] = {
        **{k: overall[k] for k in keys},
        "noise_ceiling": ceiling(overall),
        "levels": lv,
        "by_type": {
            name: {
                **{k: d[k] for k in keys},
                "noise_ceiling": ceiling(d),
                **({"comparison": d["comparison"]} if "comparison" in d else {}),
            }
            for name, d in lv["by_level"].items()
        },
    }
    if "comparison" in overall:
        out["comparison"] = overall["comparison"]
    return out


def _by_type(
    j: Judgments, correct: np.ndarray, correct_b: np.ndarray | None, config: EvaluateConfig
) -> dict[str, Any]:
    """Accuracy, CI, noise ceiling (and the paired comparison) per triplet type."""
    assert j.types is not None
    unit, boot = config.ci_unit, _bootstrap(config)
    out: dict[str, Any] = {}
    for name in sorted(set(j.types.tolist())):
        rows = j.types == name
        subset = dataclasses.replace(
            j, triplets=j.triplets[rows], participant=j.participant[rows], types=j.types[rows]
        )
        out[name] = {
            **clustered_accuracy_summary(correct[rows], j.triplets[rows], unit=unit, **boot),
            "noise_ceiling": noise_ceiling_oddone(subset),
        }
        if correct_b is not None:
            out[name]["comparison"] = paired_accuracy_test(
                correct[rows], correct_b[rows], j.triplets[rows], unit=unit, **boot
            )
    return out


def _calibration(
    project: Project, config: EvaluateConfig, j: Judgments, items: np.ndarray
) -> dict[str, Any] | None:
    """The transform's triplet probabilities against the human choice distributions.

    ``j``'s triplets number the rows of ``items`` (the judged items' ids, sorted).

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
    X = teacher_rows(project, config.image_set, config.model, None, items)
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
