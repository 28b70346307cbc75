"""What every page of the main window has: the session, lazy redraws, and running a job.

As in Orange's widget base (``OWWidget`` with ``ConcurrentWidgetMixin``: one ``start(task)``,
messages declared once), a page does not wire the job runner itself: :meth:`Page.start_job`
validates the page's configuration (a bad value goes to the page's red :attr:`Page.error`
label) and runs the stage's job; the base remembers which job the page started
(:attr:`Page.running_job`), tells the page when it ends (:meth:`Page.job_ended`), enables
the page's buttons when the runner's state changes (:meth:`Page.update_actions`) and redraws
it from the project afterwards. :class:`StageControls` is the settings box of a stage page:
the generated config form, the run button, why that button is disabled, and the error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from alignet_app.jobrunner import JobFailure
from alignet_app.notify import inform, warn
from alignet_app.session import Session, StageJob
from alignet_app.viewjobs import reading
from alignet_app.widgets import figure_export, theme
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Job, JobControl

if TYPE_CHECKING:
    from alignet_app.widgets.config_form import ConfigForm
    from alignet_engine.store import Project

C = TypeVar("C")


class Page(QWidget):
    """A page of the main window.

    Subclasses set ``key`` (navigator id; the ``title`` and the ``stage`` whose state the
    navigator shows come from :data:`~alignet_app.pages.PAGES`), build their widgets in
    ``__init__`` and redraw from the project in :meth:`refresh`. ``refresh`` runs when the
    project changes while the page is visible, or when it is shown after a change, so hidden
    pages cost nothing. Pages hold no numerics: they read results from the project and run
    the engine's jobs, with :meth:`start_job` (validate a configuration, then run) or
    :meth:`run_job`.
    """

    key: ClassVar[str] = ""
    title: ClassVar[str] = ""
    stage: ClassVar[str | None] = None
    #: put before a configuration error in :attr:`error` (e.g. "Cannot start: ")
    error_prefix: ClassVar[str] = ""
    #: show the failure of a job this page started in :attr:`error` too (the main window
    #: always reports it in the status bar, the log and a dialog)
    inline_failures: ClassVar[bool] = False

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
        #: the label of the job this page started, while it runs ("" otherwise)
        self.running_job = ""
        #: the page's red error label (hidden until :meth:`show_error`); each page places it
        self.error = error_label(self)
        session.changed.connect(self._on_changed)
        session.closed.connect(self._on_changed)
        session.busy_changed.connect(lambda _busy: self.update_actions())
        session.runner.failed.connect(self._job_failed)
        session.runner.ended.connect(self._job_ended)

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

    # ----------------------------------------------------------------- errors
    def show_error(self, text: str) -> None:
        """Show ``text`` in the page's red error label."""
        self.error.setText(text)
        self.error.show()

    def clear_error(self) -> None:
        self.error.hide()

    def validated(self, build: Callable[[], C]) -> C | None:
        """``build()`` (a configuration read from the page's widgets), or None after showing
        its ValueError / AlignetError (prefixed with :attr:`error_prefix`) in :attr:`error`."""
        self.clear_error()
        try:
            return build()
        except (ValueError, AlignetError) as exc:
            self.show_error(f"{self.error_prefix}{exc}")
            return None

    # ----------------------------------------------------------------- jobs
    def start_job(
        self,
        build: Callable[[], C],
        label: Callable[[C], str],
        job: Callable[[Project, C, JobControl], Job[Any]],
        on_result: Callable[[Any], None] | None = None,
    ) -> bool:
        """Validate, then run a stage: ``job(project, config, control)`` with
        ``config = build()``, under the runner label ``label(config)``.

        False when the configuration is bad (shown in :attr:`error`) or no job can start now
        (the user is told). Stage functions (``cluster``, ``sample``, ``run_distill``, …) have
        the signature ``job`` asks for.
        """
        config = self.validated(build)
        if config is None:
            return False
        return self.run_job(
            label(config), lambda project, control: job(project, config, control), on_result
        )

    def run_job(
        self, label: str, make_job: StageJob, on_result: Callable[[Any], None] | None = None
    ) -> bool:
        """Run an engine job; tells the user (and returns False) if it cannot start now.

        While it runs, :attr:`running_job` is ``label``; :meth:`job_ended` follows its end.
        """
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
        self.running_job = label
        return True

    def view_job(
        self,
        key: str,
        work: Callable[[Project, JobControl], Job[Any]],
        on_result: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Run ``work(project, control)`` on a view worker, on the open project opened for
        reading only, beside the engine thread (:mod:`alignet_app.viewjobs`: the latest
        request under ``key`` wins)."""
        self.session.views.submit(
            key, reading(self.session.project.path, work), on_result, on_error
        )

    def job_ended(self, label: str) -> None:
        """The job ``label`` that this page started has ended (finished, failed or was
        cancelled); :attr:`running_job` is "" again. Runs before the redraw that follows every
        job, so :meth:`refresh` sees the page idle (override)."""

    def _job_failed(self, failure: JobFailure) -> None:
        if self.inline_failures and self.running_job:
            self.show_error(f"{failure.label} failed: {failure.text}")

    def _job_ended(self, label: str) -> None:
        if self.running_job:
            self.running_job = ""
            self.job_ended(label)


class StageControls(QGroupBox):
    """The settings box of a stage: the form generated from the stage's configuration, rows
    the page adds under it, the run button, a note saying why the button is disabled (shown
    by :meth:`set_available`) and, when given, the page's error label.

    ``on_run`` is called (without arguments) when the button is clicked; ``align_right``
    puts the button at the right of its row instead of across the box.
    """

    def __init__(
        self,
        title: str,
        form: ConfigForm,
        run_text: str,
        on_run: Callable[[], object],
        *,
        tooltip: str = "",
        rows: Sequence[QWidget | QLayout] = (),
        error: QLabel | None = None,
        align_right: bool = False,
    ) -> None:
        super().__init__(title)
        self.form = form
        self.button = QPushButton(run_text)
        if tooltip:
            self.button.setToolTip(tooltip)
        self.button.clicked.connect(lambda: on_run())
        self.reason = reason_label()
        layout = QVBoxLayout(self)
        layout.addWidget(form)
        for row in rows:
            if isinstance(row, QLayout):
                layout.addLayout(row)
            else:
                layout.addWidget(row)
        if align_right:
            button_row = QHBoxLayout()
            button_row.addStretch(1)
            button_row.addWidget(self.button)
            layout.addLayout(button_row)
        else:
            layout.addWidget(self.button)
        layout.addWidget(self.reason)
        if error is not None:
            layout.addWidget(error)

    def set_available(self, reason: str) -> None:
        """Enable the run button when ``reason`` is empty; else disable it and say why."""
        set_available(self.button, self.reason, reason)


def column(*items: QWidget | QLayout, stretch: QWidget | None = None) -> QWidget:
    """A widget holding ``items`` top to bottom without margins; ``stretch`` (one of them)
    takes the height that is left."""
    widget = QWidget()
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    for item in items:
        if isinstance(item, QLayout):
            layout.addLayout(item)
        else:
            layout.addWidget(item, 1 if item is stretch else 0)
    return widget


def scroll_column(
    *widgets: QWidget, min_width: int, margins: int | None = None, sideways: bool = True
) -> QScrollArea:
    """A side panel: ``widgets`` top to bottom above a stretch, in a scroll area at least
    ``min_width`` px wide that scrolls sideways too unless ``sideways`` is False."""
    panel = QWidget()
    layout = QVBoxLayout(panel)
    if margins is not None:
        layout.setContentsMargins(margins, margins, margins, margins)
    for widget in widgets:
        layout.addWidget(widget)
    layout.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(panel)
    scroll.setMinimumWidth(min_width)
    if not sideways:
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return scroll


def error_label(parent: QWidget | None = None) -> QLabel:
    """A red, word-wrapped label for validation errors shown next to a form."""
    label = QLabel(parent)
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
