"""The welcome screen shown while no project is open.

New project, open, open the demo (running the demo job first when it does not exist yet),
recent projects and what the application does. A button that can do nothing says why, in
words next to it.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QStandardPaths, Qt, Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from alignet_app import settings

ABOUT = (
    "AligNet Studio aligns a vision model with how people judge similarity. You bring "
    "images and human odd-one-out (or two-alternative) judgments about them; the app "
    "extracts a teacher model's features, fits a small transform so the teacher agrees with "
    "the people (the <i>aligned teacher</i>), groups a large pool of images into clusters, "
    "lets the aligned teacher answer many new triplets from that pool, and trains (distils) a "
    "student network on those answers. It then measures how often each model agrees with "
    "held-out human judgments, against the noise ceiling of the people themselves, and "
    "exports the aligned student, the transform and a report (the AligNet method, "
    "Muttenthaler et al., Nature 2025)."
)


def demo_folder() -> Path:
    """Where the app keeps its own demo project (a per-user data folder)."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
    return Path(base or Path.home() / ".alignet-studio") / "demo"


def find_demo() -> Path | None:
    """An existing demo project: the app's own, or ``./run demo``'s ``demo-output``."""
    for candidate in (
        demo_folder() / "demo.alignet",
        Path.cwd() / "demo-output" / "demo.alignet",
        Path(__file__).resolve().parents[2] / "demo-output" / "demo.alignet",
    ):
        if candidate.is_file():
            return candidate
    return None


class WelcomeScreen(QWidget):
    """Signals: ``new_project()``, ``open_project()``, ``open_path(str)``, ``demo()``."""

    new_project = Signal()
    open_project = Signal()
    open_path = Signal(str)
    demo = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcome")
        title = QLabel("<h1>AligNet Studio</h1>")
        about = QLabel(ABOUT)
        about.setWordWrap(True)
        about.setObjectName("about")
        self.new_button = QPushButton("New project…")
        self.new_button.setToolTip("Create an empty project file (Ctrl+N)")
        self.new_button.clicked.connect(self.new_project)
        self.open_button = QPushButton("Open project…")
        self.open_button.setToolTip("Open an existing .alignet project (Ctrl+O)")
        self.open_button.clicked.connect(self.open_project)
        self.demo_button = QPushButton()
        self.demo_button.clicked.connect(self.demo)
        self.demo_note = QLabel()
        self.demo_note.setWordWrap(True)
        self.demo_note.setObjectName("reason")
        actions = QGridLayout()
        actions.addWidget(self.new_button, 0, 0)
        actions.addWidget(QLabel("Start a study: import images and judgments next."), 0, 1)
        actions.addWidget(self.open_button, 1, 0)
        actions.addWidget(QLabel("Continue a study."), 1, 1)
        actions.addWidget(self.demo_button, 2, 0)
        actions.addWidget(self.demo_note, 2, 1)
        actions.setColumnStretch(1, 1)

        self.recent = QListWidget()
        self.recent.setObjectName("recent")
        self.recent.itemActivated.connect(self._open_recent)
        self.recent.itemDoubleClicked.connect(self._open_recent)
        self.open_recent = QPushButton("Open selected")
        self.open_recent.clicked.connect(lambda: self._open_recent(self.recent.currentItem()))
        self.recent.currentItemChanged.connect(lambda *_: self._update_recent_button())
        self.recent_note = QLabel()
        self.recent_note.setObjectName("reason")
        recent_box = QGroupBox("Recent projects")
        recent_layout = QVBoxLayout(recent_box)
        recent_layout.addWidget(self.recent)
        recent_layout.addWidget(self.open_recent)
        recent_layout.addWidget(self.recent_note)

        body = QWidget()
        body.setMaximumWidth(900)
        layout = QVBoxLayout(body)
        layout.addWidget(title)
        layout.addWidget(about)
        layout.addSpacing(12)
        layout.addLayout(actions)
        layout.addSpacing(12)
        layout.addWidget(recent_box, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        holder = QWidget()
        holder_layout = QHBoxLayout(holder)
        holder_layout.addStretch(1)
        holder_layout.addWidget(body, 8)
        holder_layout.addStretch(1)
        scroll.setWidget(holder)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.demo_path: Path | None = None  # the demo project the button opens, if any
        self.refresh()

    def refresh(self, *, busy: str | None = None) -> None:
        """Re-read recent projects and whether a demo exists; ``busy`` names a running job."""
        self.recent.clear()
        for path in settings.recent_projects():
            item = QListWidgetItem(path if Path(path).is_file() else f"{path}  (missing)")
            item.setData(Qt.ItemDataRole.UserRole, path)
            if not Path(path).is_file():
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.recent.addItem(item)
        self._update_recent_button()
        demo = self.demo_path = find_demo()
        if demo is not None:
            self.demo_button.setText("Open the demo")
            self.demo_button.setEnabled(True)
            self.demo_note.setText(f"The demo project at {html.escape(str(demo))}.")
        elif busy:
            self.demo_button.setText("Create the demo")
            self.demo_button.setEnabled(False)
            self.demo_note.setText(f"Wait: '{busy}' is running.")
        else:
            self.demo_button.setText("Create the demo")
            self.demo_button.setEnabled(True)
            self.demo_note.setText(
                f"Runs the whole pipeline on a small generated image world (a few minutes on "
                f"a CPU) into {demo_folder()}; `./run demo` makes the same in demo-output/."
            )

    def _update_recent_button(self) -> None:
        item = self.recent.currentItem()
        if self.recent.count() == 0:
            reason = "No recent projects yet."
        elif item is None:
            reason = "Select a project to open it (or double-click it)."
        elif not item.flags() & Qt.ItemFlag.ItemIsEnabled:
            reason = "That file no longer exists."
        else:
            reason = ""
        self.open_recent.setEnabled(not reason)
        self.recent_note.setText(reason)
        self.recent_note.setVisible(bool(reason))

    def _open_recent(self, item: QListWidgetItem | None) -> None:
        if item is not None and item.flags() & Qt.ItemFlag.ItemIsEnabled:
            self.open_path.emit(item.data(Qt.ItemDataRole.UserRole))
