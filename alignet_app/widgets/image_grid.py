"""A lazily loaded thumbnail grid of an image set, grouped by category.

The grid is a ``QListView`` in icon mode over :class:`ImageGridModel`. Category headers are
rows of their own whose size hint spans the viewport, so the icon-mode flow wraps before
and after each one and every category starts on a new line. The delegate's size hints never
touch the thumbnails, so only the rows the view actually paints ask the
:class:`ThumbnailCache` for a decode; the model repaints a row when its thumbnail is ready.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QFont, QImageReader, QPainter, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.widgets.thumbnails import ThumbnailCache

#: True for category header rows.
HEADER_ROLE = int(Qt.ItemDataRole.UserRole) + 1
#: The image's index in its image set (-1 for headers).
ITEM_ROLE = int(Qt.ItemDataRole.UserRole) + 2
#: The image's file path ("" for headers).
PATH_ROLE = int(Qt.ItemDataRole.UserRole) + 3

_ALL = "All categories"
_LARGE = 512  # longest side of the enlarged image, pixels

Index = QModelIndex | QPersistentModelIndex


class ImageGridModel(QAbstractListModel):
    """Rows: a header per category followed by its images (or only one category's images).

    Parameters
    ----------
    cache : where thumbnails come from; ``ready(path)`` repaints the path's row.
    """

    def __init__(self, cache: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache = cache
        self._paths: tuple[str, ...] = ()
        self._categories: tuple[str, ...] = ()
        self._items = np.empty(0, dtype=np.int64)  # image index per row, -1 for a header
        self._headers: dict[int, str] = {}  # row -> header text
        # rows of each path whose thumbnail was asked for (painted rows only, never all rows)
        self._row_of: dict[str, list[int]] = {}
        self._ready: set[str] = set()
        self._placeholder = cache.placeholder()
        cache.ready.connect(self._on_ready)

    # ----------------------------------------------------------------- content
    def set_images(
        self,
        paths: tuple[str, ...],
        categories: tuple[str, ...],
        groups: list[tuple[str, list[int]]],
        *,
        only: str | None = None,
    ) -> None:
        """Show ``groups`` ((category, item indices), from the engine), all or ``only`` one."""
        self.beginResetModel()
        self._paths, self._categories = paths, categories
        self._headers, self._row_of = {}, {}
        parts: list[np.ndarray] = []
        n_rows = 0
        for category, indices in groups:
            if only is not None and category != only:
                continue
            if only is None:
                self._headers[n_rows] = f"{category or '(no category)'}  ·  {len(indices)}"
                parts.append(np.array([-1], dtype=np.int64))
                n_rows += 1
            parts.append(np.asarray(indices, dtype=np.int64))
            n_rows += len(indices)
        # one array, not a Python int per row: a million-image pool stays cheap to show
        self._items = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        self.endResetModel()

    def clear(self) -> None:
        self.set_images((), (), [])

    def is_header(self, row: int) -> bool:
        return self._items[row] < 0

    def item(self, row: int) -> int:
        """The image-set index shown in ``row`` (-1 for a header)."""
        return int(self._items[row])

    def image_rows(self) -> list[int]:
        return np.flatnonzero(self._items >= 0).tolist()

    def image_count(self) -> int:
        return int(np.count_nonzero(self._items >= 0))

    def thumbnail_ready(self, row: int) -> bool:
        """Whether ``row``'s thumbnail has been decoded (tests, status)."""
        i = self._items[row]
        return i >= 0 and self._paths[i] in self._ready

    # ----------------------------------------------------------------- model
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's default
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        row = index.row()
        i = int(self._items[row])
        if role == HEADER_ROLE:
            return i < 0
        if role == ITEM_ROLE:
            return i
        if i < 0:
            return self._headers[row] if role == Qt.ItemDataRole.DisplayRole else None
        path = self._paths[i]
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(path).name if path else f"item {i}"
        if role == Qt.ItemDataRole.DecorationRole:
            # Only painted rows get here, so only visible images are decoded.
            rows = self._row_of.setdefault(path, [])
            if row not in rows:
                rows.append(row)
            pixmap = self.cache.get(path) if path else None
            return pixmap if pixmap is not None else self._placeholder
        if role == Qt.ItemDataRole.ToolTipRole:
            cat = self._categories[i]
            return f"{path or '(no image file)'}\ncategory: {cat or '–'}\nitem {i}"
        if role == PATH_ROLE:
            return path
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if index.isValid() and self._items[index.row()] < 0:
            return Qt.ItemFlag.ItemIsEnabled
        return super().flags(index)

    def _on_ready(self, path: str) -> None:
        self._ready.add(path)
        for row in self._row_of.get(path, ()):
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class _Delegate(QStyledItemDelegate):
    """Fixed cells for images, full-width rows for category headers (no data fetched)."""

    def __init__(self, view: QListView, cell: QSize) -> None:
        super().__init__(view)
        self.view = view
        self.cell = cell

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        if index.data(HEADER_ROLE):
            width = self.view.viewport().width() - 2 * self.view.spacing() - 4
            return QSize(max(width, self.cell.width()), 26)
        return self.cell

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        if not index.data(HEADER_ROLE):
            super().paint(painter, option, index)
            return
        painter.save()
        rect = option.rect.adjusted(2, 0, -2, 0)  # type: ignore[attr-defined]
        font = QFont(option.font)  # type: ignore[attr-defined]
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(option.palette.color(option.palette.ColorRole.WindowText))  # type: ignore[attr-defined]
        painter.drawText(
            rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, index.data()
        )
        painter.setPen(option.palette.color(option.palette.ColorRole.Mid))  # type: ignore[attr-defined]
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        painter.restore()


class ImageViewer(QDialog):
    """One image, larger, with its path and category."""

    def __init__(self, path: str, category: str, item: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(Path(path).name if path else f"item {item}")
        reader = QImageReader(path)
        reader.setAutoTransform(True)
        size = reader.size()
        if size.isValid() and max(size.width(), size.height()) > _LARGE:
            reader.setScaledSize(size.scaled(_LARGE, _LARGE, Qt.AspectRatioMode.KeepAspectRatio))
        image = reader.read()
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        if image.isNull():
            self.image.setText(f"cannot read this image: {reader.errorString()}")
        else:
            self.image.setPixmap(QPixmap.fromImage(image))
        self.caption = QLabel(
            f"<b>{category or 'no category'}</b> · item {item}<br>"
            f"<span style='color:#555'>{path or '(no image file)'}</span>"
        )
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caption.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.caption)


class ImageGrid(QWidget):
    """Category filter, a count line and the thumbnail grid of one image set.

    Signals: ``opened(int)`` — the image-set index of a double-clicked image.
    """

    opened = Signal(int)

    def __init__(self, cache: ThumbnailCache | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cache = cache or ThumbnailCache(size=96, parent=self)
        self.model = ImageGridModel(self.cache, self)
        self._groups: list[tuple[str, list[int]]] = []
        self._name = ""
        self._paths: tuple[str, ...] = ()
        self._categories: tuple[str, ...] = ()
        self.viewer: ImageViewer | None = None

        self.filter = QComboBox()
        self.filter.setObjectName("category_filter")
        self.filter.setToolTip("Show one category, or all of them with a header each")
        self.filter.currentTextChanged.connect(self._apply_filter)
        self.caption = QLabel()
        top = QHBoxLayout()
        top.addWidget(self.caption, 1)
        top.addWidget(self.filter)

        side = self.cache.size
        self.view = QListView()
        self.view.setObjectName("image_grid")
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(False)  # header rows are wider
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(500)
        self.view.setSpacing(4)
        self.view.setIconSize(QSize(side, side))
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.setItemDelegate(_Delegate(self.view, QSize(side + 16, side + 28)))
        self.view.setModel(self.model)
        self.view.setSelectionMode(QListView.SelectionMode.SingleSelection)
        self.view.doubleClicked.connect(lambda idx: self.show_image(idx.row()))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)

    def set_images(
        self,
        name: str,
        paths: tuple[str, ...],
        categories: tuple[str, ...],
        groups: list[tuple[str, list[int]]],
    ) -> None:
        """Show image set ``name`` grouped by ``groups`` (from the engine)."""
        self._groups = groups
        self._name = name
        self._paths, self._categories = paths, categories
        self.filter.blockSignals(True)
        self.filter.clear()
        self.filter.addItem(_ALL)
        for category, indices in groups:
            if category:
                self.filter.addItem(category, userData=len(indices))
        self.filter.setVisible(self.filter.count() > 2)
        self.filter.blockSignals(False)
        self._apply_filter(_ALL)

    def clear(self, text: str = "") -> None:
        self._groups = []
        self.model.clear()
        self.filter.hide()
        self.caption.setText(text)

    def _apply_filter(self, text: str) -> None:
        only = None if text in ("", _ALL) else text
        self.model.set_images(self._paths, self._categories, self._groups, only=only)
        n = self.model.image_count()
        cats = sum(1 for c, _ in self._groups if c)
        where = f"category {only}" if only else f"{cats} categories"
        self.caption.setText(f"<b>{self._name}</b> — {n} images, {where}")

    def show_category(self, category: str | None) -> None:
        """Filter to one category (None: all)."""
        self.filter.setCurrentText(category or _ALL)

    def show_image(self, row: int) -> ImageViewer | None:
        """Open the enlarged view of ``row`` (a header row does nothing)."""
        if row < 0 or row >= self.model.rowCount() or self.model.is_header(row):
            return None
        i = self.model.item(row)
        self.opened.emit(i)
        if self.viewer is not None:
            self.viewer.close()
        self.viewer = ImageViewer(self._paths[i], self._categories[i], i, self)
        self.viewer.show()
        return self.viewer


__all__ = ["HEADER_ROLE", "ITEM_ROLE", "PATH_ROLE", "ImageGrid", "ImageGridModel", "ImageViewer"]
