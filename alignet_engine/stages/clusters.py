"""Stage 3 — clusters: k-means on the teacher's aligned representations of the pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from alignet_engine.align.chunked import RowArray, map_rows, rows_for_budget
from alignet_engine.align.clustering import cluster_summaries, kmeans, kmeans_diagnostics
from alignet_engine.config import DEFAULT_MEMORY_BUDGET_MB, ClusterConfig, features_slot
from alignet_engine.jobs import Job, JobControl, Message, StageDone
from alignet_engine.stages._tracking import tracked
from alignet_engine.stages.features import stored_features
from alignet_engine.stages.transform import stored_transform, transform_slot
from alignet_engine.store import Project

STAGE = "clusters"
SLOT = "clusters"


def teacher_representation(
    project: Project,
    image_set: str,
    model: str,
    transform: str | None,
    *,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
) -> tuple[np.ndarray, dict[str, str]]:
    """The teacher's representation of ``image_set``: features, through the transform if named.

    The transform is applied in row chunks of ``memory_budget_mb``; an output larger than the
    budget goes to a temporary memory map next to the project (freed when dropped), so a
    1.28 M × 1280 pool is never held twice in memory.

    Returns ``(Z (n, d) float32 ndarray or read-only np.memmap, inputs)`` where ``inputs`` maps
    the slots read to run refs.
    """
    X, feat_ref = stored_features(project, image_set, model)
    inputs = {features_slot(image_set, model): feat_ref}
    if transform is None:
        return X, inputs
    est, t_ref = stored_transform(project, transform)
    inputs[transform_slot(transform)] = t_ref
    budget = int(memory_budget_mb * 2**20)
    return map_rows(X, est.transform, budget_bytes=budget, folder=project.path.parent), inputs


@contextlib.contextmanager
def teacher_view(
    project: Project,
    image_set: str,
    model: str,
    transform: str | None,
    *,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
) -> Iterator[tuple[RowArray, dict[str, str]]]:
    """The teacher's representation of ``image_set`` for the length of a ``with`` block.

    Features that fit in ``memory_budget_mb`` are read whole (and transformed) as by
    :func:`teacher_representation`. Larger ones are never held whole: they are read lazily from
    the project (an ``h5py.Dataset`` sliced by rows), checked for NaN rows chunk by chunk, and
    pushed through the transform into a temporary memory map next to the project.

    Yields ``(Z (n, d) float32 array-like with row slicing, inputs)``.
    """
    slot = features_slot(image_set, model)
    run = project.run(slot, arrays=False)
    ref = f"{run.stage}/{run.run_id}"
    budget = int(memory_budget_mb * 2**20)
    with project.open_array(ref, "X") as ds:
        n, d = int(ds.shape[0]), int(ds.shape[1])
        if n * d * 4 <= budget:
            yield teacher_representation(
                project, image_set, model, transform, memory_budget_mb=memory_budget_mb
            )
            return
        rows = rows_for_budget(d * 8, budget)
        for start in range(0, n, rows):
            if np.isnan(ds[start : start + rows]).any():
                stored_features(project, image_set, model)  # raises, naming the missing rows
        inputs = {slot: ref}
        if transform is None:
            yield ds, inputs
            return
        est, t_ref = stored_transform(project, transform)
        inputs[transform_slot(transform)] = t_ref
        yield map_rows(ds, est.transform, budget_bytes=budget, folder=project.path.parent), inputs


def teacher_rows(
    project: Project, image_set: str, model: str, transform: str | None, items: np.ndarray
) -> np.ndarray:
    """The teacher's representation of the items ``items`` (sorted ids) only: (s, d) float32.

    Only those rows go through the transform (a map of 20 k points of a 1.28 M pool
    transforms 20 k rows).
    """
    run = project.run(features_slot(image_set, model), arrays=False)
    with project.open_array(f"{run.stage}/{run.run_id}", "X") as ds:
        rows = np.asarray(ds[np.asarray(items, dtype=np.int64)], dtype=np.float32)
    if np.isnan(rows).any():
        stored_features(project, image_set, model)  # raises, naming the missing rows
    if transform is None:
        return rows
    est, _ = stored_transform(project, transform)
    return est.transform(rows)


def cluster(project: Project, config: ClusterConfig, control: JobControl | None = None) -> Job[str]:
    """Cluster the pool and store labels and centroids in slot ``clusters``."""
    control = control or JobControl()

    def body(run_id: str) -> Job[str]:
        with teacher_view(
            project,
            config.image_set,
            config.model,
            config.transform,
            memory_budget_mb=config.memory_budget_mb,
        ) as (Z, inputs):
            arrays, summary = yield from _cluster(config, control, Z)
        # written after the features are closed: no reader of the project stays open
        project.write_run(
            STAGE,
            run_id,
            slot=SLOT,
            params=config.to_dict(),
            arrays=arrays,
            inputs=inputs,
            summary=summary,
        )
        yield StageDone(STAGE, run_id, summary)
        return run_id

    return (yield from tracked(project, STAGE, config.to_dict(), body))


def _cluster(
    config: ClusterConfig, control: JobControl, Z: RowArray
) -> Job[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """k-means, summaries and diagnostics of the teacher's representation ``Z`` (n, d).

    Returns ``(arrays {"labels" (n,) int64, "centroids" (k, d) float32}, summary)``.
    """
    yield Message(STAGE, f"k-means, k={config.k}, on {Z.shape[0]} pool items")
    control.check()
    labels, centroids, inertia = kmeans(
        Z,
        config.k,
        random_state=config.random_state,
        device=config.device,
        memory_budget_mb=config.memory_budget_mb,
    )
    sizes = np.bincount(labels, minlength=config.k)
    summary: dict[str, Any] = {
        "k": config.k,
        "inertia": float(inertia),
        "sizes": sizes.tolist(),
        "clusters": cluster_summaries(
            Z,
            labels,
            centroids,
            n_nearest=config.n_nearest,
            memory_budget_mb=config.memory_budget_mb,
        ),
    }
    if config.diagnose_ks:
        yield Message(STAGE, f"diagnostics for k in {list(config.diagnose_ks)}")
        control.check()
        summary["diagnostics"] = kmeans_diagnostics(
            Z,
            config.diagnose_ks,
            random_state=config.random_state,
            device=config.device,
            memory_budget_mb=config.memory_budget_mb,
        )
    return {"labels": labels, "centroids": centroids}, summary
