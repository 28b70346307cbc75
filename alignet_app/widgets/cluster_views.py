"""Widgets of the Clusters page: the k diagnostics, the pool map and the typical-image grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QGridLayout,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from alignet_app.widgets import figure_export, theme
from alignet_app.widgets.thumbnails import ThumbnailCache
from alignet_engine.views.browse import ClusterOverview, PoolMap

INERTIA_COLOUR = theme.OKABE_ITO[0]
SILHOUETTE_COLOUR = theme.OKABE_ITO[3]

#: cluster colours: Okabe–Ito without black, then Paul Tol's "muted" set — 14 colours that
#: stay apart for colour-blind readers; beyond them the marker shape changes too
CLUSTER_COLOURS: tuple[str, ...] = tuple(theme.STYLE["clusters"]["colours"])
CLUSTER_SYMBOLS = ("o", "s", "t", "d", "star", "h")

#: points the map draws at most: a larger pool is shown as a fixed random subsample (the
#: status line says so); a scatter of 200 k points would take seconds per repaint
MAP_POINTS = 20_000
#: points added to the map per event-loop turn (a few ms of pyqtgraph's Python each)
MAP_CHUNK = 2_000


def cluster_colour(c: int, k: int = 0) -> Any:
    """The colour of cluster ``c`` (a QColor)."""
    return pg.mkColor(CLUSTER_COLOURS[int(c) % len(CLUSTER_COLOURS)])


def cluster_symbol(c: int) -> str:
    """The marker of cluster ``c``: a new shape each time the colours wrap round."""
    return CLUSTER_SYMBOLS[(int(c) // len(CLUSTER_COLOURS)) % len(CLUSTER_SYMBOLS)]


def _plot(title: str, ylabel: str) -> pg.PlotWidget:
    plot = pg.PlotWidget()
    theme.style_canvas(plot)
    c = theme.colours()
    plot.setTitle(title, size="9pt", color=c.foreground)
    plot.setLabel("left", ylabel)
    plot.getAxis("left").enableAutoSIPrefix(False)  # "silhouette (x0.001)" reads badly
    plot.setLabel("bottom", "k (number of clusters)")
    plot.setMouseEnabled(x=False, y=False)
    plot.hideButtons()
    plot.setMenuEnabled(False)
    return plot


class DiagnosticsView(QWidget):
    """Inertia and silhouette against k (two stacked plots), with the run's k marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inertia_plot = _plot("Inertia (look for the elbow)", "inertia")
        self.silhouette_plot = _plot("Silhouette (higher is better)", "silhouette")
        self.inertia_curve = self.inertia_plot.plot(
            [], [], pen=pg.mkPen(INERTIA_COLOUR, width=2), symbol="o", symbolBrush=INERTIA_COLOUR
        )
        self.silhouette_curve = self.silhouette_plot.plot(
            [],
            [],
            pen=pg.mkPen(SILHOUETTE_COLOUR, width=2),
            symbol="o",
            symbolBrush=SILHOUETTE_COLOUR,
        )
        self.k_lines = [
            pg.InfiniteLine(
                angle=90, pen=pg.mkPen(theme.colours().muted, style=Qt.PenStyle.DashLine)
            )
            for _ in range(2)
        ]
        self.inertia_plot.addItem(self.k_lines[0])
        self.silhouette_plot.addItem(self.k_lines[1])
        self.note = QLabel()
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.inertia_plot, 1)
        layout.addWidget(self.silhouette_plot, 1)
        layout.addWidget(self.note)
        layout.addStretch(0)
        for plot in (self.inertia_plot, self.silhouette_plot):
            figure_export.install(plot, self._csv, name="k_diagnostics")
        self._diag: dict[str, Any] | None = None
        self.set_overview(None)

    def _csv(self) -> str:
        d = self._diag or {"k": [], "inertia": [], "silhouette": []}
        return figure_export.rows_csv(
            ("k", "inertia", "silhouette"),
            zip(d["k"], d["inertia"], d["silhouette"], strict=True),
        )

    def set_overview(self, overview: ClusterOverview | None) -> None:
        diag = overview.diagnostics if overview is not None else None
        self._diag = diag
        # no empty plots taking the space: a sentence says how to get them
        self.inertia_plot.setVisible(bool(diag))
        self.silhouette_plot.setVisible(bool(diag))
        # the sentence alone needs little room: the map beside it gets the rest
        self.setMaximumWidth(16_777_215 if diag else 200)
        if not diag:
            self.inertia_curve.setData([], [])
            self.silhouette_curve.setData([], [])
            for line in self.k_lines:
                line.hide()
            self.note.setText(
                "Run diagnostics to see inertia and silhouette against k: list some k under "
                "'diagnose ks' (e.g. 2-12) and cluster again."
                if overview is not None
                else ""
            )
            return
        ks = np.asarray(diag["k"], dtype=float)
        self.inertia_curve.setData(ks, np.asarray(diag["inertia"], dtype=float))
        # an undefined silhouette (None) becomes a gap in the curve
        sil = np.array([np.nan if v is None else v for v in diag["silhouette"]], dtype=float)
        self.silhouette_curve.setData(ks, sil, connect="finite")
        for line in self.k_lines:
            line.setValue(overview.k)
            line.show()
        best = diag.get("best_k")
        self.note.setText(
            f"Dashed line: this run's k = {overview.k}."
            + (f" Best silhouette at k = {best}." if best is not None else "")
        )


class PoolMapView(pg.PlotWidget):
    """The pool on two principal components, one colour per cluster; click a point to pick it.

    Signal ``picked(int)``: the item id of a clicked point.
    """

    picked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        c = theme.colours()
        theme.style_canvas(self, c)
        self.setTitle(
            "Pool map (PCA of the teacher's representation)", size="9pt", color=c.foreground
        )
        self.setMenuEnabled(False)
        self.scatter = pg.ScatterPlotItem(
            size=9,
            pen=pg.mkPen(c.axis, width=0.5),
            hoverable=True,
            hoverSize=13,
            hoverPen=pg.mkPen(c.foreground, width=1.5),
            tip=self._tip,
        )
        self.scatter.sigClicked.connect(self._clicked)
        # the selection: a thick ring in the text colour around a white one, visible on any
        # cluster colour and on both backgrounds
        self.marker = pg.ScatterPlotItem(
            size=24, pen=pg.mkPen(c.foreground, width=3), brush=pg.mkBrush(None)
        )
        self.marker_inner = pg.ScatterPlotItem(
            size=17, pen=pg.mkPen(c.background, width=2), brush=pg.mkBrush(None)
        )
        self.addItem(self.scatter)
        self.addItem(self.marker_inner)
        self.addItem(self.marker)
        # the legend sits right of the plot (in the PlotItem's grid), never over the points
        self.legend = pg.LegendItem(labelTextSize="8pt", labelTextColor=c.foreground)
        self.getPlotItem().layout.addItem(self.legend, 2, 3)
        self.map: PoolMap | None = None
        self._drawing = 0  # counts set_map calls: a chunk of an older map is not added
        self.shown: np.ndarray = np.zeros(0, dtype=np.int64)  # rows of the map drawn
        self.categories: tuple[str, ...] = ()
        figure_export.install(self, self._csv, name="pool_map")

    def set_map(
        self, pool_map: PoolMap | None, k: int = 0, categories: tuple[str, ...] = ()
    ) -> None:
        self.map = pool_map
        self.categories = categories
        self.marker.setData([], [])
        self.marker_inner.setData([], [])
        self.legend.clear()
        self._drawing += 1
        if pool_map is None:
            self.scatter.setData([], [])
            self.shown = np.zeros(0, dtype=np.int64)
            return
        labels = pool_map.labels
        n = labels.size
        if n > MAP_POINTS:  # a fixed subsample: the same picture every time
            rng = np.random.default_rng(0)
            self.shown = np.sort(rng.choice(n, MAP_POINTS, replace=False))
        else:
            self.shown = np.arange(n)
        k = max(k, int(labels.max()) + 1 if n else 1)
        brushes = [pg.mkBrush(cluster_colour(c)) for c in range(k)]
        drawn = labels[self.shown]
        points = {
            "x": pool_map.xy[self.shown, 0],
            "y": pool_map.xy[self.shown, 1],
            "brush": [brushes[int(c)] for c in drawn],
            "symbol": [cluster_symbol(int(c)) for c in drawn],
            "data": pool_map.items[self.shown],  # item ids (the engine may map a sample)
        }
        # pyqtgraph adds points at ~0.01 ms each in Python: 20 k at once would stall the
        # event loop for a few hundred ms, so the map fills in chunks between events
        self.scatter.setData(**{key: v[:MAP_CHUNK] for key, v in points.items()})
        self._add_points(points, MAP_CHUNK, self._drawing)
        sizes = np.bincount(labels, minlength=k)
        if k <= 40:  # a legend of hundreds of clusters would hide the map
            for c in range(k):
                sample = pg.ScatterPlotItem(
                    symbol=cluster_symbol(c), brush=brushes[c], pen=pg.mkPen(None), size=9
                )
                self.legend.addItem(sample, f"{c} ({int(sizes[c])})")
        ex = pool_map.explained
        self.setLabel("bottom", f"PC 1 ({ex[0]:.0%} of the variance)")
        self.setLabel("left", f"PC 2 ({ex[1]:.0%})")
        if len(self.shown):  # the whole map's range now, not the first chunk's
            xy = pool_map.xy[self.shown]
            self.setRange(
                xRange=(float(xy[:, 0].min()), float(xy[:, 0].max())),
                yRange=(float(xy[:, 1].min()), float(xy[:, 1].max())),
            )

    def _add_points(self, points: dict[str, Any], start: int, drawing: int) -> None:
        """Add the map's points from ``start`` on, one chunk per event-loop turn."""
        if drawing != self._drawing or start >= len(points["x"]):
            return  # a newer map replaced this one, or all points are drawn
        self.scatter.addPoints(**{key: v[start : start + MAP_CHUNK] for key, v in points.items()})
        QTimer.singleShot(0, lambda: self._add_points(points, start + MAP_CHUNK, drawing))

    def _tip(self, x: float, y: float, data: Any) -> str:
        item = int(data)
        at = self.map.position(item) if self.map is not None else None
        if self.map is None or at is None:
            return ""
        text = f"item {item} · cluster {int(self.map.labels[at])}"
        if item < len(self.categories) and self.categories[item]:
            text += f" · {self.categories[item]}"
        return text

    def _csv(self) -> str:
        if self.map is None:
            return figure_export.rows_csv(("item", "pc1", "pc2", "cluster"), [])
        m = self.map
        return figure_export.rows_csv(
            ("item", "pc1", "pc2", "cluster"),
            (
                (int(m.items[i]), float(m.xy[i, 0]), float(m.xy[i, 1]), int(m.labels[i]))
                for i in range(m.labels.size)
            ),
        )

    def mark(self, item: int) -> None:
        at = self.map.position(item) if self.map is not None else None
        if at is None:  # an item the (sampled) map does not draw
            self.marker.setData([], [])
            self.marker_inner.setData([], [])
        else:
            x, y = float(self.map.xy[at, 0]), float(self.map.xy[at, 1])
            self.marker.setData([x], [y])
            self.marker_inner.setData([x], [y])

    def _clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if len(points):
            self.picked.emit(int(points[0].data()))


TYPICAL_MAX_CLUSTERS = 20


class TypicalGrid(QWidget):
    """Each cluster's most typical images (nearest the centroid), one row per cluster.

    Signal ``picked(int)``: the item id of a clicked image.
    """

    picked = Signal(int)

    def __init__(self, thumbs: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbs = thumbs
        self.grid = QGridLayout(self)
        self.grid.setHorizontalSpacing(4)
        self.grid.setVerticalSpacing(4)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.buttons: dict[str, list[QToolButton]] = {}
        self.items: list[list[int]] = []
        thumbs.ready.connect(self._on_thumbnail)

    def set_overview(self, overview: ClusterOverview | None) -> None:
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.buttons.clear()
        self.items = []
        if overview is None:
            return
        size = self.thumbs.size
        waiting = QIcon(self.thumbs.placeholder())  # one icon for every tile still decoding
        # Rows of typical images shown at most: AligNet's k = 500 would be 4000 buttons and
        # thumbnail decodes, a 50 s stall of the event loop; 50 rows still stalled it for 7 s on
        # the loaded 2-core machine (bench_gui_scale.py).
        shown = overview.nearest[:TYPICAL_MAX_CLUSTERS]
        if len(overview.nearest) > len(shown):
            more = QLabel(
                f"<i>Typical images of the first {len(shown)} of {len(overview.nearest)} "
                "clusters; click a point of the map to see any item.</i>"
            )
            self.grid.addWidget(more, len(shown), 0, 1, 9)
        for c, nearest in enumerate(shown):
            colour = cluster_colour(c, overview.k).name()
            head = QLabel(
                f"<span style='color:{colour}; font-size:16pt'>●</span> "
                f"<b>Cluster {c}</b><br>{int(overview.sizes[c])} items"
            )
            head.setMinimumWidth(90)
            self.grid.addWidget(head, c, 0)
            self.items.append(list(nearest))
            for j, item in enumerate(nearest):
                path = overview.paths[item]
                button = QToolButton()
                button.setIconSize(QSize(size, size))
                button.setFixedSize(size + 8, size + 8)
                button.setAutoRaise(True)
                category = overview.categories[item]
                button.setToolTip(
                    f"item {item}" + (f" · {category}" if category else "") + f"\n{path}"
                )
                button.clicked.connect(lambda _=False, i=item: self.picked.emit(i))
                pixmap = self.thumbs.get(path)
                button.setIcon(QIcon(pixmap) if pixmap is not None else waiting)
                self.buttons.setdefault(path, []).append(button)
                self.grid.addWidget(button, c, j + 1)

    def _on_thumbnail(self, path: str) -> None:
        pixmap = self.thumbs.get(path) if path in self.buttons else None
        if pixmap is not None:
            for button in self.buttons[path]:
                button.setIcon(QIcon(pixmap))
