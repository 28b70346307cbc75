"""What every page of the main window has: the session, lazy redraws, and running a job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from alignet_app.notify import inform, warn
from alignet_app.session import Session, StageJob
from alignet_app.widgets import figure_export, theme


class Page(QWidget):
    """A page of the main window.

    Subclasses set ``key`` (navigator id; the ``title`` and the ``stage`` whose state the
    navigator shows come from :data:`~alignet_app.pages.PAGES`), build their widgets in
    ``__init__`` and redraw from the project in :meth:`refresh`. ``refresh`` runs when the
    project changes while the page is visible, or when it is shown after a change, so hidden
    pages cost nothing. Pages hold no numerics: they read results from the project and run
    the engine's jobs.
    """

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    stage: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # title and stage come from the page registry, the one place that names every page
        super().__init_subclass__(**kwargs)
        from alignet_app.pages import SPECS

        if cls.key:
            cls.title, cls.stage = SPECS[cls.key].title, SPECS[cls.key].stage

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._dirty = True
        session.changed.connect(self._on_changed)
        session.closed.connect(self._on_changed)
        session.busy_changed.connect(lambda _busy: self.update_actions())

    def set_panes(self, controls: QWidget, results: QWidget, widths: tuple[int, int]) -> QSplitter:
        """The page's layout: ``controls`` (forms, run buttons) beside ``results`` (plots,
        tables), which take the width a larger window gives; returns the splitter."""
        splitter = QSplitter()
        splitter.addWidget(controls)
        splitter.addWidget(results)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes(list(widths))
        QVBoxLayout(self).addWidget(splitter)
        return splitter

    # ----------------------------------------------------------------- redraws
    def refresh(self) -> None:
        """Redraw from ``self.session`` (which may have no project open)."""

    def _on_changed(self) -> None:
        self._dirty = True
        if self.isVisible():
            self._refresh_now()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self._dirty:
            self._refresh_now()
        # every plot and table of the page: right-click Save figure / Copy data (CSV)
        figure_export.install_everywhere(self)

    def _refresh_now(self) -> None:
        self._dirty = False
        self._apply_device_preference()
        self.refresh()
        self.update_actions()

    # ----------------------------------------------------------------- actions
    def update_actions(self) -> None:
        """Enable the page's buttons, or say next to each why it is disabled (override)."""

    def blocked_reason(self) -> str:
        """Why no job can start now ("" when one can): no project, read-only, or busy."""
        if not self.session.is_open:
            return "No project is open: create or open one (File menu)."
        if self.session.read_only:
            return "The project is open read-only (another window or process writes to it)."
        if self.session.runner.busy:
            return f"Wait for '{self.session.runner.label}' to finish (or cancel it)."
        return ""

    def _apply_device_preference(self) -> None:
        """Start every ``device`` field of the page's forms at the preferred device.

        Done once per form, so a user who then picks "auto" keeps it.
        """
        from alignet_app.widgets.config_form import ConfigForm

        preferred = self.session.preferences.device
        for form in self.findChildren(ConfigForm):
            if "device" in form.editors and not form.property("device_preset"):
                form.setProperty("device_preset", True)
                if preferred != "auto":
                    form.set_value("device", preferred)

    # ----------------------------------------------------------------- jobs
    def run_job(
        self, label: str, make_job: StageJob, on_result: Callable[[Any], None] | None = None
    ) -> bool:
        """Run an engine job; tells the user (and returns False) if it cannot start now."""
        if not self.session.is_open:
            inform(self, "No project", "Create or open a project first.")
            return False
        if self.session.read_only:
            warn(
                self,
                "Read-only project",
                "This project is open in another window or process, so it is read-only here.",
            )
            return False
        if not self.session.run(label, make_job, on_result):
            inform(
                self,
                "A job is running",
                f"'{self.session.runner.label}' is still running; wait or cancel it first.",
            )
            return False
        return True


def error_label() -> QLabel:
    """A red, word-wrapped label for validation errors shown next to a form."""
    label = QLabel()
    label.setObjectName("error")
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {theme.colours().error};")  # readable on light and dark
    label.hide()
    return label


def reason_label() -> QLabel:
    """A word-wrapped label that says why the button beside it is disabled."""
    label = QLabel()
    label.setObjectName("reason")
    label.setWordWrap(True)
    label.hide()
    return label


def set_available(button: QWidget, note: QLabel, reason: str) -> None:
    """Enable ``button`` when ``reason`` is empty; else disable it and show ``reason``."""
    button.setEnabled(not reason)
    note.setText(reason)
    note.setVisible(bool(reason))
