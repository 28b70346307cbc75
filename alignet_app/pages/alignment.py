"""The Alignment page: fit the affine transform (the human-aligned surrogate teacher) and judge it.

The user picks the image set, the model whose features to align and the judgments to fit on,
sets the :class:`~alignet_engine.config.TransformConfig` hyperparameters (a form built from
the dataclass; new fields appear by themselves) and runs the engine's ``fit_transform`` job.
The results come from the project: the held-out accuracy of base and aligned features
against the human noise ceiling (the evaluate runs; "Evaluate" runs both), the aligned
model's reliability diagram, and the transform run's loss curve and CV grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.pages.base import Page, column, scroll_column
from alignet_app.session import Session
from alignet_app.widgets import figure_export, theme
from alignet_app.widgets.config_form import ConfigForm
from alignet_app.widgets.plots import PALETTE, LiveCurves
from alignet_engine.config import EvaluateConfig, TransformConfig
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Job, JobControl, LossBatch
from alignet_engine.stages.evaluate import evaluate
from alignet_engine.stages.transform import fit_transform, transform_slot
from alignet_engine.store import Project
from alignet_engine.views.summaries import (
    AlignmentResults,
    alignment_results,
    feature_labels,
    format_search_grid,
    parse_search_grid,
    run_arrays,
    search_rows,
    stored_history,
)

FIT_LABEL = "Fit transform"
EVAL_LABEL = "Evaluate base and aligned"
_NONE = "none"

#: fields the page edits with its own selectors (from the project's content)
_DATA_FIELDS = ("image_set", "model", "judgments", "pool", "search")

#: what each hyperparameter does, with gLocal's / AligNet's setting (method.md §2–3); a field
#: not listed gets the text of its docstring
SEARCH_TIP = (
    "Optional grid search by cross-validation: NAME=V1,V2; NAME=… (e.g. lam=0.001,0.01,0.1; "
    "lr=1e-3,1e-2). The best setting is refitted on all triplets; empty = no search."
)


#: form labels in words (the code name stays in each tooltip)
TRANSFORM_LABELS = {
    "lam": "λ (pull toward identity)",
    "alpha": "α (local-structure weight)",
    "tau": "τ (local temperature)",
    "lr": "learning rate",
    "max_epochs": "max epochs",
    "batch_size": "batch size",
    "val_fraction": "validation share",
    "standardize": "standardize features",
    "targets": "soft targets from",
    "n_model_triplets": "model triplets",
    "vice_max_epochs": "VICE epochs",
    "n_splits": "CV folds",
    "pool_max_rows": "local-term pool rows",
    "random_state": "seed",
}


class AlignmentPage(Page):
    key = "alignment"
    error_prefix = "Cannot start: "

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self._prefilled_for: str | None = None
        self.results: AlignmentResults | None = None
        self.set_panes(self._build_controls(), self._build_results(), widths=(380, 820))
        session.runner.loss.connect(self._on_loss)

    # ----------------------------------------------------------------- layout
    def _build_controls(self) -> QWidget:
        """The left column: data and hyperparameters (scrolling), the error, Fit, and the
        held-out evaluation."""
        self.fit_button = QPushButton("Fit transform")
        self.fit_button.setToolTip("Fit the affine transform on the chosen judgments")
        self.fit_button.clicked.connect(self.fit)

        scroll = scroll_column(self._build_data(), self._build_hyperparameters(), min_width=340)
        return column(scroll, self.error, self.fit_button, self._build_evaluation(), stretch=scroll)

    def _build_data(self) -> QGroupBox:
        """The image set, model features, judgments and pool to fit on."""
        self.image_set = QComboBox()
        self.image_set.setToolTip("The image set the judgments refer to (its features are fitted)")
        self.image_set.currentTextChanged.connect(self._image_set_changed)
        self.model = QComboBox()
        self.model.setToolTip("Whose features to align: models with features of this image set")
        self.model.currentTextChanged.connect(lambda _t: self._show_results())
        self.judgments = QListWidget()
        self.judgments.setToolTip("Judgment sets to fit on (tick one or more of the same kind)")
        self.judgments.setMaximumHeight(90)
        self.pool = QComboBox()
        self.pool.setToolTip(
            "Image set whose features (same model) feed the local-structure term (alpha > 0)"
        )
        data_form = QFormLayout()
        data_form.addRow("image set", self.image_set)
        data_form.addRow("model features", self.model)
        data_form.addRow("judgments", self.judgments)
        data_form.addRow("pool (local term)", self.pool)
        data_box = QGroupBox("Data")
        data_box.setLayout(data_form)
        return data_box

    def _build_hyperparameters(self) -> QGroupBox:
        """The form generated from TransformConfig (less the data fields), and the search grid."""
        fields = [f.name for f in dataclasses.fields(TransformConfig) if f.name not in _DATA_FIELDS]
        self.form = ConfigForm(
            TransformConfig,
            fields=fields,
            choices={"targets": ["judgments", "vice"]},
            labels=TRANSFORM_LABELS,
        )
        self.search = QLineEdit()
        self.search.setObjectName("field_search")
        self.search.setPlaceholderText("no search (e.g. lam=0.001,0.01,0.1)")
        self.search.setToolTip(SEARCH_TIP)
        self.form.layout().addRow("search grid", self.search)  # type: ignore[union-attr]
        hyper_box = QGroupBox("Hyperparameters")
        QVBoxLayout(hyper_box).addWidget(self.form)
        return hyper_box

    def _build_evaluation(self) -> QGroupBox:
        """The held-out judgments to score base and aligned features on, and Evaluate."""
        self.eval_judgments = QComboBox()
        self.eval_judgments.setToolTip(
            "Held-out judgments to score base and aligned features on (not the fitted ones)"
        )
        self.eval_judgments.currentTextChanged.connect(lambda _t: self._show_results())
        self.eval_button = QPushButton("Evaluate")
        self.eval_button.setToolTip(
            "Score the base features and the aligned ones (through the transform named above) "
            "on these judgments: accuracy with a bootstrap CI, the noise ceiling, calibration"
        )
        self.eval_button.clicked.connect(self.evaluate)
        eval_row = QHBoxLayout()
        eval_row.addWidget(self.eval_judgments, 1)
        eval_row.addWidget(self.eval_button)
        eval_box = QGroupBox("Held-out evaluation")
        eval_box.setLayout(eval_row)
        return eval_box

    def _build_results(self) -> QWidget:
        """Accuracy and calibration plots, the loss curves, the summary and the CV grid."""
        self.accuracy_plot = _plot("Held-out accuracy vs noise ceiling", "accuracy")
        self.calibration_plot = _plot("Calibration (aligned)", "human agreement")
        self.calibration_plot.setLabel("bottom", "model confidence")
        self.calibration_plot.setXRange(0, 1)
        self.calibration_plot.setYRange(0, 1)
        self.calibration_plot.addLegend(offset=(-5, -30), labelTextColor=theme.colours().foreground)
        self.bars: pg.BarGraphItem | None = None
        self.calibration_points: pg.PlotDataItem | None = None
        self.curves = LiveCurves(
            ("Transform loss",),
            group_of=lambda name: (
                "Transform loss" if name in ("train_loss", "val_loss") else "Other loss terms"
            ),
            x_label="epoch",
            columns=2,
        )
        self.results_text = QLabel()
        self.results_text.setWordWrap(True)
        self.results_text.setObjectName("results")
        self.grid_table = QTableWidget(0, 4)
        self.grid_table.setHorizontalHeaderLabels(["setting", "CV accuracy", "± std", "CV loss"])
        self.grid_table.horizontalHeader().setStretchLastSection(True)
        self.grid_table.setMaximumHeight(140)
        self.grid_table.hide()
        plots = QWidget()
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.accuracy_plot, 0, 0)
        grid.addWidget(self.calibration_plot, 0, 1)
        grid.addWidget(self.curves, 1, 0, 1, 2)
        return column(plots, self.results_text, self.grid_table, stretch=plots)

    # ----------------------------------------------------------------- selectors
    def refresh(self) -> None:
        if not self.session.is_open:
            for box in (self.image_set, self.model, self.pool, self.eval_judgments):
                box.clear()
            self.judgments.clear()
            self.results_text.setText("No project open.")
            return
        info = self.session.info()
        self._prefill(info)
        _fill(self.image_set, list(info["imagesets"]))
        _fill(self.pool, [_NONE, *info["imagesets"]])
        checked = set(self.checked_judgments()) or set(self._prefill_judgments)
        self.judgments.clear()
        for name in info["judgments"]:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if name in checked else Qt.CheckState.Unchecked
            )
            self.judgments.addItem(item)
        unfitted = [j for j in info["judgments"] if j not in checked]
        _fill(self.eval_judgments, info["judgments"], prefer=unfitted[0] if unfitted else None)
        self._image_set_changed(self.image_set.currentText())

    _prefill_judgments: tuple[str, ...] = ()

    def _prefill(self, info: dict[str, Any]) -> None:
        """Once per project: start from the parameters of its 'teacher' transform, if any."""
        path = str(self.session.path)
        if self._prefilled_for == path:
            return
        self._prefilled_for = path
        self._prefill_judgments = ()
        slot = transform_slot("teacher")
        if slot not in info["current"]:
            return
        params = self.session.project.run(slot, arrays=False).params
        for name in self.form.names:
            if name in params:
                self.form.set_value(name, params[name])
        self.search.setText(format_search_grid(params.get("search")))
        self.image_set.clear()
        self.image_set.addItem(params.get("image_set", ""))
        self.model.clear()
        self.model.addItem(params.get("model", ""))
        self.pool.clear()
        self.pool.addItem(params.get("pool") or _NONE)
        self._prefill_judgments = tuple(params.get("judgments", ()))

    def _image_set_changed(self, image_set: str) -> None:
        if not self.session.is_open or not image_set:
            return
        labels = feature_labels(self.session.info(), image_set)
        _fill(self.model, labels)
        self.form.set_choices(
            "targets", ["judgments", "vice", *(f"embedding:{label}" for label in labels)]
        )
        self._show_results()

    def checked_judgments(self) -> list[str]:
        return [
            self.judgments.item(i).text()
            for i in range(self.judgments.count())
            if self.judgments.item(i).checkState() == Qt.CheckState.Checked
        ]

    def update_actions(self) -> None:
        busy = self.session.runner.busy
        self.fit_button.setEnabled(not busy)
        self.eval_button.setEnabled(not busy)

    # ----------------------------------------------------------------- actions
    def config(self) -> TransformConfig:
        """The transform configuration in the page (raises ValueError / AlignetError)."""
        pool = self.pool.currentText()
        return self.form.config(  # type: ignore[no-any-return]
            image_set=self.image_set.currentText(),
            model=self.model.currentText(),
            judgments=tuple(self.checked_judgments()),
            pool=None if pool in ("", _NONE) else pool,
            search=parse_search_grid(self.search.text()),
        )

    def _fit_config(self) -> TransformConfig:
        """:meth:`config`, with features to fit (raises AlignetError if there are none)."""
        config = self.config()
        if not config.model:
            raise AlignetError("no features of this image set: extract features first")
        return config

    def fit(self) -> bool:
        """Validate and start ``fit_transform``; False (inline error) if it cannot start."""
        config = self.validated(self._fit_config)
        if config is None:
            return False
        started = self.run_job(
            FIT_LABEL, lambda project, control: fit_transform(project, config, control)
        )
        if started:
            self.curves.clear()
            self.results_text.setText(f"Fitting transform '{config.name}'…")
        return started

    def evaluate(self) -> bool:
        """Evaluate base and aligned features on the chosen held-out judgments."""
        configs = self.validated(self.evaluate_configs)
        if configs is None:
            return False

        def make_job(project: Project, control: JobControl) -> Job[list[dict[str, Any]]]:
            def both() -> Iterator[Any]:
                out = []
                for cfg in configs:
                    out.append((yield from evaluate(project, cfg, control)))
                return out

            return both()  # type: ignore[return-value]

        return self.run_job(EVAL_LABEL, make_job)

    def evaluate_configs(self) -> list[EvaluateConfig]:
        """Base then aligned :class:`EvaluateConfig` for the chosen judgments."""
        judgments = self.eval_judgments.currentText()
        if not judgments:
            raise AlignetError("choose judgments to evaluate on")
        name = self.form.values()["name"]
        if transform_slot(name) not in self.session.info()["current"]:
            raise AlignetError(f"no transform '{name}' yet: fit it first")
        common = {
            "image_set": self.image_set.currentText(),
            "model": self.model.currentText(),
            "judgments": judgments,
        }
        return [EvaluateConfig(**common), EvaluateConfig(**common, transform=name)]

    # ----------------------------------------------------------------- events
    def _on_loss(self, batch: LossBatch) -> None:
        if self.running_job == FIT_LABEL and batch.stage == "transform":
            self.curves.add_batch(batch)

    # ----------------------------------------------------------------- results
    def _show_results(self) -> None:
        if not self.session.is_open:
            return
        info = self.session.info()
        image_set, model = self.image_set.currentText(), self.model.currentText()
        name = str(self.form.values().get("name", "teacher"))
        judgments = self.eval_judgments.currentText()
        lines = []
        if transform_slot(name) in info["current"] and self.running_job != FIT_LABEL:
            ref = transform_slot(name)
            run = self.session.project.run(ref, arrays=False)
            self.curves.load_history(stored_history(run_arrays(self.session.project, ref)))
            s = run.summary
            lines.append(
                f"<b>Transform '{name}'</b> ({run.params.get('model')} on "
                f"{', '.join(run.params.get('judgments', [])) or run.params.get('targets')}): "
                f"{s.get('epochs')} epochs, best epoch {s.get('best_epoch')}, "
                f"fit accuracy {s.get('fit_accuracy', float('nan')):.3f}, "
                f"temperature {s.get('temperature', float('nan')):.3g}"
            )
            self._show_grid(s)
        elif self.running_job != FIT_LABEL:
            self.curves.clear()
            self._show_grid({})
            lines.append(f"No transform '{name}' yet: choose the data and press Fit.")
        self.results = None
        if image_set and model and judgments:
            self.results = alignment_results(info, image_set, model, name, judgments)
        self._draw_accuracy(self.results)
        self._draw_calibration(self.results)
        if self.results and self.results.bars:
            parts = [
                f"{b.label}: {b.accuracy:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}]"
                for b in self.results.bars
            ]
            if self.results.ceiling is not None:
                parts.append(f"noise ceiling {self.results.ceiling:.3f}")
            lines.append(f"<b>On '{judgments}'</b>: " + "; ".join(parts))
        elif judgments:
            lines.append(f"No evaluation on '{judgments}' yet: press Evaluate.")
        self.results_text.setText("<br>".join(lines))

    def _show_grid(self, summary: dict[str, Any]) -> None:
        rows = search_rows(summary)
        self.grid_table.setVisible(bool(rows))
        self.grid_table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(
                (
                    row.setting,
                    f"{row.mean_accuracy:.3f}",
                    f"{row.std_accuracy:.3f}",
                    f"{row.mean_loss:.4f}",
                )
            ):
                self.grid_table.setItem(i, j, QTableWidgetItem(text))

    def _draw_accuracy(self, results: AlignmentResults | None) -> None:
        plot = self.accuracy_plot
        plot.clear()
        self.bars = None
        if results is None or not results.bars:
            plot.getAxis("bottom").setTicks([[]])
            return
        x = np.arange(len(results.bars), dtype=np.float64)
        heights = np.array([b.accuracy for b in results.bars])
        self.bars = pg.BarGraphItem(
            x=x,
            height=heights,
            width=0.55,
            brushes=[pg.mkBrush(PALETTE[7]), pg.mkBrush(PALETTE[0])][: len(x)],
            pen=pg.mkPen(theme.colours().axis),
        )
        plot.addItem(self.bars)
        plot.addItem(
            pg.ErrorBarItem(
                x=x,
                y=heights,
                top=np.array([b.err_above for b in results.bars]),
                bottom=np.array([b.err_below for b in results.bars]),
                beam=0.15,
                pen=pg.mkPen(theme.colours().foreground, width=1),
            )
        )
        for value, text, style in (
            (results.ceiling, "noise ceiling (leave-one-out)", Qt.PenStyle.DashLine),
            (results.ceiling_majority, "majority agreement", Qt.PenStyle.DotLine),
        ):
            if value is not None:
                plot.addItem(
                    pg.InfiniteLine(
                        pos=value,
                        angle=0,
                        pen=pg.mkPen(PALETTE[3], width=1, style=style),
                        label=f"{text} {value:.3f}",
                        labelOpts={
                            "position": 0.02,
                            "color": PALETTE[3],
                            "anchors": [(0, 1), (0, 1)],
                        },
                    )
                )
        plot.getAxis("bottom").setTicks([[(i, b.label) for i, b in enumerate(results.bars)]])
        plot.setXRange(-0.6, len(x) - 0.4)
        chance = 1 / 3 if results.task == "oddone" else 0.5
        plot.setYRange(chance - 0.02, 1.0)
        plot.addItem(
            pg.InfiniteLine(
                pos=chance,
                angle=0,
                pen=pg.mkPen(theme.colours().axis, width=1),
                label="chance",
                labelOpts={
                    "position": 0.99,
                    "color": theme.colours().axis,
                    "anchors": [(1, 1), (1, 1)],
                },
            )
        )

    def _draw_calibration(self, results: AlignmentResults | None) -> None:
        plot = self.calibration_plot
        plot.clear()
        self.calibration_points = None
        plot.plot(
            [0, 1],
            [0, 1],
            pen=pg.mkPen(theme.colours().axis, style=Qt.PenStyle.DashLine),
            name="perfect calibration",
        )
        rel = results.calibration if results is not None else None
        if rel is None:
            plot.setTitle(
                "Calibration (aligned): no evaluation with repeated triplets",
                color=theme.colours().foreground,
                size="10pt",
            )
            return
        plot.setTitle(
            f"Calibration (aligned): ECE {rel.ece:.3f}",
            color=theme.colours().foreground,
            size="10pt",
        )
        self.calibration_points = plot.plot(
            rel.confidence,
            rel.accuracy,
            pen=pg.mkPen(PALETTE[0], width=1),
            symbol="o",
            symbolSize=8,
            symbolBrush=PALETTE[0],
            symbolPen=PALETTE[0],
            name=f"bins (n = {rel.n})",
        )


def _plot(title: str, y_label: str) -> pg.PlotWidget:
    plot = pg.PlotWidget()
    theme.style_canvas(plot)
    plot.setTitle(title, color=theme.colours().foreground, size="10pt")
    plot.setLabel("left", y_label)
    plot.showGrid(y=True, alpha=0.2)
    plot.setMouseEnabled(x=False, y=False)
    plot.setMenuEnabled(False)
    figure_export.install(plot, lambda: figure_export.plot_csv(plot), name=title)
    plot.setMinimumHeight(220)
    return plot


def _fill(box: QComboBox, items: list[str], prefer: str | None = None) -> None:
    """Replace a combo box's items, keeping the current choice if it is still there."""
    current = box.currentText()
    box.blockSignals(True)
    box.clear()
    box.addItems(items)
    if current in items:
        box.setCurrentText(current)
    elif prefer is not None:
        box.setCurrentText(prefer)
    box.blockSignals(False)
