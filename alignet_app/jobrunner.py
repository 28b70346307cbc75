"""The engine thread: one long-lived QThread that runs engine jobs one at a time.

Widgets never see the job; they see signals carrying the engine's frozen event dataclasses
(:mod:`alignet_engine.jobs`), which are safe to pass between threads. The runner owns the
:class:`JobControl` of the running job, so cancel / pause / resume work from the GUI thread.
"""

from __future__ import annotations

import gc
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Cancelled, Job, JobControl, LossBatch, Message, Progress, StageDone

log = logging.getLogger(__name__)

#: Builds the job once it runs on the engine thread (so opening files etc. happens there).
JobFactory = Callable[[JobControl], Job[Any]]


@dataclass(frozen=True)
class JobFailure:
    """Why a job stopped: ``user_error`` is True for bad input (an AlignetError or ValueError),
    False for a bug, whose ``details`` hold the traceback."""

    label: str
    text: str
    user_error: bool
    details: str = ""


def _settle_heap(*, everything: bool) -> None:
    """Collect garbage now and freeze what survives (``gc.freeze``), so the automatic full
    collections during a long job scan only what was allocated since.

    Why: a full collection walks every tracked object of the process (torch, Qt, pyqtgraph,
    the project's caches: hundreds of thousands) and holds the GIL all along: measured at
    0.45-0.5 s, the window froze that long once mid-training (tests/app/test_distill_page.py's
    stall probe). The runner settles the whole heap (``everything``: earlier jobs' frozen
    objects too, so their cyclic garbage never outlives one job) on the GUI thread when a
    job is submitted, and the engine thread settles what the job's set-up allocated when its
    first loss arrives. The whole-heap collection must run on the GUI thread: the garbage
    then holds closed windows' Qt objects (timers, threads, actions, graphics items), which
    must not be destroyed on another thread.
    """
    if everything:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


class _Worker(QObject):
    """Lives on the engine thread; iterates the job and re-emits its events."""

    event = Signal(object)
    done = Signal(str, object)  # label, the job's return value
    failed = Signal(object)  # JobFailure
    cancelled = Signal(str)

    @Slot(str, object, object)
    def run(self, label: str, factory: JobFactory, control: JobControl) -> None:
        try:
            job = factory(control)
            training = False
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    self.done.emit(label, stop.value)
                    return
                if not training and isinstance(event, LossBatch):
                    training = True
                    _settle_heap(everything=False)
                self.event.emit(event)
        except Cancelled:
            self.cancelled.emit(label)
        except (AlignetError, ValueError, OSError) as exc:
            log.warning("%s failed: %s", label, exc)
            self.failed.emit(JobFailure(label, str(exc), True, traceback.format_exc()))
        except Exception as exc:  # a bug: keep the app alive and show the traceback
            log.exception("%s crashed", label)
            text = f"{type(exc).__name__}: {exc}"
            self.failed.emit(JobFailure(label, text, False, traceback.format_exc()))


class JobRunner(QObject):
    """Runs one job at a time on the engine thread.

    Signals (all delivered on the GUI thread): ``started(label)``, ``progress(Progress)``,
    ``loss(LossBatch)``, ``message(Message)``, ``stage_done(StageDone)``,
    ``finished(label, result)``, ``failed(JobFailure)``, ``cancelled(label)``, then
    ``ended(label)`` and ``idle()`` after any of those three (``ended`` first, so whoever
    started the job has put its bookkeeping away before the redraw that ``idle`` triggers).
    """

    started = Signal(str)
    progress = Signal(object)
    loss = Signal(object)
    message = Signal(object)
    stage_done = Signal(object)
    finished = Signal(str, object)
    failed = Signal(object)
    cancelled = Signal(str)
    ended = Signal(str)
    idle = Signal()
    _start = Signal(str, object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("alignet-engine")
        self._worker = _Worker()
        self._worker.moveToThread(self._thread)
        self._start.connect(self._worker.run)
        self._worker.event.connect(self._dispatch)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._thread.start()
        self._control: JobControl | None = None
        self._label = ""
        self._callback: Callable[[Any], None] | None = None
        self.started_at = 0.0

    # ----------------------------------------------------------------- state
    @property
    def busy(self) -> bool:
        return self._control is not None

    @property
    def label(self) -> str:
        """The running job's label ('' when idle)."""
        return self._label

    @property
    def paused(self) -> bool:
        return self._control is not None and self._control.paused

    # ----------------------------------------------------------------- control
    def submit(
        self, label: str, factory: JobFactory, on_result: Callable[[Any], None] | None = None
    ) -> bool:
        """Start ``factory(control)`` on the engine thread; False if a job is already running.

        ``on_result`` is called on the GUI thread with the job's return value on success.
        """
        if self.busy:
            return False
        self._control = JobControl()
        self._label = label
        self._callback = on_result
        _settle_heap(everything=True)  # here, on the GUI thread (see _settle_heap)
        self.started_at = time.monotonic()
        self.started.emit(label)
        self._start.emit(label, factory, self._control)
        return True

    def cancel(self) -> None:
        if self._control is not None:
            self._control.cancel()

    def pause(self) -> None:
        if self._control is not None:
            self._control.pause()

    def resume(self) -> None:
        if self._control is not None:
            self._control.resume()

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Cancel any job and wait (processing events) until the runner is idle."""
        from PySide6.QtCore import QCoreApplication

        self.cancel()
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.01)
        return not self.busy

    def shutdown(self) -> None:
        """Cancel the running job and stop the engine thread (at application exit)."""
        self.wait_idle(10.0)
        self._thread.quit()
        self._thread.wait(10_000)

    # ----------------------------------------------------------------- events
    @Slot(object)
    def _dispatch(self, event: object) -> None:
        if isinstance(event, Progress):
            self.progress.emit(event)
        elif isinstance(event, LossBatch):
            self.loss.emit(event)
        elif isinstance(event, Message):
            self.message.emit(event)
        elif isinstance(event, StageDone):
            self.stage_done.emit(event)

    def _end(self) -> Callable[[Any], None] | None:
        callback = self._callback
        self._control = None
        self._label = ""
        self._callback = None
        return callback

    @Slot(str, object)
    def _on_done(self, label: str, result: object) -> None:
        callback = self._end()
        self.finished.emit(label, result)
        if callback is not None:
            callback(result)
        self._after(label)

    @Slot(object)
    def _on_failed(self, failure: JobFailure) -> None:
        self._end()
        self.failed.emit(failure)
        self._after(failure.label)

    @Slot(str)
    def _on_cancelled(self, label: str) -> None:
        self._end()
        self.cancelled.emit(label)
        self._after(label)

    def _after(self, label: str) -> None:
        self.ended.emit(label)
        self.idle.emit()
