"""Read-only view jobs (maps, filters, sorts, previews) on their own worker threads.

The engine thread (:mod:`alignet_app.jobrunner`) runs one writing job at a time; a 100k-step
distillation holds it for hours. Browsing must not wait behind it (issue 10 item 10), so jobs
that only *read* run here instead: on a small :class:`QThreadPool`, each with its own
:class:`JobControl`, opening the project read-only (``Project.open(path, readonly=True)``:
no lock, and the store's atomic writes mean a reader always sees a whole version). They work
the same on a project that is read-only because another process holds it.

A job is submitted under a *key* ("filter", "map", …): submitting again under the same key
cancels the previous job and drops its result, so a debounced live filter only ever shows the
latest request. Results come back on the GUI thread through a queued signal.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThreadPool, Signal, Slot

from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Cancelled, Job, JobControl, Progress
from alignet_engine.store import Project

log = logging.getLogger(__name__)

#: worker threads: two, so a slow job (scoring a judgment set) does not hold a filter back,
#: while the engine thread keeps its cores for training
THREADS = 2

ViewJob = Callable[[JobControl], Job[Any]]
T = TypeVar("T")


def read_only(path: str | Path) -> Project:
    """The project at ``path`` opened for reading only (no lock; safe beside a writer)."""
    return Project.open(path, readonly=True)


def reading(path: str | Path, work: Callable[[Project, JobControl], Job[T]]) -> ViewJob:
    """The view job that runs ``work(project, control)`` on the project at ``path`` opened
    for reading only (:func:`read_only`) and closes the project after."""

    def job(control: JobControl) -> Job[T]:
        project = read_only(path)
        try:
            return (yield from work(project, control))
        finally:
            project.close()

    return job


class _Task(QRunnable):
    def __init__(self, owner: ViewJobs, token: int, key: str, make: ViewJob, control: JobControl):
        super().__init__()
        self.owner, self.token, self.key, self.make, self.control = owner, token, key, make, control
        self.setAutoDelete(True)

    def run(self) -> None:
        emit = self.owner._deliver.emit
        try:
            job = self.make(self.control)
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    emit(self.token, "done", stop.value)
                    return
                if isinstance(event, Progress):
                    emit(self.token, "progress", event)
        except Cancelled:
            emit(self.token, "cancelled", None)
        except (AlignetError, ValueError, OSError) as exc:
            emit(self.token, "error", str(exc))
        except Exception as exc:  # a bug: report it, keep the app alive
            log.error("view job %s crashed:\n%s", self.key, traceback.format_exc())
            emit(self.token, "error", f"{type(exc).__name__}: {exc}")


class ViewJobs(QObject):
    """Runs read-only jobs off the GUI thread, latest request per key wins."""

    _deliver = Signal(int, str, object)  # token, what ("progress", "done", ...), payload

    def __init__(self, parent: QObject | None = None, threads: int = THREADS) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._deliver.connect(self._on_deliver)
        self._token = 0
        # key → (token, control, on_result, on_error, on_progress) of the latest request
        self._live: dict[str, tuple[int, JobControl, Any, Any, Any]] = {}
        self.completed = 0  # jobs whose result was delivered (tests)

    def submit(
        self,
        key: str,
        make_job: ViewJob,
        on_result: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> JobControl:
        """Run ``make_job(control)`` on a worker; cancels the previous job under ``key``."""
        self.cancel(key)
        self._token += 1
        control = JobControl()
        self._live[key] = (self._token, control, on_result, on_error, on_progress)
        self.pool.start(_Task(self, self._token, key, make_job, control))
        return control

    def cancel(self, key: str) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    def busy(self, key: str | None = None) -> bool:
        """A request (under ``key``, or any) has not delivered yet."""
        return key in self._live if key is not None else bool(self._live)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Process events until every request delivered (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._live and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.005)
        return not self._live

    def shutdown(self) -> None:
        for key in list(self._live):
            self.cancel(key)
        self.pool.waitForDone(10_000)

    @Slot(int, str, object)
    def _on_deliver(self, token: int, what: str, payload: object) -> None:
        key = next((k for k, e in self._live.items() if e[0] == token), None)
        if key is None:
            return  # superseded or cancelled: drop it
        _token, _control, on_result, on_error, on_progress = self._live[key]
        if what == "progress":
            if on_progress is not None:
                on_progress(payload)
            return
        del self._live[key]
        if what == "done":
            self.completed += 1
            on_result(payload)
        elif what == "error":
            if on_error is not None:
                on_error(str(payload))
            else:
                log.warning("view job %s failed: %s", key, payload)
