"""Widgets of the triplet inspector: a lazy table model, its view, and the detail panel.

The model's ``rowCount`` is the (filtered) number of rows; ``data()`` reads rows from the
engine's :class:`~alignet_engine.stages.browse.TripletView` in blocks of :data:`BLOCK` rows and
keeps a few blocks in an LRU cache. A view scrolled across ten million triplets therefore only
ever holds what was recently on screen, and no Python object exists per triplet.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from alignet_app.widgets.thumbnails import ThumbnailCache
from alignet_engine.stages.browse import FilterResult, TripletRows, TripletView

#: Rows read from the engine at once, and blocks kept (a screen shows ~40 rows).
BLOCK = 128
CACHED_BLOCKS = 48

TEACHER_COLOUR = "#e66100"  # orange: the teacher's odd one out
HUMAN_COLOUR = "#1c71d8"  # blue: the human's odd one out
BOTH_COLOUR = "#26a269"  # green: teacher and human chose the same item
_DISAGREE_BG = QColor("#fbe3e3")
_LETTERS = "ABC"

_Index = QModelIndex | QPersistentModelIndex
_ROOT = QModelIndex()  # the invalid root index, Qt's default parent


class TripletTableModel(QAbstractTableModel):
    """Rows of a triplet view (optionally a filtered subset), read lazily in blocks."""

    COLUMNS = (
        "Row",
        "Item A",
        "Item B",
        "Item C",
        "Teacher's odd",
        "P(odd)",
        "Entropy (bits)",
        "Split / type",
        "Clusters",
        "Human's odd",
        "Agreement",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view: TripletView | None = None
        self.result: FilterResult | None = None
        self._blocks: OrderedDict[int, TripletRows] = OrderedDict()
        self.reads = 0  # blocks read from the engine (benchmarks and tests look at it)

    # ----------------------------------------------------------------- content
    def set_view(self, view: TripletView | None, result: FilterResult | None = None) -> None:
        """Show ``view`` (all rows, or ``result``'s rows)."""
        self.beginResetModel()
        self.view, self.result = view, result
        self._blocks.clear()
        self.endResetModel()

    def set_filter(self, result: FilterResult | None) -> None:
        self.set_view(self.view, result)

    def source_row(self, row: int) -> int:
        """The source's row number shown at table row ``row``."""
        if self.result is None or self.result.indices is None:
            return row
        return int(self.result.indices[row])

    def rows_at(self, row: int) -> tuple[TripletRows, int]:
        """(the block holding table row ``row``, the row's offset in it)."""
        b = row // BLOCK
        block = self._blocks.get(b)
        if block is None:
            assert self.view is not None
            start, stop = b * BLOCK, min(self.rowCount(), (b + 1) * BLOCK)
            if self.result is None or self.result.indices is None:
                block = self.view.rows(start, stop)
            else:
                block = self.view.take(self.result.indices[start:stop])
            self.reads += 1
            self._blocks[b] = block
            while len(self._blocks) > CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(b)
        return block, row - b * BLOCK

    # ----------------------------------------------------------------- Qt model
    def rowCount(self, parent: _Index = _ROOT) -> int:
        if parent.isValid() or self.view is None:
            return 0
        return self.view.n if self.result is None else self.result.count

    def columnCount(self, parent: _Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or self.view is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            rows, i = self.rows_at(index.row())
            return self._text(rows, i, index.column())
        if role == Qt.ItemDataRole.BackgroundRole and self.view.has_human:
            rows, i = self.rows_at(index.row())
            if rows.teacher_odd[i] != rows.human_odd[i]:
                return QBrush(_DISAGREE_BG)
        if role == Qt.ItemDataRole.ToolTipRole and 1 <= index.column() <= 3:
            rows, i = self.rows_at(index.row())
            return self.view.paths[int(rows.items[i, index.column() - 1])]
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (0, 5, 6, 10):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, rows: TripletRows, i: int, col: int) -> str:
        assert self.view is not None
        if col == 0:
            return f"{int(rows.rows[i]):,}"
        if 1 <= col <= 3:
            item = int(rows.items[i, col - 1])
            category = self.view.categories[item]
            return f"{item} · {category}" if category else str(item)
        if col == 4:
            return _LETTERS[int(rows.teacher_odd[i])]
        if col == 5:
            return f"{rows.odd_probs[i, rows.teacher_odd[i]]:.3f}"
        if col == 6:
            return f"{rows.entropy[i]:.3f}"
        if col == 7:
            if self.view.is_split:
                return "validation" if rows.is_val[i] else "train"
            return str(rows.kind[i])
        if col == 8:
            c = rows.clusters[i]
            return "" if (c < 0).all() else " / ".join(str(int(x)) for x in c)
        if col == 9:
            return _LETTERS[int(rows.human_odd[i])] if rows.human_odd[i] >= 0 else ""
        if col == 10:
            a = float(rows.agreement[i])
            return "" if math.isnan(a) else f"{a:.0%} of {int(rows.repeats[i])}"
        return ""


class TripletTable(QTableView):
    """A row-selecting table where Left / Right step through rows like Up / Down."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        # Fixed row heights: Qt then never measures rows, which matters at 10 M rows.
        vh = self.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(22)
        vh.hide()
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Left, Qt.Key.Key_Right):
            self.step(-1 if key == Qt.Key.Key_Left else 1)
            return
        super().keyPressEvent(event)

    def step(self, delta: int) -> None:
        """Select the row ``delta`` rows from the current one (clamped)."""
        model = self.model()
        if model is None or model.rowCount() == 0:
            return
        current = self.currentIndex()
        row = current.row() if current.isValid() else -1
        target = min(max(row + delta, 0), model.rowCount() - 1)
        self.select_row(target)

    def select_row(self, row: int) -> None:
        index = self.model().index(row, 0)
        self.setCurrentIndex(index)
        self.scrollTo(index)


class ImageCard(QWidget):
    """One image of the detail panel: a framed thumbnail and a caption."""

    def __init__(self, size: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image = QLabel()
        self.image.setFixedSize(size + 12, size + 12)
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.caption.setFixedWidth(size + 12)
        self.path = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.image)
        layout.addWidget(self.caption)
        self.set_frame(None)

    def set_frame(self, colour: str | None) -> None:
        border = f"5px solid {colour}" if colour else "5px solid transparent"
        self.image.setStyleSheet(f"QLabel {{ border: {border}; background: #f4f4f4; }}")
        self.frame_colour = colour


class TripletDetail(QWidget):
    """The selected triplet: three images (odd ones framed), probabilities, human choice."""

    def __init__(self, thumbs: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbs = thumbs
        self.cards = [ImageCard(thumbs.size) for _ in range(3)]
        self.heading = QLabel()
        self.heading.setWordWrap(True)
        self.legend = QLabel(
            f"<span style='color:{TEACHER_COLOUR}'>■</span> teacher (its odd one; its "
            f"probabilities) &nbsp; <span style='color:{HUMAN_COLOUR}'>■</span> human (their "
            f"odd one; share of responses) &nbsp; <span style='color:{BOTH_COLOUR}'>■</span> "
            "both chose it"
        )
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumWidth(220)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.setXRange(-0.6, 2.6, padding=0)
        self.plot.setLabel("left", "P(odd one out)")
        self.plot.getAxis("bottom").setTicks([[(i, _LETTERS[i]) for i in range(3)]])
        self.plot.setTitle("Choice probabilities", size="9pt")
        self.teacher_bars = pg.BarGraphItem(
            x=[0, 1, 2], height=[0, 0, 0], width=0.38, brush=TEACHER_COLOUR
        )
        self.human_bars = pg.BarGraphItem(
            x=[0, 1, 2], height=[0, 0, 0], width=0.38, brush=HUMAN_COLOUR
        )
        self.plot.addItem(self.teacher_bars)
        self.plot.addItem(self.human_bars)
        self.teacher_probs = np.zeros(3)
        self.human_probs = np.full(3, np.nan)
        self.teacher_odd = -1
        self.human_odd = -1
        row = QHBoxLayout()
        for card in self.cards:
            row.addWidget(card)
        row.addWidget(self.plot, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addLayout(row, 1)
        layout.addWidget(self.legend)
        thumbs.ready.connect(self._on_thumbnail)
        self.clear()

    def clear(self, text: str = "Select a triplet.") -> None:
        self.heading.setText(text)
        for card in self.cards:
            card.path = ""
            card.image.setPixmap(self.thumbs.placeholder())
            card.caption.setText("")
            card.set_frame(None)
        self._bars(np.zeros(3), None)
        self.teacher_odd = self.human_odd = -1

    def show_row(self, view: TripletView, rows: TripletRows, i: int, position: str) -> None:
        """Show row ``i`` of ``rows`` (``position`` e.g. "12 of 3,456" for the heading)."""
        items = rows.items[i]
        t_odd, h_odd = int(rows.teacher_odd[i]), int(rows.human_odd[i])
        self.teacher_odd, self.human_odd = t_odd, h_odd
        probs = rows.odd_probs[i]
        for pos, card in enumerate(self.cards):
            item = int(items[pos])
            card.path = view.paths[item]
            pixmap = self.thumbs.get(card.path)
            card.image.setPixmap(pixmap if pixmap is not None else self.thumbs.placeholder())
            card.image.setToolTip(card.path)
            lines = [f"<b>{_LETTERS[pos]}</b> · item {item}"]
            if view.categories[item]:
                lines.append(view.categories[item])
            if rows.clusters[i, pos] >= 0:
                lines.append(f"cluster {int(rows.clusters[i, pos])}")
            lines.append(f"P(odd) = {probs[pos]:.3f}")
            tags = []
            if pos == t_odd:
                tags.append(f"<span style='color:{TEACHER_COLOUR}'><b>teacher's odd one</b></span>")
            if pos == h_odd:
                tags.append(f"<span style='color:{HUMAN_COLOUR}'><b>human's odd one</b></span>")
            card.caption.setText("<br>".join(lines + tags))
            colour = None
            if pos == t_odd and pos == h_odd:
                colour = BOTH_COLOUR
            elif pos == t_odd:
                colour = TEACHER_COLOUR
            elif pos == h_odd:
                colour = HUMAN_COLOUR
            card.set_frame(colour)
        head = f"<b>Row {int(rows.rows[i]):,}</b> ({position}) · entropy {rows.entropy[i]:.3f} bits"
        if view.is_split:
            head += " · validation" if rows.is_val[i] else " · train"
        if rows.kind[i]:
            head += f" · {rows.kind[i]}"
        if h_odd >= 0:
            verdict = "agrees with" if h_odd == t_odd else "<b>disagrees</b> with"
            head += f"<br>The teacher {verdict} this response."
            if rows.repeats[i] > 1:
                head += (
                    f" {int(rows.repeats[i])} responses to these three images; "
                    f"{rows.agreement[i]:.0%} chose this odd one."
                )
        self.heading.setText(head)
        self._bars(probs, rows.human_probs[i] if h_odd >= 0 else None)

    def _bars(self, teacher: np.ndarray, human: np.ndarray | None) -> None:
        self.teacher_probs = np.asarray(teacher, dtype=float)
        self.human_probs = np.full(3, np.nan) if human is None else np.asarray(human, dtype=float)
        shift = 0.2 if human is not None else 0.0
        self.teacher_bars.setOpts(x=np.arange(3) - shift, height=self.teacher_probs)
        self.human_bars.setOpts(
            x=np.arange(3) + shift, height=np.nan_to_num(self.human_probs, nan=0.0)
        )
        self.human_bars.setVisible(human is not None)

    def _on_thumbnail(self, path: str) -> None:
        for card in self.cards:
            if card.path == path:
                pixmap = self.thumbs.get(path)
                if pixmap is not None:
                    card.image.setPixmap(pixmap)
