"""Widgets of the Clusters page: the k diagnostics, the pool map and the typical-image grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QGridLayout,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from alignet_app.widgets.thumbnails import ThumbnailCache
from alignet_engine.stages.browse import ClusterOverview, PoolMap

INERTIA_COLOUR = "#1c71d8"
SILHOUETTE_COLOUR = "#c01c28"


def cluster_colour(c: int, k: int) -> Any:
    """A distinct colour per cluster (hue wheel, two brightness levels so neighbours differ)."""
    return pg.intColor(int(c), hues=max(k, 1), values=1 if k <= 12 else 2, maxValue=230)


def _plot(title: str, ylabel: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(background="w")
    plot.setTitle(title, size="9pt", color="#333")
    plot.setLabel("left", ylabel)
    plot.getAxis("left").enableAutoSIPrefix(False)  # "silhouette (x0.001)" reads badly
    plot.setLabel("bottom", "k (clusters)")
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.setMouseEnabled(x=False, y=False)
    plot.hideButtons()
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
            pg.InfiniteLine(angle=90, pen=pg.mkPen("#555", style=Qt.PenStyle.DashLine))
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
        self.set_overview(None)

    def set_overview(self, overview: ClusterOverview | None) -> None:
        diag = overview.diagnostics if overview is not None else None
        if not diag:
            self.inertia_curve.setData([], [])
            self.silhouette_curve.setData([], [])
            for line in self.k_lines:
                line.hide()
            self.note.setText(
                "No diagnostics: list some k under 'diagnose ks' (e.g. 2-12) and cluster again "
                "to compare inertia and silhouette."
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
        super().__init__(parent, background="w")
        self.setTitle("Pool map (PCA of the teacher's representation)", size="9pt", color="#333")
        self.showGrid(x=True, y=True, alpha=0.15)
        self.scatter = pg.ScatterPlotItem(size=9, pen=pg.mkPen("#333", width=0.5), hoverable=True)
        self.scatter.sigClicked.connect(self._clicked)
        self.marker = pg.ScatterPlotItem(
            size=20, pen=pg.mkPen("#000", width=2.5), brush=pg.mkBrush(None)
        )
        self.addItem(self.scatter)
        self.addItem(self.marker)
        self.map: PoolMap | None = None

    def set_map(self, pool_map: PoolMap | None, k: int = 0) -> None:
        self.map = pool_map
        self.marker.setData([], [])
        if pool_map is None:
            self.scatter.setData([], [])
            return
        brushes = [pg.mkBrush(cluster_colour(c, k)) for c in range(max(k, 1))]
        labels = pool_map.labels
        self.scatter.setData(
            x=pool_map.xy[:, 0],
            y=pool_map.xy[:, 1],
            brush=[brushes[int(c)] for c in labels],
            data=np.arange(labels.size),
        )
        ex = pool_map.explained
        self.setLabel("bottom", f"PC 1 ({ex[0]:.0%} of the variance)")
        self.setLabel("left", f"PC 2 ({ex[1]:.0%})")
        self.autoRange()

    def mark(self, item: int) -> None:
        if self.map is not None and 0 <= item < self.map.xy.shape[0]:
            self.marker.setData([float(self.map.xy[item, 0])], [float(self.map.xy[item, 1])])

    def _clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if len(points):
            self.picked.emit(int(points[0].data()))


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
        for c, nearest in enumerate(overview.nearest):
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
                button.setIcon(QIcon(pixmap if pixmap is not None else self.thumbs.placeholder()))
                self.buttons.setdefault(path, []).append(button)
                self.grid.addWidget(button, c, j + 1)

    def _on_thumbnail(self, path: str) -> None:
        pixmap = self.thumbs.get(path) if path in self.buttons else None
        if pixmap is not None:
            for button in self.buttons[path]:
                button.setIcon(QIcon(pixmap))
