"""Bar charts of the evaluation table: one chart per judgment set / matrix.

Each chart shows one bar per representation (consistent colours), its 95% CI as an error
bar, the human noise ceiling as a dashed line and chance as a dotted line. Every number comes
from :class:`alignet_engine.views.evaluation.EvaluationTable`; the widgets only draw them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from alignet_app.widgets import figure_export, theme
from alignet_engine.stages.evaluate_all import ROLES
from alignet_engine.views.evaluation import EvalRow, EvaluationTable

#: Okabe–Ito colours (colour-blind safe): teachers blue, students orange; aligned = darker.
ROLE_COLOURS: dict[str, str] = {
    role: colour for role, colour in theme.STYLE["evaluation"].items() if role != "extra"
}
_EXTRA_COLOURS: tuple[str, ...] = tuple(theme.STYLE["evaluation"]["extra"])


def role_colour(table: EvaluationTable, role: str) -> str:
    """The colour of ``role`` (extra representations cycle through spare colours)."""
    if role in ROLE_COLOURS:
        return ROLE_COLOURS[role]
    extras = [c for c in table.columns if c not in ROLES]
    return _EXTRA_COLOURS[extras.index(role) % len(_EXTRA_COLOURS)] if role in extras else "#777"


class EvalChart(pg.PlotWidget):
    """One row of the table as bars with CIs, a dashed noise ceiling and a dotted chance line.

    ``bars`` holds the BarGraphItem and ``roles`` the representation of each bar (in x order),
    so tests can read back what is drawn.
    """

    def __init__(self, table: EvaluationTable, row: EvalRow, parent: QWidget | None = None):
        super().__init__(parent)
        tc = theme.colours()
        theme.style_canvas(self, tc)
        ceiling_pen = pg.mkPen(tc.muted, width=1.5, style=Qt.PenStyle.DashLine)
        chance_pen = pg.mkPen(tc.axis, width=1, style=Qt.PenStyle.DotLine)
        self.row = row
        self.setMinimumSize(360, 260)
        plot = self.getPlotItem()
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.setTitle(row.title, color=tc.foreground, size="10pt")
        plot.setLabel("left", "accuracy" if row.measure == "accuracy" else "Spearman ρ")
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen(tc.axis)
            plot.getAxis(axis).setTextPen(tc.foreground)
        self.roles = [c for c in table.columns if c in row.cells]
        cells = [row.cells[r] for r in self.roles]
        self.cells = cells
        figure_export.install(self, lambda: _chart_csv(self), name=row.title)
        xs = list(range(len(cells)))
        # A missing value (NaN) is drawn as an empty slot rather than a bar of height 0.
        heights = [c.value if math.isfinite(c.value) else 0.0 for c in cells]
        brushes = [pg.mkBrush(role_colour(table, r)) for r in self.roles]
        self.bars = pg.BarGraphItem(
            x=np.array(xs, dtype=float),
            height=np.array(heights),
            width=0.65,
            brushes=brushes,
            pen=pg.mkPen(tc.foreground, width=0.8),
        )
        plot.addItem(self.bars)
        ci = [(i, c) for i, c in enumerate(cells) if math.isfinite(c.err_minus + c.err_plus)]
        if ci:
            self.errors = pg.ErrorBarItem(
                # ErrorBarItem needs arrays (it does array arithmetic internally)
                x=np.array([i for i, _ in ci], dtype=float),
                y=np.array([c.value for _, c in ci]),
                top=np.array([c.err_plus for _, c in ci]),
                bottom=np.array([c.err_minus for _, c in ci]),
                beam=0.18,
                pen=pg.mkPen(tc.foreground, width=1.5),
            )
            plot.addItem(self.errors)
        for i, c in enumerate(cells):
            if math.isfinite(c.value):
                label = pg.TextItem(f"{c.value:.3f}", color=tc.foreground, anchor=(0.5, 1.0))
                label.setPos(i, c.ci_high if math.isfinite(c.ci_high) else c.value)
                plot.addItem(label)
            if c.is_stale:
                mark = pg.TextItem("stale", color=tc.stale, anchor=(0.5, 0.0))
                mark.setPos(i, row.y_range[0])
                plot.addItem(mark)
        self.ceiling_line: pg.InfiniteLine | None = None
        if row.noise_ceiling is not None:
            self.ceiling_line = pg.InfiniteLine(
                pos=row.noise_ceiling,
                angle=0,
                pen=ceiling_pen,
                label=f"ceiling {row.noise_ceiling:.3f}",
                labelOpts={"position": 0.98, "color": tc.muted, "anchors": [(1, 1), (1, 1)]},
            )
            plot.addItem(self.ceiling_line)
        if row.chance:
            chance = pg.InfiniteLine(
                pos=row.chance,
                angle=0,
                pen=chance_pen,
                label=f"chance {row.chance:.3f}",
                labelOpts={"position": 0.98, "color": tc.axis, "anchors": [(1, 1), (1, 1)]},
            )
            plot.addItem(chance)
        ticks = [(i, table.labels[r].replace(" ", "\n", 1)) for i, r in enumerate(self.roles)]
        plot.getAxis("bottom").setTicks([ticks])
        plot.getAxis("bottom").setHeight(40)
        # Extra room on the right so the ceiling / chance labels do not cover a bar.
        plot.setXRange(-0.6, len(cells) + 0.5, padding=0)
        # Head-room above the range for the value labels over the CI bars.
        plot.setYRange(row.y_range[0], row.y_range[1] + 0.08, padding=0)


class EvalLegend(QWidget):
    """A row of colour swatches naming the representations (shared by all charts)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)

    def set_table(self, table: EvaluationTable) -> None:
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        for role in table.columns:
            swatch = QLabel(
                f"<span style='color:{role_colour(table, role)}; font-size:14pt'>■</span> "
                f"{table.labels[role]}"
            )
            self._layout.addWidget(swatch)
        self._layout.addWidget(
            QLabel(
                f"<span style='color:{theme.colours().muted}'>- - -</span> noise ceiling &nbsp; "
                f"<span style='color:{theme.colours().axis}'>· · ·</span> chance"
            )
        )
        self._layout.addStretch(1)


def _chart_csv(chart: EvalChart) -> str:
    return figure_export.rows_csv(
        ("representation", "value", "ci_minus", "ci_plus"),
        (
            (r, c.value, c.err_minus, c.err_plus)
            for r, c in zip(chart.roles, chart.cells, strict=True)
        ),
    )


class EvalCharts(QWidget):
    """The legend and one :class:`EvalChart` per table row, two per line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.legend = EvalLegend()
        self.grid = QGridLayout()
        self.empty = QLabel("No evaluations yet: run “Evaluate all” or a single evaluation.")
        self.empty.setStyleSheet("color: palette(placeholder-text);")
        layout = QVBoxLayout(self)
        layout.addWidget(self.legend)
        layout.addWidget(self.empty)
        layout.addLayout(self.grid)
        layout.addStretch(1)
        self.charts: dict[str, EvalChart] = {}
        self.table: EvaluationTable | None = None

    def set_table(self, table: EvaluationTable | None) -> None:
        for chart in self.charts.values():
            self.grid.removeWidget(chart)
            chart.deleteLater()
        self.charts = {}
        self.table = table
        self.empty.setVisible(table is None or not table.rows)
        self.legend.setVisible(table is not None and bool(table.rows))
        if table is None:
            return
        self.legend.set_table(table)
        for i, row in enumerate(table.rows):
            chart = EvalChart(table, row)
            chart.setMinimumHeight(300)
            self.grid.addWidget(chart, i // 2, i % 2)
            self.charts[row.name] = chart


def render_chart_pngs(
    table: EvaluationTable, folder: str | Path, size: tuple[int, int] = (640, 420)
) -> dict[str, Path]:
    """Render one chart per row to ``folder/<index>.png`` (off screen); returns name → path.

    Fresh charts of a fixed size are drawn, so the PNGs do not depend on the window's layout.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for i, row in enumerate(table.rows):
        chart = EvalChart(table, row)
        chart.resize(*size)
        path = folder / f"chart_{i}.png"
        if not chart.grab().save(str(path)):
            raise OSError(f"could not render the chart of {row.name} to {path}")
        chart.deleteLater()
        out[row.name] = path
    return out
