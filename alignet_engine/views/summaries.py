"""Small read-only summaries of stored runs, shaped for display (no Qt here).

The GUI holds no numerics: whatever a page shows that needs arithmetic — error-bar lengths,
non-empty calibration bins, training rates and ETAs, the curves of a stored run — is
computed here, in plain Python / numpy, and tested without Qt. Everything reads the
:meth:`Project.info` dict the GUI caches, or one :class:`~alignet_engine.store.project.Run`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from alignet_engine.config import (  # noqa: F401 - the grid text is shown on pages too
    EvaluateConfig,
    format_search_grid,
    parse_search_grid,
)
from alignet_engine.stages.evaluate import evaluation_slot

# --------------------------------------------------------------------------------------------
# project overview helpers


def current_summary(info: Mapping[str, Any], slot: str) -> dict[str, Any] | None:
    """The summary of ``slot``'s current run from a :meth:`Project.info` dict (None: no run)."""
    ref = info.get("current", {}).get(slot)
    if ref is None:
        return None
    for run in info.get("runs", []):
        if run["run"] == ref:
            return dict(run["summary"])
    return None


def feature_labels(info: Mapping[str, Any], image_set: str) -> list[str]:
    """Model labels with current features of ``image_set``, sorted."""
    prefix = f"features:{image_set}:"
    return sorted(s[len(prefix) :] for s in info.get("current", {}) if s.startswith(prefix))


def transform_names(info: Mapping[str, Any]) -> list[str]:
    """Names of the project's fitted (or imported) transforms, sorted."""
    return sorted(s.split(":", 1)[1] for s in info.get("current", {}) if s.startswith("transform:"))


# --------------------------------------------------------------------------------------------
# alignment results: accuracy bars against the noise ceiling, reliability diagram


@dataclass(frozen=True)
class AccuracyBar:
    """One representation's held-out accuracy with its bootstrap CI, as error-bar lengths."""

    label: str
    run: str
    accuracy: float
    ci_low: float
    ci_high: float
    err_below: float
    err_above: float
    n: int


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's non-empty bins: mean confidence vs accuracy, with counts."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float
    mce: float
    n: int


@dataclass(frozen=True)
class AlignmentResults:
    """What the Alignment page plots for one image set / model / transform / judgment set.

    ``bars`` holds base features then aligned (each present only if its evaluate run
    exists); ``ceiling`` is the leave-one-out noise ceiling (comparable to per-response
    accuracy), ``ceiling_majority`` the majority-agreement one; ``calibration`` is the
    aligned run's reliability diagram (None without repeated triplets or aligned run).
    """

    judgments: str
    bars: tuple[AccuracyBar, ...]
    ceiling: float | None
    ceiling_majority: float | None
    calibration: Reliability | None
    task: str | None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def accuracy_bar(label: str, run: str, summary: Mapping[str, Any]) -> AccuracyBar:
    """An :class:`AccuracyBar` from an evaluate run's summary (judgments, not RSA)."""
    acc = float(summary["accuracy"])
    lo, hi = float(summary.get("ci_low", acc)), float(summary.get("ci_high", acc))
    return AccuracyBar(label, run, acc, lo, hi, acc - lo, hi - acc, int(summary.get("n", 0)))


def reliability(calibration: Mapping[str, Any] | None) -> Reliability | None:
    """The non-empty bins of an evaluate run's ``calibration["reliability"]`` (None if absent)."""
    if not calibration or not calibration.get("reliability"):
        return None
    rel = calibration["reliability"]
    conf = np.asarray(rel["bin_confidence"], dtype=np.float64)
    acc = np.asarray(rel["bin_accuracy"], dtype=np.float64)
    count = np.asarray(rel["bin_count"], dtype=np.int64)
    keep = (count > 0) & np.isfinite(conf) & np.isfinite(acc)
    return Reliability(
        confidence=conf[keep],
        accuracy=acc[keep],
        count=count[keep],
        ece=float(rel.get("ece", calibration.get("ece", math.nan))),
        mce=float(rel.get("mce", math.nan)),
        n=int(rel.get("n", int(count.sum()))),
    )


def alignment_results(
    info: Mapping[str, Any],
    image_set: str,
    model: str,
    transform: str,
    judgments: str,
) -> AlignmentResults:
    """Base vs aligned evaluate results (current runs) for ``judgments``, from ``info``."""
    bars: list[AccuracyBar] = []
    ceiling = ceiling_majority = None
    calibration = None
    task = None
    for label, name in (("base features", None), (f"aligned ({transform})", transform)):
        cfg = EvaluateConfig(image_set=image_set, model=model, judgments=judgments, transform=name)
        slot = evaluation_slot(cfg)
        summary = current_summary(info, slot)
        if summary is None or "accuracy" not in summary:
            continue
        bars.append(accuracy_bar(label, info["current"][slot], summary))
        task = summary.get("task", task)
        nc = summary.get("noise_ceiling") or {}
        ceiling = _finite(nc.get("leave_one_out")) if ceiling is None else ceiling
        if ceiling_majority is None:
            ceiling_majority = _finite(nc.get("majority_agreement"))
        if name is not None:
            calibration = reliability(summary.get("calibration"))
    return AlignmentResults(judgments, tuple(bars), ceiling, ceiling_majority, calibration, task)


# --------------------------------------------------------------------------------------------
# stored training curves


def stored_history(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A run's ``history_*`` arrays without the prefix (``{"loss": ..., "step": ...}``).

    A transform run's history has no x array; ``"epoch"`` (1-based) is added then, so every
    curve has an x: ``val_*`` curves use ``val_step``, the others ``step`` or ``epoch``.
    """
    out = {
        k.removeprefix("history_"): np.asarray(v)
        for k, v in arrays.items()
        if k.startswith("history_")
    }
    if out and "step" not in out and "epoch" not in out:
        lengths = {len(v) for k, v in out.items() if not k.startswith("val_") or "val_step" in out}
        if lengths:
            out["epoch"] = np.arange(1, max(lengths) + 1, dtype=np.int64)
    return out


@dataclass(frozen=True)
class SearchRow:
    """One setting of a transform run's CV grid search."""

    setting: str
    mean_accuracy: float
    std_accuracy: float
    mean_loss: float
    rank: int


def search_rows(summary: Mapping[str, Any]) -> list[SearchRow]:
    """The CV grid of a transform run's summary, best first (empty without a search)."""
    cv = (summary.get("search") or {}).get("cv_results")
    if not cv:
        return []
    rows = []
    for i, params in enumerate(cv["params"]):
        rows.append(
            SearchRow(
                setting=", ".join(f"{k}={v}" for k, v in params.items()),
                mean_accuracy=float(cv["mean_test_accuracy"][i]),
                std_accuracy=float(cv["std_test_accuracy"][i]),
                mean_loss=float(cv["mean_test_loss"][i]),
                rank=int(cv["rank_test_score"][i]),
            )
        )
    return sorted(rows, key=lambda r: r.rank)


# --------------------------------------------------------------------------------------------
# training rate and ETA


@dataclass(frozen=True)
class Rate:
    """Steps per second and images per second over a recent window, elapsed time and ETA."""

    step: int
    total: int
    steps_per_s: float | None
    images_per_s: float | None
    elapsed_s: float
    eta_s: float | None


class RateMeter:
    """Training speed from (time, step) samples over a sliding window of ``window_s`` seconds.

    ``images_per_step`` is ``3 × batch`` (a step forwards three images per triplet). Paused
    time is left out of ``elapsed_s``, the rate and the ETA: call :meth:`pause` /
    :meth:`resume`.

    The speed shown is the recent one (the window); the ETA uses the average time per step
    since the first training sample instead. That average includes the periodic validations
    in proportion (the ones still to come cost what the past ones did) while a single
    validation, which stalls the points for seconds, barely moves it; the start-up before the
    first step (loading, caching, the first validation) is left out.
    """

    def __init__(
        self, total: int, images_per_step: int, window_s: float = 5.0, clock: Any = None
    ) -> None:
        self.total = total
        self.images_per_step = images_per_step
        self.window_s = window_s
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._paused_at: float | None = None
        self._paused_total = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._first: tuple[float, int] | None = None  # the first training sample
        self._step = 0

    def _now(self) -> float:
        """Time without the paused intervals."""
        now = self._paused_at if self._paused_at is not None else self._clock()
        return now - self._paused_total

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self._clock()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_total += self._clock() - self._paused_at
            self._paused_at = None

    def add(self, step: int) -> Rate:
        """Record that training reached ``step`` now; returns the current :class:`Rate`."""
        now = self._now()
        self._step = max(self._step, int(step))
        self._samples.append((now, self._step))
        if self._first is None:
            self._first = (now, self._step)
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        return self.rate()

    def rate(self) -> Rate:
        now = self._now()
        elapsed = now - (self._start - 0.0)
        steps_per_s = None
        if len(self._samples) >= 2:
            (t0, s0), (t1, s1) = self._samples[0], self._samples[-1]
            if t1 > t0 and s1 > s0:
                steps_per_s = (s1 - s0) / (t1 - t0)
        images = None if steps_per_s is None else steps_per_s * self.images_per_step
        eta = None
        if self._first is not None and len(self._samples) >= 1:
            (t0, s0), (t1, s1) = self._first, self._samples[-1]
            if t1 > t0 and s1 > s0:
                eta = max(0.0, (self.total - self._step) * (t1 - t0) / (s1 - s0))
        return Rate(self._step, self.total, steps_per_s, images, max(0.0, elapsed), eta)


def format_duration(seconds: float | None) -> str:
    """``"1:05:03"`` / ``"4:07"`` / ``"–"`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --------------------------------------------------------------------------------------------
# reading part of a run


def run_arrays(project: Any, ref: str, prefix: str = "history_") -> dict[str, np.ndarray]:
    """The arrays of run ``ref`` (``stage/id`` or a slot) whose names start with ``prefix``.

    Reads only those datasets: a transform run also holds its (d, d) weights, which a page
    showing the loss curve has no use for.
    """
    with project.reading() as f:
        current = f["current"].attrs
        key = str(current[ref]) if ref in current else ref
        if key not in f:
            return {}
    with project.array_reader(key) as reader:
        return {name: reader[name][()] for name in reader.names if name.startswith(prefix)}
