"""The Data page: what the project holds (image sets, judgments, matrices, features), the
importers, and a thumbnail grid of the selected image set.

Imports go through :class:`~alignet_app.dialogs.import_dialog.ImportDialog`, which previews
the file with the engine's readers before anything is written. Drag and drop (the main
window calls :meth:`DataPage.import_paths`) opens the same dialog with the kind and format
guessed from the dropped path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSplitter,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.defaults import judged_image_set
from alignet_app.dialogs.import_dialog import ImportDialog
from alignet_app.dialogs.matrix_triplets_dialog import MatrixTripletsDialog
from alignet_app.pages.base import Page
from alignet_app.session import Session
from alignet_app.widgets.image_grid import ImageGrid
from alignet_engine.base.types import ImageSet
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Job, JobControl, Progress
from alignet_engine.store import Project
from alignet_engine.views.preview import DataRow, group_by_category, guess_import, summarize_data

_ROLE = int(Qt.ItemDataRole.UserRole)
_GROUPS = (
    ("image set", "Image sets"),
    ("judgments", "Judgments"),
    ("matrix", "Matrices"),
    ("features", "Features"),
)


class DataPage(Page):
    key = "data"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.dialogs: list[ImportDialog] = []
        self.rows: list[DataRow] = []
        self._shown_set = ""

        # ---- import menu
        self.import_button = QToolButton()
        self.import_button.setObjectName("import_menu")
        self.import_button.setText("Import")
        self.import_button.setToolTip(
            "Every importer: images, judgments, matrices, features, transforms"
        )
        self.import_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.import_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        menu = QMenu(self.import_button)
        menu.addAction("Image folder…", lambda: self._choose("images", folder=True))
        menu.addAction("Image manifest (CSV)…", lambda: self._choose("images"))
        menu.addSeparator()
        menu.addAction("Human judgments…", lambda: self._choose("judgments"))
        menu.addAction("Similarity / dissimilarity matrix…", lambda: self._choose("matrix"))
        menu.addAction("Precomputed features…", lambda: self._choose("features"))
        menu.addAction("Alignment transform…", lambda: self._choose("transform"))
        self.import_button.setMenu(menu)
        self.import_images_button = QPushButton("Import images…")
        self.import_images_button.clicked.connect(lambda: self._choose("images", folder=True))
        self.import_judgments_button = QPushButton("Import judgments…")
        self.import_judgments_button.clicked.connect(lambda: self._choose("judgments"))
        self.matrix_triplets_button = QPushButton("Triplets from a matrix…")
        self.matrix_triplets_button.setObjectName("matrix_triplets")
        self.matrix_triplets_button.setToolTip(
            "Derive odd-one-out judgments from a per-subject similarity matrix set, on an "
            "object-disjoint fit/test split of its items"
        )
        self.matrix_triplets_button.clicked.connect(self.open_matrix_triplets)
        self.matrix_triplets_button.setEnabled(False)  # until the project holds a matrix

        self.heading = QLabel()
        self.heading.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.heading, 1)
        top.addWidget(self.import_images_button)
        top.addWidget(self.import_judgments_button)
        top.addWidget(self.matrix_triplets_button)
        top.addWidget(self.import_button)

        # ---- what the project holds
        self.tree = QTreeWidget()
        self.tree.setObjectName("data_tree")
        self.tree.setHeaderLabels(["Name", "Image set", "Details"])
        self.tree.setColumnWidth(0, 170)
        self.tree.setColumnWidth(1, 110)
        self.tree.setRootIsDecorated(True)
        self.tree.currentItemChanged.connect(self._selected)

        # ---- thumbnails
        self.grid = ImageGrid(parent=self)

        splitter = QSplitter()
        splitter.addWidget(self.tree)
        splitter.addWidget(self.grid)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([460, 640])

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.error)
        layout.addWidget(splitter, 1)

    # ----------------------------------------------------------------- redraw
    def refresh(self) -> None:
        self.tree.clear()
        self.clear_error()
        if not self.session.is_open:
            self.rows = []
            self.matrix_triplets_button.setEnabled(False)
            self.heading.setText(
                "<h3>No project open</h3>Create one (File ▸ New) or open one, then import a "
                "folder of images and human judgments — or drop them on the window."
            )
            self.grid.clear("")
            return
        try:
            self.rows = summarize_data(self.session.project, self.session.info())
        except (AlignetError, OSError) as exc:
            self.rows = []
            self.show_error(f"cannot read the project's data: {exc}")
        self.matrix_triplets_button.setEnabled(any(r.kind == "matrix" for r in self.rows))
        n_sets = sum(r.kind == "image set" for r in self.rows)
        n_j = sum(r.kind == "judgments" for r in self.rows)
        self.heading.setText(
            f"<h3>Data</h3>{n_sets} image sets · {n_j} judgment sets · "
            f"{sum(r.kind == 'matrix' for r in self.rows)} matrices · "
            f"{sum(r.kind == 'features' for r in self.rows)} features"
        )
        select: QTreeWidgetItem | None = None
        for kind, title in _GROUPS:
            rows = [r for r in self.rows if r.kind == kind]
            group = QTreeWidgetItem(self.tree, [f"{title} ({len(rows)})"])
            group.setFlags(group.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            for r in rows:
                item = QTreeWidgetItem(group, [r.name, r.image_set, r.details])
                item.setData(0, _ROLE, r)
                for col in range(3):
                    item.setToolTip(col, r.tooltip or r.details)
                if kind == "image set" and (select is None or r.name == self._shown_set):
                    select = item
        self.tree.expandAll()
        for col in range(3):
            self.tree.resizeColumnToContents(col)
        if select is not None:
            self.tree.setCurrentItem(select)
        else:
            self._shown_set = ""
            self.grid.clear("Import a folder of images to see them here.")

    def _selected(self, item: QTreeWidgetItem | None) -> None:
        row = item.data(0, _ROLE) if item is not None else None
        if isinstance(row, DataRow) and row.image_set:
            self.show_image_set(row.image_set)

    def show_image_set(self, name: str) -> None:
        """Show image set ``name`` in the grid. Its paths are read on a view worker (a pool
        of a million paths takes a while) and the grid then loads thumbnails lazily."""
        if not self.session.is_open:
            return
        self._shown_set = name

        def job(
            project: Project, _control: JobControl
        ) -> Job[tuple[ImageSet, list[tuple[str, np.ndarray]]]]:
            yield Progress("image set", 0, 1, f"reading '{name}'")
            images = project.imageset(name)
            return images, group_by_category(images)

        def show(result: tuple[ImageSet, list[tuple[str, np.ndarray]]]) -> None:
            if name == self._shown_set:  # not replaced by another set meanwhile
                images, groups = result
                self.grid.set_images(name, images.paths, images.categories, groups)

        self.view_job(
            "data:grid",
            job,
            show,
            lambda text: self.grid.clear(f"cannot read '{name}': {text}"),
        )

    # ----------------------------------------------------------------- imports
    def _choose(self, kind: str, *, folder: bool = False) -> None:
        """Menu actions: pick a file or folder, then open the import dialog on it."""
        start = self.session.preferences.data_folder or ""
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Import a folder of images", start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Import a file", start)
        if path:
            self.open_import(kind, path)

    def open_import(
        self, kind: str, path: str = "", *, fmt: str | None = None, name: str = ""
    ) -> ImportDialog:
        """Open the import dialog for ``kind`` (prefilled with ``path``; not modal)."""
        image_set = self._shown_set
        if kind in ("judgments", "matrix") and self.session.is_open:
            # what people judged, not whichever set the grid happens to show (the pool)
            image_set = judged_image_set(self.session.info()) or image_set
        dialog = ImportDialog(
            self.session, self, kind=kind, path=path, fmt=fmt, name=name, image_set=image_set
        )
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(lambda _r, d=dialog: self._forget(d))
        dialog.imported.connect(self._imported)
        self.dialogs.append(dialog)
        dialog.show()
        return dialog

    def open_matrix_triplets(self) -> MatrixTripletsDialog:
        """Open the dialog that derives judgments from a stored matrix set (not modal)."""
        matrices = [r.name for r in self.rows if r.kind == "matrix"]
        dialog = MatrixTripletsDialog(self, matrices)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def import_paths(self, paths: list[str]) -> list[ImportDialog]:
        """Dropped or given paths: one import dialog each, kind and format guessed.

        A folder becomes an image-set import named after it; a .csv/.tsv/.json/.npy/.npz/
        .h5/.pt file the judgments, matrix or features import its content suggests.
        """
        dialogs = []
        for path in paths:
            if not Path(path).exists():
                self.show_error(f"{path}: no such file or folder")
                continue
            guess = guess_import(path)
            dialogs.append(self.open_import(guess.kind, path, fmt=guess.fmt, name=guess.name))
        return dialogs

    def _imported(self, result: object) -> None:
        if isinstance(result, dict) and result.get("kind") == "images":
            self._shown_set = str(result.get("name", ""))

    def _forget(self, dialog: ImportDialog) -> None:
        if dialog in self.dialogs:
            self.dialogs.remove(dialog)
