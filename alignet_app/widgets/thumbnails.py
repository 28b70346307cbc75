"""Thumbnails decoded off the GUI thread and kept in a bounded LRU cache.

``cache.get(path)`` returns the pixmap at once when it is cached; otherwise it returns None,
queues the file on a small thread pool (not the engine thread: browsing must not wait for a
training job) and emits ``ready(path)`` when the thumbnail can be fetched. ``QImageReader``
decodes straight to the thumbnail size, so large images cost little memory. Views repaint on
``ready``; a view scrolled past ten million rows only ever asks for what is on screen.
"""

from __future__ import annotations

from collections import OrderedDict

from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QColor, QImage, QImageReader, QPainter, QPixmap


class _Signals(QObject):
    loaded = Signal(str, QImage)


class _Load(QRunnable):
    def __init__(self, path: str, size: int, signals: _Signals) -> None:
        super().__init__()
        self.path, self.size, self.signals = path, size, signals
        self.setAutoDelete(True)

    def run(self) -> None:
        reader = QImageReader(self.path)
        reader.setAutoTransform(True)
        full = reader.size()
        if full.isValid() and full.width() > 0 and full.height() > 0:
            reader.setScaledSize(
                full.scaled(self.size, self.size, Qt.AspectRatioMode.KeepAspectRatio)
            )
        image = reader.read()
        if image.isNull():
            image = _placeholder(self.size, "?")
        self.signals.loaded.emit(self.path, image)


def _placeholder(size: int, text: str) -> QImage:
    image = QImage(size, size, QImage.Format.Format_RGB32)
    image.fill(QColor("#dddddd"))
    painter = QPainter(image)
    painter.setPen(QColor("#888888"))
    painter.drawText(image.rect(), Qt.AlignmentFlag.AlignCenter, text)
    painter.end()
    return image


class ThumbnailCache(QObject):
    """Square-bounded thumbnails of image files.

    Parameters
    ----------
    size : longest side of a thumbnail, pixels.
    capacity : thumbnails kept (least recently used ones are dropped).
    threads : decoder threads.
    """

    ready = Signal(str)

    def __init__(
        self, size: int = 128, capacity: int = 2000, threads: int = 2, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.size = size
        self.capacity = capacity
        self._cache: OrderedDict[str, QPixmap] = OrderedDict()
        self._pending: set[str] = set()
        self._waiting: QPixmap | None = None
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._signals = _Signals()
        self._signals.loaded.connect(self._on_loaded)

    def get(self, path: str) -> QPixmap | None:
        """The thumbnail if cached (and mark it recently used); else queue it and return None."""
        pixmap = self._cache.get(path)
        if pixmap is not None:
            self._cache.move_to_end(path)
            return pixmap
        if path and path not in self._pending:
            self._pending.add(path)
            self._pool.start(_Load(path, self.size, self._signals))
        return None

    def placeholder(self) -> QPixmap:
        """The "…" tile shown until a thumbnail is decoded (drawn once, then shared)."""
        if self._waiting is None:
            self._waiting = QPixmap.fromImage(_placeholder(self.size, "…"))
        return self._waiting

    def wait(self, timeout_ms: int = 10_000) -> bool:
        """Block until queued decodes finish (tests); signals still need the event loop."""
        return bool(self._pool.waitForDone(timeout_ms))

    def clear(self) -> None:
        self._pool.clear()
        self._cache.clear()
        self._pending.clear()

    @Slot(str, QImage)
    def _on_loaded(self, path: str, image: QImage) -> None:
        self._pending.discard(path)
        self._cache[path] = QPixmap.fromImage(image)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        self.ready.emit(path)

    def sizeHint(self) -> QSize:  # a convenience for grid views
        return QSize(self.size, self.size)
