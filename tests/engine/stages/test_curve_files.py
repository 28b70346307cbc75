"""Curves of long distillation runs are appended to side files while the run goes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from alignet_engine.jobs import LossBatch
from alignet_engine.stages.curve_files import STREAM_CURVES_ABOVE, CurveFiles
from alignet_engine.store import Project

TRAIN = ("loss", "triplet", "agreement", "lr", "grad_norm", "drift")


def _run(steps: int, every: int = 37, val_every: int = 500) -> list[LossBatch]:
    """The LossBatch events of a ``steps``-step run: training points in batches of ``every``
    steps, a validation point every ``val_every`` steps (step 0 first)."""
    rng = np.random.default_rng(0)
    events = [LossBatch("distill", np.array([0]), {"val_agreement": np.array([0.5])})]
    for lo in range(1, steps + 1, every):
        s = np.arange(lo, min(lo + every, steps + 1), dtype=np.int64)
        events.append(LossBatch("distill", s, {n: rng.normal(size=len(s)) for n in TRAIN}))
        for v in s[s % val_every == 0]:
            point = {"val_agreement": np.array([rng.uniform()])}
            events.append(LossBatch("distill", np.array([v]), point))
    return events


def _history(events: list[LossBatch]) -> dict[str, np.ndarray]:
    """What DistillResult.history holds for these events, concatenated independently."""
    out: dict[str, list[np.ndarray]] = {}
    for e in events:
        key = "val_step" if "val_agreement" in e.values else "step"
        out.setdefault(key, []).append(e.steps)
        for name, values in e.values.items():
            out.setdefault(name, []).append(values)
    return {k: np.concatenate(v) for k, v in out.items()}


def _parts(p: Project) -> list[Path]:
    return sorted(p.arrays_dir.glob(".*.part")) if p.arrays_dir.is_dir() else []


def test_a_long_runs_curves_are_appended_while_it_runs_and_read_back(tmp_path: Path) -> None:
    steps = 30_000
    events = _run(steps)
    history = _history(events)
    with Project.create(tmp_path / "p.alignet") as p:
        rid = p.begin_job("distill", {})
        curves = CurveFiles(p)
        fed = 0
        for event in events:
            curves.add(event)
            fed += len(event.steps) if "loss" in event.values else 0
            if fed == STREAM_CURVES_ABOVE // 37 * 37:  # not past it: in memory, not written
                assert not _parts(p)
        # past the threshold the training columns are being appended (step + 6 curves);
        # the 61 validation points stay in memory
        assert len(_parts(p)) == 1 + len(TRAIN)
        arrays = curves.arrays(history)
        p.write_run("distill", rid, slot="distill", params={}, arrays=arrays)
        run = p.run("distill")
        for name, values in history.items():
            np.testing.assert_array_equal(run.arrays[f"history_{name}"], values)
        assert run.arrays["history_step"].dtype == np.int64
        with p.open_array("distill", "history_loss") as ds:  # a side file, read lazily
            assert ds.shape == (steps,)
            np.testing.assert_array_equal(ds[-5:], history["loss"][-5:])
        assert not _parts(p)
    # the index refers to the curves: it holds only the short validation curve inline
    with h5py.File(tmp_path / "p.alignet", "r") as f:
        inline = [n for n, o in f[f"distill/{rid}"].items() if isinstance(o, h5py.Dataset)]
    assert sorted(inline) == ["history_val_agreement", "history_val_step"]


def test_a_short_runs_curves_stay_inline(tmp_path: Path) -> None:
    events = _run(300, val_every=50)
    with Project.create(tmp_path / "p.alignet") as p:
        rid = p.begin_job("distill", {})
        curves = CurveFiles(p)
        for event in events:
            curves.add(event)
        arrays = curves.arrays(_history(events))
        assert all(isinstance(a, np.ndarray) for a in arrays.values())
        p.write_run("distill", rid, slot="distill", params={}, arrays=arrays)
        np.testing.assert_array_equal(p.run("distill").arrays["history_step"], np.arange(1, 301))
        assert not p.arrays_dir.is_dir() or not any(p.arrays_dir.iterdir())


def test_a_failed_run_leaves_no_curve_files(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p.alignet") as p:
        with pytest.raises(RuntimeError), CurveFiles(p, above=100) as curves:
            for event in _run(1000):
                curves.add(event)
            assert _parts(p)
            raise RuntimeError("cancelled")
        assert not _parts(p)


def test_streamed_curves_that_disagree_with_the_history_are_not_used(tmp_path: Path) -> None:
    events = _run(500)
    history = _history(events)
    with Project.create(tmp_path / "p.alignet") as p:
        curves = CurveFiles(p, above=100)
        for event in events[:-3]:  # points missing: the history is the reference
            curves.add(event)
        arrays = curves.arrays(history)
        np.testing.assert_array_equal(arrays["history_loss"], history["loss"])
        assert not _parts(p)
