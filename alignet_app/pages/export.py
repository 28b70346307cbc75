"""The Export page: the distilled student, its compiled forms, the transform, the triplets and
the report, written into a folder by the engine's export job.

What cannot be exported yet (no distill run, no triplets, …) is disabled with a tooltip
saying why, before the user clicks; the files written are listed after the job, each with an
"Open folder" action.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.notify import dialogs_enabled
from alignet_app.pages.base import Page
from alignet_app.session import Session
from alignet_app.widgets import theme
from alignet_app.widgets.bar_charts import render_chart_pngs
from alignet_engine.stages.export import existing_outputs
from alignet_engine.views.evaluation import evaluation_table
from alignet_engine.views.report import (
    EXPORT_DESCRIPTIONS,
    EXPORT_FORMATS,
    check_output_folder,
    export_job,
    export_prerequisites,
)

_TITLES = {
    "student": "Student (safetensors + JSON + model card)",
    "pt2": "torch.export (.pt2)",
    "torchscript": "TorchScript (deprecated by torch)",
    "onnx": "ONNX",
    "transform": "Transform (npz)",
    "triplets": "Triplets (AligNet npz)",
    "report": "Report (HTML + JSON + PNG)",
}
_DEFAULT_ON = ("student", "transform", "triplets", "report")


class ExportPage(Page):
    key = "export"
    inline_failures = True

    JOB = "Export"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.files: dict[str, str] = {}
        self._png_dir: tempfile.TemporaryDirectory[str] | None = None
        self.heading = QLabel("<h2>Export</h2>")
        self.heading.setWordWrap(True)

        # ---- formats
        box = QGroupBox("What to export")
        grid = QGridLayout(box)
        self.checks: dict[str, QCheckBox] = {}
        self.why: dict[str, QLabel] = {}
        for i, fmt in enumerate(EXPORT_FORMATS):
            check = QCheckBox(_TITLES[fmt])
            check.setObjectName(f"export_{fmt}")
            check.setChecked(fmt in _DEFAULT_ON)
            explain = QLabel(EXPORT_DESCRIPTIONS[fmt])
            explain.setWordWrap(True)
            explain.setStyleSheet("color: palette(placeholder-text);")
            why = QLabel()
            why.setStyleSheet(f"color: {theme.colours().stale};")
            why.setWordWrap(True)
            grid.addWidget(check, i, 0)
            grid.addWidget(explain, i, 1)
            grid.addWidget(why, i, 2)
            self.checks[fmt] = check
            self.why[fmt] = why
        grid.setColumnStretch(1, 2)
        grid.setColumnStretch(2, 1)

        # ---- folder and button
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("output folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(lambda: self.export_to(self.folder.text()))
        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Output folder"))
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        folder_row.addWidget(self.export_button)

        # ---- results
        self.result_label = QLabel()
        self.results = QTableWidget(0, 3)
        self.results.setHorizontalHeaderLabels(["What", "File", ""])
        self.results.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.results.verticalHeader().hide()
        header = self.results.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)

        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(box)
        layout.addLayout(folder_row)
        layout.addWidget(self.error)
        layout.addWidget(self.result_label)
        layout.addWidget(self.results, 1)

    # ----------------------------------------------------------------- redraw
    def refresh(self) -> None:
        open_ = self.session.is_open
        self.export_button.setEnabled(open_)
        if not open_:
            self.heading.setText("<h2>Export</h2><p>Open a project first.</p>")
            self._show_files({}, "")
            return
        self.heading.setText(
            "<h2>Export</h2><p>Write the aligned student, the transform, the triplets and the "
            "report into a folder; every file is written under a temporary name and renamed "
            "into place.</p>"
        )
        slots = self.session.info()["current"]
        for fmt, why in export_prerequisites(slots).items():
            check = self.checks[fmt]
            check.setEnabled(why is None)
            if why is not None:
                check.setChecked(False)
            check.setToolTip(why or EXPORT_DESCRIPTIONS[fmt])
            self.why[fmt].setText(why or "")
        if not self.folder.text() and self.session.path is not None:
            self.folder.setText(str(self.session.path.parent / "export"))
        if not self.files and "export" in slots:
            # No export in this window yet: show what the project's last export wrote.
            last = self.session.project.run("export", arrays=False)
            self._show_files(last.summary.get("files", {}), f"Last export ({last.run_id}):")

    def selected_formats(self) -> tuple[str, ...]:
        return tuple(f for f, c in self.checks.items() if c.isChecked() and c.isEnabled())

    # ----------------------------------------------------------------- actions
    def _browse(self) -> None:
        if os.environ.get("ALIGNET_NO_DIALOGS"):
            return
        folder = QFileDialog.getExistingDirectory(self, "Export into", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def export_to(
        self,
        folder: str | Path,
        formats: tuple[str, ...] | None = None,
        *,
        overwrite: bool | None = None,
    ) -> bool:
        """Export ``formats`` (default: the checked ones) into ``folder`` as an engine job.

        Files the export would replace are replaced only with ``overwrite=True``; with None
        the user is asked (without dialogs: refused, with the files named)."""
        self.clear_error()
        if formats is not None:
            for fmt, check in self.checks.items():
                check.setChecked(fmt in formats)
        what = self.selected_formats() if formats is None else tuple(formats)
        self.folder.setText(str(folder))
        if not what:
            self.show_error("Check at least one thing to export.")
            return False
        if self.session.is_open:
            blocked = export_prerequisites(self.session.info()["current"])
            reasons = [f"{f}: {blocked[f]}" for f in what if blocked.get(f)]
            if reasons:
                self.show_error("Cannot export " + "; ".join(reasons))
                return False
        if self.validated(lambda: check_output_folder(folder)) is None:
            return False
        if overwrite is None:
            overwrite = self._confirm_overwrite(folder, what)
            if overwrite is None:
                return False
        pngs: dict[str, str] = {}
        if "report" in what and self.session.is_open:
            # Charts are widgets: render them here, the engine copies them in atomically.
            if self._png_dir is not None:
                self._png_dir.cleanup()
            self._png_dir = tempfile.TemporaryDirectory(prefix="alignet-charts-")
            table = evaluation_table(self.session.project)
            pngs = {n: str(p) for n, p in render_chart_pngs(table, self._png_dir.name).items()}
        return self.run_job(
            self.JOB,
            lambda project, control: export_job(
                project, folder, what, pngs, control=control, overwrite=bool(overwrite)
            ),
            self._done,
        )

    def _confirm_overwrite(self, folder: str | Path, what: tuple[str, ...]) -> bool | None:
        """False when nothing would be replaced; True when the user agrees to replace the
        files already there; None (and the files named) when not."""
        if not self.session.is_open:
            return False
        engine = tuple(f for f in what if f != "report")
        existing = existing_outputs(self.session.project, folder, engine)
        if not existing:
            return False
        names = ", ".join(p.name for p in existing)
        if dialogs_enabled():
            answer = QMessageBox.question(
                self,
                "Replace files?",
                f"{folder} already holds {names}. Replace them?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer == QMessageBox.StandardButton.Yes:
                return True
        self.show_error(f"{folder} already holds {names}; choose another folder.")
        return None

    def _done(self, files: dict[str, str]) -> None:
        self.files = dict(files)
        self._show_files(self.files, f"Exported {len(self.files)} file(s):")
        if self._png_dir is not None:
            self._png_dir.cleanup()
            self._png_dir = None

    def _show_files(self, files: dict[str, str], caption: str) -> None:
        self.result_label.setText(caption)
        self.results.setRowCount(0)
        for kind, value in files.items():
            row = self.results.rowCount()
            self.results.insertRow(row)
            self.results.setItem(row, 0, QTableWidgetItem(kind))
            item = QTableWidgetItem(value)
            item.setToolTip(value)
            self.results.setItem(row, 1, item)
            # Some entries are facts about a file (onnx_max_abs_diff), not paths.
            if os.path.isabs(value):
                button = QPushButton("Open folder")
                button.clicked.connect(lambda _=False, p=value: self.open_folder(p))
                self.results.setCellWidget(row, 2, button)

    def listed_paths(self) -> dict[str, str]:
        """What the results table lists (kind → text), for tests and scripts."""
        return {
            self.results.item(r, 0).text(): self.results.item(r, 1).text()
            for r in range(self.results.rowCount())
        }

    def open_folder(self, path: str) -> None:
        """Show the folder holding ``path`` in the desktop's file manager."""
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))
