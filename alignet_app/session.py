"""The open project and the engine thread, shared by every page.

A :class:`Session` holds the project open for writing (its lock keeps a second instance from
writing to it), caches :meth:`Project.info` for the pages, and submits engine jobs. Pages call
:meth:`Session.run` with a function ``(project, control) -> job``; when the job ends the cache
is refreshed and :attr:`Session.changed` tells every page to redraw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from alignet_app import settings
from alignet_app.jobrunner import JobRunner
from alignet_app.viewjobs import ViewJobs
from alignet_engine.base.devices import set_cpu_threads
from alignet_engine.errors import ProjectError, ProjectLockedError
from alignet_engine.jobs import Job, JobControl
from alignet_engine.store import Project
from alignet_engine.views.status import StageState, pipeline_status

log = logging.getLogger(__name__)

StageJob = Callable[[Project, JobControl], Job[Any]]


class NoProjectError(ProjectError):
    """An action needs an open project."""

    def __init__(self) -> None:
        super().__init__("no project is open: create one (File ▸ New) or open one (File ▸ Open)")


class Session(QObject):
    """The open project (or none), its cached overview, and the job runner.

    Signals: ``opened(path)``, ``closed()``, ``changed()`` (the project's content changed:
    redraw), ``busy_changed(bool)``.
    """

    opened = Signal(str)
    closed = Signal()
    changed = Signal()
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = JobRunner(self)
        # read-only browsing (filters, maps) runs beside the engine thread, never behind it
        self.views = ViewJobs(self)
        self.runner.started.connect(lambda _label: self.busy_changed.emit(True))
        self.runner.idle.connect(self._after_job)
        self._project: Project | None = None
        self._info: dict[str, Any] | None = None
        self.preferences = settings.load_preferences()

    # ----------------------------------------------------------------- project
    @property
    def project(self) -> Project:
        if self._project is None:
            raise NoProjectError()
        return self._project

    @property
    def is_open(self) -> bool:
        return self._project is not None

    @property
    def read_only(self) -> bool:
        return self._project is not None and self._project.readonly

    @property
    def path(self) -> Path | None:
        return self._project.path if self._project is not None else None

    def new(self, path: str | Path, *, overwrite: bool = False) -> None:
        self._replace(Project.create(path, overwrite=overwrite))

    def open(self, path: str | Path) -> bool:
        """Open ``path`` for writing; read-only (returns False) when another process holds it.

        Other errors (missing file, not a project, newer schema) raise ProjectError.
        """
        try:
            project = Project.open(path)
            writable = not project.readonly
        except ProjectLockedError:
            log.warning("%s is open in another process; opening it read-only", path)
            project = Project.open(path, readonly=True)
            writable = False
        self._replace(project)
        return writable

    def save_as(self, path: str | Path) -> None:
        """Copy the project to ``path`` and continue there (not while a job runs)."""
        if self.runner.busy:
            raise ProjectError("wait for the running job to finish (or cancel it) first")
        self._replace(self.project.save_as(path), close_old=False)

    def close(self) -> None:
        if self._project is None:
            return
        self.runner.wait_idle()
        self._project.close()
        self._project = None
        self._info = None
        self.closed.emit()

    def _replace(self, project: Project, *, close_old: bool = True) -> None:
        if close_old and self._project is not None:
            self.runner.wait_idle()
            self._project.close()
        self._project = project
        settings.add_recent(project.path)
        self.refresh(emit=False)
        self.opened.emit(str(project.path))
        self.changed.emit()

    # ----------------------------------------------------------------- overview
    def info(self) -> dict[str, Any]:
        """:meth:`Project.info` of the open project, cached until the next change."""
        if self._info is None:
            self._info = self.project.info()
        return self._info

    def status(self) -> dict[str, StageState]:
        return pipeline_status(self.info()) if self.is_open else {}

    def refresh(self, *, emit: bool = True) -> None:
        self._info = None
        if emit:
            self.changed.emit()

    # ----------------------------------------------------------------- jobs
    def run(
        self,
        label: str,
        make_job: StageJob,
        on_result: Callable[[Any], None] | None = None,
    ) -> bool:
        """Run ``make_job(project, control)`` on the engine thread (False if one is running).

        CPU threads follow the preferences (all cores but one by default), so the event loop
        keeps a core while the job computes.
        """
        project = self.project
        threads = self.preferences.effective_threads

        def factory(control: JobControl) -> Job[Any]:
            set_cpu_threads(threads)
            return make_job(project, control)

        return self.runner.submit(label, factory, on_result)

    def _after_job(self) -> None:
        self.busy_changed.emit(False)
        if self.is_open:
            self.refresh()

    def shutdown(self) -> None:
        self.views.shutdown()
        self.runner.shutdown()
        if self._project is not None:
            self._project.close()
            self._project = None
