"""Right-click "Save figure" (PNG / SVG) and "Copy data" (CSV) for every plot and table.

:func:`install` gives a widget a context menu with both actions. The figure is the widget
as drawn (SVG through Qt's SVG generator, so text and lines stay vectors); the data is
whatever the widget's ``data_csv`` callback returns, which the caller builds from the
numbers it drew (never from the pixels).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractItemModel, QPoint, QRect, Qt
from PySide6.QtGui import QGuiApplication, QPainter
from PySide6.QtWidgets import QAbstractItemView, QFileDialog, QMenu, QWidget

#: rows a table's "Copy data" copies at most (a 10 M-row triplet table stays usable)
MAX_COPY_ROWS = 100_000


def save_figure(widget: QWidget, path: str | Path) -> Path:
    """Save ``widget`` as drawn to ``path`` (.svg: vector; anything else: a PNG)."""
    path = Path(path)
    if path.suffix.lower() == ".svg":
        from PySide6.QtSvg import QSvgGenerator

        generator = QSvgGenerator()
        generator.setFileName(str(path))
        generator.setSize(widget.size())
        generator.setViewBox(QRect(QPoint(0, 0), widget.size()))
        generator.setTitle(widget.windowTitle() or "AligNet Studio figure")
        painter = QPainter(generator)
        widget.render(painter, QPoint(0, 0))
        painter.end()
    else:
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        if not widget.grab().save(str(path)):
            raise OSError(f"could not write {path}")
    return path


def series_csv(series: Mapping[str, tuple[np.ndarray, np.ndarray]], x_name: str = "x") -> str:
    """Long-format CSV ``series,<x_name>,value`` of named (x, y) arrays (full precision)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["series", x_name, "value"])
    for name, (x, y) in series.items():
        for a, b in zip(np.asarray(x).tolist(), np.asarray(y).tolist(), strict=True):
            writer.writerow([name, repr(a), repr(b)])
    return out.getvalue()


def rows_csv(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(header))
    for row in rows:
        writer.writerow(list(row))
    return out.getvalue()


def model_csv(model: QAbstractItemModel, max_rows: int = MAX_COPY_ROWS) -> str:
    """A table model's visible text (DisplayRole) as CSV, at most ``max_rows`` rows."""
    cols = model.columnCount()
    header = [
        str(model.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) or "")
        for c in range(cols)
    ]
    n = min(model.rowCount(), max_rows)
    rows = (
        ["" if (v := model.data(model.index(r, c))) is None else str(v) for c in range(cols)]
        for r in range(n)
    )
    return rows_csv(header, rows)


def plot_csv(plot: pg.PlotWidget) -> str:
    """The data of every curve, scatter and bar set drawn in ``plot`` as long-format CSV."""
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, item in enumerate(plot.getPlotItem().items):
        if isinstance(item, pg.PlotDataItem):
            x, y = item.getData()
            if x is not None:
                series[item.name() or f"curve {i}"] = (x, y)
        elif isinstance(item, pg.ScatterPlotItem):
            x, y = item.getData()
            series[item.name() or f"points {i}"] = (x, y)
        elif isinstance(item, pg.BarGraphItem):
            series[f"bars {i}"] = (np.asarray(item.opts["x"]), np.asarray(item.opts["height"]))
    return series_csv(series)


def install_everywhere(root: QWidget) -> int:
    """Give every plot and table under ``root`` that has no menu yet the right-click menu
    (tables copy their visible text, plots the data of what they draw). Returns how many."""
    count = 0
    for widget in root.findChildren(QWidget):
        if widget.property("figure_menu"):
            continue
        if isinstance(widget, pg.PlotWidget):
            widget.getPlotItem().setMenuEnabled(False)
            install(widget, lambda w=widget: plot_csv(w), name="figure")
        elif isinstance(widget, QAbstractItemView) and isinstance(
            widget.model(), QAbstractItemModel
        ):
            if widget.metaObject().className() in ("QListView", "QListWidget"):
                continue  # lists (navigator, pickers) are not tables
            install(widget, lambda w=widget: model_csv(w.model()), name="table")
        else:
            continue
        count += 1
    return count


def copy_text(text: str) -> None:
    QGuiApplication.clipboard().setText(text)


def install(
    widget: QWidget,
    data_csv: Callable[[], str] | None,
    *,
    figure: QWidget | None = None,
    name: str = "figure",
) -> None:
    """Give ``widget`` a right-click menu: Save figure… (``figure``, default the widget) and,
    with ``data_csv``, Copy data (CSV)."""
    target = figure or widget

    def menu_at(pos: QPoint) -> None:
        menu = QMenu(widget)
        menu.addAction("Save figure (PNG / SVG)…", lambda: ask_and_save(target, name))
        if data_csv is not None:
            menu.addAction("Copy data (CSV)", lambda: copy_text(data_csv()))
        menu.exec(widget.mapToGlobal(pos))

    widget.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    widget.customContextMenuRequested.connect(menu_at)
    widget.setProperty("figure_menu", True)


def ask_and_save(widget: QWidget, name: str) -> Path | None:
    """Ask for a file name (PNG or SVG) and save ``widget`` there."""
    if os.environ.get("ALIGNET_NO_DIALOGS"):
        return None
    path, _ = QFileDialog.getSaveFileName(
        widget, "Save figure", f"{name}.png", "PNG image (*.png);;SVG vector image (*.svg)"
    )
    return save_figure(widget, path) if path else None
