"""The Project page: a study dashboard.

- the pipeline as a flow of stages, each with its state and why (the engine's
  :func:`~alignet_engine.views.status.pipeline_status`, the same the navigator shows);
- what to do next, in words, with a link to the page that does it and a "Re-run everything
  stale" action (:func:`~alignet_engine.views.status.next_steps`,
  :func:`~alignet_engine.stages.rerun.rerun_stale`);
- the headline chain base teacher → aligned teacher → distilled student against the noise
  ceiling, with 95% CIs, per triplet type, and the aligned teacher's calibration
  (:func:`~alignet_engine.views.evaluation.evaluation_table`);
- every run of every stage (:class:`~alignet_app.widgets.runs.RunHistory`): readable details,
  make any run current, compare runs side by side, delete runs.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from alignet_app.notify import dialogs_enabled
from alignet_app.pages.base import Page
from alignet_app.session import Session
from alignet_app.widgets import theme
from alignet_app.widgets.runs import RunComparison, RunHistory
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import Job
from alignet_engine.stages.evaluate_all import ROLES
from alignet_engine.stages.order import PIPELINE, stale_order
from alignet_engine.stages.rerun import RERUNNABLE, rerun_stale
from alignet_engine.store import Project
from alignet_engine.views.evaluation import EvaluationTable, evaluation_table, format_cell
from alignet_engine.views.status import next_steps

_MARK = {"not run": "○", "done": "●", "stale": "◐", "interrupted": "✕", "running": "▶"}
#: Border colours of the stage boxes: readable on light and dark palettes alike.
_BORDER: dict[str, str] = theme.STYLE["stage_states"]
_STAGE_TITLE = {
    "features": "Features",
    "transform": "Alignment",
    "clusters": "Clusters",
    "triplets": "Triplets",
    "distill": "Distillation",
    "evaluate": "Evaluation",
    "export": "Export",
}
_CHAIN = ("base_teacher", "aligned_teacher", "distilled_student")


class StageBox(QFrame):
    """One stage of the flow: its mark, name, state and why (click: show its runs)."""

    clicked = Signal(str)

    def __init__(self, stage: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stage = stage
        self.setObjectName(f"stage_{stage}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.title = QLabel()
        self.state = QLabel()
        self.state.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addWidget(self.title)
        layout.addWidget(self.state)
        self.setMinimumWidth(90)

    def set_state(self, state: str, why: str) -> None:
        self.title.setText(f"<b>{_MARK.get(state, '')} {_STAGE_TITLE[self.stage]}</b>")
        self.state.setText(state)
        self.setToolTip(f"{_STAGE_TITLE[self.stage]}: {state} — {why}")
        colour = _BORDER.get(state, "#888888")
        self.setStyleSheet(f"StageBox {{ border: 2px solid {colour}; border-radius: 6px; }}")
        self.setProperty("state", state)

    def mousePressEvent(self, event: Any) -> None:
        self.clicked.emit(self.stage)
        super().mousePressEvent(event)


class OverviewPage(Page):
    key = "project"

    #: emitted with a page key when the user follows a next-step link
    navigate = Signal(str)
    JOB_RERUN = "Re-run everything stale"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.heading = QLabel()
        self.heading.setWordWrap(True)
        self.heading.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # ---- the flow
        self.flow = QWidget()
        flow_layout = QHBoxLayout(self.flow)
        flow_layout.setContentsMargins(0, 0, 0, 0)
        self.stage_boxes: dict[str, StageBox] = {}
        for i, stage in enumerate(PIPELINE):
            if i:
                arrow = QLabel("→")
                arrow.setAlignment(Qt.AlignmentFlag.AlignCenter)
                flow_layout.addWidget(arrow)
            box = StageBox(stage)
            box.clicked.connect(self._stage_clicked)
            self.stage_boxes[stage] = box
            flow_layout.addWidget(box, 1)

        # ---- next steps
        self.advice = QLabel()
        self.advice.setWordWrap(True)
        self.advice.setObjectName("advice")
        self.advice.linkActivated.connect(self._follow)
        self.rerun_button = QPushButton(self.JOB_RERUN)
        self.rerun_button.clicked.connect(lambda: self.rerun_stale())
        self.rerun_reason = QLabel()
        self.rerun_reason.setWordWrap(True)
        self.rerun_reason.setObjectName("reason")
        next_box = QGroupBox("Next steps")
        next_layout = QVBoxLayout(next_box)
        next_layout.addWidget(self.advice)
        row = QHBoxLayout()
        row.addWidget(self.rerun_button)
        row.addWidget(self.rerun_reason, 1)
        next_layout.addLayout(row)

        # ---- headline results
        self.results = QLabel()
        self.results.setWordWrap(True)
        self.results.setObjectName("results")
        self.results.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        results_box = QGroupBox("Results on held-out human judgments")
        results_layout = QVBoxLayout(results_box)
        results_layout.addWidget(self.results)

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.addWidget(self.heading)
        top_layout.addWidget(self.flow)
        top_layout.addWidget(next_box)
        top_layout.addWidget(results_box)
        top_layout.addStretch(1)
        top_scroll = QScrollArea()
        top_scroll.setWidgetResizable(True)
        top_scroll.setWidget(top)
        top_scroll.setFrameShape(QFrame.Shape.NoFrame)

        # ---- runs
        self.runs = RunHistory()
        self.runs.make_current.connect(self.make_current)
        self.runs.delete.connect(self._ask_delete)
        self.runs.compare.connect(self.compare)
        runs_box = QGroupBox("Runs (every stage keeps its history)")
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.addWidget(self.runs)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("overview_splitter")
        self.splitter.addWidget(top_scroll)
        self.splitter.addWidget(runs_box)
        self.splitter.setSizes([420, 330])
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter)
        self.comparison: RunComparison | None = None
        self.steps: list = []
        self.eval_table: EvaluationTable | None = None

    # ----------------------------------------------------------------- redraw
    def refresh(self) -> None:
        if not self.session.is_open:
            self.heading.setText("<h2>No project open</h2>")
            for box in self.stage_boxes.values():
                box.set_state("not run", "no project")
            self.advice.setText("Create or open a project (File menu).")
            self.results.setText("")
            self.steps = []
            self.eval_table = None
            self.runs.set_project(None, None)
            self.update_actions()
            return
        info = self.session.info()
        mode = " (read-only)" if self.session.read_only else ""
        data = ", ".join(f"{name} ({n} images)" for name, n in info["imagesets"].items())
        judgments = ", ".join(info["judgments"]) or "none"
        self.heading.setText(
            f"<h2>{html.escape(self.session.path.name)}{mode}</h2>"
            f"<p>{html.escape(str(self.session.path))}<br>Image sets: "
            f"{html.escape(data or 'none')}. Judgments: {html.escape(judgments)}.</p>"
        )
        for stage, state in self.session.status().items():
            self.stage_boxes[stage].set_state(state.state, state.why)
        self.steps = next_steps(info)
        self.advice.setText(advice_html(self.steps))
        self.eval_table = evaluation_table(self.session.project)
        self.results.setText(results_html(self.eval_table, self.session.project))
        self.runs.set_project(self.session.project, info, read_only=self.session.read_only)
        self.update_actions()

    def update_actions(self) -> None:
        """Enable "Re-run everything stale" or say, next to it, why it is disabled."""
        reason = ""
        if not self.session.is_open:
            reason = "No project is open."
        elif self.session.read_only:
            reason = "The project is open read-only."
        elif self.session.runner.busy:
            reason = f"Wait for '{self.session.runner.label}' to finish."
        else:
            order = stale_order(self.session.info())
            if not order:
                reason = "Nothing is stale."
            elif not any(ref.split("/", 1)[0] in RERUNNABLE for ref in order):
                reason = "Only exports are stale: export again on the Export page."
            else:
                reason = f"{len(order)} stale run(s) will be re-run with their own settings."
        self.rerun_button.setEnabled(reason.endswith("settings."))
        self.rerun_reason.setText(reason)

    # ----------------------------------------------------------------- actions
    def _stage_clicked(self, stage: str) -> None:
        self.runs.show_stage(stage)

    def _follow(self, link: str) -> None:
        if link.startswith("page:"):
            self.navigate.emit(link.removeprefix("page:"))

    def rerun_stale(self) -> bool:
        return self.run_job(self.JOB_RERUN, lambda project, control: rerun_stale(project, control))

    def make_current(self, slot: str, ref: str) -> bool:
        """Make ``ref`` the current run of ``slot`` (a short engine job, journalled)."""
        return self._change("Make run current", lambda p: p.set_current(slot, ref))

    def delete_run(
        self, ref: str, *, replace_with: str | None = None, clear_slot: bool = False
    ) -> bool:
        """Delete run ``ref`` (a current one needs ``replace_with`` or ``clear_slot``)."""
        return self._change(
            "Delete run",
            lambda p: p.delete_run(ref, replace_with=replace_with, clear_slot=clear_slot),
        )

    def _change(self, label: str, action: Callable[[Project], object]) -> bool:
        # on the engine thread, like every write: never beside a running job
        def job(project: Project, _control: object) -> Job[object]:
            yield from ()
            return action(project)

        return self.run_job(label, job)

    def _ask_delete(self, ref: str) -> None:
        """Confirm; a current run needs another run of its slot made current, or none."""
        info = self.session.info()
        run = next(r for r in info["runs"] if r["run"] == ref)
        others = [r["run"] for r in info["runs"] if r["slot"] == run["slot"] and r["run"] != ref]
        is_current = info["current"].get(run["slot"]) == ref
        if not dialogs_enabled():
            return
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Delete run")
        box.setText(f"Delete run {ref} of {run['slot']}?")
        replace = clear = None
        if is_current:
            box.setInformativeText(
                "It is the current run. "
                + (f"The newest other run ({others[-1]}) becomes current." if others else "")
                + " Runs that read it become stale."
            )
            if others:
                replace = box.addButton(
                    "Delete, use the newest other run", QMessageBox.ButtonRole.AcceptRole
                )
            clear = box.addButton(
                "Delete, leave the slot empty", QMessageBox.ButtonRole.DestructiveRole
            )
        else:
            replace = box.addButton("Delete", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        chosen = box.clickedButton()
        if chosen is replace and replace is not None:
            self.delete_run(ref, replace_with=others[-1] if is_current else None)
        elif chosen is clear and clear is not None:
            self.delete_run(ref, clear_slot=True)

    def compare(self, refs: list[str]) -> RunComparison | None:
        """Open the side-by-side comparison of ``refs`` (runs of one stage)."""
        if len(refs) < 2 or len({r.split("/", 1)[0] for r in refs}) != 1:
            return None
        self.comparison = RunComparison(self.session.project, sorted(refs), self)
        self.comparison.show()
        return self.comparison


# --------------------------------------------------------------------------------------------
def advice_html(steps: list) -> str:
    """The next steps as a numbered list, each linking to the page that does it."""
    if not steps:
        return "Everything is up to date. Export the student and the report on the Export page."
    # numbered lines, not an <ol>: a QLabel sizes list blocks too short and clips them
    return "<br>".join(
        f"{i}. {html.escape(s.text[0].upper() + s.text[1:])} — "
        f"<a href='page:{page_key(s.page)}'>{html.escape(s.page)}</a>"
        for i, s in enumerate(steps, 1)
    )


def page_key(title: str) -> str:
    """The navigator key of a page title (as :class:`~alignet_engine.views.status.NextStep`
    names pages)."""
    return {
        "Data": "data",
        "Models & features": "features",
        "Alignment": "alignment",
        "Clusters": "clusters",
        "Triplets": "triplets",
        "Distillation": "distill",
        "Evaluation": "evaluate",
        "Export": "export",
    }.get(title, "project")


def results_html(table: EvaluationTable, project) -> str:
    """Per judgment set: the chain base teacher → aligned teacher → distilled student, with
    95% CIs, the noise ceiling and chance; per-type accuracy; the aligned teacher's
    calibration. Only numbers the engine computed are shown."""
    esc = html.escape
    rows = [r for r in table.rows if r.kind == "judgments"] + [
        r for r in table.rows if r.kind != "judgments"
    ]
    if not rows:
        return (
            "No evaluations yet. Evaluate the representations on held-out judgments on the "
            "<i>Evaluation</i> page (Evaluate all)."
        )
    parts = []
    for row in rows:
        cells = []
        for role in _CHAIN:
            cell = row.cells.get(role)
            label = esc(table.labels.get(role, role))
            if cell is None:
                cells.append(f"{label}: <i>not evaluated</i>")
            else:
                stale = " ◐ stale" if cell.is_stale else ""
                cells.append(f"{label}: <b>{esc(format_cell(cell))}</b>{stale}")
        ceiling = (
            f"noise ceiling {row.noise_ceiling:.3f}"
            if row.noise_ceiling is not None
            else "no noise ceiling (no repeated judgments)"
        )
        parts.append(
            f"<p><b>{esc(row.title)}</b> — {row.measure} "
            f"(chance {row.chance:.3f}, {ceiling})<br>" + " → ".join(cells) + "</p>"
        )
        by_type = _by_type(row, project)
        if by_type:
            parts.append(by_type)
        calibration = _calibration(row, project)
        if calibration:
            parts.append(calibration)
    return "".join(parts)


def _summary(project, cell) -> dict[str, Any]:
    try:
        return project.run(cell.run, arrays=False).summary
    except AlignetError:
        return {}


def _by_type(row, project) -> str:
    """A small table: triplet type × chain role, accuracy [CI] (where the judgments have types)."""
    per_role = {
        role: _summary(project, row.cells[role]).get("by_type") or {}
        for role in ROLES
        if role in row.cells and role in _CHAIN
    }
    types = sorted({t for d in per_role.values() for t in d})
    if not types:
        return ""
    roles = [r for r in _CHAIN if r in per_role]
    head = "".join(f"<th align='left'>{html.escape(r.replace('_', ' '))}</th>" for r in roles)
    body = ""
    for t in types:
        tds = ""
        for r in roles:
            d = per_role[r].get(t)
            tds += (
                f"<td>{d['accuracy']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]</td>"
                if d and "accuracy" in d
                else "<td>—</td>"
            )
        body += f"<tr><td>{html.escape(t)}</td>{tds}</tr>"
    return f"<table cellspacing='6'><tr><th align='left'>per type</th>{head}</tr>{body}</table>"


def _calibration(row, project) -> str:
    cell = row.cells.get("aligned_teacher")
    if cell is None:
        return ""
    cal = _summary(project, cell).get("calibration")
    if not isinstance(cal, dict) or "ece" not in cal:
        return ""
    extra = ""
    if isinstance(cal.get("kl_human_model"), int | float):
        extra = f", KL(human ‖ model) {cal['kl_human_model']:.3f} nats"
    return (
        f"<p>Calibration of the aligned teacher on {cal.get('n_triplets', '?')} repeated "
        f"triplets: expected calibration error {cal['ece']:.3f}{extra}.</p>"
    )
