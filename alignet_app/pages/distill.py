"""The Distillation page: train the student on the current triplets and watch it learn.

The form is built from the engine's configuration dataclasses (:class:`DistillStageConfig`
and its nested :class:`DistillConfig`), so a field the engine adds shows up here with the
tooltip of its docstring entry. Training runs as the engine's ``run_distill`` job; its loss
batches feed :class:`~alignet_app.widgets.plots.LiveCurves`, and the readout's rates come
from the engine's :class:`~alignet_engine.views.summaries.RateMeter`. After the job the page
shows the run's stored curves and summary. An interrupted run (killed, cancelled, failed)
can be resumed from its training checkpoint when the engine offers ``resume_distill``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from alignet_app.pages.base import Page, column, scroll_column
from alignet_app.session import Session
from alignet_app.widgets.config_form import ConfigForm, tooltip
from alignet_app.widgets.plots import LiveCurves
from alignet_engine.config.distill import DistillConfig, DistillStageConfig
from alignet_engine.errors import AlignetError
from alignet_engine.jobs import LossBatch, Progress, StageDone
from alignet_engine.stages import distill as distill_stage
from alignet_engine.stages.distill import run_distill
from alignet_engine.views.summaries import (
    RateMeter,
    format_duration,
    stored_history,
)

log = logging.getLogger(__name__)

JOB_LABEL = "Distillation"
_NONE = "none"

#: what each field does, with AligNet's setting where it has one (method.md §5); a field not
#: listed here gets the text of its docstring entry

VAL_TIP = tooltip(DistillStageConfig, "val_judgments")


class DistillPage(Page):
    key = "distill"
    error_prefix = "Cannot start: "

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        # (project path, run ref) of the run this page trained last: shown after training
        # even when it did not become current (a worse run does not replace a better one)
        self._trained: tuple[Any, str] | None = None
        self._meter: RateMeter | None = None
        self._device = ""
        self._phase = ""
        self._resumable: list[dict[str, Any]] = []

        self.set_panes(self._build_controls(), self._build_results(), widths=(380, 820))

        runner = session.runner
        runner.loss.connect(self._on_loss)
        runner.progress.connect(self._on_progress)
        runner.stage_done.connect(self._on_stage_done)
        runner.finished.connect(self._on_finished)
        # The readout's clock ticks while training even between events (elapsed time), and
        # follows a pause made from the status bar.
        self._tick = QTimer(self)
        self._tick.setInterval(500)
        self._tick.timeout.connect(self._update_readout)
        self.update_actions()

    # ----------------------------------------------------------------- layout
    def _build_controls(self) -> QWidget:
        """The left column: the forms (scrolling), the error, the run buttons, resuming."""
        forms = self._build_forms()
        return column(forms, self.error, self._build_buttons(), self._build_resume(), stretch=forms)

    def _build_forms(self) -> QScrollArea:
        """The student and training forms, generated from the configuration dataclasses."""
        from alignet_engine.models import available_models

        stage_fields = [
            f
            for f in DistillStageConfig.__dataclass_fields__
            if f not in ("training", "val_judgments", "val_set")
        ]
        self.stage_form = ConfigForm(
            DistillStageConfig,
            fields=stage_fields,
            choices={
                "student": list(available_models()),
                "device": ["auto", "cpu", "cuda", "mps"],
            },
        )
        self.val_judgments = QComboBox()
        self.val_judgments.setObjectName("field_val_judgments")
        self.val_judgments.setToolTip(VAL_TIP)
        self.stage_form.layout().addRow("validate on", self.val_judgments)  # type: ignore[union-attr]
        self.training_form = ConfigForm(DistillConfig, labels=TRAINING_LABELS)

        stage_box = QGroupBox("Student")
        QVBoxLayout(stage_box).addWidget(self.stage_form)
        training_box = QGroupBox("Training (distillation objective, schedule)")
        QVBoxLayout(training_box).addWidget(self.training_form)
        return scroll_column(stage_box, training_box, min_width=330)

    def _build_buttons(self) -> QHBoxLayout:
        """Start, pause, resume and cancel the training."""
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Train the student on the current triplets")
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause at the next step boundary")
        self.pause_button.clicked.connect(self.pause)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the paused training")
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(
            "Stop at the next step; a training checkpoint is kept so the run can be resumed"
        )
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.resume_button):
            buttons.addWidget(button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        return buttons

    def _build_resume(self) -> QWidget:
        """Resume an interrupted run from its checkpoint (shown when there is one)."""
        self.resume_runs = QComboBox()
        self.resume_runs.setToolTip("Interrupted distillation runs with a training checkpoint")
        self.resume_run_button = QPushButton("Resume interrupted run")
        self.resume_run_button.clicked.connect(self.resume_interrupted)
        resume_row = QHBoxLayout()
        resume_row.addWidget(self.resume_runs, 1)
        resume_row.addWidget(self.resume_run_button)
        self.resume_box = QWidget()
        self.resume_box.setLayout(resume_row)
        resume_row.setContentsMargins(0, 0, 0, 0)
        return self.resume_box

    def _build_results(self) -> QWidget:
        """The live readout, the curves and the run's summary."""
        self.readout = QLabel("Not running.")
        self.readout.setObjectName("readout")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary = QLabel()
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        # room for the whole summary: the curves above take whatever height is left
        self.summary.setMinimumHeight(5 * self.summary.fontMetrics().lineSpacing())
        self.summary.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.curves = LiveCurves(
            (
                "Losses",
                "Agreement (train batch, validation)",
                "Learning rate",
                "Gradient norm (before clipping)",
                "Drift from θ₀ (‖θ − θ₀‖ / ‖θ₀‖)",
            ),
            columns=3,
            x_label="step (optimizer steps)",
            best=("val_agreement", "max"),
            empty_text="No curves yet: set the training up and press Start; the losses, "
            "agreement, learning rate, gradient norm and drift appear here live.",
        )
        return column(self.readout, self.curves, self.summary, stretch=self.curves)

    # ----------------------------------------------------------------- redraw
    def refresh(self) -> None:
        self.clear_error()
        if not self.session.is_open:
            self.summary.setText("No project open.")
            self._resumable = []
            self._fill_resumable()
            self.update_actions()
            return
        info = self.session.info()
        current = self.val_judgments.currentText()
        self.val_judgments.clear()
        self.val_judgments.addItems([_NONE, *info["judgments"]])
        if current:
            self.val_judgments.setCurrentText(current)
        self._resumable = self._list_resumable()
        self._fill_resumable()
        if not self.running_job:
            self._show_stored_run(info)
        self.update_actions()

    def _show_stored_run(self, info: dict[str, Any]) -> None:
        """The current distill run's curves and summary (or why there is none)."""
        if "triplets" not in info["current"]:
            self.summary.setText(
                "No triplets yet: fit the teacher (Alignment), cluster and sample triplets "
                "first; distillation trains on the current triplet run."
            )
            self.curves.clear()
            return
        current = info["current"].get("distill")
        trained = self._trained[1] if self._trained and self._trained[0] == info["path"] else None
        if current is None and trained is None:
            self.summary.setText("No distillation run yet: set the training up and press Start.")
            self.curves.clear()
            return
        ref = trained or "distill"
        try:
            run = self.session.project.run(ref)
        except AlignetError:  # the run was deleted meanwhile
            self._trained = None
            run = self.session.project.run("distill")
        self.curves.load_history(
            stored_history(run.arrays), planned=run.params.get("training", {}).get("steps")
        )
        text = summary_text(f"{run.stage}/{run.run_id}", run.summary)
        full = f"{run.stage}/{run.run_id}"
        if current is not None and full != current:
            text += (
                f"<br><i>This run is not the current one ({current} stays current: it is not "
                "worse). Make it current on the Project page to use it downstream.</i>"
            )
        self.summary.setText(text)

    def _list_resumable(self) -> list[dict[str, Any]]:
        lister: Callable[..., list[dict[str, Any]]] | None = getattr(
            distill_stage, "resumable_runs", None
        )
        if lister is None or self.session.read_only:
            return []
        try:
            return lister(self.session.project)
        except (AlignetError, OSError) as exc:  # an unreadable journal must not break the page
            log.warning("cannot list resumable distill runs: %s", exc)
            return []

    def _fill_resumable(self) -> None:
        self.resume_runs.clear()
        for entry in self._resumable:
            why = entry.get("status") or "killed"
            self.resume_runs.addItem(
                f"{entry['run']} — step {entry['steps_done']}/{entry['steps']} ({why})",
                entry["run"],
            )
        self.resume_box.setVisible(resume_api() is not None and bool(self._resumable))

    def update_actions(self) -> None:
        runner = self.session.runner
        busy = runner.busy
        mine = bool(self.running_job) and busy
        self.start_button.setEnabled(not busy)
        self.pause_button.setEnabled(mine and not runner.paused)
        self.resume_button.setEnabled(mine and runner.paused)
        self.cancel_button.setEnabled(mine)
        self.resume_run_button.setEnabled(not busy and self.resume_runs.count() > 0)

    # ----------------------------------------------------------------- actions
    def config(self) -> DistillStageConfig:
        """The configuration in the form (raises ValueError / AlignetError on bad values)."""
        val = self.val_judgments.currentText()
        return self.stage_form.config(  # type: ignore[no-any-return]
            training=self.training_form.values(),
            val_judgments=None if val in ("", _NONE) else val,
            val_set=None,
        )

    def _start_setup(self) -> tuple[DistillStageConfig, str]:
        """:meth:`config` and the device it trains on; raises if there are no triplets."""
        config = self.config()
        if self.session.is_open and "triplets" not in self.session.info()["current"]:
            raise AlignetError("no triplets to train on: sample triplets first (Triplets)")
        return _with_device(config)

    def start(self) -> bool:
        """Validate the form and start training; False (with an inline error) if it cannot."""
        setup = self.validated(self._start_setup)
        if setup is None:
            return False
        config, device = setup
        started = self.run_job(
            JOB_LABEL, lambda project, control: run_distill(project, config, control)
        )
        if started:
            self._begin(config.training.steps, config.training.effective_batch_size, device)
        return started

    def resume_interrupted(self) -> bool:
        """Continue the chosen interrupted run from its training checkpoint."""
        api = resume_api()
        run = self.resume_runs.currentData()
        if api is None or run is None:
            return False
        entry = next(e for e in self._resumable if e["run"] == run)
        setup = self.validated(lambda: _with_device(DistillStageConfig.from_dict(entry["params"])))
        if setup is None:
            return False
        config, device = setup
        started = self.run_job(
            f"{JOB_LABEL} (resumed)", lambda project, control: api(project, run, control)
        )
        if started:
            # the resumed job first replays the restored curve, then continues
            self._begin(entry["steps"], config.training.effective_batch_size, device)
        return started

    def _begin(self, steps: int, batch: int, device: str) -> None:
        self._device = device
        self._phase = "starting"
        self._meter = RateMeter(steps, 3 * batch)
        self.curves.clear(live=True)
        self.curves.set_planned(steps)
        self.summary.setText("Training…")
        self._tick.start()
        self.update_actions()
        self._update_readout()

    def pause(self) -> None:
        self.session.runner.pause()
        self._update_readout()
        self.update_actions()

    def resume(self) -> None:
        self.session.runner.resume()
        self._update_readout()
        self.update_actions()

    def cancel(self) -> None:
        self.session.runner.cancel()

    # ----------------------------------------------------------------- events
    def _on_loss(self, batch: LossBatch) -> None:
        if not self.running_job or batch.stage != "distill":
            return
        self.curves.add_batch(batch)
        if "loss" in batch.values and len(batch.steps) and self._meter is not None:
            self._phase = "training"
            self._meter.add(int(batch.steps[-1]))
            self._update_readout()

    def _on_progress(self, progress: Progress) -> None:
        if not self.running_job or progress.stage != "distill":
            return
        if progress.message:  # decoding the pool, caching features: before the first step
            self._phase = f"{progress.message} {progress.done}/{progress.total}"
            self._update_readout()

    def _on_stage_done(self, event: StageDone) -> None:
        if self.running_job and event.stage == "distill":
            path = self.session.info()["path"] if self.session.is_open else None
            self._trained = (path, f"distill/{event.run_id}")
            self.summary.setText(summary_text(f"distill/{event.run_id}", event.summary))

    def _on_finished(self, label: str, _result: object) -> None:
        if self.running_job:
            self._phase = "finished"

    def job_ended(self, label: str) -> None:
        # the redraw that follows shows the finished run's stored curves instead of the live
        # ones (refresh skips that while a job of ours is running)
        self._tick.stop()
        if self._phase != "finished":
            self._phase = "stopped (cancelled or failed); the curves so far stay shown"
        self._update_readout()
        self.update_actions()

    # ----------------------------------------------------------------- readout
    def _update_readout(self) -> None:
        meter = self._meter
        if meter is None:
            return
        runner = self.session.runner
        paused = bool(self.running_job) and runner.paused
        if paused:
            meter.pause()
        else:
            meter.resume()
        rate = meter.rate()
        parts = [f"Device: <b>{self._device or '?'}</b>"]
        parts.append(f"step {rate.step}/{rate.total}")
        if rate.steps_per_s is not None:
            parts.append(f"{rate.steps_per_s:.2f} steps/s")
        if rate.images_per_s is not None:
            parts.append(f"{rate.images_per_s:.1f} images/s")
        parts.append(f"elapsed {format_duration(rate.elapsed_s)}")
        if self.running_job:
            parts.append(f"ETA {format_duration(rate.eta_s)}")
        state = "paused" if paused else self._phase
        if state:
            parts.append(f"<i>{state}</i>")
        self.readout.setText(" · ".join(parts))
        if self.running_job:
            self.update_actions()


#: form labels in words (the code name stays in each tooltip)
TRAINING_LABELS = {
    "batch_size": "batch size (triplets)",
    "lr": "learning rate η",
    "warmup_steps": "warm-up steps",
    "weight_decay_to_init": "λ (decay to init)",
    "teacher_temperature": "τ teacher",
    "student_temperature": "τ student",
    "grad_clip": "gradient clip (L2 norm)",
    "log_every_s": "plot update every (s)",
    "val_every": "validate every (steps)",
    "eval_batch_size": "validation batch size",
    "train_bn": "train batch-norm statistics",
    "channels_last": "channels-last memory",
    "checkpoint_every": "checkpoint every (steps)",
    "head_dim": "triplet head size",
    "preserve_weight": "preservation weight",
    "accumulation_steps": "gradient accumulation steps",
    "amp": "mixed precision (AMP)",
}


def resume_api() -> Callable[..., Any] | None:
    """The engine's ``resume_distill(project, run, control)`` if it has one.

    Looked up at call time (not import time): the resume API is newer than this page, and
    without it the page simply hides its resume row.
    """
    return getattr(distill_stage, "resume_distill", None)


def _with_device(config: DistillStageConfig) -> tuple[DistillStageConfig, str]:
    """``config`` and the device it trains on here."""
    return config, _device_name(config.device)


def _device_name(preference: str) -> str:
    """Where ``preference`` trains on this machine (cheap: no model is loaded)."""
    from alignet_engine.base.devices import pick_device

    return str(pick_device(preference))


def summary_text(run: str, summary: dict[str, Any]) -> str:
    """A distill run's summary as rich text: agreement before → after, checkpoint, speed."""
    lines = [f"<b>Run</b> {run}: {summary.get('student', '?')}, {summary.get('steps', '?')} steps"]
    if "seconds" in summary:
        lines[0] += f" in {format_duration(summary['seconds'])}"
    if "device" in summary:
        lines[0] += f" on {summary['device']}"
    if "images_per_s" in summary:
        lines[0] += f" ({summary['images_per_s']:.1f} images/s)"
    if "val_agreement_before" in summary:
        lines.append(
            "<b>Validation agreement with the teacher</b>: "
            f"{summary['val_agreement_before']:.3f} → {summary['val_agreement_after']:.3f}"
        )
    human = [k for k in summary if k.startswith("val_human")]
    if human:
        lines.append(
            "<b>Human validation</b>: "
            + ", ".join(f"{k}={summary[k]:.3f}" for k in human if isinstance(summary[k], float))
        )
    if "final_loss" in summary:
        lines.append(f"<b>Final loss</b>: {summary['final_loss']:.4g}")
    if "checkpoint" in summary:
        lines.append(f"<b>Student checkpoint</b>: {summary['checkpoint']}")
    if summary.get("resumed_from"):
        lines.append(f"Resumed from {summary['resumed_from']}")
    return "<br>".join(lines)
