"""The import dialog: choose a file, see what it holds, then write it into the project.

Every change of a field schedules a *preview*: the engine's readers parse the file on a
worker thread (a big file takes seconds; the GUI thread only formats the result) and the
dialog shows the counts, the first rows, or the reader's error naming file, row and field.
The Import button is enabled only while the preview of the current fields is clean; it
runs the engine's import as a job on the engine thread (``session.run``), so nothing is
written before the user has seen the preview. A failed import leaves the dialog open with
the error, so nothing the user typed is lost.

Tests and drag and drop drive the dialog with :meth:`ImportDialog.set_fields`,
:meth:`ImportDialog.refresh_preview` and :meth:`ImportDialog.accept_import`.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.defaults import judged_image_set
from alignet_app.jobrunner import JobFailure
from alignet_app.pages.base import error_label
from alignet_app.session import Session
from alignet_engine.data.importers import FEATURE_SUFFIXES
from alignet_engine.errors import AlignetError
from alignet_engine.stages.imports import JUDGMENT_FORMATS
from alignet_engine.views.preview import (
    IMPORT_KINDS,
    MATRIX_KINDS,
    ImportRequest,
    Preview,
    ProjectView,
    guess_import,
    import_job,
    preview,
    project_view,
)

log = logging.getLogger(__name__)

KIND_TITLES = {
    "images": "Images (folder or manifest CSV)",
    "judgments": "Human judgments",
    "matrix": "Similarity / dissimilarity matrix",
    "features": "Precomputed features",
    "transform": "Alignment transform (npz)",
}
FORMAT_TIPS = {
    "things-tsv": "THINGS: obj_1 obj_2 obj_3 choice [participant], tab-separated, 1-based ids",
    "oddone-npy": "(N, 3) integer .npy, 0-based, the odd one out last (VICE / SPoSE)",
    "oddone-txt": "VICE / SPoSE train_90.txt / test_10.txt: i j odd per line, space-separated, "
    "0-based",
    "oddone-csv": "CSV with header item_1,item_2,item_3,odd_position[,participant][,type]",
    "materials-json": "the material-appearance JSON (anchor, two candidates, votes)",
    "twoafc-csv": "CSV with header anchor,chosen,other[,votes_chosen,votes_other][,participant]",
    "alignet-npz": "an AligNet triplet .npz (teacher choices, not human)",
    "levels-pkl": "Levels' pruned_dataset.pkl (read safely; images matched by ImageNet file "
    "name; the authors' participant filter)",
}
#: The judgment format a file suffix implies when the content does not say (CSV headers do).
_FORMAT_BY_SUFFIX = {
    ".npy": "oddone-npy",
    ".npz": "alignet-npz",
    ".json": "materials-json",
    ".pkl": "levels-pkl",
    ".tsv": "things-tsv",
    ".txt": "things-tsv",
}
_FILTERS = {
    "images": "Image manifests (*.csv)",
    "judgments": "Judgments (*.csv *.tsv *.txt *.npy *.json *.npz *.pkl);;All files (*)",
    "matrix": "Matrices (*.npy *.csv *.tsv *.txt);;All files (*)",
    "features": "Features (" + " ".join(f"*{s}" for s in FEATURE_SUFFIXES) + ");;All files (*)",
    "transform": "Transforms (*.npz)",
}
_NAME_LABELS = {
    "images": "Image set name",
    "judgments": "Name",
    "matrix": "Name",
    "features": "Label",
    "transform": "Transform name",
}
_DEBOUNCE_MS = 250


class _PreviewSignals(QObject):
    done = Signal(int, object, str)  # generation, Preview or None, error text


class _PreviewTask(QRunnable):
    """Parses one request off the GUI thread; reports (generation, preview, error)."""

    def __init__(self, gen: int, request: ImportRequest, view: ProjectView) -> None:
        super().__init__()
        self.gen, self.request, self.view = gen, request, view
        self.signals = _PreviewSignals()

    def run(self) -> None:
        try:
            result = preview(self.request, self.view)
        except (AlignetError, ValueError, OSError) as exc:
            self.signals.done.emit(self.gen, None, str(exc))
        except Exception as exc:  # a bug in a reader: say so, keep the dialog alive
            log.error("preview crashed:\n%s", traceback.format_exc())
            self.signals.done.emit(
                self.gen, None, f"unexpected error while reading ({type(exc).__name__}: {exc})"
            )
        else:
            self.signals.done.emit(self.gen, result, "")


def _pool() -> QThreadPool:
    """One preview thread for all dialogs: a new preview waits for the last, and stale
    results are dropped by generation."""
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _POOL.setMaxThreadCount(1)
    return _POOL


_POOL: QThreadPool | None = None


class ImportDialog(QDialog):
    """Import images, judgments, a matrix, features or a transform, after a preview.

    Signals: ``preview_finished()`` after each preview (clean or not), ``imported(dict)``
    when the import job wrote the data (its result, e.g. ``{"kind": ..., "n_triplets": ...}``).
    """

    preview_finished = Signal()
    imported = Signal(object)

    def __init__(
        self,
        session: Session,
        parent: QWidget | None = None,
        *,
        kind: str = "images",
        path: str = "",
        fmt: str | None = None,
        name: str = "",
        image_set: str = "",
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("Import data")
        self.resize(820, 640)
        self._gen = 0
        self._preview: Preview | None = None
        self._preview_gen = -1
        self._error = ""
        self._importing = False
        self._tasks: dict[int, _PreviewTask] = {}
        self._name_edited = bool(name)

        layout = QVBoxLayout(self)
        layout.addLayout(self._build_form())
        layout.addWidget(self.format_help)
        layout.addWidget(self._build_preview(), 1)
        layout.addWidget(self._build_buttons())

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_DEBOUNCE_MS)
        self._timer.timeout.connect(self.refresh_preview)

        self._fill_project_choices()
        self.set_fields(kind=kind, path=path, fmt=fmt, name=name, image_set=image_set)

        self._connect_fields()
        self._schedule()

    # ----------------------------------------------------------------- layout
    def _build_form(self) -> QFormLayout:
        """The fields: what to import, from where, in which format, under which name."""
        self.kind = QComboBox()
        self.kind.setObjectName("kind")
        for k in IMPORT_KINDS:
            self.kind.addItem(KIND_TITLES[k], k)
        self.path = QLineEdit()
        self.path.setObjectName("path")
        self.path.setPlaceholderText("a file, or a folder of images (sub-folders = categories)")
        self.browse_file = QPushButton("File…")
        self.browse_file.clicked.connect(self._choose_file)
        self.browse_folder = QPushButton("Folder…")
        self.browse_folder.clicked.connect(self._choose_folder)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(self.browse_folder)
        path_row.addWidget(self.browse_file)
        self.fmt = QComboBox()
        self.fmt.setObjectName("format")
        for f in JUDGMENT_FORMATS:
            self.fmt.addItem(f, f)
            self.fmt.setItemData(
                self.fmt.count() - 1, FORMAT_TIPS.get(f, ""), Qt.ItemDataRole.ToolTipRole
            )
        self.name = QLineEdit()
        self.name.setObjectName("name")
        self.name.textEdited.connect(self._name_typed)
        self.image_set = QComboBox()
        self.image_set.setObjectName("image_set")
        self.image_set.setToolTip("The image set whose item order the file's ids refer to")
        self.matrix_kind = QComboBox()
        self.matrix_kind.setObjectName("matrix_kind")
        self.matrix_kind.addItems(list(MATRIX_KINDS))
        self.key = QLineEdit()
        self.key.setObjectName("key")
        self.key.setPlaceholderText("(the single array, or 'features')")
        self.key.setToolTip("Array / dataset name inside an npz, h5 or pt file")
        self.similarity = QComboBox()
        self.similarity.setObjectName("similarity")
        for text, value in (("(not recorded: cosine)", None), ("cosine", "cosine"), ("dot", "dot")):
            self.similarity.addItem(text, value)
        self.similarity.setToolTip(
            "How this representation compares items; evaluate uses it by default. dot for a "
            "dot-product model such as a VICE / SPoSE embedding, cosine for network features"
        )
        self.model = QComboBox()
        self.model.setObjectName("model")
        self.model.setToolTip("The features (model label) of the image set the transform maps")

        self.form = QFormLayout()
        self.form.addRow("Import", self.kind)
        self.form.addRow("File or folder", path_row)
        self.form.addRow("Format", self.fmt)
        self.form.addRow("Image set", self.image_set)
        self.form.addRow("Matrix kind", self.matrix_kind)
        self.form.addRow("Array key", self.key)
        self.form.addRow("Similarity", self.similarity)
        self.form.addRow("Features", self.model)
        self.form.addRow(_NAME_LABELS["images"], self.name)
        self.format_help = QLabel()
        self.format_help.setWordWrap(True)
        self.format_help.setStyleSheet("color: #555;")
        return self.form

    def _build_preview(self) -> QGroupBox:
        """The preview: its status, the error and the first rows of the file."""
        self.status = QLabel()
        self.status.setObjectName("preview_status")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.error = error_label()
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget()
        self.table.setObjectName("preview_table")
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        box = QGroupBox("Preview (nothing is written until you press Import)")
        box_layout = QVBoxLayout(box)
        box_layout.addWidget(self.status)
        box_layout.addWidget(self.error)
        box_layout.addWidget(self.table, 1)
        return box

    def _build_buttons(self) -> QDialogButtonBox:
        """Import (enabled once the preview is good) and Cancel."""
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.import_button = self.buttons.addButton(
            "Import", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.import_button.setObjectName("import_button")
        self.import_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept_import)
        self.buttons.rejected.connect(self.reject)
        return self.buttons

    def _connect_fields(self) -> None:
        """Preview again (debounced) when a field changes; follow the import job."""
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.path.textChanged.connect(self._path_changed)
        self.image_set.currentTextChanged.connect(self._image_set_changed)
        for signal in (
            self.fmt.currentIndexChanged,
            self.matrix_kind.currentIndexChanged,
            self.key.textChanged,
            self.model.currentTextChanged,
            self.name.textChanged,
        ):
            signal.connect(self._schedule)
        runner = self.session.runner
        runner.finished.connect(self._job_finished)
        runner.failed.connect(self._job_failed)
        runner.cancelled.connect(self._job_cancelled)

    # ----------------------------------------------------------------- programmatic API
    def set_fields(
        self,
        *,
        kind: str | None = None,
        path: str | None = None,
        fmt: str | None = None,
        name: str | None = None,
        image_set: str | None = None,
        matrix_kind: str | None = None,
        key: str | None = None,
        model: str | None = None,
    ) -> None:
        """Set any of the fields (as a user would) and schedule a new preview."""
        if kind is not None:
            self.kind.setCurrentIndex(max(0, self.kind.findData(kind)))
            self._update_rows()
        if name is not None:
            self.name.setText(name)
            self._name_edited = bool(name)
        if path is not None:
            self.path.blockSignals(True)
            self.path.setText(str(path))
            self.path.blockSignals(False)
            self._path_changed(str(path))
        if fmt is not None:
            self.fmt.setCurrentIndex(max(0, self.fmt.findData(fmt)))
        if image_set:
            self.image_set.setCurrentText(image_set)
            self._fill_models()
        if matrix_kind is not None:
            self.matrix_kind.setCurrentText(matrix_kind)
        if key is not None:
            self.key.setText(key)
        if model is not None:
            self.model.setCurrentText(model)
        self._update_rows()
        self._schedule()

    def request(self) -> ImportRequest:
        """The import the fields describe."""
        kind = str(self.kind.currentData())
        return ImportRequest(
            kind=kind,
            path=self.path.text().strip(),
            name=self.name.text().strip(),
            image_set=self.image_set.currentText().strip() if kind != "images" else "",
            fmt=str(self.fmt.currentData()) if kind == "judgments" else None,
            matrix_kind=self.matrix_kind.currentText(),
            key=self.key.text().strip() or None,
            model=self.model.currentText().strip(),
            similarity=self.similarity.currentData() if kind == "features" else None,
        )

    @property
    def preview_result(self) -> Preview | None:
        """The last clean preview of the current fields (None while pending or on error)."""
        return self._preview if self._preview_gen == self._gen else None

    def error_text(self) -> str:
        """The error shown under the preview ('' when none)."""
        return self._error

    def can_import(self) -> bool:
        return (
            self.preview_result is not None
            and self.session.is_open
            and not self.session.read_only
            and not self._importing
        )

    def accept_import(self) -> bool:
        """Run the import as an engine job (only after a clean preview); False if it cannot
        start now (the reason is shown in the dialog)."""
        if self._timer.isActive() or self.preview_result is None:
            self._show_error(self._error or "wait for the preview of these settings first")
            return False
        if not self.session.is_open:
            self._show_error("no project is open: create one (File ▸ New) or open one first")
            return False
        if self.session.read_only:
            self._show_error("this project is open read-only (another window or process holds it)")
            return False
        request = self.request()
        label = f"import {request.kind}"
        started = self.session.run(
            label, lambda project, control: import_job(project, request, control)
        )
        if not started:
            self._show_error(
                f"'{self.session.runner.label}' is running; import when it has finished"
            )
            return False
        self._importing = True
        self._import_label = label
        self.import_button.setEnabled(False)
        self.status.setText(f"Importing {request.kind} '{request.name}'…")
        return True

    # ----------------------------------------------------------------- fields
    def _fill_project_choices(self) -> None:
        current = self.image_set.currentText()
        self.image_set.blockSignals(True)
        self.image_set.clear()
        if self.session.is_open:
            self.image_set.addItems(list(self.session.info()["imagesets"]))
        self.image_set.blockSignals(False)
        if current:
            self.image_set.setCurrentText(current)
        self._fill_models()

    def _fill_models(self) -> None:
        current = self.model.currentText()
        self.model.blockSignals(True)
        self.model.clear()
        if self.session.is_open:
            prefix = f"features:{self.image_set.currentText()}:"
            labels = [
                s[len(prefix) :] for s in self.session.info()["current"] if s.startswith(prefix)
            ]
            self.model.addItems(sorted(labels))
        self.model.blockSignals(False)
        if current:
            self.model.setCurrentText(current)

    def _update_rows(self) -> None:
        """Show only the fields the chosen kind uses."""
        kind = str(self.kind.currentData())
        visible = {
            self.fmt: kind == "judgments",
            self.image_set: kind != "images",
            self.matrix_kind: kind == "matrix",
            self.key: kind == "features",
            self.similarity: kind == "features",
            self.model: kind == "transform",
        }
        for widget, show in visible.items():
            self.form.setRowVisible(widget, show)
        # Features may create a new image set (items without images), so the name is free.
        self.image_set.setEditable(kind == "features")
        self.browse_folder.setVisible(kind == "images")
        label = self.form.labelForField(self.name)
        if isinstance(label, QLabel):
            label.setText(_NAME_LABELS[kind])
        help_text = {
            "images": "A folder: each sub-folder is a category. A manifest CSV: path[,category].",
            "judgments": FORMAT_TIPS.get(str(self.fmt.currentData()), ""),
            "matrix": "(n, n) or (subjects, n, n): .npy, or CSV/TSV without header.",
            "features": "(n, d) in the image set's order: npy, npz, h5 or pt.",
            "transform": "A gLocal / thingsvision transform.npz (weights, bias, mean, std).",
        }[kind]
        self.format_help.setText(help_text)

    def _kind_changed(self) -> None:
        self._update_rows()
        if str(self.kind.currentData()) in ("judgments", "matrix") and self.session.is_open:
            judged = judged_image_set(self.session.info())
            if judged:
                self.image_set.setCurrentText(judged)
        if str(self.kind.currentData()) == "transform" and not self._name_edited:
            self.name.setText("teacher")
        self._schedule()

    def _path_changed(self, text: str) -> None:
        """A new path: guess its format and name (the user can still override both)."""
        if text.strip() and Path(text.strip()).exists():
            guess = guess_import(text.strip())
            kind = str(self.kind.currentData())
            fmt = guess.fmt if guess.kind == kind else None
            if kind == "judgments" and fmt is None:
                # judgments the content guess took for something else (a float .npy, say):
                # the suffix still names the one format that can read it
                fmt = _FORMAT_BY_SUFFIX.get(Path(text.strip()).suffix.lower())
            if fmt is not None:
                self.fmt.setCurrentIndex(max(0, self.fmt.findData(fmt)))
            if not self._name_edited and kind != "transform":
                self.name.setText(guess.name)
        self._schedule()

    def _name_typed(self, _text: str) -> None:
        self._name_edited = True

    def _image_set_changed(self) -> None:
        self._fill_models()
        self._schedule()

    def _choose_file(self) -> None:
        kind = str(self.kind.currentData())
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a file to import", self._start_folder(), _FILTERS[kind]
        )
        if path:
            self.path.setText(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Choose a folder of images", self._start_folder()
        )
        if path:
            self.path.setText(path)

    def _start_folder(self) -> str:
        current = self.path.text().strip()
        if current:
            return str(Path(current).parent)
        return self.session.preferences.data_folder or ""

    # ----------------------------------------------------------------- preview
    def _schedule(self, *_args: Any) -> None:
        """Invalidate the preview and parse again once the fields stop changing."""
        self._gen += 1
        self.import_button.setEnabled(False)
        self._timer.start()

    def refresh_preview(self) -> None:
        """Parse the current fields now (on the preview thread)."""
        self._timer.stop()
        self._gen += 1
        gen = self._gen
        self.import_button.setEnabled(False)
        request = self.request()
        try:
            request.check()
            view = (
                project_view(self.session.project, request, self.session.info())
                if self.session.is_open
                else ProjectView({}, {})
            )
        except (AlignetError, OSError) as exc:
            self._show_result(gen, None, str(exc))
            return
        self.status.setText(f"Reading {Path(request.path).name}…")
        self.error.hide()
        task = _PreviewTask(gen, request, view)
        task.signals.done.connect(self._show_result)
        # Keep the task (and its signal object) alive until it reports.
        self._tasks[gen] = task
        task.setAutoDelete(False)
        _pool().start(task)

    def _show_result(self, gen: int, result: Preview | None, error: str) -> None:
        self._tasks.pop(gen, None)
        if gen != self._gen:
            return  # a stale preview: the fields changed since
        self._preview, self._preview_gen, self._error = result, gen, error
        self.table.clear()
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        if result is None:
            self.status.setText("<b>Cannot import this file:</b>")
            self._show_error(error)
        else:
            self.error.hide()
            counts = " · ".join(f"{label}: <b>{value}</b>" for label, value in result.counts)
            warn = "".join(f"<br><span style='color:#8a5300'>⚠ {w}</span>" for w in result.warnings)
            self.status.setText(f"<b>{result.title}</b><br>{counts}{warn}")
            self.table.setColumnCount(len(result.columns))
            self.table.setHorizontalHeaderLabels(list(result.columns))
            self.table.setRowCount(len(result.rows))
            for r, row in enumerate(result.rows):
                for c, value in enumerate(row):
                    self.table.setItem(r, c, QTableWidgetItem(value))
            if not self.session.is_open:
                self._show_error("no project is open: create or open one to import into")
        self.import_button.setEnabled(self.can_import())
        self.preview_finished.emit()

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    # ----------------------------------------------------------------- the import job
    def _job_finished(self, label: str, result: object) -> None:
        if not self._importing or label != getattr(self, "_import_label", None):
            return
        self._importing = False
        self.imported.emit(result)
        self.accept()

    def _job_failed(self, failure: JobFailure) -> None:
        if not self._importing or failure.label != getattr(self, "_import_label", None):
            return
        self._importing = False
        self.status.setText("<b>The import failed; nothing was written.</b>")
        self._show_error(failure.text)
        self.import_button.setEnabled(self.can_import())

    def _job_cancelled(self, label: str) -> None:
        if self._importing and label == getattr(self, "_import_label", None):
            self._importing = False
            self._show_error("the import was cancelled")
            self.import_button.setEnabled(self.can_import())

    def done(self, result: int) -> None:
        """Closing the dialog drops pending previews (their results are ignored)."""
        self._timer.stop()
        self._gen += 1
        try:
            runner = self.session.runner
            runner.finished.disconnect(self._job_finished)
            runner.failed.disconnect(self._job_failed)
            runner.cancelled.disconnect(self._job_cancelled)
        except (RuntimeError, TypeError):  # already disconnected
            pass
        super().done(result)
