"""Live training curves (pyqtgraph) fed with the engine's :class:`LossBatch` events.

Design (design.md, "Threading and jobs"): the job yields a batch of points every ~200 ms;
each series appends them to a growing numpy buffer (amortised doubling, no per-point Python
objects) and a 25 Hz timer redraws only the series that received points since the last
redraw. pyqtgraph's peak downsampling and clip-to-view keep a redraw cheap however long the
run is, so the GUI thread never falls behind the engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QVBoxLayout, QWidget

from alignet_engine.jobs import LossBatch

log = logging.getLogger(__name__)


#: colours that stay readable on white (matplotlib's tab10)
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

#: redraw interval of the live plots, ms (25 Hz)
REDRAW_MS = 40


class SeriesBuffer:
    """x / y float64 buffers that grow by doubling; :meth:`view` returns the filled part."""

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.n = 0

    def append(self, x: np.ndarray, y: np.ndarray) -> None:
        k = len(x)
        if self.n + k > len(self._x):
            capacity = max(2 * len(self._x), self.n + k)
            # copy into fresh arrays: views handed to pyqtgraph earlier keep the old memory
            self._x = np.concatenate([self._x[: self.n], np.empty(capacity - self.n)])
            self._y = np.concatenate([self._y[: self.n], np.empty(capacity - self.n)])
        self._x[self.n : self.n + k] = x
        self._y[self.n : self.n + k] = y
        self.n += k

    def clear(self) -> None:
        self.n = 0

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x[: self.n], self._y[: self.n]


def default_group(name: str) -> str:
    """The plot a distillation curve belongs in (unknown names get a plot of their own)."""
    if name in ("loss", "triplet", "preserve", "val_loss", "train_loss"):
        return "Losses"
    if name == "agreement" or name.startswith("val_"):
        return "Agreement (train batch, validation)"
    if name == "lr":
        return "Learning rate"
    if name == "grad_norm":
        return "Gradient norm (before clipping)"
    if name == "drift":
        return "Drift from θ₀ (‖θ − θ₀‖ / ‖θ₀‖)"
    return "Other"


#: series drawn dashed, so that one equal to another (``triplet`` is ``loss`` without the
#: preservation term) stays visible on top of it
DASHED = frozenset({"triplet"})


class _TimedCanvas(pg.GraphicsLayoutWidget):
    """A GraphicsLayoutWidget that remembers how long its last paint took (seconds)."""

    last_paint_s = 0.0

    def paintEvent(self, event: Any) -> None:
        start = time.perf_counter()
        super().paintEvent(event)
        self.last_paint_s = time.perf_counter() - start


#: x-array names of stored histories (not curves themselves)
X_KEYS = ("step", "val_step", "epoch")


class LiveCurves(QWidget):
    """One pyqtgraph plot per group of series, fed live (:meth:`add_batch`) or from a run.

    Parameters
    ----------
    groups : the plots to create up front, in order (more appear for unknown groups).
    group_of : series name → group title.
    x_label : the x axis label of every plot.
    columns : plots per row.
    log_groups : groups whose y axis starts in log scale.
    legend_bottom : groups whose legend sits bottom right (curves that rise toward 1).
    """

    def __init__(
        self,
        groups: Iterable[str] = (),
        *,
        group_of: Callable[[str], str] = default_group,
        x_label: str = "step",
        columns: int = 2,
        log_groups: Iterable[str] = (),
        legend_bottom: Iterable[str] = (),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.group_of = group_of
        self.x_label = x_label
        self.columns = columns
        self._log_groups = set(log_groups)
        self._legend_bottom = set(legend_bottom)
        self.canvas = _TimedCanvas()
        self._last_redraw = 0.0
        self.canvas.setBackground("w")
        self.canvas.setMinimumHeight(260)
        self.log_y = QCheckBox("log y")
        self.log_y.setToolTip("Logarithmic y axes (useful for losses spanning decades)")
        self.log_y.toggled.connect(self._set_log)
        bar = QHBoxLayout()
        bar.addStretch(1)
        bar.addWidget(self.log_y)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)
        self.plots: dict[str, pg.PlotItem] = {}
        self.buffers: dict[str, SeriesBuffer] = {}
        self.items: dict[str, pg.PlotDataItem] = {}
        self._dirty: set[str] = set()
        self.redraws = 0  # timer redraws that drew something (tests, diagnostics)
        for group in groups:
            self._plot(group)
        # Redraw at 25 Hz, not per batch: batches can arrive in bursts (e.g. a resumed run's
        # restored history), and a redraw per batch would queue up behind them.
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()

    # ----------------------------------------------------------------- structure
    def _plot(self, group: str) -> pg.PlotItem:
        plot = self.plots.get(group)
        if plot is not None:
            return plot
        index = len(self.plots)
        plot = self.canvas.addPlot(row=index // self.columns, col=index % self.columns)
        plot.setTitle(group, color="#202020", size="10pt")
        plot.setLabel("bottom", self.x_label)
        for axis in ("left", "bottom"):
            plot.getAxis(axis).setPen("#606060")
            plot.getAxis(axis).setTextPen("#202020")
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        offset = (-5, -30) if group in self._legend_bottom else (-5, 5)
        legend = plot.addLegend(offset=offset, labelTextColor="#202020")
        legend.setBrush(pg.mkBrush(255, 255, 255, 200))
        if group in self._log_groups or self.log_y.isChecked():
            plot.setLogMode(y=True)
        self.plots[group] = plot
        return plot

    def _series(self, name: str) -> SeriesBuffer:
        buffer = self.buffers.get(name)
        if buffer is None:
            buffer = self.buffers[name] = SeriesBuffer()
            plot = self._plot(self.group_of(name))
            colour = PALETTE[len(plot.listDataItems()) % len(PALETTE)]
            # validation curves have few points: mark them so a single point is visible
            sparse = name.startswith("val_")
            self.items[name] = plot.plot(
                [],
                [],
                name=name,
                # width 1 (cosmetic): wider pens go through Qt's slow stroker, which made a
                # redraw about 2× slower
                pen=pg.mkPen(
                    colour,
                    width=1,
                    style=Qt.PenStyle.DashLine if name in DASHED else Qt.PenStyle.SolidLine,
                ),
                symbol="o" if sparse else None,
                symbolSize=6,
                symbolBrush=colour,
                symbolPen=colour,
            )
        return buffer

    # ----------------------------------------------------------------- data
    def add_batch(self, batch: LossBatch) -> None:
        """Append a batch's points; the next timer tick draws them."""
        x = np.asarray(batch.steps, dtype=np.float64)
        for name, values in batch.values.items():
            self._series(name).append(x, np.asarray(values, dtype=np.float64))
            self._dirty.add(name)

    def add_points(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        """Append points to one series (drawn at the next timer tick)."""
        self._series(name).append(np.asarray(x, np.float64), np.asarray(y, np.float64))
        self._dirty.add(name)

    def load_history(self, history: Mapping[str, np.ndarray]) -> None:
        """Replace every curve by a finished run's stored history (``name → (n,)`` arrays).

        ``val_*`` curves are drawn against ``val_step``, the others against ``step`` or
        ``epoch`` (as :func:`alignet_engine.stages.summaries.stored_history` returns them).
        """
        self.clear()
        for name, values in history.items():
            if name in X_KEYS:
                continue
            x = history.get("val_step") if name.startswith("val_") else None
            if x is None:
                x = history.get("step", history.get("epoch"))
            if x is None or len(x) != len(values):
                continue  # a curve without its x array cannot be placed
            self.add_points(name, x, values)
        self._redraw(force=True)

    def clear(self) -> None:
        """Empty every series (the plots and legends stay)."""
        for name, buffer in self.buffers.items():
            buffer.clear()
            self._dirty.add(name)
        self._redraw(force=True)

    def point_count(self, name: str | None = None) -> int:
        """Points received by series ``name`` (all series when None)."""
        if name is not None:
            return self.buffers[name].n if name in self.buffers else 0
        return sum(b.n for b in self.buffers.values())

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The (x, y) points of series ``name`` (views; do not modify)."""
        return self.buffers[name].view()

    # ----------------------------------------------------------------- drawing
    def _redraw(self, *, force: bool = False) -> None:
        if not self._dirty:
            return
        # Painting five plots is what costs the GUI thread time (tens of ms, more on a
        # loaded CPU; setData itself is cheap): keep painting under ~20 % of the thread by
        # waiting at least 4× the last paint's duration between redraws.
        now = time.perf_counter()
        if not force and now - self._last_redraw < 4 * self.canvas.last_paint_s:
            return
        self._last_redraw = now
        dirty, self._dirty = self._dirty, set()
        for name in dirty:
            x, y = self.buffers[name].view()
            self.items[name].setData(x, y)
        self.redraws += 1

    def _set_log(self, on: bool) -> None:
        for group, plot in self.plots.items():
            plot.setLogMode(y=on or group in self._log_groups)
