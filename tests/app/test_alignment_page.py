"""The Alignment page: fit a real transform, evaluate base vs aligned, and plot the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignet_engine.views.summaries import run_arrays
from tests.app.conftest import save_screenshot


def _open_page(window, path: Path):
    assert window.session.open(path)
    window.show_page("alignment")
    page = window.page("alignment")
    page.refresh()
    return page


def test_every_hyperparameter_has_a_tooltip(window) -> None:
    page = window.page("alignment")
    for name in page.form.names:
        assert page.form.editors[name].toolTip(), f"{name} has no tooltip"
    assert page.search.toolTip()
    for name in ("lam", "alpha", "tau", "lr", "objective", "targets", "n_splits", "name"):
        assert name in page.form.names


def test_fit_evaluate_and_plots(window, qtbot, copy_demo: Path) -> None:
    page = _open_page(window, copy_demo)
    # prefilled from the demo's teacher transform
    assert page.image_set.currentText() == "stimuli"
    assert page.model.currentText() == "efficientnet_lite2"
    assert page.checked_judgments() == ["fit (simulated)"]
    assert page.eval_judgments.currentText() == "test (simulated)"
    page.form.set_value("max_epochs", 6)
    page.form.set_value("patience", 3)
    page.form.set_value("name", "probe")

    with qtbot.waitSignal(window.session.runner.idle, timeout=180_000):
        assert page.fit()
    project = window.session.project
    run = project.run("transform:probe", arrays=False)
    assert run.params["max_epochs"] == 6
    history = run_arrays(project, "transform:probe")
    # the loss curve shows the stored history's points
    x, y = page.curves.series("train_loss")
    np.testing.assert_allclose(y, history["history_train_loss"])
    np.testing.assert_array_equal(x, np.arange(1, len(y) + 1))
    assert page.curves.point_count("val_loss") == len(history["history_val_loss"])

    with qtbot.waitSignal(window.session.runner.idle, timeout=180_000):
        assert page.evaluate()
    info = window.session.info()
    base = project.run(
        "evaluate:stimuli:efficientnet_lite2:judgments=test (simulated)", arrays=False
    ).summary
    aligned = project.run(
        "evaluate:stimuli:efficientnet_lite2+T(probe):judgments=test (simulated)", arrays=False
    ).summary
    assert info["current"]  # the session refreshed
    # the bar chart shows the stored accuracies, the ceiling line the stored ceiling
    assert page.bars is not None
    np.testing.assert_allclose(page.bars.opts["height"], [base["accuracy"], aligned["accuracy"]])
    assert page.results.ceiling == pytest.approx(aligned["noise_ceiling"]["leave_one_out"])
    # the calibration plot's points are the stored non-empty bins
    rel = aligned["calibration"]["reliability"]
    keep = np.asarray(rel["bin_count"]) > 0
    cx, cy = page.calibration_points.getData()
    np.testing.assert_allclose(cx, np.asarray(rel["bin_confidence"])[keep])
    np.testing.assert_allclose(cy, np.asarray(rel["bin_accuracy"])[keep])
    save_screenshot(window, "alignment_page")


def test_bad_hyperparameter_shows_inline_error(window, copy_demo: Path) -> None:
    page = _open_page(window, copy_demo)
    page.form.editors["lam"].setText("-1")
    assert not page.fit()
    assert page.error.isVisible() and "lam" in page.error.text()
    assert not window.session.runner.busy
    page.form.editors["lam"].setText("0.01")
    page.search.setText("lam=")
    assert not page.fit()
    assert "search" in page.error.text() and not window.session.runner.busy
