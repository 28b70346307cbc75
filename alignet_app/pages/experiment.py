"""Experiment mode: run odd-one-out trials with a participant and store the answers.

The page sets a session up (image set, participant number, trials, repeats, breaks, the
consent and instruction texts), lists every session stored next to the project with its
progress, resumes unfinished ones, and saves answers as a judgments set ready for alignment.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.defaults import judged_image_set
from alignet_app.pages.base import Page, reason_label, set_available
from alignet_app.session import Session
from alignet_app.widgets.config_form import ConfigForm
from alignet_app.widgets.experiment_window import ExperimentWindow
from alignet_engine.experiment import (
    ExperimentConfig,
    ExperimentLog,
    save_to_project,
    session_path,
    sessions,
)
from alignet_engine.jobs import Job, JobControl, StageDone
from alignet_engine.store import Project


class ExperimentPage(Page):
    key = "experiment"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.window_: ExperimentWindow | None = None
        self.fullscreen = True

        self.form = ConfigForm(
            ExperimentConfig,
            fields=[
                "image_set",
                "participant",
                "n_trials",
                "repeat_fraction",
                "break_every",
                "seed",
                "judgments_name",
            ],
            choices={"image_set": []},
        )
        defaults = ExperimentConfig(image_set="x")
        self.consent = QPlainTextEdit(defaults.consent)
        self.consent.setToolTip("Shown first; the participant must agree to go on.")
        self.instructions = QPlainTextEdit(defaults.instructions)
        self.instructions.setToolTip("Shown after consent and when a session is resumed.")
        for edit in (self.consent, self.instructions):
            edit.setMaximumHeight(110)
        start = QPushButton("Start new session")
        start.setToolTip("Open the participant's screen (full screen; Esc pauses)")
        start.clicked.connect(self.start_new)
        preview = QPushButton("Preview the participant screen")
        preview.setToolTip(
            "See the consent, instructions, trials and breaks as a participant will, in a "
            "window; nothing is stored"
        )
        preview.clicked.connect(self.preview)
        self.start_button = start
        self.start_reason = reason_label()

        setup = QGroupBox("New session")
        setup_layout = QVBoxLayout(setup)
        setup_layout.addWidget(self.form)
        setup_layout.addWidget(QLabel("Consent text"))
        setup_layout.addWidget(self.consent)
        setup_layout.addWidget(QLabel("Instructions"))
        setup_layout.addWidget(self.instructions)
        setup_layout.addWidget(self.error)
        start_row = QHBoxLayout()
        start_row.addWidget(start)
        start_row.addWidget(preview)
        setup_layout.addLayout(start_row)
        setup_layout.addWidget(self.start_reason)

        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(
            ["Session", "Participant", "Answered", "Self-agreement", "Saved as"]
        )
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        resume = QPushButton("Resume")
        resume.setToolTip("Continue the selected session at its first unanswered trial")
        resume.clicked.connect(lambda: self.resume(self.selected()))
        save = QPushButton("Save to project")
        save.setToolTip("Store the selected session's answers as judgments, ready for alignment")
        save.clicked.connect(lambda: self.save(self.selected()))
        buttons = QHBoxLayout()
        buttons.addWidget(resume)
        buttons.addWidget(save)
        buttons.addStretch(1)
        listing = QGroupBox("Sessions")
        listing_layout = QVBoxLayout(listing)
        listing_layout.addWidget(self.table)
        listing_layout.addLayout(buttons)

        layout = QHBoxLayout(self)
        layout.addWidget(setup, 2)
        layout.addWidget(listing, 3)
        self._logs: list[ExperimentLog] = []

    # ----------------------------------------------------------------- view
    def update_actions(self) -> None:
        reason = self.blocked_reason()
        if not reason and not any(n >= 3 for n in self.session.info()["imagesets"].values()):
            reason = "Import an image set of at least 3 images first (Data page)."
        set_available(self.start_button, self.start_reason, reason)

    def refresh(self) -> None:
        self.table.setRowCount(0)
        self._logs = []
        if not self.session.is_open:
            return
        info = self.session.info()
        self.form.set_choices(
            "image_set", list(info["imagesets"]), preferred=judged_image_set(info), strict=True
        )
        saved = set(info["judgments"])
        self._logs = sessions(self.session.project)
        self.table.setRowCount(len(self._logs))
        for row, log in enumerate(self._logs):
            agreement = log.consistency()
            name = f"{log.config.judgments_name}-p{log.config.participant}"
            cells = [
                log.path.name,
                str(log.config.participant),
                f"{log.next_trial} / {len(log.plan)}",
                "—"
                if agreement["agreement"] is None
                else f"{agreement['agreement']:.2f} (n={agreement['n_repeats']})",
                name if name in saved else "not saved",
            ]
            for col, text in enumerate(cells):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def selected(self) -> ExperimentLog | None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        return self._logs[min(rows)] if rows else None

    # ----------------------------------------------------------------- actions
    def experiment_config(self) -> ExperimentConfig:
        """The experiment the form describes (raises ValueError / AlignetError)."""
        return self.form.config(  # type: ignore[no-any-return]
            consent=self.consent.toPlainText().strip(),
            instructions=self.instructions.toPlainText().strip(),
        )

    def _new_session(self) -> ExperimentLog:
        """A new session file of the form's experiment in the project's folder."""
        config = self.experiment_config()
        project = self.session.project
        n_items = len(project.imageset(config.image_set))
        return ExperimentLog.create(session_path(project, config), config, n_items)

    def _preview_session(
        self,
    ) -> tuple[ExperimentConfig, tempfile.TemporaryDirectory[str], ExperimentLog]:
        """A session file of the form's experiment in a temporary folder (a preview)."""
        config = self.experiment_config()
        n_items = len(self.session.project.imageset(config.image_set))
        folder = tempfile.TemporaryDirectory(prefix="alignet-preview-")
        log = ExperimentLog.create(Path(folder.name) / "preview.jsonl", config, n_items)
        return config, folder, log

    def start_new(self) -> ExperimentWindow | None:
        """Create the session file and open the participant's screen."""
        log = self.validated(self._new_session)
        if log is None:
            return None
        self.refresh()
        return self._open(log)

    def preview(self) -> ExperimentWindow | None:
        """The participant's screen with the form's settings, in a window; the answers go to
        a temporary file that is deleted when the preview closes."""
        preview = self.validated(self._preview_session)
        if preview is None:
            return None
        config, folder, log = preview
        paths = self.session.project.imageset(config.image_set).paths
        window = ExperimentWindow(log, paths)
        window.setWindowTitle("Preview of the participant screen (nothing is stored)")
        window.ended.connect(lambda _outcome, folder=folder: folder.cleanup())
        self.window_ = window
        window.resize(1000, 650)
        window.show()
        window.activateWindow()
        return window

    def resume(self, log: ExperimentLog | None) -> ExperimentWindow | None:
        if log is None:
            return None
        if log.finished:
            self.show_error(f"{log.path.name} is complete; nothing to resume.")
            return None
        return self._open(ExperimentLog.open(log.path))  # re-read: the file is the truth

    def _open(self, log: ExperimentLog) -> ExperimentWindow:
        paths = self.session.project.imageset(log.config.image_set).paths
        missing = [p for p in paths if not p or not Path(p).is_file()]
        window = ExperimentWindow(log, paths)
        window.ended.connect(lambda _outcome: self.refresh())
        if missing:
            self.show_error(
                f"Warning: {len(missing)} images of '{log.config.image_set}' are missing; "
                f"those trials show an empty frame (first: {missing[0] or '(no file)'})."
            )
        self.window_ = window
        if self.fullscreen:
            window.showFullScreen()
        else:
            window.resize(1000, 600)
            window.show()
        window.activateWindow()
        window.setFocus()
        return window

    def save(self, log: ExperimentLog | None) -> bool:
        """Store the session's answers as judgments (a job on the engine thread)."""
        if log is None:
            return False
        path = log.path

        def job(project: Project, control: JobControl) -> Job[str]:
            control.check()
            name = save_to_project(project, ExperimentLog.open(path))
            yield StageDone("experiment", name, {"judgments": name})
            return name

        return self.run_job(f"experiment: save {path.name}", job)
