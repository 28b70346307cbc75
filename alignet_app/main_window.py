"""The main window: for now, a project's image sets, judgments and runs, with their state."""

from __future__ import annotations

import json
import logging

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTextEdit,
    QTreeWidget,
    QTreeWidgetItem,
)

from alignet_engine.errors import AlignetError
from alignet_engine.store import Project

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """Lists the open project's data and runs; selecting a run shows its parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("AligNet Studio")
        self.resize(1000, 640)
        self.project_info: dict | None = None

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Item", "State", "Summary"])
        self.tree.setColumnWidth(0, 330)
        self.tree.setColumnWidth(1, 90)
        self.tree.currentItemChanged.connect(self._show_details)
        self.details = QTextEdit(readOnly=True)
        splitter = QSplitter()
        splitter.addWidget(self.tree)
        splitter.addWidget(self.details)
        splitter.setSizes([640, 360])
        self.setCentralWidget(splitter)
        self.status = QLabel("No project open — File ▸ Open…")
        self.statusBar().addWidget(self.status)

        open_action = QAction("&Open…", self, shortcut=QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self._choose_project)
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        menu = self.menuBar().addMenu("&File")
        menu.addAction(open_action)
        menu.addSeparator()
        menu.addAction(quit_action)

    def _choose_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open project", "", "AligNet projects (*.alignet)"
        )
        if path:
            self.open_project(path)

    def open_project(self, path: str) -> None:
        """Show the project at ``path`` (read-only: the window does not write yet)."""
        try:
            with Project.open(path, readonly=True) as project:
                info = project.info()
        except AlignetError as exc:
            QMessageBox.warning(self, "Cannot open project", str(exc))
            return
        self.project_info = info
        self.setWindowTitle(f"AligNet Studio — {info['path']}")
        self._fill(info)

    def _fill(self, info: dict) -> None:
        self.tree.clear()
        data = QTreeWidgetItem(self.tree, ["Data"])
        for name, n in info["imagesets"].items():
            QTreeWidgetItem(data, [f"image set: {name}", "", f"{n} images"])
        for name in info["judgments"]:
            QTreeWidgetItem(data, [f"judgments: {name}", "", ""])
        for name in info["matrices"]:
            QTreeWidgetItem(data, [f"matrix: {name}", "", ""])
        runs = QTreeWidgetItem(self.tree, ["Runs"])
        current = set(info["current"].values())
        for run in info["runs"]:
            state = "stale" if run["stale"] else ("current" if run["run"] in current else "old")
            item = QTreeWidgetItem(runs, [run["slot"], state, _short(run["summary"])])
            item.setToolTip(0, run["run"])
            item.setToolTip(1, "\n".join(run["stale"]) or state)
            item.setData(0, 256, run)
        for job in info["interrupted"]:
            item = QTreeWidgetItem(runs, [f"{job['stage']}/{job['run']}", "interrupted", ""])
            item.setData(0, 256, job)
        self.tree.expandAll()
        self.status.setText(f"{len(info['runs'])} runs, {len(info['interrupted'])} interrupted")

    def _show_details(self, item: QTreeWidgetItem | None) -> None:
        payload = item.data(0, 256) if item is not None else None
        self.details.setPlainText(json.dumps(payload, indent=2, default=str) if payload else "")


def _short(summary: dict) -> str:
    parts = [
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in summary.items()
        if isinstance(v, int | float | str)
    ]
    return ", ".join(parts)[:160]
