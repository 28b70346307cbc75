"""Stage 5 — distill: fine-tune the student so its triplet choices match the teacher's.

The student's weights are stored as a safetensors side file next to the project and
referenced from the run with their sha256; the loss curves are stored in the run.

The pool is never decoded whole: :func:`pool_images` streams it from its files, batch by
batch, through DataLoader workers (``num_workers``; 0 in the GUI), so memory does not grow
with the pool (:class:`alignet_engine.distill.StreamedImages`). Only the images of the
validation judgments, a small set, are decoded up front.

Interruptions and resume
------------------------
While it trains, the job keeps a *training checkpoint* (weights, θ₀, Adam state, sampler and
RNG states, curves so far; see :mod:`alignet_engine.distill.checkpoint`) in the side file
``distill-<run id>.ckpt.safetensors``, replaced every ``training.checkpoint_every`` steps and
when the job is cancelled. The run id is in the journal's start record, so a job that was
killed (no end record), cancelled or failed (e.g. the disk filled up) leaves a checkpoint that
:func:`resume_distill` (``alignet-cli distill PROJECT --resume``) finds and continues.

A resumed job gets a **new run id**: it is a new job in the journal (its start record's
params carry ``"resumed_from": "distill/<old id>"``), the interrupted job's record is closed
with status ``"resumed"`` (so it is no longer listed as interrupted), the checkpoint file is
renamed to the new run's name, and the run it writes records ``resumed_from`` in its summary.
Everything else in the run — the curves from step 1, the weights, ``seconds`` (training time
without pauses, summed over the segments) — is what the uninterrupted job would have written
(bitwise on a CPU with the same thread count). A new run id keeps runs append-only and the
journal a plain sequence of start/end pairs, and it still says that the run was interrupted.
The training checkpoint is deleted once the run is written.

With ``val_judgments`` the job also tracks, every ``training.val_every`` steps, the student's
odd-one-out (or two-alternative) accuracy on those human judgments, by cosine similarity of its
embedding: the curve ``val_human``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignet_engine.align.metrics import oddone_correct, twoafc_correct
from alignet_engine.base.types import Judgments
from alignet_engine.config.distill import DistillConfig, DistillStageConfig
from alignet_engine.distill import (
    DistillResult,
    StreamedImages,
    Validator,
    distill,
    save_student,
)
from alignet_engine.distill.checkpoint import (
    CheckpointWriteError,
    checkpoint_steps,
    kept_path,
    kept_steps,
)
from alignet_engine.distill.distributed import Agreement, rank_device, world_rank
from alignet_engine.distill.rows import SCAN_ROWS, Rows, StoredRows
from alignet_engine.errors import InputError
from alignet_engine.jobs import (
    Job,
    JobControl,
    LossBatch,
    Message,
    Progress,
    StageDone,
    Throttle,
)
from alignet_engine.models import Backbone, load_backbone, load_image, make_transform
from alignet_engine.models.extract import _ImageFiles  # the extraction's dataset: one decoder
from alignet_engine.stages._tracking import (
    journalled,
    kept_current_message,
    worse_than_current,
    write_unless_worse,
)
from alignet_engine.stages.curve_files import CurveFiles
from alignet_engine.stages.triplets import SLOT as TRIPLET_SLOT
from alignet_engine.store import Project, Run

logger = logging.getLogger(__name__)

STAGE = "distill"
SLOT = "distill"

#: job statuses after which a distill job left its training checkpoint to resume from
_RESUMABLE = (None, "cancelled", "failed")

#: the validator built from ``val_judgments``: its curve is ``val_human``
HUMAN_VALIDATOR = "human"


def training_checkpoint_name(run_id: str) -> str:
    """Side-file name of the training checkpoint of distill job ``run_id``."""
    return f"distill-{run_id}.ckpt.safetensors"


class StudentFeatures(nn.Module):
    """The student backbone as a module mapping images (b, 3, H, W) to features (b, d)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.model = backbone.model  # registers the parameters for the optimiser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)


def pool_images(
    paths: Sequence[str], backbone: Backbone, config: DistillStageConfig
) -> StreamedImages:
    """The pool as the trainer streams it: image id → preprocessed (3, H, W) float32, decoded
    from its file when a batch needs it (``config.num_workers`` processes)."""
    size = backbone.preprocess.input_size if config.image_size is None else config.image_size
    transform = make_transform(backbone.preprocess, config.image_size)
    return StreamedImages(
        _ImageFiles(paths, range(len(paths)), transform, size),
        num_workers=config.num_workers,
        skip_corrupt=config.skip_corrupt,
    )


def decode_images(
    paths: tuple[str, ...],
    backbone: Backbone,
    image_size: int | None,
    control: JobControl,
    what: str = "decoding the pool",
) -> Job[torch.Tensor]:
    """Decode and preprocess every image of ``paths`` into one tensor (n, 3, H, W) float32."""
    transform = make_transform(backbone.preprocess, image_size)
    out: list[torch.Tensor] = []
    throttle = Throttle(0.2)
    for i, path in enumerate(paths):
        control.check()
        out.append(transform(load_image(path)))
        if throttle() or i + 1 == len(paths):
            yield Progress(STAGE, i + 1, len(paths), what)
    return torch.stack(out)


# --------------------------------------------------------------------------------------------
# validation on human judgments


def judgment_validator(
    judgments: Judgments,
    images: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 64,
    channels_last: bool = False,
) -> Validator:
    """A :data:`~alignet_engine.distill.Validator`: the student's accuracy on ``judgments``.

    Parameters
    ----------
    judgments : odd-one-out (``kind="oddone"``, odd one last) or two-alternative
        (``"twoafc"``: anchor, chosen, other) judgments; two-alternative rows with vote counts
        are scored on their strict-majority rows only, as the evaluate stage does.
    images : (n, 3, H, W) float32 preprocessed images, row ``i`` = item ``i`` of the
        judgments' ids (see :func:`_judgment_images` for a compact remapping).
    device : where the student is.
    batch_size : images per forward pass.
    channels_last : feed the images in channels-last layout (as the student trains).

    Returns
    -------
    Validator
        ``fn(student) -> accuracy in [0, 1]``, cosine similarity of the student's embedding
        (:func:`alignet_engine.align.metrics.oddone_correct` / ``twoafc_correct``).
    """
    triplets = judgments.triplets
    if judgments.kind == "twoafc" and judgments.votes is not None:
        triplets = triplets[judgments.votes[:, 0] > judgments.votes[:, 1]]
    if len(triplets) == 0:
        raise InputError("the judgments have no scorable rows", field="val_judgments")
    correct = oddone_correct if judgments.kind == "oddone" else twoafc_correct

    def accuracy(student: nn.Module) -> float:
        chunks = []
        for begin in range(0, images.shape[0], batch_size):
            x = images[begin : begin + batch_size].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            chunks.append(student(x).float().cpu())
        features = torch.cat(chunks).numpy().astype(np.float64)
        return float(correct(features, triplets, metric="cosine").mean())

    return accuracy


def _judgment_images(
    project: Project, config: DistillStageConfig, backbone: Backbone, control: JobControl
) -> Job[tuple[Judgments, torch.Tensor]]:
    """The validation judgments (ids remapped to 0..u-1) and their u decoded images."""
    assert config.val_judgments is not None
    judgments, image_set = project.judgments(config.val_judgments)
    if config.val_set is not None and config.val_set != image_set:
        raise InputError(
            f"judgments '{config.val_judgments}' refer to image set '{image_set}', not "
            f"'{config.val_set}'; leave val_set empty or name '{image_set}'",
            source="distill config",
            field="val_set",
        )
    paths = project.imageset(image_set).paths
    ids = np.unique(judgments.triplets)  # decode only the images the judgments use
    images = yield from decode_images(
        tuple(paths[i] for i in ids),
        backbone,
        config.image_size,
        control,
        f"decoding the images of '{config.val_judgments}'",
    )
    remapped = dataclasses.replace(
        judgments, triplets=np.searchsorted(ids, judgments.triplets).astype(np.int64)
    )
    return remapped, images


# --------------------------------------------------------------------------------------------
# resume


def resumable_runs(project: Project) -> list[dict[str, Any]]:
    """Distill jobs that ended without a run and left a training checkpoint, newest first.

    Returns
    -------
    list of dict
        ``{"run": "distill/<id>", "status": None (killed) | "cancelled" | "failed",
        "message": str, "steps_done": int, "steps": int, "checkpoint": Path,
        "params": the job's stage config dict}``.
    """
    records = project.journal()
    status: dict[str, tuple[str | None, str]] = {}
    for record in records:
        if record.get("stage") == STAGE and record["event"] == "end":
            status[record["run"]] = (record.get("status"), record.get("message", ""))
    out = []
    for record in reversed(records):
        if record.get("stage") != STAGE or record["event"] != "start":
            continue
        state, message = status.get(record["run"], (None, ""))
        if state not in _RESUMABLE:
            continue
        path = project.side_path(training_checkpoint_name(record["run"]))
        if not path.is_file():
            continue
        params = dict(record.get("params", {}))
        params.pop("resumed_from", None)
        try:
            steps_done = checkpoint_steps(path)
        except InputError:
            continue  # not readable: nothing to resume from
        out.append(
            {
                "run": f"{STAGE}/{record['run']}",
                "status": state,
                "message": message,
                "steps_done": steps_done,
                "steps": int(params.get("training", {}).get("steps", DistillConfig().steps)),
                "checkpoint": path,
                "params": params,
            }
        )
    return out


def resume_distill(
    project: Project,
    run: str | None = None,
    control: JobControl | None = None,
    *,
    device: str | None = None,
    num_workers: int | None = None,
) -> Job[str]:
    """Continue an interrupted distill job from its training checkpoint; returns the new run id.

    Parameters
    ----------
    project : the project.
    run : ``"distill/<id>"`` or ``"<id>"`` of the job to continue; None = the newest one
        :func:`resumable_runs` lists.
    control : cancel / pause switches.
    device : train there instead of the interrupted job's device (the result is then not
        bitwise that of an uninterrupted run).
    num_workers : image-decoding processes instead of the interrupted job's (the result does
        not depend on them).

    Raises
    ------
    InputError
        No resumable job (or not the one named); the checkpoint does not fit the current
        triplets.
    """
    # under torchrun rank 0 alone reads the journal and chooses; the others take its choice
    # (reading the journal themselves could race with rank 0 starting the new job)
    with Agreement("finding the distill job to resume") as agreed:
        if world_rank()[1] == 0:
            chosen = _resume_candidate(project, run)
            agreed.value = (chosen["run"], chosen["params"])
    ref, params = agreed.value
    config = DistillStageConfig.from_dict(params)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    if num_workers is not None:
        config = dataclasses.replace(config, num_workers=num_workers)
    return run_distill(project, config, control, resume_from=ref)


def _resume_candidate(project: Project, run: str | None) -> dict[str, Any]:
    """The :func:`resumable_runs` entry ``run`` names (the newest one for None)."""
    candidates = resumable_runs(project)
    if run is not None:
        wanted = run if run.startswith(f"{STAGE}/") else f"{STAGE}/{run}"
        candidates = [c for c in candidates if c["run"] == wanted]
        if not candidates:
            raise InputError(
                f"no interrupted distill job '{wanted}' with a training checkpoint; "
                f"resumable: {[c['run'] for c in resumable_runs(project)] or 'none'}",
                field="resume",
            )
    if not candidates:
        raise InputError(
            "no interrupted distill job with a training checkpoint to resume; start a new "
            "distill run instead",
            field="resume",
        )
    return candidates[0]


# --------------------------------------------------------------------------------------------
# the stage


def run_distill(
    project: Project,
    config: DistillStageConfig,
    control: JobControl | None = None,
    *,
    resume_from: str | None = None,
) -> Job[str]:
    """Distil the current triplets' teacher into ``config.student`` (stored in slot ``distill``).

    ``resume_from`` (``"distill/<id>"``) continues that interrupted job from its training
    checkpoint (see the module docstring; :func:`resume_distill` finds it and its settings).
    Returns the id of the run written.

    Several processes
    -----------------
    When a ``torch.distributed`` process group is initialised (``alignet-cli distill`` under
    ``torchrun``), every rank runs this job with the same arguments and trains its share of
    each batch (:func:`alignet_engine.distill.distill`). Rank 0 is the only writer: it needs
    the project open for writing and writes the journal, renames the checkpoint of a resumed
    job, keeps the training checkpoint, and writes the student file and the run; the other
    ranks may open the project read-only and only read the triplets, the pool and the
    judgments. The ranks meet at :class:`~alignet_engine.distill.distributed.Agreement`
    points (the start, the checkpoint, the end), so an error on one rank outside training
    stops every rank with an error rather than leaving them waiting; all ranks return rank 0's
    run id. Every rank yields events; show rank 0's.
    """
    return (yield from _StageRun(project, config, control or JobControl(), resume_from).run())


@dataclass(frozen=True)
class _Inputs:
    """What a distill job reads before it trains (every rank the same; see :class:`_StageRun`).

    Attributes
    ----------
    triplets : the triplet run whose teacher is distilled.
    train, val : its training and validation ``(triplets (m, 3), sims (m, 3))``
        (:func:`triplet_split`).
    device : where this rank trains.
    backbone : the student, on ``device``.
    images : the pool, streamed from its files.
    validators : ``{name: fn}`` (``human`` with ``val_judgments``).
    checkpoint : this job's training checkpoint file.
    moved : the resumed job's checkpoint was renamed to ``checkpoint`` (rank 0 only).
    """

    triplets: Run
    train: tuple[Rows, Rows]
    val: tuple[Rows, Rows] | None
    device: torch.device
    backbone: Backbone
    images: StreamedImages
    validators: dict[str, Validator]
    checkpoint: Path
    moved: bool


class _StageRun:
    """One distill stage job, as :func:`run_distill` describes it: :meth:`run` starts the job
    (:meth:`begin`), reads its inputs (:meth:`read_inputs`), builds the trainer
    (:meth:`trainer`), trains while the curves are recorded (:meth:`train`) and writes the
    run (:meth:`store`). Nothing happens before the job is first advanced."""

    def __init__(
        self,
        project: Project,
        config: DistillStageConfig,
        control: JobControl,
        resume_from: str | None,
    ) -> None:
        self.project, self.config, self.control = project, config, control
        self.world, rank = world_rank()
        self.writer = rank == 0  # the one process that writes the project
        self.old_id = None if resume_from is None else resume_from.removeprefix(f"{STAGE}/")
        self.run_id = ""  # set by begin()

    def run(self) -> Job[str]:
        """The job; returns the id of the run written (rank 0's, on every rank)."""
        self.run_id = self.begin()
        if not self.writer:
            return (yield from self.body())
        return (yield from journalled(self.project, STAGE, self.run_id, self.body))

    def begin(self) -> str:
        """Write the journal's start record (rank 0, after checking a resume); its run id."""
        params = self.config.to_dict()
        if self.old_id is not None:
            params["resumed_from"] = f"{STAGE}/{self.old_id}"
        with Agreement("starting the distill job") as agreed:
            if self.writer:
                if self.old_id is not None:
                    _check_resumable(self.project, self.config, self.old_id)
                agreed.value = self.project.begin_job(STAGE, params)
        run_id: str = agreed.value
        return run_id

    def body(self) -> Job[str]:
        """Read, train, store; the warning when the run is kept out of the slot."""
        project, run_id = self.project, self.run_id
        inputs = yield from self.read_inputs()
        job = self.trainer(inputs)
        if self.writer and self.old_id is not None:
            project.end_job(STAGE, self.old_id, "resumed", f"continued as {STAGE}/{run_id}")
        # rank 0's curves: a long run's are appended to side files as they come
        curves = CurveFiles(project) if self.writer else None
        result = yield from self.train(job, curves)
        summary = self.store(inputs, result, curves)
        if self.writer and project.current(SLOT) != f"{STAGE}/{run_id}":
            kept = worse_than_current(project, STAGE, SLOT, summary)
            if kept is not None:
                yield kept_current_message(kept, SLOT, f"{STAGE}/{run_id}")
        yield StageDone(STAGE, run_id, summary)
        return run_id

    def read_inputs(self) -> Job[_Inputs]:
        """Read the triplets, open the pool, load the student and the validation judgments;
        rank 0 renames a resumed job's checkpoint to this job's name."""
        project, config, old_id = self.project, self.config, self.old_id
        with Agreement("reading the triplets and opening the pool") as agreed:
            trip = project.run(TRIPLET_SLOT, arrays=False)
            pool = project.imageset(trip.summary["image_set"])
            train, val = triplet_split(project, f"{trip.stage}/{trip.run_id}")
            device = rank_device(config.device)
            backbone = load_backbone(config.student)
            backbone.model.to(device)
            images = pool_images(pool.paths, backbone, config)
            validators: dict[str, Validator] = {}
            if config.val_judgments is not None:
                judgments, judged = yield from _judgment_images(
                    project, config, backbone, self.control
                )
                validators[HUMAN_VALIDATOR] = judgment_validator(
                    judgments,
                    judged,
                    device=device,
                    batch_size=config.training.eval_batch_size,
                    channels_last=config.training.channels_last,
                )
            processes = f", {self.world} processes" if self.world > 1 else ""
            yield Message(
                STAGE,
                f"distilling into {config.student} on {device}{processes}: "
                f"{len(train[0])} triplets, {config.training.steps} steps",
            )
            path = _side_file(project, training_checkpoint_name(self.run_id))
            if self.writer and old_id is not None:
                # the checkpoint moves to this job's name, so a second interruption is resumed
                # from here; moved back if the checkpoint turns out not to fit
                os.replace(project.side_path(training_checkpoint_name(old_id)), path)
                agreed.value = "moved"
        moved = agreed.value == "moved"
        return _Inputs(trip, train, val, device, backbone, images, validators, path, moved)

    def trainer(self, inputs: _Inputs) -> Job[DistillResult]:
        """The training job (its arguments and a resumed checkpoint checked); a resumed
        job's checkpoint goes back to its name when it does not fit."""
        path, old_id = inputs.checkpoint, self.old_id
        try:
            # after the agreement: the other ranks read the checkpoint rank 0 just moved
            with Agreement("loading the training checkpoint"):
                return distill(
                    StudentFeatures(inputs.backbone),
                    inputs.images,
                    inputs.train[0],
                    inputs.train[1],
                    self.config.training,
                    device=inputs.device,
                    control=self.control,
                    val=inputs.val,
                    validators=inputs.validators,
                    # only rank 0 writes checkpoints (the trainer skips the others' saves)
                    checkpoint_path=path if self.writer else None,
                    resume_from=path if old_id is not None else None,
                    checkpoint_at_end=False,  # the student file below is the end result
                )
        except BaseException:
            if self.writer and inputs.moved:
                assert old_id is not None
                os.replace(path, self.project.side_path(training_checkpoint_name(old_id)))
            raise

    def train(self, job: Job[DistillResult], curves: CurveFiles | None) -> Job[DistillResult]:
        """``job``'s events, its curves recorded; a job that fails leaves no curve files."""
        try:
            return (yield from _recording_curves(job, curves))
        except CheckpointWriteError as exc:
            if curves is not None:
                curves.abort()
            # a clear line in the log panel; the error itself ends the job as "failed" and
            # the CLI prints it without a traceback (it is an AlignetError)
            yield Message(
                STAGE,
                f"{exc}. Free disk space in {Path(exc.path).parent}, then resume the job "
                "(alignet-cli distill PROJECT --resume)",
                "ERROR",
            )
            raise
        except BaseException:
            if curves is not None:  # the streamed curves of a run that will not be written
                curves.abort()
            raise

    def store(
        self, inputs: _Inputs, result: DistillResult, curves: CurveFiles | None
    ) -> dict[str, Any]:
        """Write the student file and the run (rank 0); the run's summary, on every rank."""
        with Agreement("storing the distill run") as agreed:
            if self.writer:
                assert curves is not None
                with curves:  # deletes the curves' unfinished side files if this fails
                    summary = self.write_run(inputs, result, curves)
                # the copies the keep policy (keep_last, keep_best) left stay as side files
                # the run is written: the training checkpoint has served its purpose
                inputs.checkpoint.unlink(missing_ok=True)
                agreed.value = summary
        summary_: dict[str, Any] = agreed.value
        return summary_

    def write_run(
        self, inputs: _Inputs, result: DistillResult, curves: CurveFiles
    ) -> dict[str, Any]:
        """Write the student file and the run (rank 0 only); returns the run's summary.

        ``curves`` collected the job's curve points (see :mod:`.curve_files`)."""
        project, config, run_id = self.project, self.config, self.run_id
        training = config.training
        checkpoint = project.side_path(f"distill-{run_id}.safetensors")
        backbone = inputs.backbone
        sha = save_student(
            checkpoint,
            backbone.model.cpu(),
            {
                "architecture": config.student,
                **student_description(backbone, config.image_size),
                "head_dim": training.head_dim,
                # the representation the student was trained on: with a head, the head's output
                "embedding": "triplet_head" if training.head_dim else "backbone",
                "distill": config.to_dict(),
                "run": f"{STAGE}/{run_id}",
            },
            head_state=result.head_state,
        )
        arrays = curves.arrays(result.history)
        summary = self.summary(inputs.device, result, checkpoint.name, sha)
        write_unless_worse(
            project,
            STAGE,
            run_id,
            SLOT,
            params=config.to_dict(),
            arrays=arrays,
            inputs={TRIPLET_SLOT: f"{inputs.triplets.stage}/{inputs.triplets.run_id}"},
            summary=summary,
        )
        return summary

    def summary(
        self, device: torch.device, result: DistillResult, student_file: str, sha256: str
    ) -> dict[str, Any]:
        """The run's summary: the student file ``student_file`` (its ``sha256``), speed,
        final loss, validation before and after, kept checkpoints and skipped images."""
        training = self.config.training
        summary: dict[str, Any] = {
            "student": self.config.student,
            "steps": result.steps_done,
            "seconds": round(result.seconds, 2),
            "images_per_s": round(
                result.steps_done * 3 * training.effective_batch_size / result.seconds, 2
            )
            if result.seconds > 0
            else None,
            "effective_batch_size": training.effective_batch_size,
            "head_dim": training.head_dim,
            "checkpoint": student_file,
            "checkpoint_sha256": sha256,
            "device": str(device),
            "processes": self.world,
            "final_loss": float(result.history["loss"][-1]),
        }
        if self.old_id is not None:
            summary["resumed_from"] = f"{STAGE}/{self.old_id}"
        if "val_agreement" in result.history:
            summary["val_agreement_before"] = float(result.history["val_agreement"][0])
            summary["val_agreement_after"] = float(result.history["val_agreement"][-1])
        ckpt = self.project.side_path(training_checkpoint_name(self.run_id))
        kept = [*kept_steps(ckpt).values(), kept_path(ckpt, None)]
        if any(p.is_file() for p in kept):
            summary["kept_checkpoints"] = sorted(p.name for p in kept if p.is_file())
        if result.skipped:
            summary["skipped_images"] = [
                {"id": int(i), "path": path, "reason": reason}
                for i, (path, reason) in sorted(result.skipped.items())
            ]
        human = f"val_{HUMAN_VALIDATOR}"
        if human in result.history:
            summary["val_human_before"] = float(result.history[human][0])
            summary["val_human_after"] = float(result.history[human][-1])
        return summary


def triplet_split(project: Project, ref: str) -> tuple[tuple[Rows, Rows], tuple[Rows, Rows] | None]:
    """The training and validation ``(triplets (m, 3), sims (m, 3))`` of triplet run ``ref``.

    The triplets stage stores the validation rows last (``is_val`` is False then True): the
    two parts are then row ranges of the stored arrays, read from their side files as the
    steps need them (:class:`StoredRows`), so 10M triplets are never loaded whole. Arrays
    stored otherwise (inline in the index: small; compressed; or validation rows elsewhere)
    are read into memory.

    Raises
    ------
    InputError
        No training triplets.
    """
    with project.array_reader(ref) as reader:
        triplets, sims, is_val = reader["triplets"], reader["sims"], reader["is_val"]
        m = int(triplets.shape[0])
        n_val = 0
        ordered = True  # is_val is False … False True … True
        for begin in range(0, m, SCAN_ROWS):
            block = np.asarray(is_val[begin : begin + SCAN_ROWS], dtype=bool)
            if n_val:  # after a validation row, only validation rows
                ordered &= bool(block.all())
            elif block.any():
                ordered &= bool(block[int(block.argmax()) :].all())
            n_val += int(block.sum())
        n_train = m - n_val
        if n_train == 0:
            raise InputError("the triplet run has no training triplets", field="n_triplets")
        if ordered and StoredRows.readable(triplets) and StoredRows.readable(sims):
            train = (StoredRows(triplets, 0, n_train), StoredRows(sims, 0, n_train))
            if not n_val:
                return train, None
            return train, (StoredRows(triplets, n_train), StoredRows(sims, n_train))
        mask = np.asarray(is_val[()], dtype=bool)
        t, s = np.asarray(triplets[()]), np.asarray(sims[()])
        return (t[~mask], s[~mask]), ((t[mask], s[mask]) if mask.any() else None)


def _recording_curves(job: Job[Any], curves: CurveFiles | None) -> Job[Any]:
    """``job``'s events, each :class:`LossBatch` also handed to ``curves``; its result."""
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if curves is not None and isinstance(event, LossBatch):
                curves.add(event)
            yield event
    finally:
        job.close()  # a closed stage closes the training job (its loader's workers)


def _side_file(project: Project, name: str) -> Path:
    """Where side file ``name`` lives, without creating the folder on a read-only project
    (the ranks other than 0 of a distributed job write nothing)."""
    if project.readonly:
        return project.path.with_name(project.path.name + ".files") / name
    return project.side_path(name)


def _check_resumable(project: Project, config: DistillStageConfig, old_id: str) -> None:
    """Refuse to resume ``old_id`` without its checkpoint or with another student / size."""
    old_path = project.side_path(training_checkpoint_name(old_id))
    if not old_path.is_file():
        raise InputError(
            f"distill job {STAGE}/{old_id} left no training checkpoint ({old_path.name})",
            field="resume",
        )
    # the checkpoint checks the training settings, data and architecture; the input
    # size (which changes every feature) is checked against the job's journal record
    started = [
        r
        for r in project.journal()
        if r["event"] == "start" and r.get("stage") == STAGE and r["run"] == old_id
    ]
    if started:
        before = started[0].get("params", {})
        for name in ("student", "image_size"):
            if name in before and before[name] != getattr(config, name):
                raise InputError(
                    f"cannot resume {STAGE}/{old_id}: it trained with {name} "
                    f"{before[name]!r}, not {getattr(config, name)!r}",
                    source="distill config",
                    field=name,
                )


def student_description(backbone: Backbone, image_size: int | None) -> dict[str, Any]:
    """What rebuilds the student's architecture and reads its representation, JSON-able.

    ``spec`` is the student's model spec without its ``weights`` option (the trained weights
    are in the student file, so the file the spec named is not needed to load it), ``layer``
    and ``pooling`` how the representation is read, ``feature_dim`` its length; ``classifier``
    / ``num_classes`` name the model's final Linear layer and its class count, so a student
    fine-tuned from a checkpoint with another class count is rebuilt with that many
    (see :func:`alignet_engine.export_model.load_aligned_model`).
    """
    spec = dataclasses.replace(backbone.spec, weights=None)
    out: dict[str, Any] = {
        "spec": spec.to_string(),
        "layer": backbone.layer,
        "pooling": backbone.pooling,
        "feature_dim": int(backbone.feature_dim),
        "preprocess": backbone.preprocess.to_dict(),
        "image_size": image_size,
    }
    linears = [(n, m) for n, m in backbone.model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        name, last = linears[-1]
        out["classifier"] = name
        out["num_classes"] = int(last.out_features)
    return out
