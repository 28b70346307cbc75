"""Display summaries of stored runs (no Qt)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignet_engine.errors import InputError
from alignet_engine.views.summaries import (
    RateMeter,
    alignment_results,
    format_duration,
    format_search_grid,
    parse_search_grid,
    reliability,
    search_rows,
    stored_history,
)


def test_search_grid_round_trip_and_errors() -> None:
    grid = parse_search_grid("lam=0.01, 0.1; lr=1e-3\nstandardize=scalar,perdim")
    assert grid == {"lam": [0.01, 0.1], "lr": [0.001], "standardize": ["scalar", "perdim"]}
    assert parse_search_grid(format_search_grid(grid)) == grid
    assert parse_search_grid("  ") is None
    with pytest.raises(InputError):
        parse_search_grid("lam=")
    with pytest.raises(InputError):
        parse_search_grid("lam 0.1")


def _info(summary_base: dict, summary_aligned: dict) -> dict:
    base = "evaluate:s:m:judgments=j"
    aligned = "evaluate:s:m+T(t):judgments=j"
    return {
        "current": {base: "evaluate/1", aligned: "evaluate/2"},
        "runs": [
            {"run": "evaluate/1", "summary": summary_base},
            {"run": "evaluate/2", "summary": summary_aligned},
        ],
    }


def test_alignment_results_bars_ceiling_and_bins() -> None:
    ceiling = {"leave_one_out": 0.7, "majority_agreement": 0.8}
    rel = {
        "bin_confidence": [math.nan, 0.4, 0.9],
        "bin_accuracy": [math.nan, 0.3, 0.85],
        "bin_count": [0, 5, 7],
        "ece": 0.05,
        "mce": 0.1,
        "n": 12,
    }
    info = _info(
        {"accuracy": 0.6, "ci_low": 0.55, "ci_high": 0.62, "n": 100, "noise_ceiling": ceiling},
        {
            "accuracy": 0.68,
            "ci_low": 0.6,
            "ci_high": 0.7,
            "n": 100,
            "noise_ceiling": ceiling,
            "calibration": {"ece": 0.05, "reliability": rel},
            "task": "oddone",
        },
    )
    out = alignment_results(info, "s", "m", "t", "j")
    assert [b.accuracy for b in out.bars] == [0.6, 0.68]
    assert out.bars[0].err_below == pytest.approx(0.05)
    assert out.bars[1].err_above == pytest.approx(0.02)
    assert out.ceiling == 0.7 and out.ceiling_majority == 0.8 and out.task == "oddone"
    assert out.calibration is not None
    np.testing.assert_array_equal(out.calibration.confidence, [0.4, 0.9])
    np.testing.assert_array_equal(out.calibration.count, [5, 7])
    assert alignment_results(info, "s", "m", "other", "j").bars[1:] == ()
    assert reliability(None) is None


def test_stored_history_adds_epochs_and_keeps_steps() -> None:
    h = stored_history({"history_train_loss": np.ones(4), "weights": np.eye(2)})
    np.testing.assert_array_equal(h["epoch"], [1, 2, 3, 4])
    assert "weights" not in h
    d = stored_history({"history_step": np.arange(1, 4), "history_loss": np.ones(3)})
    assert "epoch" not in d


def test_search_rows_best_first() -> None:
    summary = {
        "search": {
            "cv_results": {
                "params": [{"lam": 0.1}, {"lam": 1.0}],
                "mean_test_accuracy": [0.5, 0.6],
                "std_test_accuracy": [0.01, 0.02],
                "mean_test_loss": [1.0, 0.9],
                "rank_test_score": [2, 1],
            }
        }
    }
    rows = search_rows(summary)
    assert [r.setting for r in rows] == ["lam=1.0", "lam=0.1"]
    assert search_rows({}) == []


def test_rate_meter_excludes_pauses() -> None:
    now = [0.0]
    meter = RateMeter(total=100, images_per_step=12, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] = step * 0.5
        rate = meter.add(step)
    assert rate.steps_per_s == pytest.approx(2.0)
    assert rate.images_per_s == pytest.approx(24.0)
    assert rate.eta_s == pytest.approx(45.0)
    meter.pause()
    now[0] += 100.0
    meter.resume()
    assert meter.rate().elapsed_s == pytest.approx(5.0)
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "–"
