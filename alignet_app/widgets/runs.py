"""Runs of a project: their history per stage, readable details, and side-by-side comparison.

The engine decides what is current, stale or worse (:mod:`alignet_engine.views.status`,
:class:`~alignet_engine.store.Project`); these widgets only show it and pass the user's
choices (make current, delete) back as engine calls.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from alignet_app.widgets import theme
from alignet_engine.stages.headlines import HEADLINES
from alignet_engine.stages.order import PIPELINE
from alignet_engine.store import Project, Run

_ROLE = int(Qt.ItemDataRole.UserRole)

#: The curves worth overlaying when runs of a stage are compared (history_<name> arrays).
COMPARED_CURVES: dict[str, tuple[str, ...]] = {
    "distill": ("loss", "val_agreement", "val_loss"),
    "transform": ("train_loss", "val_loss"),
}
#: Colour-blind-safe series colours (Okabe–Ito) for up to eight overlaid runs.
RUN_COLOURS: tuple[str, ...] = tuple(theme.STYLE["runs"]["colours"])


def when(timestamp: float | None) -> str:
    """A POSIX time as local ``YYYY-MM-DD HH:MM:SS`` ("—" when unknown)."""
    if not timestamp:
        return "—"
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def value_text(value: Any) -> str:
    """A parameter or summary value in words: numbers rounded, lists joined, dicts as k: v."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        if len(value) > 12:
            return f"{len(value)} values: " + ", ".join(value_text(v) for v in value[:6]) + ", …"
        return ", ".join(value_text(v) for v in value) or "—"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {value_text(v)}" for k, v in value.items()) or "—"
    return str(value)


def started_times(project: Project) -> dict[str, float]:
    """When each run's job started (``"<stage>/<run_id>"`` -> POSIX time), from the journal."""
    out: dict[str, float] = {}
    for record in project.journal():
        if record.get("event") == "start" and "stage" in record:
            out[f"{record['stage']}/{record['run']}"] = float(record["time"])
    return out


def headline_value(run: Mapping[str, Any] | Run) -> tuple[str, float] | None:
    """(label, value) of a run's headline metric (see ``HEADLINES``), if it has one."""
    stage = run.stage if isinstance(run, Run) else run["run"].split("/", 1)[0]
    summary = run.summary if isinstance(run, Run) else run["summary"]
    if stage == "evaluate":
        for key in ("accuracy", "spearman"):
            if isinstance(summary.get(key), int | float):
                return key, float(summary[key])
        return None
    headline = HEADLINES.get(stage)
    if headline is None or not isinstance(summary.get(headline.key), int | float):
        return None
    return headline.label, float(summary[headline.key])


def run_details_html(run: Run, *, state: str, stale: Sequence[str], started: float | None) -> str:
    """A run's parameters, inputs, dates, duration and results as readable HTML tables."""
    esc = html.escape
    ref = f"{run.stage}/{run.run_id}"

    def table(rows: Sequence[tuple[str, str]]) -> str:
        body = "".join(
            f"<tr><td style='padding-right:12px;vertical-align:top'><b>{esc(k)}</b></td>"
            f"<td style='vertical-align:top'>{esc(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table cellspacing='2'>{body}</table>"

    parts = [f"<h3>{esc(run.slot)}</h3>", f"<p>Run <code>{esc(ref)}</code> — <b>{esc(state)}</b>"]
    if stale:
        parts.append("<br>Stale because: " + "; ".join(esc(s) for s in stale))
    parts.append("</p>")
    took = run.created - started if started else None
    parts.append(
        table(
            [
                ("started", when(started)),
                ("finished", when(run.created)),
                ("took", duration(took)),
            ]
        )
    )
    if run.inputs:
        parts.append("<h4>Data it read</h4>")
        parts.append(table([(slot, used) for slot, used in sorted(run.inputs.items())]))
    data = [
        (k, value_text(run.params[k]))
        for k in ("image_set", "judgments", "matrix", "pool", "model", "student", "teacher")
        if run.params.get(k) not in (None, "", [], ())
    ]
    if data:
        parts.append(table(data))
    parts.append("<h4>Parameters</h4>")
    parts.append(table([(k, value_text(v)) for k, v in sorted(run.params.items())]))
    parts.append("<h4>Results</h4>")
    scalars = [(k, value_text(v)) for k, v in run.summary.items() if not isinstance(v, Mapping)]
    parts.append(table(scalars) if scalars else "<p>—</p>")
    for k, v in run.summary.items():
        if isinstance(v, Mapping):
            rows = [(str(kk), value_text(vv)) for kk, vv in v.items()]
            parts.append(f"<p><b>{esc(k)}</b></p>" + table(rows))
    return "".join(parts)


class RunHistory(QWidget):
    """Every run of the project, grouped by stage then slot, newest first, with actions.

    Signals ``make_current(slot, ref)``, ``delete(ref)`` and ``compare(refs)`` carry the
    user's choice to the page, which runs it against the engine.
    """

    make_current = Signal(str, str)
    delete = Signal(str)
    compare = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.project: Project | None = None
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Run", "State", "Headline", "Finished"])
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        self.tree.setColumnWidth(0, 250)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemSelectionChanged.connect(self._selection_changed)
        self.details = QTextBrowser()
        self.details.setOpenLinks(False)
        self.current_button = QPushButton("Make current")
        self.compare_button = QPushButton("Compare…")
        self.delete_button = QPushButton("Delete…")
        self.current_button.clicked.connect(self._make_current)
        self.compare_button.clicked.connect(lambda: self.compare.emit(self.selected_refs()))
        self.delete_button.clicked.connect(self._delete)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setObjectName("hint")
        buttons = QHBoxLayout()
        for b in (self.current_button, self.compare_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.tree, 1)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.hint)
        self.splitter = QSplitter()
        self.splitter.setObjectName("runs_splitter")
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        self._info: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._read_only = False
        self._selection_changed()

    # ----------------------------------------------------------------- content
    def set_project(
        self, project: Project | None, info: Mapping[str, Any] | None, *, read_only: bool = False
    ) -> None:
        """Show the runs of ``project`` (``info`` is its :meth:`Project.info`)."""
        selected = set(self.selected_refs())
        self.project, self._info, self._read_only = project, dict(info or {}), read_only
        self.tree.clear()
        self.details.clear()
        if project is None or info is None:
            self._selection_changed()
            return
        self._started = started_times(project)
        current = info["current"]
        by_stage: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for run in info["runs"]:
            stage = run["run"].split("/", 1)[0]
            by_stage.setdefault(stage, {}).setdefault(run["slot"], []).append(run)
        order = [s for s in PIPELINE if s in by_stage] + sorted(set(by_stage) - set(PIPELINE))
        for stage in order:
            slots = by_stage[stage]
            n = sum(len(v) for v in slots.values())
            stage_item = QTreeWidgetItem(self.tree, [f"{stage} ({n} run{'s' * (n != 1)})"])
            stage_item.setFirstColumnSpanned(True)
            for slot, runs in sorted(slots.items()):
                parent = stage_item
                if len(slots) > 1 or slot != stage:
                    parent = QTreeWidgetItem(stage_item, [slot])
                    parent.setFirstColumnSpanned(True)
                    parent.setToolTip(0, slot)
                for run in sorted(runs, key=lambda r: r["run"], reverse=True):
                    self._add_run(parent, run, current.get(slot))
        self.tree.expandAll()
        for item in self._run_items():
            if item.data(0, _ROLE)["run"] in selected:
                item.setSelected(True)
        self._selection_changed()

    def _add_run(self, parent: QTreeWidgetItem, run: dict[str, Any], current: str | None) -> None:
        state = run_state(run, current)
        head = headline_value(run)
        item = QTreeWidgetItem(
            parent,
            [
                run["run"].split("/", 1)[1],
                state,
                f"{head[1]:.3f}" if head else "",
                when(run.get("created")),
            ],
        )
        item.setData(0, _ROLE, run)
        item.setToolTip(0, run["run"])
        item.setToolTip(1, "\n".join(run["stale"]) or state)
        if head:
            item.setToolTip(2, head[0])
        if state.startswith("current"):
            font = item.font(0)
            font.setBold(True)
            for col in range(4):
                item.setFont(col, font)

    def _run_items(self) -> list[QTreeWidgetItem]:
        out = []
        stack = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while stack:
            item = stack.pop()
            if item.data(0, _ROLE) is not None:
                out.append(item)
            stack += [item.child(i) for i in range(item.childCount())]
        return out

    def select(self, refs: Sequence[str]) -> None:
        self.tree.clearSelection()
        for item in self._run_items():
            if item.data(0, _ROLE)["run"] in refs:
                item.setSelected(True)
                self.tree.scrollToItem(item)

    def show_stage(self, stage: str) -> None:
        """Scroll to ``stage``'s runs and select its current run(s)."""
        current = set(self._info.get("current", {}).values())
        refs = [
            r["run"]
            for r in self._info.get("runs", [])
            if r["run"].startswith(stage + "/") and r["run"] in current
        ]
        self.select(refs)

    def selected_refs(self) -> list[str]:
        return [
            item.data(0, _ROLE)["run"]
            for item in self.tree.selectedItems()
            if item.data(0, _ROLE) is not None
        ]

    # ----------------------------------------------------------------- actions
    def _selection_changed(self) -> None:
        refs = self.selected_refs()
        runs = {r["run"]: r for r in self._info.get("runs", [])}
        current = self._info.get("current", {})
        reasons = {}
        if self._read_only:
            reasons = dict.fromkeys(("current", "delete"), "the project is open read-only")
        if len(refs) != 1:
            reasons.setdefault("current", "select one run to make it current")
            reasons.setdefault("delete", "select one run to delete it")
        elif current.get(runs[refs[0]]["slot"]) == refs[0]:
            reasons.setdefault("current", "the selected run is already current")
        stages = {r.split("/", 1)[0] for r in refs}
        if len(refs) < 2 or len(stages) != 1:
            reasons["compare"] = "select two or more runs of one stage to compare them"
        self.current_button.setEnabled("current" not in reasons)
        self.delete_button.setEnabled("delete" not in reasons)
        self.compare_button.setEnabled("compare" not in reasons)
        shown = [reasons[k] for k in ("current", "compare") if k in reasons]
        self.hint.setText(
            ("Ctrl-click to select several runs. " if len(refs) < 2 else "")
            + (shown[-1][0].upper() + shown[-1][1:] + "." if shown else "")
        )
        if len(refs) == 1 and self.project is not None:
            run = self.project.run(refs[0], arrays=False)
            info = runs[refs[0]]
            self.details.setHtml(
                run_details_html(
                    run,
                    state=run_state(info, current.get(info["slot"])),
                    stale=info["stale"],
                    started=self._started.get(refs[0]),
                )
            )
        elif not refs:
            self.details.setHtml(
                "<p>Select a run to see its parameters, the data it read, when it ran and "
                "its results.</p>"
            )

    def _make_current(self) -> None:
        refs = self.selected_refs()
        if len(refs) == 1:
            slot = next(r["slot"] for r in self._info["runs"] if r["run"] == refs[0])
            self.make_current.emit(slot, refs[0])

    def _delete(self) -> None:
        refs = self.selected_refs()
        if len(refs) == 1:
            self.delete.emit(refs[0])


def run_state(run: Mapping[str, Any], current: str | None) -> str:
    """ "current", "current, stale", "waiting" (newer than current, kept out) or "older"."""
    if run["run"] == current:
        return "current, stale" if run["stale"] else "current"
    if current is not None and run["run"].split("/", 1)[1] > current.split("/", 1)[1]:
        return "newer, not current"
    return "older"


# --------------------------------------------------------------------------------------------
class RunComparison(QDialog):
    """Runs of one stage side by side: overlaid curves, a parameter diff, their results."""

    def __init__(
        self, project: Project, refs: Sequence[str], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare runs")
        self.resize(1000, 680)
        self.runs = [project.run(ref) for ref in refs]
        self._differs: dict[str, list[str]] = {}
        self.tabs = QTabWidget()
        curves = self._curves()
        if curves is not None:
            self.tabs.addTab(curves, "Curves")
        self.params = self._diff_table("params")
        self.tabs.addTab(self.params, "Parameters")
        self.results = self._diff_table("summary")
        self.tabs.addTab(self.results, "Results")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        legend = " · ".join(
            f"<span style='color:{RUN_COLOURS[i % len(RUN_COLOURS)]}'>■</span> "
            f"{html.escape(r.run_id)}"
            for i, r in enumerate(self.runs)
        )
        label = QLabel(f"<b>{html.escape(self.runs[0].stage)}</b> runs: {legend}")
        label.setWordWrap(True)
        layout.addWidget(label)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(buttons)

    def _curves(self) -> QWidget | None:
        names = COMPARED_CURVES.get(self.runs[0].stage, ())
        names = tuple(n for n in names if any(f"history_{n}" in r.arrays for r in self.runs))
        if not names:
            return None
        box = QWidget()
        layout = QHBoxLayout(box)
        self.plots: dict[str, pg.PlotWidget] = {}
        for name in names:
            plot = pg.PlotWidget()
            plot.setTitle(name.replace("_", " "))
            plot.setLabel("bottom", "step" if self.runs[0].stage == "distill" else "epoch")
            plot.showGrid(x=True, y=True, alpha=0.2)
            for i, run in enumerate(self.runs):
                y = run.arrays.get(f"history_{name}")
                if y is None or np.asarray(y).size == 0:
                    continue
                y = np.asarray(y, dtype=np.float64).ravel()
                # distillation stores its steps (history_step, history_val_step for val_*);
                # a transform's curves are per epoch
                x = run.arrays.get(
                    "history_val_step" if name.startswith("val_") else "history_step"
                )
                x = np.arange(1, y.size + 1) if x is None or np.size(x) != y.size else x
                colour = RUN_COLOURS[i % len(RUN_COLOURS)]
                keep = np.isfinite(y)
                plot.plot(
                    np.asarray(x)[keep], y[keep], pen=pg.mkPen(colour, width=2), name=run.run_id
                )
            self.plots[name] = plot
            layout.addWidget(plot)
        return box

    def _diff_table(self, what: str) -> QTableWidget:
        """Rows: every key of ``params`` or ``summary``; columns: the runs. Differing rows first,
        in bold."""
        dicts = [getattr(r, what) for r in self.runs]
        keys = sorted(set().union(*dicts))
        texts = {k: [value_text(d.get(k)) for d in dicts] for k in keys}
        differs = {k for k in keys if len(set(texts[k])) > 1}
        order = [k for k in keys if k in differs] + [k for k in keys if k not in differs]
        table = QTableWidget(len(order), len(self.runs))
        table.setHorizontalHeaderLabels([r.run_id for r in self.runs])
        table.setVerticalHeaderLabels(order)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        for row, key in enumerate(order):
            for col, text in enumerate(texts[key]):
                item = QTableWidgetItem(text)
                item.setToolTip(json.dumps(dicts[col].get(key), default=str)[:2000])
                if key in differs:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                table.setItem(row, col, item)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self._differs[what] = sorted(differs)
        return table

    def differing(self, what: str = "params") -> list[str]:
        """The keys whose values differ between the compared runs."""
        return list(self._differs["params" if what == "params" else "summary"])
