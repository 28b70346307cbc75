"""The live curves widget: bounded drawing of long runs, legends, smoothing, export."""

from __future__ import annotations

import numpy as np

from alignet_app.widgets.plots import LiveCurves, label_of
from alignet_engine.jobs import LossBatch
from alignet_engine.views.curves import ema

GROUPS = ("Losses", "Agreement (train batch, validation)", "Learning rate")


def _drain(curves: LiveCurves, qtbot) -> None:
    """Let the round-robin timer draw every plot with new points."""
    qtbot.waitUntil(lambda: not curves._dirty, timeout=10_000)


def test_a_100k_step_run_draws_a_bounded_number_of_points(qtbot) -> None:
    curves = LiveCurves(GROUPS, columns=3, best=("val_agreement", "max"))
    qtbot.addWidget(curves)
    curves.resize(900, 500)
    curves.show()
    curves.clear(live=True)
    curves.set_planned(100_000)
    rng = np.random.default_rng(0)
    steps = np.arange(1, 100_001)
    loss = 1 / np.sqrt(steps) + 0.01 * rng.random(steps.size)
    for part in np.array_split(np.arange(steps.size), 200):
        s = steps[part]
        curves.add_batch(
            LossBatch(
                "distill",
                s,
                {
                    "loss": loss[part],
                    "triplet": loss[part],  # no other loss term: identical to "loss"
                    "lr": np.full(s.size, 1e-4),
                    "local_loss": np.full(s.size, np.nan),  # a term that is off
                },
            )
        )
        val = s[s % 10_000 == 0]
        if val.size:
            curves.add_batch(LossBatch("distill", val, {"val_agreement": 1 - 1 / val}))
    _drain(curves, qtbot)
    # every point is kept, a bounded decimation is drawn, the spike-preserving min/max
    # keeps the curve's extremes
    assert curves.point_count("loss") == 100_000
    drawn = curves.drawn_points("loss")
    assert 100 < drawn <= 2 * 1024 + 128
    _, y = curves.items["loss"].getData()
    assert y.max() == loss.max() and y.min() == loss.min()
    # "triplet" equals "loss": drawn once, and the legend says so
    assert curves.drawn_points("triplet") == 0
    labels = curves.legend_labels("Losses")
    assert f"{label_of('triplet')} (= {label_of('loss')}: drawn once)" in labels
    # a curve without any finite value has no legend entry (nothing would be drawn)
    assert not any("local" in t for t in labels)
    # the x axis spans the planned steps; the best validation step is marked
    lo, hi = curves.groups["Losses"].plot.getViewBox().viewRange()[0]
    assert lo <= 0 and 100_000 <= hi < 105_000
    assert curves.best_x == 100_000.0
    assert curves.groups["Learning rate"].best.isVisible()
    # the data behind the figure is the full series, not the drawing
    csv = curves.data_csv()
    assert sum(1 for line in csv.splitlines() if line.startswith("loss,")) == 100_000


def test_smoothing_log_y_and_export(qtbot, tmp_path) -> None:
    curves = LiveCurves(("Losses",), columns=1)
    qtbot.addWidget(curves)
    curves.resize(600, 400)
    curves.show()
    assert curves.stack.currentWidget() is curves.empty  # a message, not an empty plot
    x = np.arange(1, 201, dtype=float)
    y = np.exp(-x / 50) + 0.05 * np.sin(x)
    curves.load_history({"step": x, "loss": y})
    _drain(curves, qtbot)
    assert curves.stack.currentWidget() is curves.canvas
    np.testing.assert_allclose(curves.items["loss"].getData()[1], y)
    curves.smoothing.setValue(90)  # TensorBoard's EMA, weight 0.9, raw curve faint behind
    _drain(curves, qtbot)
    np.testing.assert_allclose(curves.items["loss"].getData()[1], ema(y, 0.9))
    assert curves._series["loss"].raw_item.isVisible()
    curves.log_y.setChecked(True)
    assert curves.groups["Losses"].plot.getAxis("left").logMode
    from alignet_app.widgets.figure_export import save_figure

    png = save_figure(curves.canvas, tmp_path / "curves.png")
    svg = save_figure(curves.canvas, tmp_path / "curves.svg")
    assert png.stat().st_size > 1000
    assert "<svg" in svg.read_text()[:2000]


def test_every_plot_and_table_has_save_figure_and_copy_data(window, qtbot, copy_demo) -> None:
    import pyqtgraph as pg
    from PySide6.QtWidgets import QTableView

    from alignet_app.pages import PAGES
    from alignet_app.widgets import figure_export

    window.resize(1440, 900)
    assert window.open_project(str(copy_demo))
    checked = 0
    for cls in PAGES:
        window.show_page(cls.key)
        qtbot.waitUntil(lambda: not window.session.views.busy(), timeout=60_000)
        page = window.page(cls.key)
        for widget in [*page.findChildren(pg.PlotWidget), *page.findChildren(QTableView)]:
            if widget.isVisible():
                assert widget.property("figure_menu"), f"{cls.key}: {type(widget).__name__}"
                checked += 1
    assert checked >= 8
    # the data behind a plot and a table, as CSV
    triplets = window.page("triplets")
    csv = figure_export.model_csv(triplets.table.model(), max_rows=5)
    assert csv.splitlines()[0].startswith("Verdict,Human,Teacher") and len(csv.splitlines()) == 6
    bars = figure_export.plot_csv(triplets.detail.plot)
    assert bars.splitlines()[0] == "series,x,value" and len(bars.splitlines()) > 3


def test_dark_theme_is_a_preference_and_plots_follow_it(qtbot) -> None:
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    from alignet_app import settings
    from alignet_app.widgets import theme

    prefs = settings.load_preferences()
    assert prefs.theme == "system"
    prefs.theme = "dark"
    settings.save_preferences(prefs)
    assert settings.load_preferences().theme == "dark"

    app = QApplication.instance()
    style = app.style().name()
    curves = LiveCurves(("Losses",), columns=1)
    qtbot.addWidget(curves)
    curves.load_history({"step": np.arange(1.0, 11.0), "loss": np.linspace(1, 0.1, 10)})
    try:
        theme.apply_theme("dark")
        assert theme.is_dark()
        theme.restyle(curves)
        canvas = curves.groups["Losses"].canvas
        assert canvas.backgroundBrush().color().name().upper() == theme.DARK.background
        # text colours that were unreadable on dark get lighter
        assert theme.readable("#0072B2") != "#0072B2"
    finally:
        app.setStyle(style)
        app.setPalette(QPalette())
    theme.restyle(curves)
    assert not theme.is_dark()
    assert canvas.backgroundBrush().color().name().upper() == theme.LIGHT.background
