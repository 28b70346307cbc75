"""The project page: the pipeline's state, the imported data and every run with its parameters."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QLabel,
    QSplitter,
    QTextEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.pages.base import Page
from alignet_app.session import Session

_ROLE = int(Qt.ItemDataRole.UserRole)


class OverviewPage(Page):
    key = "project"
    title = "Project"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.heading = QLabel()
        self.heading.setWordWrap(True)
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
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(splitter, 1)

    def refresh(self) -> None:
        self.tree.clear()
        self.details.clear()
        if not self.session.is_open:
            self.heading.setText(
                "<h2>No project open</h2><p>File ▸ New creates a project, File ▸ Open opens "
                "one; drop a folder of images or a judgments file on the window to import it."
                "</p>"
            )
            return
        info = self.session.info()
        mode = " (read-only)" if self.session.read_only else ""
        self.heading.setText(f"<h2>{self.session.path}{mode}</h2>")
        status = QTreeWidgetItem(self.tree, ["Pipeline"])
        for state in self.session.status().values():
            item = QTreeWidgetItem(status, [state.stage, state.state, state.why])
            item.setToolTip(2, state.why)
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
            item = QTreeWidgetItem(runs, [run["slot"], state, short_summary(run["summary"])])
            item.setToolTip(0, run["run"])
            item.setToolTip(1, "\n".join(run["stale"]) or state)
            item.setData(0, _ROLE, run)
        for job in info["interrupted"]:
            item = QTreeWidgetItem(runs, [f"{job['stage']}/{job['run']}", "interrupted", ""])
            item.setData(0, _ROLE, job)
        self.tree.expandAll()

    def _show_details(self, item: QTreeWidgetItem | None) -> None:
        payload = item.data(0, _ROLE) if item is not None else None
        self.details.setPlainText(json.dumps(payload, indent=2, default=str) if payload else "")


def short_summary(summary: dict) -> str:
    """``k=v`` pairs of a run's scalar summary values, for one table cell."""
    parts = [
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in summary.items()
        if isinstance(v, int | float | str)
    ]
    return ", ".join(parts)[:160]
