"""The Models & features page: choose a backbone and a layer, extract features, see them.

The extraction form is a :class:`ConfigForm` over the engine's ``ExtractConfig`` (only the
fields this engine version has: ``weights`` / ``layer`` / ``pooling`` appear when the model
registry supports them). The layer tree is filled by a job that builds the model on the
engine thread and lists its modules with their output shapes for a probe image; choosing a
row sets the ``layer`` field. Extraction runs ``stages.features.extract`` through
``Page.run_job``, so the status bar shows its progress, ETA and Cancel.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from alignet_app.defaults import judged_image_set, models_of_runs
from alignet_app.pages.base import Page, StageControls, column
from alignet_app.session import Session
from alignet_app.widgets.config_form import ConfigForm
from alignet_engine.config import ExtractConfig
from alignet_engine.errors import AlignetError, InputError
from alignet_engine.jobs import Job, JobControl, Message, Progress
from alignet_engine.models import available_models
from alignet_engine.store import Project

_NAME_ROLE = int(Qt.ItemDataRole.UserRole)
_PRETRAINED = "(pretrained weights)"
_FIELDS = (
    "image_set",
    "model",
    "weights",
    "layer",
    "pooling",
    "batch_size",
    "image_size",
    "preprocessing",
    "device",
)
_DEVICES = ("auto", "cpu", "cuda", "mps")


def _config_fields() -> list[str]:
    """The form's fields this engine's ExtractConfig has (layer etc. came later)."""
    have = {f.name for f in dataclasses.fields(ExtractConfig)}
    return [name for name in _FIELDS if name in have]


def layers_job(model: str, weights: str | None, control: JobControl) -> Job[list[dict[str, Any]]]:
    """Build ``model`` (random weights unless ``weights``) and list its layers (engine thread).

    Returns ``LayerInfo.to_dict()`` rows: name, type, shape, calls; the default layer's name
    and the default representation's width come first as ``{"default": name,
    "feature_dim": d}``.
    """
    yield Progress("layers", 0, 0, f"building {model}")
    control.check()
    try:
        from alignet_engine.models.registry import backbone_layers
    except ImportError:  # an engine without the layer listing: the default layer only
        yield Message("layers", "this engine cannot list layers; using pre_logits", "WARNING")
        return []
    backbone, layers = backbone_layers(model, weights=weights)
    rows = [info.to_dict() for info in layers]
    default = str(getattr(backbone, "layer", "pre_logits"))
    dim = getattr(backbone, "feature_dim", None)
    yield Message("layers", f"{model}: {len(rows)} layers (default {default})")
    return [{"default": default, "feature_dim": dim}, *rows]


class FeaturesPage(Page):
    key = "features"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.fields = _config_fields()
        self._defaults_for: object = None
        self._layers_for = ""
        # Left: what to extract and what is stored; right: the (tall) layer tree.
        stored = self._build_stored()
        splitter = QSplitter()
        splitter.addWidget(column(self._build_settings(), stored, stretch=stored))
        splitter.addWidget(self._build_layers())
        splitter.setSizes([560, 480])
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h3>Models &amp; features</h3>"))
        layout.addWidget(splitter, 1)

    # ----------------------------------------------------------------- layout
    def _build_settings(self) -> StageControls:
        """The extraction form (with the checkpoint to read) and its button."""
        self.form = ConfigForm(
            ExtractConfig,
            fields=self.fields,
            choices={
                "image_set": (),
                "model": available_models(),
                "device": _DEVICES,
                "pooling": self._poolings(),
            },
            labels={"image_set": "image set", "image_size": "image size (px)"},
        )
        self.checkpoint = QComboBox()
        self.checkpoint.setObjectName("checkpoint")
        self.checkpoint.setToolTip(
            "Extract with a distilled student's weights (a distill run) instead of the "
            "pretrained ones; its features are labelled <model>+distilled"
        )
        form_layout = self.form.layout()
        if isinstance(form_layout, QFormLayout):
            form_layout.addRow("checkpoint", self.checkpoint)
        # Combo boxes as wide as the form: model specs and run ids are long.
        for editor in [*self.form.editors.values(), self.checkpoint]:
            if isinstance(editor, QComboBox):
                editor.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

        self.settings = controls = StageControls(
            "Extraction",
            self.form,
            "Extract features",
            self.extract,
            align_right=True,
            error=self.error,
        )
        self.extract_button = controls.button
        self.extract_button.setObjectName("extract")
        self.extract_button.setDefault(True)
        self.extract_reason = controls.reason
        return controls

    def _build_layers(self) -> QGroupBox:
        """The model's layer tree, filled by "List layers"; a row chosen sets the layer."""
        self.layers_button = QPushButton("List layers")
        self.layers_button.setObjectName("list_layers")
        self.layers_button.setToolTip(
            "Build the model (on the engine thread) and list its modules with output shapes"
        )
        self.layers_button.clicked.connect(self.list_layers)
        self.layers_caption = QLabel("Choose a model and list its layers to pick one.")
        self.layers_caption.setWordWrap(True)
        self.layer_model = QStandardItemModel(0, 3, self)
        self.layer_model.setHorizontalHeaderLabels(["Layer", "Type", "Output shape"])
        self.layer_tree = QTreeView()
        self.layer_tree.setObjectName("layer_tree")
        self.layer_tree.setModel(self.layer_model)
        self.layer_tree.setUniformRowHeights(True)
        # several rows (Ctrl/Shift-click): extracted together in one pass, one run per layer
        self.layer_tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.layer_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.layer_tree.header().setStretchLastSection(True)
        self.layer_tree.setColumnWidth(0, 170)
        self.layer_tree.setColumnWidth(1, 125)
        self.layer_tree.selectionModel().currentChanged.connect(self._layer_chosen)
        layer_box = QGroupBox("Layer")
        lb = QVBoxLayout(layer_box)
        row = QHBoxLayout()
        row.addWidget(self.layers_caption, 1)
        row.addWidget(self.layers_button)
        lb.addLayout(row)
        lb.addWidget(self.layer_tree, 1)
        if "layer" not in self.fields:
            layer_box.setEnabled(False)
            self.layers_caption.setText("This engine extracts pre_logits only.")
        return layer_box

    def _build_stored(self) -> QGroupBox:
        """The table of the features the project stores."""
        self.table = QTableWidget(0, 7)
        self.table.setObjectName("features_table")
        self.table.setHorizontalHeaderLabels(
            ["Image set", "Label", "n", "dim", "Layer", "State", "Run"]
        )
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        stored = QGroupBox("Stored features")
        QVBoxLayout(stored).addWidget(self.table)
        return stored

    @staticmethod
    def _poolings() -> tuple[str, ...]:
        try:
            from alignet_engine.models.spec import POOLINGS
        except ImportError:
            return ("auto",)
        return tuple(POOLINGS)

    # ----------------------------------------------------------------- redraw
    def update_actions(self) -> None:
        reason = self.blocked_reason()
        if not reason and not self.session.info()["imagesets"]:
            reason = "Import images first (Data page): there is no image set to extract."
        self.settings.set_available(reason)

    def refresh(self) -> None:
        self.table.setRowCount(0)
        if not self.session.is_open:
            self.form.set_choices("image_set", ())
            self.checkpoint.clear()
            return
        info = self.session.info()
        self.form.set_choices(
            "image_set", list(info["imagesets"]), preferred=judged_image_set(info), strict=True
        )
        if self._defaults_for != self.session.path:
            # once per project: the model its runs already use (the teacher), not a preset
            self._defaults_for = self.session.path
            used = [m for m in models_of_runs(info) if "@" not in m]  # plain model specs
            if used and self.form.values()["model"] == ExtractConfig.model:
                self.form.set_value("model", used[0])
        current_ckpt = self.checkpoint.currentData()
        self.checkpoint.clear()
        self.checkpoint.addItem(_PRETRAINED, None)
        for run in info["runs"]:
            if run["run"].startswith("distill/") and run["summary"].get("checkpoint"):
                current = info["current"].get(run["slot"]) == run["run"]
                self.checkpoint.addItem(
                    f"{run['run']}{' (current)' if current else ''}", run["run"]
                )
        if current_ckpt is not None:
            self.checkpoint.setCurrentIndex(max(0, self.checkpoint.findData(current_ckpt)))
        self._fill_table(info)

    def _fill_table(self, info: dict[str, Any]) -> None:
        rows = [r for r in info["runs"] if r["slot"].startswith("features:")]
        self.table.setRowCount(len(rows))
        for i, run in enumerate(rows):
            _stage, image_set, label = run["slot"].split(":", 2)
            summary = run["summary"]
            layer = self._run_layer(run["run"])
            if run["stale"]:
                state = "stale"
            elif info["current"].get(run["slot"]) == run["run"]:
                state = "current"
            else:
                state = "old"
            values = [
                image_set,
                label,
                str(summary.get("n", "")),
                str(summary.get("dim", "")),
                layer,
                state,
                run["run"],
            ]
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                if c == 5:
                    item.setToolTip("\n".join(run["stale"]) or state)
                    if state == "stale":
                        item.setForeground(Qt.GlobalColor.darkYellow)
                self.table.setItem(i, c, item)
        self.table.resizeColumnsToContents()

    def _run_layer(self, ref: str) -> str:
        """The layer a features run read (small: only the run's parameters are read)."""
        try:
            params = self.session.project.run(ref, arrays=False).params
        except (AlignetError, OSError, KeyError):
            return ""
        if params.get("imported"):
            return "(imported)"
        return str(params.get("layer") or "pre_logits")

    def stored(self) -> list[dict[str, str]]:
        """The stored-features table as dicts (tests)."""
        heads = [self.table.horizontalHeaderItem(c).text() for c in range(self.table.columnCount())]
        return [
            {h: self.table.item(r, c).text() for c, h in enumerate(heads)}
            for r in range(self.table.rowCount())
        ]

    # ----------------------------------------------------------------- layers
    def list_layers(self) -> bool:
        """List the chosen model's layers (a job); False if it cannot start now."""
        values = self.validated(self.form.values)
        if values is None:
            return False
        model = str(values.get("model") or "")
        weights = values.get("weights")
        if not model:
            self.show_error("model: choose a model first")
            return False
        self.layers_caption.setText(f"Building {model}…")
        started = self.run_job(
            f"layers: {model}",
            lambda _project, control: layers_job(model, weights, control),
            lambda rows: self._show_layers(model, rows),
        )
        if not started:
            self.layers_caption.setText("Could not start the layer listing.")
        return started

    def _show_layers(self, model: str, rows: list[dict[str, Any]]) -> None:
        self.layer_model.removeRows(0, self.layer_model.rowCount())
        self._layers_for = model
        default = rows[0].get("default", "pre_logits") if rows else "pre_logits"
        # Virtual entries first: the default representation and the model's output.
        top = self.layer_model.invisibleRootItem()
        dim = rows[0].get("feature_dim") if rows else None
        pre = [
            QStandardItem("pre_logits"),
            QStandardItem("classifier input"),
            QStandardItem(f"(b, {dim})" if dim else ""),
        ]
        pre[0].setData("pre_logits", _NAME_ROLE)
        top.appendRow(pre)
        nodes: dict[str, QStandardItem] = {}
        for row in rows[1:]:
            name = str(row["name"])
            shape = row.get("shape")
            cells = [
                QStandardItem(name.rsplit(".", 1)[-1]),
                QStandardItem(str(row.get("type", ""))),
                QStandardItem(
                    "(b, " + ", ".join(str(s) for s in shape[1:]) + ")" if shape else "–"
                ),
            ]
            cells[0].setData(name, _NAME_ROLE)
            cells[0].setToolTip(name)
            for cell in cells:
                cell.setEditable(False)
            parent_name = name.rsplit(".", 1)[0] if "." in name else ""
            parent = nodes.get(parent_name, top)
            parent.appendRow(cells)
            nodes[name] = cells[0]
        for cell in pre:
            cell.setEditable(False)
        self.layer_tree.expandToDepth(0)
        self.layers_caption.setText(
            f"<b>{model}</b>: {len(rows) - 1} modules; default <b>{default}</b>. "
            "Choose a row to read its output; Ctrl-click several to extract them in one pass."
        )

    def layer_names(self) -> list[str]:
        """Every layer name in the tree, depth first (tests)."""
        out: list[str] = []

        def walk(parent: QModelIndex) -> None:
            for r in range(self.layer_model.rowCount(parent)):
                idx = self.layer_model.index(r, 0, parent)
                out.append(str(idx.data(_NAME_ROLE)))
                walk(idx)

        walk(QModelIndex())
        return out

    def choose_layer(self, name: str, *, add: bool = False) -> bool:
        """Select layer ``name`` in the tree (as a click would, or a Ctrl-click with ``add``);
        False if it is not there."""
        for idx in self._indexes(QModelIndex()):
            if idx.data(_NAME_ROLE) == name:
                flags = QItemSelectionModel.SelectionFlag.Rows | (
                    QItemSelectionModel.SelectionFlag.Select
                    if add
                    else QItemSelectionModel.SelectionFlag.ClearAndSelect
                )
                self.layer_tree.selectionModel().setCurrentIndex(idx, flags)
                self.layer_tree.scrollTo(idx)
                return True
        return False

    def selected_layers(self) -> list[str]:
        """The names of the selected layer rows, in tree order."""
        chosen = {
            self.layer_model.index(i.row(), 0, i.parent()).data(_NAME_ROLE)
            for i in self.layer_tree.selectionModel().selectedRows(0)
        }
        return [
            str(idx.data(_NAME_ROLE))
            for idx in self._indexes(QModelIndex())
            if idx.data(_NAME_ROLE) in chosen
        ]

    def _indexes(self, parent: QModelIndex) -> list[QModelIndex]:
        out = []
        for r in range(self.layer_model.rowCount(parent)):
            idx = self.layer_model.index(r, 0, parent)
            out.append(idx)
            out.extend(self._indexes(idx))
        return out

    def _layer_chosen(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if "layer" not in self.fields or not current.isValid():
            return
        name = self.layer_model.index(current.row(), 0, current.parent()).data(_NAME_ROLE)
        self.form.set_value("layer", None if name == "pre_logits" else name)

    # ----------------------------------------------------------------- extraction
    def config(self) -> ExtractConfig:
        """The ExtractConfig the form describes (raises ValueError/InputError when invalid)."""
        checkpoint = self.checkpoint.currentData()
        # The current run by its slot (as `extract --checkpoint distill`): the features then
        # record the slot they read, so they go stale when the student is replaced.
        current = self.session.info()["current"] if self.session.is_open else {}
        if checkpoint is not None and current.get("distill") == checkpoint:
            checkpoint = "distill"
        return self.form.config(checkpoint=checkpoint, num_workers=0)

    def _extract_config(self) -> ExtractConfig:
        """:meth:`config`, of an image set the project holds (raises InputError if not)."""
        config = self.config()
        if self.session.is_open and config.image_set not in self.session.info()["imagesets"]:
            raise InputError(
                f"image set: there is no image set '{config.image_set}'; import one on the "
                "Data page first"
            )
        return config

    def extract(self) -> bool:
        """Run the extraction (a job); False (with the reason shown) if it cannot start."""
        config = self.validated(self._extract_config)
        if config is None:
            return False

        layers = self.selected_layers() if "layer" in self.fields else []
        if len(layers) > 1:

            def make_layers_job(project: Project, control: JobControl) -> Job[list[str]]:
                from alignet_engine.stages.features import extract_layers

                return extract_layers(project, config, layers, control)

            return self.run_job(
                f"features: {len(layers)} layers of {config.model}", make_layers_job
            )

        def make_job(project: Project, control: JobControl) -> Job[str]:
            from alignet_engine.stages.features import extract

            return extract(project, config, control)

        return self.run_job(f"features: {config.label}", make_job)
