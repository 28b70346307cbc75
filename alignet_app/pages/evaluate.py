"""The Evaluation page: base vs. aligned teacher vs. base vs. distilled student, per data set.

The table and the charts show every current evaluate run, organised by the engine
(:func:`alignet_engine.views.evaluation.evaluation_table`); "Evaluate all" runs the engine's
:func:`~alignet_engine.stages.evaluate_all.evaluate_all` job, the form runs one evaluation with an
:class:`~alignet_engine.config.EvaluateConfig`, and "Export report…" renders the charts to PNG
and has the engine write report.html + report.json.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.defaults import held_out_judgments, judged_image_set
from alignet_app.pages.base import Page, StageControls, reason_label, scroll_column, set_available
from alignet_app.session import Session
from alignet_app.widgets import theme
from alignet_app.widgets.bar_charts import EvalCharts, render_chart_pngs, role_colour
from alignet_app.widgets.config_form import ConfigForm
from alignet_engine.config import EvaluateConfig
from alignet_engine.stages.evaluate import evaluate
from alignet_engine.stages.evaluate_all import evaluate_all, fit_judgments
from alignet_engine.views.evaluation import (
    EvaluationTable,
    comparison_text,
    evaluation_table,
    format_cell,
)
from alignet_engine.views.report import check_output_folder, write_report_job

_ROLE = int(Qt.ItemDataRole.UserRole)


class EvaluatePage(Page):
    key = "evaluate"
    inline_failures = True

    #: labels of the jobs this page starts
    JOB_ALL = "Evaluate all"
    JOB_ONE = "Evaluate"
    JOB_REPORT = "Export report"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.eval_table: EvaluationTable | None = None
        self.last_report: dict[str, str] | None = None
        self._png_dir: tempfile.TemporaryDirectory[str] | None = None

        self.heading = QLabel()
        self.heading.setWordWrap(True)
        split = QSplitter()
        split.addWidget(self._build_results())
        split.addWidget(self._build_side())
        split.setStretchFactor(0, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(split, 1)

    # ----------------------------------------------------------------- layout
    def _build_results(self) -> QSplitter:
        """The table of every current evaluation above the charts."""
        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

        self.charts = EvalCharts()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.charts)

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.table)
        left.addWidget(scroll)
        left.setSizes([130, 570])
        return left

    def _build_side(self) -> QScrollArea:
        """The side panel: evaluate all, one evaluation, the report and the error."""
        self.report_button = QPushButton("Export report…")
        self.report_button.setToolTip(
            "Write report.html, report.json and one PNG chart per data set into a folder."
        )
        self.report_button.clicked.connect(self._choose_report_folder)
        self.report_label = QLabel()
        self.report_label.setWordWrap(True)
        self.report_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        side = scroll_column(
            self._build_evaluate_all(),
            self._build_one(),
            self.report_button,
            self.report_label,
            self.error,
            min_width=300,
        )
        side.setMaximumWidth(380)
        return side

    def _build_evaluate_all(self) -> QGroupBox:
        """What "Evaluate all" scores (judgment sets, matrices) and its bootstrap."""
        self.targets = QListWidget()
        self.targets.setMaximumHeight(110)
        self.targets.setToolTip("The judgment sets and matrices “Evaluate all” scores.")
        self.all_button = QPushButton("Evaluate all")
        self.all_button.setToolTip(
            "Score each representation that has features (base / aligned teacher, base / "
            "distilled student) on the checked data; evaluations already current are skipped."
        )
        self.all_button.clicked.connect(lambda: self.evaluate_all())
        self.n_boot = QSpinBox()
        self.n_boot.setRange(10, 100_000)
        self.n_boot.setValue(1000)
        self.n_boot.setToolTip("Bootstrap resamples for the 95% confidence intervals.")
        all_box = QGroupBox("Evaluate all representations")
        all_layout = QVBoxLayout(all_box)
        all_layout.addWidget(QLabel("on:"))
        all_layout.addWidget(self.targets)
        self.fit_note = QLabel()
        self.fit_note.setWordWrap(True)
        self.fit_note.hide()
        all_layout.addWidget(self.fit_note)
        row = QHBoxLayout()
        row.addWidget(QLabel("bootstrap resamples"))
        row.addWidget(self.n_boot)
        all_layout.addLayout(row)
        all_layout.addWidget(self.all_button)
        self.all_reason = reason_label()
        all_layout.addWidget(self.all_reason)
        return all_box

    def _build_one(self) -> StageControls:
        """The form of one evaluation."""
        self.form = ConfigForm(
            EvaluateConfig,
            fields=[
                "image_set",
                "model",
                "judgments",
                "matrix",
                "transform",
                "metric",
                "n_boot",
                "compare",
                "compare_transform",
                "ci_unit",
            ],
            choices={
                "image_set": [],
                "model": [],
                "judgments": [],
                "matrix": [],
                "transform": [],
                "compare": [],
                "compare_transform": [],
            },
            labels={
                "image_set": "image set",
                "n_boot": "bootstrap",
                "compare": "compare with",
                "compare_transform": "its transform",
                "ci_unit": "CI resamples",
            },
        )
        self.one = StageControls("One evaluation", self.form, "Evaluate", self.evaluate_one)
        self.one_button, self.one_reason = self.one.button, self.one.reason
        return self.one

    # ----------------------------------------------------------------- redraw
    def update_actions(self) -> None:
        reason = self.blocked_reason()
        if not reason:
            info = self.session.info()
            if not info["judgments"] and not info["matrices"]:
                reason = "Import held-out human judgments or a matrix first (Data page)."
            elif not any(s.startswith("features:") for s in info["current"]):
                reason = "Extract features first (Models & features page)."
        set_available(self.all_button, self.all_reason, reason)
        self.one.set_available(reason)

    def refresh(self) -> None:
        if not self.session.is_open:
            self.heading.setText("<h2>Evaluation</h2><p>Open a project first.</p>")
            self.eval_table = None
            self.table.clear()
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            self.charts.set_table(None)
            self.targets.clear()
            return
        self.eval_table = evaluation_table(self.session.project)
        self._fill_table(self.eval_table)
        self.charts.set_table(self.eval_table)
        self._fill_choices()
        roles = self.eval_table.roles
        self.heading.setText(
            "<h2>Evaluation</h2><p>Agreement with people on held-out judgments (accuracy) "
            "and matrices (RSA, Spearman ρ), with 95% bootstrap CIs. "
            f"Teacher <b>{roles.teacher or '—'}</b> (transform <b>{roles.transform or '—'}"
            f"</b>), student <b>{roles.student or '—'}</b>. ◐ = stale (an input changed).</p>"
        )

    def _fill_table(self, table: EvaluationTable) -> None:
        cols = list(table.columns)
        models = {
            "base_teacher": table.roles.teacher,
            "aligned_teacher": table.roles.teacher,
            "base_student": table.roles.student,
            "distilled_student": table.roles.student,
        }
        self.table.clear()
        self.table.setColumnCount(len(cols) + 2)
        self.table.setRowCount(len(table.rows))
        headers = [table.labels[c] + (f"\n{models[c]}" if models.get(c) else "") for c in cols] + [
            "noise ceiling",
            "chance",
        ]
        self.table.setHorizontalHeaderLabels(headers)
        for j, c in enumerate(cols):
            header = self.table.horizontalHeaderItem(j)
            header.setForeground(QBrush(QColor(theme.readable(role_colour(table, c)))))
        self.table.setVerticalHeaderLabels([f"{r.name}\n{r.task}" for r in table.rows])
        for i, row in enumerate(table.rows):
            for j, c in enumerate(cols):
                cell = row.cells.get(c)
                if cell is None:
                    item = QTableWidgetItem("—")
                    item.setToolTip("not evaluated")
                else:
                    text = format_cell(cell) + (" ◐" if cell.is_stale else "")
                    if cell.comparison:
                        text += "\n" + comparison_text(cell.comparison, short=True)
                    item = QTableWidgetItem(text)
                    tip = [
                        f"{cell.representation} on {row.name}",
                        f"n = {cell.n}, metric {cell.metric}, {cell.n_boot} bootstrap resamples"
                        + (f" over {cell.ci_unit}" if cell.ci_unit else ""),
                        f"run {cell.run}",
                    ]
                    if cell.is_stale:
                        tip.append("stale: " + "; ".join(cell.stale))
                        # amber, light or dark with the palette: the text stays readable
                        item.setBackground(QColor(theme.colours().stale_bg))
                    item.setToolTip("\n".join(tip))
                    item.setData(_ROLE, cell.run)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(i, j, item)
            ceiling = row.noise_ceiling
            item = QTableWidgetItem("—" if ceiling is None else f"{ceiling:.3f}")
            item.setToolTip(
                "\n".join(f"{k}: {v}" for k, v in row.ceiling_detail.items())
                or "no repeated judgments: no noise ceiling"
            )
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            self.table.setItem(i, len(cols), item)
            item = QTableWidgetItem(f"{row.chance:.3f}")
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            self.table.setItem(i, len(cols) + 1, item)
        self.table.resizeColumnsToContents()
        # As tall as its rows (no blank band under a short table), the charts get the rest.
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
        height += self.table.verticalHeader().length()
        scrollbar = self.table.horizontalScrollBar().sizeHint().height()
        self.table.setMaximumHeight(max(height + scrollbar + 4, 80))

    def _fill_choices(self) -> None:
        assert self.eval_table is not None
        info = self.session.info()
        slots = info["current"]
        models = sorted({s.split(":", 2)[2] for s in slots if s.startswith("features:")})
        transforms = sorted(s.split(":", 1)[1] for s in slots if s.startswith("transform:"))
        # Starting values: the image set already evaluated (else the one the judgments are
        # about), the teacher, and a held-out judgment set — never one a transform was
        # fitted on, unless the user picks it.
        fitted = fit_judgments(self.session.project)
        held_out = held_out_judgments(info, fitted)
        evaluated = self.eval_table.rows[0].image_set if self.eval_table.rows else None
        self.form.set_choices(
            "image_set",
            list(info["imagesets"]),
            preferred=evaluated or judged_image_set(info),
            strict=True,
        )
        self.form.set_choices("model", models, preferred=self.eval_table.roles.teacher)
        self.form.set_choices("judgments", info["judgments"])
        self.form.set_choices("matrix", info["matrices"])
        self.form.set_choices("transform", transforms)
        self.form.set_choices("compare", models)
        self.form.set_choices("compare_transform", transforms)
        values = self.form.values()
        if values["judgments"] is None and values["matrix"] is None and info["judgments"]:
            self.form.set_value("judgments", (held_out or info["judgments"])[-1])
        checked = {
            self.targets.item(i).data(_ROLE): self.targets.item(i).checkState()
            for i in range(self.targets.count())
        }
        self.targets.clear()
        for kind, names in (("judgments", info["judgments"]), ("matrix", info["matrices"])):
            for name in names:
                fit = kind == "judgments" and name in fitted
                label = f"{name}  ({kind}{', fit set' if fit else ''})"
                item = QListWidgetItem(label)
                item.setData(_ROLE, (kind, name))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                if fit:
                    item.setToolTip(
                        "The transform was fitted on these judgments: scores on them are not "
                        "held out. Tick to evaluate on them anyway."
                    )
                default = Qt.CheckState.Unchecked if fit else Qt.CheckState.Checked
                item.setCheckState(checked.get((kind, name), default))
                self.targets.addItem(item)
        self.fit_note.setVisible(bool(fitted))
        self.fit_note.setText(
            f"The transform was fitted on {', '.join(fitted)}: not ticked at first, as its "
            "scores are not held out."
        )

    # ----------------------------------------------------------------- actions
    def checked_targets(self) -> tuple[list[str], list[str]]:
        """(judgment sets, matrices) checked in the target list."""
        judgments: list[str] = []
        matrices: list[str] = []
        for i in range(self.targets.count()):
            item = self.targets.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                kind, name = item.data(_ROLE)
                (judgments if kind == "judgments" else matrices).append(name)
        return judgments, matrices

    def evaluate_all(
        self, judgments: list[str] | None = None, matrices: list[str] | None = None
    ) -> bool:
        """Run the engine's evaluate_all job on the given (default: the checked) targets."""
        self.clear_error()
        if judgments is None and matrices is None:
            judgments, matrices = self.checked_targets()
        chosen_j, chosen_m = list(judgments or []), list(matrices or [])
        if not chosen_j and not chosen_m:
            self.show_error("Check at least one judgment set or matrix to evaluate on.")
            return False
        n_boot = self.n_boot.value()
        return self.run_job(
            self.JOB_ALL,
            lambda project, control: evaluate_all(
                project, chosen_j, chosen_m, n_boot=n_boot, control=control
            ),
            self._all_done,
        )

    def _all_done(self, result: dict[str, Any]) -> None:
        self.report_label.setText(
            f"Ran {len(result['ran'])} evaluation(s); "
            f"{sum(s['why'] == 'already current' for s in result['skipped'])} already current."
        )

    def evaluate_one(self) -> bool:
        """Run one evaluation from the form (bad values are shown next to it)."""
        return self.start_job(self.form.config, lambda _config: self.JOB_ONE, evaluate)

    def _choose_report_folder(self) -> None:
        if os.environ.get("ALIGNET_NO_DIALOGS"):
            return
        folder = QFileDialog.getExistingDirectory(self, "Export the report into")
        if folder:
            self.export_report(folder)

    def export_report(self, folder: str | Path) -> bool:
        """Render each chart to PNG and have the engine write the report into ``folder``."""
        self.clear_error()
        table = self.eval_table
        if table is None or not table.rows:
            self.show_error("Nothing to report yet: run an evaluation first.")
            return False
        if self.validated(lambda: check_output_folder(folder)) is None:
            return False
        if self._png_dir is not None:
            self._png_dir.cleanup()
        # Charts are widgets, so they are rendered here (GUI thread); the engine copies the
        # PNGs into the folder atomically together with the JSON and HTML.
        self._png_dir = tempfile.TemporaryDirectory(prefix="alignet-charts-")
        pngs = {name: str(p) for name, p in render_chart_pngs(table, self._png_dir.name).items()}
        return self.run_job(
            self.JOB_REPORT,
            lambda project, control: write_report_job(project, folder, pngs, control=control),
            self._report_done,
        )

    def _report_done(self, files: dict[str, str]) -> None:
        self.last_report = files
        self.report_label.setText(f"Report written: {files['report_html']}")
        if self._png_dir is not None:
            self._png_dir.cleanup()
            self._png_dir = None
