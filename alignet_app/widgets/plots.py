"""Live training curves (pyqtgraph) fed with the engine's :class:`LossBatch` events.

Design (design.md, "Threading and jobs"): the job yields a batch of points every ~200 ms;
each series appends them to a growing numpy buffer (amortised doubling, no per-point Python
objects). What is *drawn* is a bounded min/max decimation of each series
(:class:`alignet_engine.views.curves.MinMaxDecimator`, ≤ ~2k points whatever the run's length), so
a 100k-step run paints as fast as a 100-step one. A 25 Hz timer redraws one plot per tick
(round robin over the plots with new points), so one paint never covers the whole canvas:
painting, not data handling, is what stalls the event loop (issue 10 item 11).

What a reader needs for a figure: each plot has a legend outside its data (a row above it),
named axes, the best step marked, an x-axis spanning the planned steps (:meth:`set_planned`),
TensorBoard-style EMA smoothing, log-y, hover readout, and a right-click menu to save the
figure (PNG / SVG) or copy the data (CSV). A series identical to another (``triplet`` equals
``loss`` when nothing else enters the loss) is drawn once and says so in the legend; a series
with no finite value (``local_loss`` when α = 0) gets no legend entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QGraphicsItem,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSlider,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from alignet_app.widgets import figure_export, theme
from alignet_engine.jobs import LossBatch
from alignet_engine.views.curves import EmaStream, MinMaxDecimator

log = logging.getLogger(__name__)

#: series colours (Okabe–Ito, colour-blind safe); kept under this name for the other pages
PALETTE = theme.OKABE_ITO

#: redraw interval of the live plots, ms (25 Hz); each tick repaints at most one plot
REDRAW_MS = 40
#: a plot narrower than this (px) reads badly: fewer plots per row below it
MIN_PLOT_WIDTH = 220

#: what each curve is called in a legend (unknown names: underscores become spaces)
LABELS: dict[str, str] = {
    "loss": "total loss",
    "triplet": "triplet loss",
    "preserve": "pull to θ₀",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "local_loss": "local-structure loss",
    "penalty": "regularisation penalty",
    "agreement": "training batch",
    "val_agreement": "held-out pool triplets",
    "lr": "learning rate",
    "grad_norm": "‖gradient‖₂",
    "drift": "‖θ − θ₀‖ / ‖θ₀‖",
}

#: y-axis names (with units) of the distillation and transform groups
Y_LABELS: dict[str, str] = {
    "Losses": "loss (nats)",
    "Agreement (train batch, validation)": "agreement (fraction)",
    "Learning rate": "learning rate η",
    "Gradient norm (before clipping)": "gradient L2 norm",
    "Drift from θ₀ (‖θ − θ₀‖ / ‖θ₀‖)": "relative distance",
    "Transform loss": "loss (nats)",
    "Other loss terms": "loss (nats)",
}


def label_of(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name.startswith("val_human"):
        return "human validation " + name.removeprefix("val_human").strip("_").replace("_", " ")
    return name.replace("_", " ")


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
            # copy into fresh arrays: views handed out earlier keep the old memory
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


class _PaintClock:
    """How long the plots' paints took (seconds): the last one and the longest."""

    last_paint_s = 0.0
    max_paint_s = 0.0

    def add(self, seconds: float) -> None:
        self.last_paint_s = seconds
        self.max_paint_s = max(self.max_paint_s, seconds)


class _TimedCanvas(pg.GraphicsLayoutWidget):
    """One plot's own widget, timing its paints: a redraw of one plot repaints only it."""

    def __init__(self, clock: _PaintClock) -> None:
        super().__init__()
        self.clock = clock

    def paintEvent(self, event: Any) -> None:
        start = time.perf_counter()
        super().paintEvent(event)
        self.clock.add(time.perf_counter() - start)


#: x-array names of stored histories (not curves themselves)
X_KEYS = ("step", "val_step", "epoch")


class _Series:
    """One curve: its full data, what is drawn of it, and its plot items."""

    def __init__(self, name: str, group: str, colour: str, weight: float) -> None:
        self.name = name
        self.group = group
        self.colour = colour
        self.data = SeriesBuffer()
        self.decimator = MinMaxDecimator()
        self.smooth = SeriesBuffer()
        self.smooth_decimator = MinMaxDecimator()
        self.ema = EmaStream(weight)
        self.item: pg.PlotDataItem | None = None  # the curve (smoothed when smoothing)
        self.raw_item: pg.PlotDataItem | None = None  # the faint raw curve under it
        self.in_legend = False
        self.finite = False
        self.same_as: str | None = None  # identical to this other series so far
        self.sparse = name.startswith("val_")

    def append(self, x: np.ndarray, y: np.ndarray) -> None:
        self.data.append(x, y)
        if self.ema.weight > 0:
            self.smooth.append(x, self.ema.push(y))
        self.finite = self.finite or bool(np.isfinite(y).any())

    def set_weight(self, weight: float) -> None:
        self.ema = EmaStream(weight)
        self.smooth.clear()
        self.smooth_decimator.reset()
        if weight > 0:
            x, y = self.data.view()
            self.smooth.append(x, self.ema.push(y))

    def clear(self) -> None:
        self.data.clear()
        self.decimator.reset()
        self.set_weight(self.ema.weight)
        self.finite = False
        self.same_as = None

    def drawn(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
        """(main curve points, faint raw points or None), decimated."""
        x, y = self.data.view()
        self.decimator.update(x, y)
        raw = self.decimator.points(x, y)
        if self.ema.weight <= 0 or self.sparse:
            return raw, None
        sx, sy = self.smooth.view()
        self.smooth_decimator.update(sx, sy)
        return self.smooth_decimator.points(sx, sy), raw


class _Group:
    """One plot: its title and legend (Qt labels above the data, never over it), the plot,
    and the best-step and hover lines."""

    def __init__(self, title: str, clock: _PaintClock) -> None:
        self.title = title
        self.widget = QWidget()
        self.heading = QLabel(f"<b>{title}</b>")
        self.heading.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        # room for one line of entries from the start: a legend appearing later would move
        # the plot, and the move repaints it whole
        self.legend.setMinimumHeight(self.legend.fontMetrics().lineSpacing())
        self.entries: list[str] = []
        self.canvas = _TimedCanvas(clock)
        self.canvas.setMinimumSize(180, 140)
        self.plot = pg.PlotItem()
        self.canvas.ci.addItem(self.plot, row=0, col=0)
        box = QVBoxLayout(self.widget)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addWidget(self.heading)
        box.addWidget(self.legend)
        box.addWidget(self.canvas, 1)
        self.best = pg.InfiniteLine(angle=90, movable=False)
        self.best.setVisible(False)
        self.plot.addItem(self.best, ignoreBounds=True)
        self.hover = pg.InfiniteLine(angle=90, movable=False)
        self.hover.setVisible(False)
        self.plot.addItem(self.hover, ignoreBounds=True)
        self.series: list[str] = []
        self.same: tuple[str | None, ...] = ()  # the same_as of each series at the last legend


class LiveCurves(QWidget):
    """One pyqtgraph plot per group of series, fed live (:meth:`add_batch`) or from a run.

    Parameters
    ----------
    groups : the plots' order (a plot appears once one of its series has a point).
    group_of : series name → group title.
    x_label : the x axis label of every plot (with its unit).
    columns : plots per row.
    log_groups : groups whose y axis starts in log scale.
    best : (series, "max" | "min"): the step where it is best is marked in every plot.
    empty_text : shown instead of empty plots.
    legend_bottom : accepted for compatibility (legends now sit above the plots).
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
        best: tuple[str, str] | None = None,
        empty_text: str = "No curves yet.",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        del legend_bottom
        self.group_of = group_of
        self.x_label = x_label
        self.columns = columns
        self.best_spec = best
        self.best_x: float | None = None
        self._order = list(groups)
        self._log_groups = set(log_groups)
        self._planned: float | None = None
        self.colours = theme.colours()
        # one pyqtgraph widget per plot (in a grid): a redraw repaints one plot's widget only
        self.clock = _PaintClock()
        self.canvas = QWidget()
        self.canvas.setMinimumHeight(260)
        outer = QVBoxLayout(self.canvas)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.grid = QGridLayout()
        outer.addLayout(self.grid, 1)
        self.x_axis_label = QLabel(f"x axis of every plot: {x_label}")
        self.x_axis_label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        outer.addWidget(self.x_axis_label)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)
        self.empty = QLabel(empty_text)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.canvas)
        self.log_y = QCheckBox("log y")
        self.log_y.setToolTip("Logarithmic y axes (useful for losses spanning decades)")
        self.log_y.toggled.connect(self._set_log)
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setFixedWidth(120)
        self.smoothing.setToolTip(
            "Exponential moving average of the curves, as in TensorBoard: 0 = raw, 0.99 = "
            "averaged over ~100 points. The raw curve stays drawn faintly behind."
        )
        self.smoothing_label = QLabel()
        self.smoothing.valueChanged.connect(self._set_smoothing)
        self.readout = QLabel()
        self.readout.setObjectName("hover")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bar = QHBoxLayout()
        bar.addWidget(self.readout, 1)
        bar.addWidget(QLabel("smoothing"))
        bar.addWidget(self.smoothing)
        bar.addWidget(self.smoothing_label)
        bar.addWidget(self.log_y)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        self._set_smoothing(0)
        self.groups: dict[str, _Group] = {}
        self._series: dict[str, _Series] = {}
        self._dirty: set[str] = set()  # groups with points not drawn yet
        self._shown: list[str] = []  # the plots laid out, in order
        self._cols = 0
        self._next = 0
        self._last_redraw = 0.0
        self.redraws = 0  # timer redraws that drew something (tests, diagnostics)
        figure_export.install(self, self.data_csv, figure=self.canvas, name="curves")
        # The plots named up front exist from the start (creating and laying out a plot
        # takes ~100 ms: not while training); a plot without data is hidden, not drawn empty.
        for title in self._order:
            self._group(title)
        # Redraw at 25 Hz, one plot per tick, not per batch: batches can arrive in bursts
        # (e.g. a resumed run's restored history), and a redraw per batch would queue up.
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()

    # ----------------------------------------------------------------- compatibility
    @property
    def plots(self) -> dict[str, pg.PlotItem]:
        return {title: g.plot for title, g in self.groups.items()}

    @property
    def items(self) -> dict[str, pg.PlotDataItem]:
        return {n: s.item for n, s in self._series.items() if s.item is not None}

    @property
    def buffers(self) -> dict[str, SeriesBuffer]:
        return {n: s.data for n, s in self._series.items()}

    # ----------------------------------------------------------------- structure
    def _group(self, title: str) -> _Group:
        group = self.groups.get(title)
        if group is not None:
            return group
        group = _Group(title, self.clock)
        group.canvas.scene().sigMouseMoved.connect(
            lambda pos, title=title: self._on_mouse(title, pos)
        )
        # right clicks go to our menu (save figure, copy data), not pyqtgraph's
        group.canvas.setContextMenuPolicy(Qt.ContextMenuPolicy.NoContextMenu)
        plot = group.plot
        # the x axis is named once under all the plots (x_label): a label per plot took
        # ~20 px of each small plot and was clipped on laptop screens
        plot.setLabel("left", Y_LABELS.get(title, ""))
        # No grid: pyqtgraph draws it as part of the axis items, so every change of the
        # data area would repaint the axes' text too (10 ms per axis offscreen).
        for name in ("left", "bottom"):
            axis = plot.getAxis(name)
            axis.enableAutoSIPrefix(False)  # its relabelling re-laid the label out per range
            # the axis is rendered once per range change, then blitted
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        plot.enableAutoRange(axis="y", enable=False)  # sticky range: see _fit_y
        plot.setMenuEnabled(False)  # our right-click menu (save figure, copy data) instead
        if title in self._log_groups or self.log_y.isChecked():
            plot.setLogMode(y=True)
        if self._planned is not None:
            plot.setXRange(0, self._planned, padding=0.02)
        self.groups[title] = group
        if title not in self._order:
            self._order.append(title)
        self._style(group)
        self._relayout()
        return group

    def _style(self, group: _Group) -> None:
        c = self.colours
        group.canvas.setBackground(c.background)
        theme.style_plot(group.plot, c)
        group.best.setPen(pg.mkPen(c.muted, width=1, style=Qt.PenStyle.DashLine))
        group.hover.setPen(pg.mkPen(c.axis, width=1, style=Qt.PenStyle.DotLine))

    def _relayout(self) -> None:
        """Place the existing plots in ``self._order``; the last row's last plot spans the
        free columns (no empty slot)."""
        shown = [t for t in self._order if t in self.groups and self._has_data(t)]
        if not shown:  # before the first point: every expected plot, ready to draw
            shown = [t for t in self._order if t in self.groups]
        cols = self._fitting_columns(len(shown))
        if (shown, cols) == (self._shown, self._cols):
            return  # moving the widgets would repaint every plot for nothing
        self._shown, self._cols = shown, cols
        for g in self.groups.values():
            self.grid.removeWidget(g.widget)
            g.widget.hide()
        for i, title in enumerate(shown):
            row, col = divmod(i, cols)
            span = cols - col if i == len(shown) - 1 else 1
            widget = self.groups[title].widget
            self.grid.addWidget(widget, row, col, 1, span)
            widget.show()
        for c in range(self.grid.columnCount()):
            self.grid.setColumnStretch(c, 1 if c < cols else 0)

    def _fitting_columns(self, n: int) -> int:
        """Plots per row: ``columns``, fewer when the widget is too narrow for them."""
        width = self.width() if self.isVisible() else 10_000
        return max(1, min(self.columns, n, width // MIN_PLOT_WIDTH))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        shown = len(self._shown)
        if shown and self._fitting_columns(shown) != self._cols:
            self._relayout()

    def _get(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            title = self.group_of(name)
            index = sum(1 for s in self._series.values() if s.group == title)
            weight = self.smoothing.value() / 100.0
            series = _Series(name, title, self.colours.series(index), weight)
            self._series[name] = series
        return series

    def _ensure_item(self, s: _Series) -> None:
        """Create the series' plot items once it has a finite point (no empty legend rows)."""
        if s.item is not None or not s.finite:
            return
        group = self._group(s.group)
        if group.widget.isHidden():
            self._relayout()
        pen = pg.mkPen(s.colour, width=1)  # width 1: wider pens take Qt's slow stroker
        s.item = pg.PlotDataItem(
            [],
            [],
            pen=pen,
            symbol="o" if s.sparse else None,
            symbolSize=6,
            symbolBrush=s.colour,
            symbolPen=s.colour,
        )
        faint = pg.mkColor(s.colour)
        faint.setAlpha(70)
        s.raw_item = pg.PlotDataItem([], [], pen=pg.mkPen(faint, width=1))
        s.raw_item.setVisible(False)
        group.plot.addItem(s.raw_item)
        group.plot.addItem(s.item)
        group.series.append(s.name)
        self._update_legend(group)

    def _update_legend(self, group: _Group) -> None:
        group.entries = []
        parts = []
        for name in group.series:
            s = self._series[name]
            if s.item is None:
                continue
            text = label_of(name)
            if s.same_as is not None:
                text += f" (= {label_of(s.same_as)}: drawn once)"
            group.entries.append(text)
            mark = "●" if s.sparse else "━━"
            parts.append(f"<span style='color:{s.colour}'>{mark}</span>&nbsp;{text}")
            s.in_legend = True
        group.legend.setText(" &nbsp; ".join(parts))

    # ----------------------------------------------------------------- data
    def add_batch(self, batch: LossBatch) -> None:
        """Append a batch's points; a later timer tick draws them."""
        x = np.asarray(batch.steps, dtype=np.float64)
        values = {n: np.asarray(v, dtype=np.float64) for n, v in batch.values.items()}
        for name, y in values.items():
            self.add_points(name, x, y)
        self._check_duplicates(values)

    def add_points(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        """Append points to one series (drawn at a later timer tick)."""
        s = self._get(name)
        s.append(np.asarray(x, np.float64), np.asarray(y, np.float64))
        self._dirty.add(s.group)

    def _check_duplicates(self, values: Mapping[str, np.ndarray]) -> None:
        """Track series equal to an earlier one of the same plot in every batch so far."""
        names = list(values)
        for i, name in enumerate(names):
            s = self._series[name]
            first = s.data.n == len(values[name])
            if s.same_as is not None and s.same_as in values:
                if not np.array_equal(values[name], values[s.same_as], equal_nan=True):
                    s.same_as = None
                    self._dirty.add(s.group)
            elif first:
                for other in names[:i]:
                    if self._series[other].group == s.group and np.array_equal(
                        values[name], values[other], equal_nan=True
                    ):
                        s.same_as = other
                        break

    def load_history(self, history: Mapping[str, np.ndarray], planned: float | None = None) -> None:
        """Replace every curve by a finished run's stored history (``name → (n,)`` arrays).

        ``val_*`` curves are drawn against ``val_step``, the others against ``step`` or
        ``epoch`` (as :func:`alignet_engine.views.summaries.stored_history` returns them).
        ``planned``: the x-axis spans 0..planned (default: the data).
        """
        self.clear()
        self.set_planned(planned)
        values: dict[str, np.ndarray] = {}
        for name, y in history.items():
            if name in X_KEYS:
                continue
            x = history.get("val_step") if name.startswith("val_") else None
            if x is None:
                x = history.get("step", history.get("epoch"))
            if x is None or len(x) != len(y):
                continue  # a curve without its x array cannot be placed
            self.add_points(name, x, y)
            values[name] = np.asarray(y, np.float64)
        self._check_duplicates(values)
        # the timer draws the plots one per tick (a finished run's five plots at once would
        # stall the event loop for a few hundred ms)
        self._relayout()  # plots without data (e.g. no drift in an older run) are hidden
        if any(s.finite for s in self._series.values()):
            self.stack.setCurrentWidget(self.canvas)

    def clear(self, *, live: bool = False) -> None:
        """Remove every series. ``live``: a run starts, show the (empty) plots now, so the
        first points do not pay for laying the canvas out; else show the empty text."""
        for g in self.groups.values():
            for name in g.series:
                s = self._series[name]
                for item in (s.item, s.raw_item):
                    if item is not None:
                        g.plot.removeItem(item)
            g.series.clear()
            g.legend.setText("")
            g.entries = []
            g.best.setVisible(False)
            g.hover.setVisible(False)
        self._series.clear()
        self._dirty.clear()
        self.best_x = None
        self.readout.setText("")
        self._relayout()
        self.stack.setCurrentWidget(self.canvas if live else self.empty)

    def _has_data(self, title: str) -> bool:
        return any(s.finite for s in self._series.values() if s.group == title)

    def set_planned(self, steps: float | None) -> None:
        """Fix every x-axis to 0..``steps`` (the run's planned length); None: follow the data."""
        self._planned = float(steps) if steps else None
        for g in self.groups.values():
            if self._planned is None:
                g.plot.enableAutoRange(axis="x")
            else:
                g.plot.setXRange(0, self._planned, padding=0.02)

    def point_count(self, name: str | None = None) -> int:
        """Points received by series ``name`` (all series when None)."""
        if name is not None:
            return self._series[name].data.n if name in self._series else 0
        return sum(s.data.n for s in self._series.values())

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The (x, y) points of series ``name`` (views; do not modify)."""
        return self._series[name].data.view()

    def drawn_points(self, name: str) -> int:
        """Points handed to pyqtgraph for series ``name`` (0 if hidden or not drawn yet)."""
        s = self._series.get(name)
        if s is None or s.item is None or not s.item.isVisible():
            return 0
        x, _ = s.item.getData()
        return 0 if x is None else len(x)

    def visible_names(self) -> list[str]:
        """Series drawn (visible and with a legend entry)."""
        return [n for n, s in self._series.items() if s.item is not None and s.item.isVisible()]

    def legend_labels(self, group: str) -> list[str]:
        g = self.groups.get(group)
        return [] if g is None else list(g.entries)

    def data_csv(self) -> str:
        """Every series' full data (not the decimated drawing) as CSV."""
        return figure_export.series_csv(
            {n: s.data.view() for n, s in self._series.items()}, x_name=self.x_label
        )

    # ----------------------------------------------------------------- drawing
    def redraw_all(self) -> None:
        for title in list(self._dirty):
            self._draw_group(title)
        self._dirty.clear()

    def _redraw(self) -> None:
        if not self._dirty:
            return
        # Keep painting under ~20 % of the GUI thread: wait at least 4× the last paint.
        now = time.perf_counter()
        if now - self._last_redraw < 4 * self.clock.last_paint_s:
            return
        self._last_redraw = now
        order = [t for t in self._order if t in self._dirty] + [
            t for t in self._dirty if t not in self._order
        ]
        title = order[self._next % len(order)]
        self._next += 1
        self._dirty.discard(title)
        self._draw_group(title)
        self.redraws += 1

    def _draw_group(self, title: str) -> None:
        names = [n for n, s in self._series.items() if s.group == title]
        legend_stale = False
        for name in names:
            s = self._series[name]
            was = s.item is not None
            self._ensure_item(s)
            if s.item is None:
                continue
            if not was:
                legend_stale = True
                self.stack.setCurrentWidget(self.canvas)
            (x, y), raw = s.drawn()
            s.item.setData(x, y)
            s.item.setVisible(s.same_as is None)
            assert s.raw_item is not None
            s.raw_item.setVisible(raw is not None and s.same_as is None)
            if raw is not None:
                s.raw_item.setData(*raw)
        group = self.groups.get(title)
        if group is None:
            return
        same = tuple(self._series[n].same_as for n in group.series)
        if legend_stale or same != group.same:
            group.same = same
            self._update_legend(group)
        self._fit_y(group)
        self._update_best()

    def _fit_y(self, group: _Group) -> None:
        """Widen the y range when drawn points leave it, narrow it when they use < 1/3 of it.

        A range that follows every new point would re-render the axis at every redraw; this
        one changes a few times per run, with 10 % headroom each time.
        """
        lo, hi = np.inf, -np.inf
        log = group.plot.getAxis("left").logMode
        for name in group.series:
            s = self._series[name]
            if s.item is None or not s.item.isVisible():
                continue
            _, y = s.item.getData()
            if y is None or not len(y):
                continue
            if log:
                y = np.log10(y[y > 0])
                if not len(y):
                    continue
            lo, hi = min(lo, float(np.min(y))), max(hi, float(np.max(y)))
        if not np.isfinite(lo):
            return
        span = max(hi - lo, abs(hi) * 1e-3, 1e-12)
        cur_lo, cur_hi = group.plot.getViewBox().viewRange()[1]
        if lo < cur_lo or hi > cur_hi or span < (cur_hi - cur_lo) / 3:
            group.plot.setYRange(lo - 0.1 * span, hi + 0.1 * span, padding=0)

    def _update_best(self) -> None:
        if self.best_spec is None:
            return
        name, mode = self.best_spec
        s = self._series.get(name)
        if s is None or not s.finite:
            return
        x, y = s.data.view()
        finite = np.isfinite(y)
        idx = np.flatnonzero(finite)
        best = idx[np.argmax(y[finite]) if mode == "max" else np.argmin(y[finite])]
        if self.best_x == float(x[best]):
            return  # moving the lines repaints every plot: only when the best step moves
        self.best_x = float(x[best])
        for title, g in self.groups.items():
            g.best.setValue(self.best_x)
            g.best.setVisible(True)
            if title == s.group:
                g.best.label = getattr(g.best, "label", None)
                if g.best.label is None:
                    g.best.label = pg.InfLineLabel(
                        g.best, position=0.08, anchors=[(0, 0), (0, 0)], color=self.colours.muted
                    )
                g.best.label.setFormat(f"best: {self.x_label.split(' ')[0]} {self.best_x:g}")

    def _set_log(self, on: bool) -> None:
        for title, g in self.groups.items():
            g.plot.setLogMode(y=on or title in self._log_groups)
            self._fit_y(g)

    def _set_smoothing(self, value: int) -> None:
        weight = value / 100.0
        self.smoothing_label.setText(f"{weight:.2f}")
        for s in getattr(self, "_series", {}).values():
            s.set_weight(weight)
            self._dirty.add(s.group)

    def _on_mouse(self, title: str, pos: Any) -> None:
        """Hover: a dotted line at the nearest step and every series' value there."""
        for other, g in self.groups.items():
            vb = g.plot.getViewBox()
            if other != title or not vb.sceneBoundingRect().contains(pos):
                g.hover.setVisible(False)
                continue
            at = vb.mapSceneToView(pos).x()
            parts = []
            for name in g.series:
                s = self._series[name]
                x, y = s.data.view()
                if not len(x) or s.same_as is not None:
                    continue
                i = int(np.clip(np.searchsorted(x, at), 0, len(x) - 1))
                if i > 0 and abs(x[i - 1] - at) < abs(x[i] - at):
                    i -= 1
                parts.append(f"{label_of(name)} {y[i]:.4g}")
                g.hover.setValue(float(x[i]))
            g.hover.setVisible(bool(parts))
            self.readout.setText(
                f"{title} at {self.x_label.split(' ')[0]} ≈ {at:.0f}: " + ", ".join(parts)
            )

    def apply_theme(self) -> None:
        """Re-read the palette's colours (after a light / dark switch)."""
        self.colours = theme.colours()
        for g in self.groups.values():
            self._style(g)
