"""Widgets of the triplet inspector: a lazy table model, its view, and the detail panel.

The model's ``rowCount`` is the (filtered, sorted) number of rows; ``data()`` reads rows from
the engine's :class:`~alignet_engine.views.browse.TripletView` in blocks of :data:`BLOCK` rows
and keeps a few blocks in an LRU cache. A view scrolled across ten million triplets therefore
only ever holds what was recently on screen, and no Python object exists per triplet.

Rows are shown in *display order* (:func:`alignet_engine.views.inspector.in_display_order`):
stored rows put the odd one last, so without it every answer would be "C". The verdict and
the two choices come first, because they are what a reader scans for.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QKeyEvent, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from alignet_app.widgets import figure_export, theme
from alignet_app.widgets.thumbnails import ThumbnailCache
from alignet_engine.views.browse import FilterResult, TripletRows, TripletView
from alignet_engine.views.inspector import in_display_order

#: Rows read from the engine at once, and blocks kept (a screen shows ~40 rows).
BLOCK = 128
CACHED_BLOCKS = 48

# Okabe–Ito: distinct for colour-blind readers, readable on light and dark backgrounds
TEACHER_COLOUR: str = theme.STYLE["triplets"]["teacher"]  # orange: the teacher's odd one out
HUMAN_COLOUR: str = theme.STYLE["triplets"]["human"]  # blue: the human's odd one out
BOTH_COLOUR: str = theme.STYLE["triplets"]["both"]  # green: teacher and human chose the same
DISAGREE_COLOUR: str = theme.STYLE["triplets"]["disagree"]  # vermillion: "disagrees"
_LETTERS = "ABC"

#: the detail panel puts the chart under the cards below this width (px)
NARROW_DETAIL = 640

_Index = QModelIndex | QPersistentModelIndex
_ROOT = QModelIndex()  # the invalid root index, Qt's default parent


class Col:
    """Column numbers of :class:`TripletTableModel`."""

    VERDICT, HUMAN, TEACHER, P_ODD, ENTROPY, AGREEMENT, KIND, ROW, A, B, C, CLUSTERS = range(12)


#: column → the engine's sort key (:data:`alignet_engine.views.inspector.SORT_KEYS`)
SORTABLE = {
    Col.VERDICT: "verdict",
    Col.P_ODD: "teacher_p",
    Col.ENTROPY: "entropy",
    Col.AGREEMENT: "agreement",
    Col.KIND: "kind",
    Col.ROW: "row",
}
HUMAN_COLUMNS = (Col.VERDICT, Col.HUMAN, Col.AGREEMENT)


class TripletTableModel(QAbstractTableModel):
    """Rows of a triplet view (optionally a filtered, sorted subset), read lazily in blocks."""

    COLUMNS = (
        "Verdict",
        "Human",
        "Teacher",
        "P(odd)",
        "Entropy",
        "People",
        "Split / type",
        "Row",
        "Item A",
        "Item B",
        "Item C",
        "Clusters",
    )
    TIPS = (
        "Does the teacher pick the same odd one out as the human? (click to sort: "
        "disagreements first)",
        "The human's odd one out (the item they chose)",
        "The teacher's odd one out (its most probable item)",
        "The teacher's probability for its odd one (click to sort)",
        "Entropy of the teacher's choice in bits: 0 = certain, 1.585 = all equally likely "
        "(click to sort)",
        "Share of all responses to these three images that chose this odd one (click to sort)",
        "Training or validation triplet (pool), or the triplet's type (judgments)",
        "Row number in the source (click to sort)",
        "First item as shown (items are in a fixed shuffled order per row)",
        "Second item as shown",
        "Third item as shown",
        "Each item's cluster in the current clusters run",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view: TripletView | None = None
        self.result: FilterResult | None = None
        self._blocks: OrderedDict[int, TripletRows] = OrderedDict()
        self.reads = 0  # blocks read from the engine (benchmarks and tests look at it)
        self.colours = theme.colours()

    # ----------------------------------------------------------------- content
    def set_view(self, view: TripletView | None, result: FilterResult | None = None) -> None:
        """Show ``view`` (all rows, or ``result``'s rows in its order)."""
        self.beginResetModel()
        self.view, self.result = view, result
        self._blocks.clear()
        self.colours = theme.colours()
        self.endResetModel()

    def set_filter(self, result: FilterResult | None) -> None:
        self.set_view(self.view, result)

    def source_row(self, row: int) -> int:
        """The source's row number shown at table row ``row``."""
        if self.result is None or self.result.indices is None:
            return row
        return int(self.result.indices[row])

    def table_row(self, source_row: int) -> int | None:
        """The table row showing source row ``source_row`` (None if the filter hides it)."""
        if self.view is None or not 0 <= source_row < self.view.n:
            return None
        if self.result is None or self.result.indices is None:
            return source_row
        hits = np.flatnonzero(self.result.indices == source_row)
        return int(hits[0]) if hits.size else None

    def rows_at(self, row: int) -> tuple[TripletRows, int]:
        """(the block holding table row ``row``, in display order; the row's offset in it)."""
        b = row // BLOCK
        block = self._blocks.get(b)
        if block is None:
            assert self.view is not None
            start, stop = b * BLOCK, min(self.rowCount(), (b + 1) * BLOCK)
            if self.result is None or self.result.indices is None:
                block = self.view.rows(start, stop)
            else:
                block = self.view.take(self.result.indices[start:stop])
            block = in_display_order(block)
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
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.TIPS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or self.view is None:
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            rows, i = self.rows_at(index.row())
            return self._text(rows, i, col)
        if role == Qt.ItemDataRole.BackgroundRole and self.view.has_human:
            rows, i = self.rows_at(index.row())
            if rows.teacher_odd[i] != rows.human_odd[i]:
                return QBrush(QColor(self.colours.disagree_bg))
        if role == Qt.ItemDataRole.ForegroundRole and col == Col.VERDICT and self.view.has_human:
            rows, i = self.rows_at(index.row())
            agree = rows.teacher_odd[i] == rows.human_odd[i]
            return QBrush(QColor(BOTH_COLOUR if agree else DISAGREE_COLOUR))
        if role == Qt.ItemDataRole.FontRole and col in (Col.VERDICT, Col.HUMAN, Col.TEACHER):
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole and Col.A <= col <= Col.C:
            rows, i = self.rows_at(index.row())
            return self.view.paths[int(rows.items[i, col - Col.A])]
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if col in (Col.VERDICT, Col.HUMAN, Col.TEACHER):
                return int(Qt.AlignmentFlag.AlignCenter)
            if col in (Col.ROW, Col.P_ODD, Col.ENTROPY, Col.AGREEMENT):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, rows: TripletRows, i: int, col: int) -> str:
        assert self.view is not None
        if col == Col.VERDICT:
            if rows.human_odd[i] < 0:
                return ""
            return "✓ agree" if rows.human_odd[i] == rows.teacher_odd[i] else "✗ disagree"
        if col == Col.HUMAN:
            return _LETTERS[int(rows.human_odd[i])] if rows.human_odd[i] >= 0 else ""
        if col == Col.TEACHER:
            return _LETTERS[int(rows.teacher_odd[i])]
        if col == Col.P_ODD:
            return f"{rows.odd_probs[i, rows.teacher_odd[i]]:.3f}"
        if col == Col.ENTROPY:
            return f"{rows.entropy[i]:.3f}"
        if col == Col.AGREEMENT:
            a = float(rows.agreement[i])
            return "" if math.isnan(a) else f"{a:.0%} of {int(rows.repeats[i])}"
        if col == Col.KIND:
            if self.view.is_split:
                return "validation" if rows.is_val[i] else "train"
            return str(rows.kind[i])
        if col == Col.ROW:
            return f"{int(rows.rows[i]):,}"
        if Col.A <= col <= Col.C:
            item = int(rows.items[i, col - Col.A])
            category = self.view.categories[item]
            return f"{item} · {category}" if category else str(item)
        if col == Col.CLUSTERS:
            c = rows.clusters[i]
            return "" if (c < 0).all() else " / ".join(str(int(x)) for x in c)
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
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(36)
        header.setSortIndicatorShown(False)  # shown once a sort is applied
        figure_export.install(self, lambda: figure_export.model_csv(self.model()), name="triplets")

    def setModel(self, model: Any) -> None:
        super().setModel(model)
        self.fit_columns()

    def fit_columns(self) -> None:
        """Narrow fixed columns from the font; the three item columns share what is left
        (they shrink on a narrow window, so the verdict and choices always stay on screen)."""
        header = self.horizontalHeader()
        model = self.model()
        bold = QFont(self.font())
        bold.setBold(True)
        plain = QFontMetrics(self.font()).horizontalAdvance
        strong = QFontMetrics(bold).horizontalAdvance
        # the widest of the header and a typical cell, plus room for the sort arrow
        samples = {
            Col.VERDICT: "✗ disagree",
            Col.HUMAN: "C",
            Col.TEACHER: "C",
            Col.P_ODD: "0.000",
            Col.ENTROPY: "0.000",
            Col.AGREEMENT: "100% of 10",
            Col.KIND: "validation",
            Col.ROW: "100,000",
            Col.CLUSTERS: "10 / 10 / 10",
        }
        for col, sample in samples.items():
            title = str(model.headerData(col, Qt.Orientation.Horizontal)) if model else ""
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            width = strong if col in (Col.VERDICT, Col.HUMAN, Col.TEACHER) else plain
            self.setColumnWidth(col, max(plain(title) + 18, width(sample) + 10))
        for col in (Col.A, Col.B, Col.C):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)

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
        # the current cell's column must be visible (the human columns hide for pool
        # triplets), or the arrow keys do not move it
        col = next((c for c in range(self.model().columnCount()) if not self.isColumnHidden(c)), 0)
        index = self.model().index(row, col)
        self.setCurrentIndex(index)
        self.scrollTo(index)


class ScaledImage(QLabel):
    """A thumbnail that scales (aspect kept) to whatever room the layout gives it."""

    def __init__(self, minimum: int = 96) -> None:
        super().__init__()
        self._pixmap = QPixmap()
        self.setMinimumSize(minimum, minimum)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)

    def set_image(self, pixmap: QPixmap) -> None:
        self._pixmap = pixmap
        self._rescale()

    def source_pixmap(self) -> QPixmap:
        return self._pixmap

    def sizeHint(self) -> QSize:
        return QSize(200, 200)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap.isNull():
            self.clear()
            return
        side = max(16, min(self.width(), self.height()) - 14)  # inside the 5 px frame
        self.setPixmap(
            self._pixmap.scaled(
                side,
                side,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )


class ImageCard(QWidget):
    """One image of the detail panel: a framed thumbnail that scales, and a caption."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image = ScaledImage()
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        self.path = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.caption)
        self.set_frame(None)

    def set_frame(self, colour: str | None) -> None:
        panel = theme.colours().panel
        border = f"5px solid {colour}" if colour else "5px solid transparent"
        self.image.setStyleSheet(f"QLabel {{ border: {border}; background: {panel}; }}")
        self.frame_colour = colour


class TripletDetail(QWidget):
    """The selected triplet: the verdict, three images (odd ones framed), probabilities."""

    def __init__(self, thumbs: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbs = thumbs
        self.cards = [ImageCard() for _ in range(3)]
        self.verdict = QLabel()
        self.verdict.setObjectName("verdict")
        font = QFont(self.verdict.font())
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.verdict.setFont(font)
        self.verdict.setWordWrap(True)
        self.heading = QLabel()
        self.heading.setWordWrap(True)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.plot = pg.PlotWidget()
        self.plot.setMinimumSize(180, 150)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.setXRange(-0.6, 2.6, padding=0)
        self.plot.setLabel("left", "P(odd one out)")
        self.plot.getAxis("bottom").setTicks([[(i, _LETTERS[i]) for i in range(3)]])
        self.plot.setTitle("Choice probabilities", size="9pt")
        theme.style_canvas(self.plot)
        self.teacher_bars = pg.BarGraphItem(
            x=[0, 1, 2], height=[0, 0, 0], width=0.38, brush=TEACHER_COLOUR
        )
        self.human_bars = pg.BarGraphItem(
            x=[0, 1, 2], height=[0, 0, 0], width=0.38, brush=HUMAN_COLOUR
        )
        self.plot.addItem(self.teacher_bars)
        self.plot.addItem(self.human_bars)
        figure_export.install(self.plot, self._bars_csv, name="choice_probabilities")
        self.teacher_probs = np.zeros(3)
        self.human_probs = np.full(3, np.nan)
        self.teacher_odd = -1
        self.human_odd = -1
        self.has_human = False
        self.grid = QGridLayout()
        self.grid.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.addWidget(self.verdict)
        layout.addWidget(self.heading)
        layout.addLayout(self.grid, 1)
        layout.addWidget(self.legend)
        self._narrow: bool | None = None
        self._place(narrow=False)
        thumbs.ready.connect(self._on_thumbnail)
        self.set_legend(False)
        self.clear()

    # ----------------------------------------------------------------- layout
    def _place(self, *, narrow: bool) -> None:
        """Cards in a row with the chart beside them, or (narrow) the chart under them."""
        if narrow == self._narrow:
            return
        self._narrow = narrow
        for w in (*self.cards, self.plot):
            self.grid.removeWidget(w)
        for i, card in enumerate(self.cards):
            self.grid.addWidget(card, 0, i)
            self.grid.setColumnStretch(i, 1)
        if narrow:
            self.grid.addWidget(self.plot, 1, 0, 1, 3)
            self.grid.setColumnStretch(3, 0)
            self.grid.setRowStretch(0, 3)
            self.grid.setRowStretch(1, 2)
        else:
            self.grid.addWidget(self.plot, 0, 3)
            self.grid.setColumnStretch(3, 1)
            self.grid.setRowStretch(0, 1)
            self.grid.setRowStretch(1, 0)

    @property
    def chart_below(self) -> bool:
        return bool(self._narrow)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place(narrow=event.size().width() < NARROW_DETAIL)

    # ----------------------------------------------------------------- content
    def set_legend(self, has_human: bool) -> None:
        """The colour key; "human" appears only for sources with human answers."""
        self.has_human = has_human
        parts = [
            f"<span style='color:{TEACHER_COLOUR}'>■</span> teacher (its odd one; its "
            "probabilities)"
        ]
        if has_human:
            parts.append(
                f"<span style='color:{HUMAN_COLOUR}'>■</span> human (their odd one; share of "
                "responses)"
            )
            parts.append(f"<span style='color:{BOTH_COLOUR}'>■</span> both chose it")
        parts.append("Items are shown in a fixed shuffled order per row.")
        self.legend.setText(" &nbsp; ".join(parts))

    def clear(self, text: str = "Select a triplet.") -> None:
        self.heading.setText(text)
        self.verdict.setText("")
        self.verdict.setStyleSheet("")
        for card in self.cards:
            card.path = ""
            card.image.set_image(self.thumbs.placeholder())
            card.caption.setText("")
            card.set_frame(None)
        self._bars(np.zeros(3), None)
        self.teacher_odd = self.human_odd = -1

    def show_row(self, view: TripletView, rows: TripletRows, i: int, position: str) -> None:
        """Show row ``i`` of ``rows`` (display order; ``position`` e.g. "12 of 3,456")."""
        items = rows.items[i]
        t_odd, h_odd = int(rows.teacher_odd[i]), int(rows.human_odd[i])
        self.teacher_odd, self.human_odd = t_odd, h_odd
        probs = rows.odd_probs[i]
        for pos, card in enumerate(self.cards):
            item = int(items[pos])
            card.path = view.paths[item]
            pixmap = self.thumbs.get(card.path)
            card.image.set_image(pixmap if pixmap is not None else self.thumbs.placeholder())
            card.image.setToolTip(card.path)
            lines = [f"<b>{_LETTERS[pos]}</b> · item {item}"]
            if view.categories[item]:
                lines.append(view.categories[item])
            if rows.clusters[i, pos] >= 0:
                lines.append(f"cluster {int(rows.clusters[i, pos])}")
            lines.append(f"P(odd) = {probs[pos]:.3f}")
            card.caption.setText(" · ".join(lines[:2]) + "<br>" + " · ".join(lines[2:]))
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
        if h_odd >= 0 and rows.repeats[i] > 1:
            head += (
                f"<br>{int(rows.repeats[i])} responses to these three images; "
                f"{rows.agreement[i]:.0%} chose {_LETTERS[h_odd]}."
            )
        self.heading.setText(head)
        self._verdict(t_odd, h_odd, float(probs[t_odd]))
        self._bars(probs, rows.human_probs[i] if h_odd >= 0 else None)

    def _verdict(self, t_odd: int, h_odd: int, p: float) -> None:
        """The badge: agrees / disagrees (judgments) or the teacher's choice (pool)."""
        if h_odd < 0:
            text = f"Teacher: {_LETTERS[t_odd]} is the odd one out (P = {p:.2f})"
            bg = "#4D4D4D"
        elif h_odd == t_odd:
            text = f"✓ Teacher agrees with the human: {_LETTERS[t_odd]} is the odd one out"
            bg = BOTH_COLOUR
        else:
            text = (
                f"✗ Teacher disagrees: the human chose {_LETTERS[h_odd]}, the teacher "
                f"{_LETTERS[t_odd]} (P = {p:.2f})"
            )
            bg = DISAGREE_COLOUR
        self.verdict.setText(text)
        self.verdict.setStyleSheet(
            f"QLabel#verdict {{ background: {bg}; color: white; border-radius: 4px; "
            "padding: 4px 8px; }"
        )

    def _bars(self, teacher: np.ndarray, human: np.ndarray | None) -> None:
        self.teacher_probs = np.asarray(teacher, dtype=float)
        self.human_probs = np.full(3, np.nan) if human is None else np.asarray(human, dtype=float)
        shift = 0.2 if human is not None else 0.0
        self.teacher_bars.setOpts(x=np.arange(3) - shift, height=self.teacher_probs)
        self.human_bars.setOpts(
            x=np.arange(3) + shift, height=np.nan_to_num(self.human_probs, nan=0.0)
        )
        self.human_bars.setVisible(human is not None)

    def _bars_csv(self) -> str:
        rows = [
            (_LETTERS[i], f"{self.teacher_probs[i]:.6g}", f"{self.human_probs[i]:.6g}")
            for i in range(3)
        ]
        return figure_export.rows_csv(("item", "teacher_p_odd", "human_share"), rows)

    def _on_thumbnail(self, path: str) -> None:
        for card in self.cards:
            if card.path == path:
                pixmap = self.thumbs.get(path)
                if pixmap is not None:
                    card.image.set_image(pixmap)

    def apply_theme(self) -> None:
        theme.style_canvas(self.plot)
        for card in self.cards:
            card.set_frame(card.frame_colour)
