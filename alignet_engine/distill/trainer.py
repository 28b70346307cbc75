"""Stage 5: distil the surrogate teacher's triplet similarities into the student backbone.

The student is fine-tuned so that its odd-one-out distribution on pool triplets matches the
teacher's (method.md §5), while a decoupled pull toward the pretrained weights θ₀ keeps the
representation from drifting far::

    θ ← θ − η_t [ Adam(g) + λ (θ − θ₀) ]

``distill`` is an engine job (see :mod:`alignet_engine.jobs`) run by a :class:`TrainingRun`
(setup, restore, one method per step, validation and checkpoint). It is written against a
generic ``feature_fn: nn.Module`` (images → pooled features) and a pool of images given
either as one pre-decoded tensor or as a loader callable, so it does not depend on how
backbones are built or images decoded. Its parts live beside it: settings in
:mod:`~alignet_engine.config.distill`, batches in :mod:`~alignet_engine.distill.batching`,
the student's modules in :mod:`~alignet_engine.distill.student`, its files in
:mod:`~alignet_engine.distill.student_io`, device guards in
:mod:`~alignet_engine.distill.guards`, checkpoints in :mod:`~alignet_engine.distill.checkpoint`.

Choices that differ from the AligNet reference and why
------------------------------------------------------
* **Similarity.** AligNet takes dot products of a new 1024-d *triplet head* trained from
  scratch. Our student has no head; raw dot products of pretrained pooled features (e.g.
  1280-d, non-negative after SiLU) are in the hundreds, so a softmax over them is one-hot and
  its gradients vanish. The default is therefore ``similarity="cosine"`` with
  ``student_temperature=0.1``: cosines lie in [-1, 1], and τ_s = 0.1 turns them into logits
  in [-10, 10], enough range to express both confident and uncertain teacher distributions
  (the role AligNet's τ = 100 plays for its large dot products). ``"dot"`` stays available.
* **BatchNorm.** ``train_bn=False`` (default) keeps every BatchNorm layer in eval mode: its
  running statistics stay the pretrained ImageNet ones and each image is normalised
  independently of its batch. A step sees only 3·batch_size images from a few hundred pool
  images; batch statistics of such batches are noisy and would pull the running averages
  toward the pool — a change the decay-to-init cannot undo (buffers are not parameters) and
  one that would make training-time features differ from the eval-mode features every later
  stage extracts. The affine BN weights are still trained (and pulled toward θ₀).
* **Warm-up** ramps linearly to the peak over ``warmup_steps`` starting at ``peak/warmup``
  (not at 0 as optax does), so the first step is not wasted.
* **Triplet head** (``head_dim > 0``): a new linear layer ``d → head_dim`` on top of the
  student's features, trained from scratch as AligNet's 1024-d ``triplet_logits`` head; the
  triplet similarities are then taken of its output. It is **not** pulled toward its initial
  value: AligNet's ``decay_to_init`` does pull it toward its random init, but a random matrix
  is no representation worth keeping, so that pull is only a weight decay toward noise; the
  pull toward θ₀ is what keeps the *pretrained* representation, and it applies to every
  backbone parameter. ``drift`` measures the backbone alone.
* **Representation preservation** (``preserve_weight > 0``): an explicit loss term
  ``w · mean(1 − cos(f(x), f₀(x)))`` between the student's current backbone features and
  those of the pretrained student θ₀ on the same (possibly flipped) images. The pool is fixed,
  so f₀ is computed once per training image (and orientation) before the first step, in eval
  mode, and kept in the checkpoint: no frozen model copy and no second forward per step.

Mechanics
---------
* **Gradient accumulation**: a step draws ``batch_size × accumulation_steps`` triplets (the
  same rows a run with that batch size draws), forwards them in ``accumulation_steps``
  micro-batches of ``batch_size`` triplets and sums ``loss / accumulation_steps`` gradients,
  so the update equals one of the effective batch (with BatchNorm in eval mode) up to float
  rounding, with the activation memory of one micro-batch.
* **AMP** (``amp=True``): on CUDA the forward runs under ``torch.autocast`` in bfloat16
  where the GPU supports it (no loss scaling needed), else float16 with a ``GradScaler``
  (a step whose gradients overflow is skipped, the pull toward θ₀ too). Similarities and
  losses are computed in float32. On other devices it is a no-op and says so in a Message.
* **Pause**: ``control.check()`` blocks while paused at each step boundary (and each
  validation chunk); that time is measured and left out of ``seconds`` and the throughput.
* **Out of memory**: a GPU (or MPS) out-of-memory error in a step or a validation frees the
  cached memory and is re-raised as :class:`DistillOutOfMemoryError`, whose message says
  which setting to lower.
* **Several processes** (``torch.distributed`` initialised, e.g. under ``torchrun``, world
  size W > 1): every rank runs ``distill`` with the same arguments; each draws the same global
  rows and flips, forwards its own equal slice of every micro-batch (``batch_size / W``
  triplets) through a ``DistributedDataParallel`` wrapper, whose backward averages the
  gradients, so every rank makes the same update as one process with the whole batch (up to
  the order of float additions). Logged losses and agreement are all-reduced; only rank 0
  writes checkpoints. Every rank yields events — a caller shows rank 0's. The distill stage
  and ``alignet-cli distill`` under ``torchrun`` launch this (rank 0 alone writes the project;
  see :mod:`alignet_engine.distill.distributed`); ``tests/engine/distill/test_distill_ddp.py`` shows
  the engine use.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignet_engine.config.distill import DistillConfig
from alignet_engine.errors import InputError
from alignet_engine.jobs import (
    Cancelled,
    Job,
    JobControl,
    LossBatch,
    Message,
    Progress,
    Throttle,
)

from .batching import (
    ImageBatch,
    ImageSource,
    PoolImages,
    StreamedImages,
    TripletSampler,
    check_triplets,
    image_source,
)
from .checkpoint import (
    CheckpointWriteError,
    TrainingCheckpoint,
    check_resume,
    data_digest,
    keep_checkpoints,
    kept_path,
    load_checkpoint,
    save_checkpoint,
)
from .curves import Curves
from .distributed import world_rank
from .guards import (
    DistillDivergedError,
    DistillOutOfMemoryError,
    amp_dtype,
    free_device_memory,
    is_oom,
    oom_error,
)
from .losses import (
    contrastive_triplet_loss,
    jsd_triplet_loss,
    kl_triplet_loss,
    odd_one_out_agreement,
    stacked_pair_similarities,
)
from .rows import Rows, take_rows, unique_ids, whole
from .student import StudentModel, TrainForward, checked_features, make_triplet_head, set_mode
from .student_io import HEAD_PREFIX, split_head

logger = logging.getLogger(__name__)

STAGE = "distill"

#: what a validator is: the student (eval mode, under ``torch.no_grad``) → a float
Validator = Callable[[nn.Module], float]

#: the losses that match the teacher's whole distribution, by ``DistillConfig.loss``
_SOFT_LOSSES = {"kl": kl_triplet_loss, "jsd": jsd_triplet_loss}

#: validation curves every run with a validation set has (besides ``val_<validator>``)
_VAL_NAMES = ("val_agreement", "val_loss")


@dataclass(frozen=True)
class DistillResult:
    """What :func:`distill` returns.

    Attributes
    ----------
    state_dict : the trained ``feature_fn.state_dict()``, detached CPU tensor copies.
    history : per-step curves, each (steps_done,): ``"step"`` int64 (1-based) and float64
        ``"loss"`` (the minimised objective: triplet loss + ``preserve_weight`` × preserve
        term — the decay-to-init is a decoupled update, not a loss term), ``"triplet"`` (the
        kl / jsd / contrastive triplet loss), ``"preserve"`` (only with
        ``preserve_weight > 0``: mean ``1 − cos(f, f₀)``, unweighted), ``"agreement"`` (batch
        fraction where the student picks the teacher's odd one out), ``"lr"``,
        ``"grad_norm"`` (before clipping) and ``"drift"`` (‖θ − θ₀‖ / ‖θ₀‖ of the backbone
        after the step: the size of what the decay-to-init pulls back). Per-step values are
        means over the step's effective batch. With a validation set also ``"val_step"``
        int64 (0 = before training), ``"val_agreement"`` and ``"val_loss"``, and one
        ``"val_<name>"`` per validator, each (n_validations,).
    steps_done : optimizer steps made.
    seconds : training time of the whole run, s: wall-clock time of this job and of the
        segments it resumed from, without the time spent paused.
    config : the configuration used.
    head_state : the trained triplet head's ``state_dict()`` (keys ``weight`` (head_dim, d),
        ``bias`` (head_dim,)), CPU copies; None without a head.
    paused_seconds : time this job spent paused, s.
    skipped : ``{image id: (file, reason)}`` of the unreadable pool images left out (only
        with a :class:`StreamedImages` source that has ``skip_corrupt``).
    """

    state_dict: dict[str, torch.Tensor]
    history: dict[str, np.ndarray]
    steps_done: int
    seconds: float
    config: DistillConfig = field(default_factory=DistillConfig)
    head_state: dict[str, torch.Tensor] | None = None
    paused_seconds: float = 0.0
    skipped: dict[int, tuple[str, str]] = field(default_factory=dict)


# Long by its docstring (the public API's reference, ~100 lines); the body (~25 lines) only
# checks the arguments and hands them to a TrainingRun.
def distill(
    feature_fn: nn.Module,
    images: ImageSource,
    triplets: Rows,
    teacher_sims: Rows,
    config: DistillConfig,
    *,
    device: torch.device | str | None = None,
    control: JobControl | None = None,
    val: tuple[Rows, Rows] | None = None,
    validators: Mapping[str, Validator] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    checkpoint_at_end: bool = True,
) -> Job[DistillResult]:
    """Fine-tune ``feature_fn`` in place so its triplet similarities match the teacher's.

    Arguments are checked when ``distill`` is called (a ``resume_from`` checkpoint is read and
    checked then too); the returned generator does the work.

    Parameters
    ----------
    feature_fn : module mapping images (B, C, H, W) float → features (B, d), differentiable.
        Trained **in place**; its trainable parameters at the start are θ₀. Its train/eval
        flags are restored when the job ends (also on cancel or error; the weights are then
        partially trained). Call ``torch.set_num_threads`` beforehand to leave a core free.
    images : the pool: a float tensor (n, C, H, W) already preprocessed (resized,
        normalised) — indexed by image id —, a callable ``load_batch(ids (k,) int64) ->
        float tensor (k, C, H, W)`` read in the training loop, or a
        :class:`~alignet_engine.distill.batching.StreamedImages` whose DataLoader workers
        decode the next micro-batches while the model trains (pools of any size; memory does
        not grow with the pool). The result is the same for the same images.
    triplets : (m, 3) int image ids, teacher's odd one out last: an array, or a
        :class:`~alignet_engine.distill.rows.StoredRows` whose rows are read from the
        project's side file as each step needs them (10M triplets are never in memory).
    teacher_sims : (m, 3) float teacher similarities ``[s01, s02, s12]`` per triplet row
        (array or :class:`~alignet_engine.distill.rows.StoredRows`, as ``triplets``).
    config : see :class:`DistillConfig`.
    device : where to train; None = the device of ``feature_fn``'s first parameter.
        ``feature_fn`` is moved there.
    control : cancel / pause switches, checked once per step (and per validation chunk).
    val : optional held-out ``(triplets (v, 3) int, sims (v, 3) float)`` (arrays or
        :class:`~alignet_engine.distill.rows.StoredRows`, read into memory once); its
        agreement with the teacher's odd one out (and loss) is measured before training,
        every ``config.val_every`` steps and after the last step.
    validators : optional ``{name: fn}``; each ``fn(student) -> float`` is called at the same
        points as the validation set (with or without one), with the student in eval mode
        under ``torch.no_grad`` — the student maps images (B, C, H, W) on ``device`` to its
        embedding (the triplet head's output when ``config.head_dim > 0``). Its values form
        the curve ``val_<name>``. Names must be non-empty identifiers other than
        ``agreement`` and ``loss``.
    checkpoint_path : file holding the run's training checkpoint (see
        :mod:`alignet_engine.distill.checkpoint`; its folder must exist), replaced atomically
        every ``config.checkpoint_every`` steps, after the last step, and when the job is
        cancelled at a step boundary. None = no checkpoints.
    resume_from : a checkpoint of an earlier run (often the same file as
        ``checkpoint_path``). Its weights are loaded into ``feature_fn`` (same architecture;
        its own weights are ignored), and θ₀, the Adam state, the sampler and torch RNG
        states, the cached pretrained features and the history are restored; training
        continues at step ``steps_done + 1``. With the same ``config``, device and thread
        count the loss curve and weights are bitwise those of an uninterrupted run.
        ``config`` must equal the checkpoint's except for ``log_every_s``, ``val_every``,
        ``eval_batch_size`` and ``checkpoint_every``, and ``steps``, which may be *increased*
        to extend training: the cosine schedule then follows the new ``steps`` from the
        resumed step on, which is **not** the curve of a run planned with the new ``steps``
        from the start (its decay would have been slower from the first step). The images
        are not checked; pass the same pool.
    checkpoint_at_end : False skips the checkpoint after the last step (for a caller that
        stores the finished student itself and deletes the checkpoint).

    Yields
    ------
    Message
        Start and end lines for the log panel (and a note when ``amp`` has no effect).
    Progress
        ``Progress("distill", step, steps)``, at most every ``config.log_every_s`` s, and
        always after the last step; with ``preserve_weight > 0`` first
        ``Progress("distill", images_done, images, "caching the pretrained features")``.
    LossBatch
        ``stage="distill"``; training points (values ``loss``, ``triplet``, [``preserve``,]
        ``agreement``, ``lr``, ``grad_norm``, ``drift``; every step is in exactly one batch)
        at most every ``config.log_every_s`` s plus a final flush; validation points in their
        own batches (values ``val_agreement``, ``val_loss``, ``val_<name>``). All arrays are
        numpy copies. A resumed run first yields the restored points (one training and one
        validation batch), so a fresh plot shows the whole curve.

    Returns
    -------
    DistillResult
        A resumed run's history holds the whole run, restored steps included.

    Raises
    ------
    InputError
        Malformed triplets, similarities, images, features or validator names; an unreadable
        ``resume_from`` checkpoint, or one whose settings (the differing fields are named),
        triplets or parameters do not match.
    jobs.Cancelled
        ``control.cancel()`` was called; raised at the next step boundary (after saving a
        checkpoint when ``checkpoint_path`` is given).
    DistillDivergedError
        The loss became non-finite.
    DistillOutOfMemoryError
        The device ran out of memory in a step or a validation.
    CheckpointWriteError
        A checkpoint could not be written (e.g. the disk is full); training stops, and the
        previous checkpoint at ``checkpoint_path`` is kept.
    """
    params = _trainable_parameters(feature_fn, config)
    device = torch.device(params[0].device if device is None else device)
    source = image_source(images, device)
    triplets, teacher_sims = check_triplets(triplets, teacher_sims, source.count, "triplets")
    val_data = _validation_set(val, source.count)
    validators = _checked_validators(validators)
    digest = ""
    if checkpoint_path is not None or resume_from is not None:
        digest = data_digest(triplets, teacher_sims)
    checkpoints = Checkpointing.checked(
        checkpoint_path, resume_from, checkpoint_at_end, feature_fn, config, digest
    )
    run = TrainingRun(
        feature_fn,
        source,
        triplets,
        teacher_sims,
        config,
        device,
        control or JobControl(),
        val_data,
        checkpoints,
        validators,
    )
    return run.run()


def _trainable_parameters(feature_fn: nn.Module, config: DistillConfig) -> list[nn.Parameter]:
    """The trainable parameters of ``feature_fn``, after checking it and ``config``.

    Raises
    ------
    TypeError
        ``config`` is not a :class:`DistillConfig`.
    InputError
        ``feature_fn`` is no module or has nothing to train; a batch the processes cannot
        share equally.
    """
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig; got {type(config).__name__}")
    config.validate()
    if not isinstance(feature_fn, nn.Module):
        raise InputError(
            f"feature_fn must be a torch.nn.Module; got {type(feature_fn).__name__}",
            field="feature_fn",
        )
    params = [p for p in feature_fn.parameters() if p.requires_grad]
    if not params:
        raise InputError("feature_fn has no trainable parameters", field="feature_fn")
    world, _ = world_rank()
    if config.batch_size % world:
        raise InputError(
            f"with {world} processes batch_size must be a multiple of {world} (each process "
            f"takes an equal share); got {config.batch_size}",
            source="distill config",
            field="batch_size",
        )
    return params


def _validation_set(
    val: tuple[Rows, Rows] | None, count: int | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The checked validation ``(triplets (v, 3) int64, sims (v, 3) float32)``, in memory:
    the validation set is read whole at each validation (its distinct images once).
    ``count`` is the pool's size, None for a loader callable (ids then only checked ≥ 0)."""
    if val is None:
        return None
    val_t, val_s = check_triplets(val[0], val[1], count, "validation triplets")
    return whole(val_t).astype(np.int64), whole(val_s).astype(np.float32)


def _checked_validators(validators: Mapping[str, Validator] | None) -> dict[str, Validator]:
    """``validators`` as a dict, after checking their names (curves ``val_<name>``)."""
    validators = dict(validators or {})
    for name, fn in validators.items():
        if not isinstance(name, str) or not name.isidentifier() or name in ("agreement", "loss"):
            raise InputError(
                f"validator names must be identifiers other than 'agreement' and 'loss'; got "
                f"{name!r}",
                field="validators",
            )
        if not callable(fn):
            raise InputError(f"validator {name!r} is not callable", field="validators")
    return validators


@dataclass
class Checkpointing:
    """Where the job saves checkpoints, what it resumes from and the last step saved."""

    path: Path | None
    resume: TrainingCheckpoint | None
    last_saved: int | None
    data_sha256: str
    at_end: bool = True

    @classmethod
    def checked(
        cls,
        path: str | os.PathLike[str] | None,
        resume_from: str | os.PathLike[str] | None,
        at_end: bool,
        feature_fn: nn.Module,
        config: DistillConfig,
        digest: str,
    ) -> Checkpointing:
        """:func:`distill`'s checkpoint arguments, checked; ``resume_from`` is read and checked
        against ``feature_fn``, ``config`` and the data's ``digest`` (see
        :func:`~alignet_engine.distill.checkpoint.check_resume`)."""
        if path is not None:
            path = Path(path)
            if not path.parent.is_dir():
                raise InputError("the checkpoint's folder does not exist", source=path.parent)
        resume = None
        if resume_from is not None:
            resume = load_checkpoint(resume_from)
            check_resume(resume, Path(resume_from), feature_fn, config, digest)
        # the checkpoint being resumed is the "last good" one only if later ones replace it
        last_saved = None
        if resume is not None and resume_from is not None and path is not None:
            same = Path(resume_from).resolve() == path.resolve()
            last_saved = resume.steps_done if same else None
        return cls(path, resume, last_saved, digest, at_end)


class PauseClock:
    """``control`` with a stopwatch: the time spent inside ``check()`` is time paused."""

    def __init__(self, control: JobControl) -> None:
        self.control = control
        self.paused = 0.0

    def check(self) -> None:
        t0 = time.monotonic()
        try:
            self.control.check()
        finally:
            self.paused += time.monotonic() - t0


def global_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm of all ``tensors`` together, with one device sync (not one per tensor)."""
    return float(global_norm_tensor(tensors))


def global_norm_tensor(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """L2 norm of all ``tensors`` together, as a 0-d tensor on their device (no sync); 0 for
    an empty list."""
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def triplet_loss_of(
    config: DistillConfig, teacher: torch.Tensor, student: torch.Tensor
) -> torch.Tensor:
    """``config.loss`` of student similarities ``student`` (b, 3) against the teacher's
    ``teacher`` (b, 3): a 0-d float tensor, nats (mean over the b triplets)."""
    if config.loss in _SOFT_LOSSES:
        return _SOFT_LOSSES[config.loss](
            teacher,
            student,
            teacher_temperature=config.teacher_temperature,
            student_temperature=config.student_temperature,
        )
    # hard label = the teacher's most similar pair; column 0 under the odd-last convention,
    # but taking the argmax keeps the label right for rows that were not reordered
    return contrastive_triplet_loss(
        student, config.student_temperature, target=teacher.argmax(dim=-1)
    )


def evaluate(
    student: nn.Module,
    source: PoolImages | StreamedImages,
    triplets: np.ndarray,
    teacher_sims: np.ndarray,
    config: DistillConfig,
    device: torch.device,
    control: JobControl | PauseClock,
    autocast: Callable[[], Any],
) -> tuple[float, float]:
    """Agreement with the teacher's odd one out and mean loss on ``triplets``, in eval mode.

    Each distinct image is forwarded once (in chunks of ``config.eval_batch_size``).
    Returns ``(agreement in [0, 1], loss in nats)``.
    """
    student.eval()
    ids = np.unique(triplets)
    chunks = []
    bad: list[np.ndarray] = []  # unreadable images skipped by the source
    batches = source.chunks(ids, config.eval_batch_size, config.channels_last)
    with torch.no_grad():
        for _ in range(0, len(ids), config.eval_batch_size):
            control.check()
            batch = next(batches)
            if batch.ok is not None:
                bad.append(batch.ids[~batch.ok])
            with autocast():
                chunks.append(student(batch.images).float())
        features = torch.cat(chunks)
        if bad:  # leave out the triplets that use them
            keep = ~np.isin(triplets, np.concatenate(bad)).any(axis=1)
            if not keep.any():
                return math.nan, math.nan
            triplets, teacher_sims = triplets[keep], teacher_sims[keep]
        rows = torch.from_numpy(np.searchsorted(ids, triplets)).to(device)
        student_sims = stacked_pair_similarities(features[rows], config.similarity)
        teacher = torch.tensor(teacher_sims, device=device)
        agreement = float(odd_one_out_agreement(student_sims, teacher).float().mean())
        loss = float(triplet_loss_of(config, teacher, student_sims))
    return agreement, loss


@dataclass(frozen=True)
class StepResult:
    """The curve values of one optimizer step, each a mean over the step's effective batch.

    Attributes
    ----------
    triplet : the triplet loss (kl / jsd / contrastive), nats.
    preserve : the representation-preservation term ``mean(1 − cos(f, f₀))`` (0 when off).
    agreement : fraction of triplets where the student picks the teacher's odd one out.
    grad_norm : global L2 norm of the gradient before clipping.
    lr : the learning rate of the update.
    drift : ‖θ − θ₀‖ of the backbone after the update (not yet divided by ‖θ₀‖).
    """

    triplet: float
    preserve: float
    agreement: float
    grad_norm: float
    lr: float
    drift: float


class MicroBatch(NamedTuple):
    """What one micro-batch of t triplets adds to its step (see ``TrainingRun._micro_batch``).

    Attributes
    ----------
    triplet : its triplet loss, nats (mean over the t triplets).
    preserve : its preserve term ``mean(1 − cos(f, f₀))`` (0 when off).
    student_sims : (t, 3) float32 student similarities, detached.
    teacher_sims : (t, 3) float32 teacher similarities of the same triplets.
    """

    triplet: float
    preserve: float
    student_sims: torch.Tensor
    teacher_sims: torch.Tensor


class TrainingRun:
    """One distillation run: the state ``distill``'s job shares between its parts.

    :meth:`run` is the job; it calls :meth:`setup` (model layout, head, θ₀, optimizer,
    sampler, RNGs), :meth:`restore` when resuming, then :meth:`train_step` per step,
    :meth:`validate` every ``config.val_every`` steps and :meth:`checkpoint` every
    ``config.checkpoint_every`` steps. Nothing happens before the job is first advanced.
    Arguments are those :func:`distill` checked.
    """

    def __init__(
        self,
        feature_fn: nn.Module,
        source: PoolImages | StreamedImages,
        triplets: Rows,
        teacher_sims: Rows,
        config: DistillConfig,
        device: torch.device,
        control: JobControl,
        val: tuple[np.ndarray, np.ndarray] | None,
        ckpt: Checkpointing | None = None,
        validators: Mapping[str, Validator] | None = None,
    ) -> None:
        self.feature_fn = feature_fn
        self.source = source
        self.triplets = triplets
        self.teacher_sims_np = teacher_sims
        self.config = config
        self.device = device
        self.control = control
        self.val = val
        self.ckpt = ckpt or Checkpointing(None, None, None, "")
        self.validators = dict(validators or {})
        self.names: tuple[str, ...] = ("loss", "triplet")
        if config.preserve_weight > 0:
            self.names += ("preserve",)
        self.names += ("agreement", "lr", "grad_norm", "drift")
        self.val_names = (_VAL_NAMES if val is not None else ()) + tuple(
            f"val_{n}" for n in self.validators
        )
        self.history = Curves("step", self.names)
        self.val_history = Curves("val_step", self.val_names)
        self.pending = 0  # history points not yet yielded in a LossBatch
        self.skipped_reported = 0  # unreadable images already reported
        self.step = 0  # the last completed step
        self.progress_done = -1  # the last step reported in a Progress event
        self.earlier_seconds = 0.0  # training time of the segments this run resumes
        # pretrained features f₀ of every training image (× orientation), for the preserve term
        self.preserve_ids: np.ndarray | None = None
        self.preserve_feats: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------
    # setting up

    def setup(self) -> None:
        """Lay out the model, build the head, record θ₀, create the optimizer and the RNGs."""
        config, device = self.config, self.device
        self.start = time.monotonic()
        self.clock = PauseClock(self.control)
        self.modes = {module: module.training for module in self.feature_fn.modules()}
        self._build_student()
        self._load_start()
        self.world, self.rank = world_rank()
        self.forward: nn.Module = TrainForward(self.feature_fn, self.head)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(
                self.forward,
                device_ids=[device.index or 0] if device.type == "cuda" else None,
                # a timm classifier's parameters are trainable but unused by the features
                find_unused_parameters=True,
            )
        self.rng = np.random.default_rng(config.seed)
        # dropout / drop-path draw from torch's global RNG; seeding it makes runs repeatable
        torch.manual_seed(config.seed)
        self.flip_gen = torch.Generator().manual_seed(config.seed + 1)
        # foreach: one multi-tensor kernel per update instead of a Python loop over ~150
        # tensors; torch only picks it by default on CUDA, and on the CPU it saves ~6 ms of a
        # Lite0 step.
        self.optimizer = torch.optim.Adam(
            self.params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True
        )
        # one draw of the effective batch per step: the rows a batch_size × accumulation run
        # sees are the rows a run with that (larger) batch_size sees
        self.batches = TripletSampler(len(self.triplets), config.effective_batch_size, self.rng)
        self.throttle = Throttle(config.log_every_s)
        self.amp_dtype = amp_dtype(config, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def _build_student(self) -> None:
        """Move the model to the device (and layout), build the triplet head, name the
        trained parameters (backbone, then head) and those pulled toward θ₀ (backbone)."""
        config, device, feature_fn = self.config, self.device, self.feature_fn
        feature_fn.to(device)
        if config.channels_last:
            feature_fn.to(memory_format=torch.channels_last)
        self.head: nn.Module | None = None
        if config.head_dim:
            # the head's input size is the features' length: one image through the model, in
            # eval mode (no batch statistics, no dropout, no RNG draw) tells it
            feature_fn.eval()
            with torch.no_grad():
                first = self.source(self._ids(np.zeros(1, np.int64))[:1], config.channels_last)
                probe = checked_features(feature_fn, first)
            self.head = make_triplet_head(int(probe.shape[1]), config.head_dim, config.seed + 2)
            self.head.to(device)
        self.student = StudentModel(feature_fn, self.head)
        self.named_backbone = [(n, p) for n, p in feature_fn.named_parameters() if p.requires_grad]
        named_head = (
            []
            if self.head is None
            else [(HEAD_PREFIX + n, p) for n, p in self.head.named_parameters()]
        )
        self.named = self.named_backbone + named_head
        self.params = [p for _, p in self.named]
        self.pulled = [p for _, p in self.named_backbone]  # the head is not pulled (docstring)

    def _load_start(self) -> None:
        """θ₀: the model's weights now, or a resumed run's θ₀ after loading its weights."""
        resume = self.ckpt.resume
        if resume is None:
            self.inits = [p.detach().clone() for p in self.pulled]
        else:
            with torch.no_grad():
                self.feature_fn.load_state_dict(split_head(resume.model)[0])
                if self.head is not None:
                    self.head.load_state_dict(split_head(resume.model)[1])
            # empty_like keeps each parameter's memory layout (channels-last): a resumed run
            # then does its elementwise arithmetic on the same layouts as the uninterrupted one
            self.inits = [torch.empty_like(p).copy_(resume.init[n]) for n, p in self.named_backbone]
        self.init_norm = global_norm(self.inits) or 1.0

    def restore(self, resume: TrainingCheckpoint) -> None:
        """Continue from ``resume``: sampler, RNGs, Adam and loss-scaler state, curves, f₀."""
        device = self.device
        self.rng.bit_generator.state = resume.sampler_state
        self.batches.buffer = np.array(resume.sampler_buffer, dtype=np.int64)
        torch.set_rng_state(resume.torch_rng)
        self.flip_gen.set_state(resume.flip_rng)
        if device.type == "cuda" and resume.cuda_rng is not None:
            torch.cuda.set_rng_state(resume.cuda_rng, device)
        if self.scaler is not None and resume.grad_scaler:
            self.scaler.load_state_dict(resume.grad_scaler)
        for name, param in self.named:
            saved = resume.optimizer.get(name)
            if saved:  # absent for a parameter that never had a gradient
                # "step" stays a CPU scalar as Adam keeps it; moments take the param's layout
                self.optimizer.state[param] = {
                    key: value.clone() if key == "step" else torch.empty_like(param).copy_(value)
                    for key, value in saved.items()
                }
        self.history.load(resume.history)
        # a validator new to this segment is NaN at the earlier validation points
        self.val_history.load(resume.history)
        if resume.preserve_ids is not None and resume.preserve_features is not None:
            self.preserve_ids = resume.preserve_ids
            self.preserve_feats = resume.preserve_features.to(device)
        self.step = resume.steps_done
        self.earlier_seconds = resume.seconds

    # ----------------------------------------------------------------------------------------
    # small parts

    def _ids(self, rows: np.ndarray) -> np.ndarray:
        """The image ids of triplet rows ``rows`` (k,), flattened: (3k,) int64."""
        return take_rows(self.triplets, rows).astype(np.int64, copy=False).reshape(-1)

    def autocast(self) -> Any:
        """The forward's autocast context (a no-op without AMP)."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        )

    def elapsed(self) -> float:
        """Training seconds of the whole run so far, pauses left out."""
        return self.earlier_seconds + time.monotonic() - self.start - self.clock.paused

    def flush(self) -> LossBatch:
        """The training points not yet yielded, as one batch."""
        values = self.history.arrays(len(self.history) - self.pending)
        self.pending = 0
        return LossBatch(STAGE, values.pop("step"), values)

    def progress(self) -> Progress:
        self.progress_done = self.step
        return Progress(STAGE, self.step, self.config.steps)

    def _oom(self, where: str) -> DistillOutOfMemoryError:
        free_device_memory(self.device)
        return oom_error(
            self.config,
            self.device,
            where,
            self.source.image_shape(self._ids(np.zeros(1, np.int64))[0]),
        )

    def cache_pretrained_features(self) -> Job[None]:
        """f₀ of each training image (and its mirror image when augmenting), eval mode."""
        config, feature_fn = self.config, self.feature_fn
        ids = unique_ids(self.triplets)
        orientations = (False, True) if config.augment else (False,)
        chunks: list[torch.Tensor] = []
        feature_fn.eval()
        throttle = Throttle(config.log_every_s)
        batches = self.source.chunks(ids, config.eval_batch_size, config.channels_last)
        with torch.no_grad():
            for begin in range(0, len(ids), config.eval_batch_size):
                self.clock.check()
                x = next(batches).images  # an unreadable image's f₀ is never used
                with self.autocast():
                    chunks.append(
                        torch.stack(
                            [
                                checked_features(feature_fn, x.flip(-1) if f else x)
                                for f in orientations
                            ],
                            dim=1,
                        ).float()
                    )
                done = min(begin + config.eval_batch_size, len(ids))
                if throttle() or done == len(ids):
                    yield Progress(STAGE, done, len(ids), "caching the pretrained features")
        set_mode(feature_fn, train=True, train_bn=config.train_bn)
        self.preserve_ids = ids
        self.preserve_feats = torch.cat(chunks)  # (u, orientations, d)

    # ----------------------------------------------------------------------------------------
    # validation

    def validate(self) -> LossBatch:
        """Validate at :attr:`step`: the held-out triplets and every validator, eval mode."""
        values: dict[str, float] = {}
        try:
            if self.val is not None:
                agreement, loss = evaluate(
                    self.student,
                    self.source,
                    self.val[0],
                    self.val[1],
                    self.config,
                    self.device,
                    self.clock,
                    self.autocast,
                )
                values["val_agreement"], values["val_loss"] = agreement, loss
            self.student.eval()
            for name, fn in self.validators.items():
                self.clock.check()
                with torch.no_grad(), self.autocast():
                    values[f"val_{name}"] = float(fn(self.student))
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = True
        else:
            oom = False
        if oom:  # outside the except block: the traceback no longer holds the activations
            raise self._oom("validation")
        set_mode(self.feature_fn, train=True, train_bn=self.config.train_bn)
        step = self.step
        self.val_history.append({"val_step": step, **values})
        logger.debug("distill step %d: validation %s", step, values)
        self.checkpoint_if_best()
        return LossBatch(
            STAGE,
            np.asarray([step], dtype=np.int64),
            {name: np.asarray([values[name]], dtype=np.float64) for name in self.val_names},
        )

    def validate_keeping_progress(self) -> Job[None]:
        """Validate at :attr:`step`; a cancel inside still checkpoints the completed step."""
        try:
            batch = self.validate()
        except Cancelled:
            # the resumed run validates this step first (see "a validation cut short" in run)
            if self.ckpt.path is not None and self.step >= 1 and self.ckpt.last_saved != self.step:
                self.checkpoint(self.step)
            raise
        yield batch

    # ----------------------------------------------------------------------------------------
    # one step

    def train_step(self, step: int) -> StepResult:
        """One optimizer step (all micro-batches); returns the step's curve values.

        A method of its own so that the step's activations die with its frame.
        """
        config, device = self.config, self.device
        rows = next(self.batches)  # (batch_size * accumulation_steps,) triplet rows
        ids = self._ids(rows)  # (3 · effective batch,) image ids
        # (a copy of the rows: the caller's arrays may be read-only)
        sims = take_rows(self.teacher_sims_np, rows).astype(np.float32, copy=False)
        teacher = torch.from_numpy(sims).to(device)
        flip = None
        if config.augment:
            # one draw for the whole step, so the flips do not depend on how it is split
            flip = torch.rand(ids.shape[0], generator=self.flip_gen) < 0.5
        lr = config.lr_at(step - 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        b, parts = config.batch_size, config.accumulation_steps
        local = b // self.world  # this rank's triplets of each micro-batch
        sims_parts: list[torch.Tensor] = []
        teacher_parts: list[torch.Tensor] = []
        triplet_total = preserve_total = 0.0
        for part in range(parts):
            first = b * part + local * self.rank  # this rank's first row of the micro-batch
            mine = slice(first, first + local)
            images = slice(3 * first, 3 * (first + local))
            part_flip = None if flip is None else flip[images]
            batch = next(self.train_images)
            if not np.array_equal(batch.ids, ids[images]):
                raise RuntimeError(f"the images of step {step} came out of order")  # a bug
            micro = self._micro_batch(step, batch, part_flip, teacher[mine], last=part == parts - 1)
            triplet_total += micro.triplet
            preserve_total += micro.preserve
            sims_parts.append(micro.student_sims)
            teacher_parts.append(micro.teacher_sims)
        with torch.no_grad():
            all_sims = sims_parts[0] if parts == 1 else torch.cat(sims_parts)
            all_teacher = teacher_parts[0] if parts == 1 else torch.cat(teacher_parts)
            agreement_t = odd_one_out_agreement(all_sims, all_teacher).float().mean()
        grad_norm_t, drift_t = self._update(lr)
        # one device sync for the step's three curve values (each float() would be one)
        agreement, grad_norm, drift = (
            torch.stack([agreement_t.double(), grad_norm_t.double(), drift_t.double()])
            .cpu()
            .tolist()
        )
        if self.world > 1:
            # the logged values of the whole batch: means of the ranks' equal-sized means
            totals = torch.tensor(
                [triplet_total, preserve_total, agreement], dtype=torch.float64, device=device
            )
            torch.distributed.all_reduce(totals)
            triplet_total, preserve_total, agreement = (totals / self.world).tolist()
        return StepResult(
            triplet_total / parts, preserve_total / parts, agreement, grad_norm, lr, drift
        )

    def _micro_batch(
        self,
        step: int,
        batch: ImageBatch,
        flip: torch.Tensor | None,
        teacher: torch.Tensor,
        *,
        last: bool,
    ) -> MicroBatch:
        """Forward and backward of one micro-batch: ``batch`` (3·local images), ``teacher``
        (local, 3) similarities, ``flip`` (3·local,) bool or None.

        Returns the values of its t triplets (all local ones, less those using an image the
        source skipped as unreadable); the gradient of ``loss / accumulation_steps`` is added
        to the parameters' ``.grad``.
        """
        config, device = self.config, self.device
        parts = config.accumulation_steps
        ids, x = batch.ids, batch.images
        valid = None  # (local,) bool: triplets whose three images are readable
        if batch.ok is not None:
            valid = torch.from_numpy(batch.ok.reshape(-1, 3).all(axis=1)).to(device)
        if flip is not None:
            f = flip.to(device)
            x = torch.where(f[:, None, None, None], x.flip(-1), x)
        # under DDP only the last micro-batch's backward all-reduces the summed gradients
        no_sync = self.world > 1 and not last
        sync_context = self.forward.no_sync() if no_sync else contextlib.nullcontext()  # type: ignore[operator]
        preserve_value = 0.0
        with sync_context:
            with self.autocast():
                features, embedding = self.forward(x)
            student_sims = stacked_pair_similarities(
                embedding.float().reshape(len(ids) // 3, 3, -1), config.similarity
            )
            if valid is None:
                triplet_loss = triplet_loss_of(config, teacher, student_sims)
            elif valid.any():
                student_sims, teacher = student_sims[valid], teacher[valid]
                triplet_loss = triplet_loss_of(config, teacher, student_sims)
            else:  # nothing to learn from: a zero loss keeps every rank's backward in step
                triplet_loss = student_sims.sum() * 0.0
                student_sims, teacher = student_sims[valid], teacher[valid]
            loss = triplet_loss
            if config.preserve_weight > 0:
                assert self.preserve_ids is not None and self.preserve_feats is not None
                where = torch.from_numpy(np.searchsorted(self.preserve_ids, ids)).to(device)
                orient = (
                    torch.zeros_like(where)
                    if flip is None
                    else flip.to(device=device, dtype=torch.long)
                )
                f0 = self.preserve_feats[where, orient]
                distance = 1.0 - F.cosine_similarity(features.float(), f0, dim=-1)
                if batch.ok is not None:
                    distance = distance[torch.from_numpy(batch.ok).to(device)]
                preserve = distance.mean() if distance.numel() else distance.sum()
                loss = loss + config.preserve_weight * preserve
            # one device sync for the micro-batch's scalars (the check below needs them now:
            # a non-finite loss must stop the run before it reaches the weights)
            scalars = [loss.detach(), triplet_loss.detach()]
            if config.preserve_weight > 0:
                scalars.append(preserve.detach())
            loss_value, triplet_value, *rest = torch.stack(scalars).float().cpu().tolist()
            preserve_value = rest[0] if rest else 0.0
            if not math.isfinite(loss_value):
                raise DistillDivergedError(
                    f"the distillation loss became {loss_value} at step {step}; lower the "
                    f"learning rate (now {config.lr:g}) or raise the student temperature "
                    f"(now {config.student_temperature:g})"
                )
            if parts > 1:
                # each micro-batch loss is a mean over b triplets: /parts makes the summed
                # gradient that of the mean over the effective batch (and DDP's average over
                # the ranks' equal slices that of the whole micro-batch)
                loss = loss / parts
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return MicroBatch(triplet_value, preserve_value, student_sims.detach(), teacher)

    def _moved(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The pulled parameters that may differ from θ₀, and their θ₀.

        Those with a gradient now or an Adam state (updated at some step). The others — a
        timm classifier the features never use: 28 % of EfficientNet-Lite0's weights — are
        still exactly θ₀, so the pull (a lerp toward θ₀) leaves them unchanged and they add
        0 to the drift: skipping them saves two passes over their memory per step.
        """
        state = self.optimizer.state
        moved = [i for i, p in enumerate(self.pulled) if p.grad is not None or p in state]
        return [self.pulled[i] for i in moved], [self.inits[i] for i in moved]

    def _update(self, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip, pull toward θ₀ and take the Adam step.

        Returns ``(gradient norm before clipping, ‖θ − θ₀‖ of the backbone after the
        step)``, 0-d tensors on the device (read with the step's other values in one sync).
        """
        config, scaler = self.config, self.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        # with loss scaling an overflowing step is skipped by scaler.step: skip the pull too
        skipped = scaler is not None and not math.isfinite(float(grad_norm))
        pulled, inits = self._moved()
        with torch.no_grad():
            # decoupled pull toward θ₀, applied *before* the Adam step so that it uses the
            # pre-step θ: θ ← θ − η(Adam(g) + λ(θ − θ₀)) exactly, as optax's
            # scale_by_adam → decay_to_init → scale_by_lr chain does (Adam's update does
            # not depend on θ, so the order only decides which θ the pull sees)
            pull = min(lr * config.weight_decay_to_init, 1.0)
            if pull > 0 and not skipped and pulled:
                torch._foreach_lerp_(pulled, inits, pull)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        pulled, inits = self._moved()  # the step may have given a parameter its first state
        with torch.no_grad():
            drift = global_norm_tensor(torch._foreach_sub(pulled, inits) if pulled else [])
        return grad_norm, drift.to(grad_norm.device)

    def record(self, step: int, result: StepResult) -> None:
        """Append step ``step``'s curve values to the history."""
        values = {
            "step": step,
            "loss": result.triplet + self.config.preserve_weight * result.preserve,
            "triplet": result.triplet,
            "preserve": result.preserve,
            "agreement": result.agreement,
            "lr": result.lr,
            "grad_norm": result.grad_norm,
            "drift": result.drift / self.init_norm,
        }
        self.history.append(values)
        self.pending += 1

    # ----------------------------------------------------------------------------------------
    # checkpoints

    def checkpoint(self, done: int) -> None:
        """Checkpoint the state after step ``done`` (the caller guarantees it is complete),
        keeping the ``config.keep_last`` newest."""
        ckpt = self.ckpt
        assert ckpt.path is not None
        if self.rank != 0:  # the ranks hold the same state: one writer
            ckpt.last_saved = done
            return
        self._write(ckpt.path, done)
        ckpt.last_saved = done
        keep_checkpoints(ckpt.path, done, self.config.keep_last)

    def checkpoint_if_best(self) -> None:
        """With ``config.keep_best``: keep the state as the best checkpoint when the
        validation just made at :attr:`step` (≥ 1) beats every earlier one of steps ≥ 1."""
        names = [n for n in ("val_agreement", *self.val_names) if n in self.val_names]
        if not (self.config.keep_best and names and self.ckpt.path is not None and self.step):
            return
        steps, values = self.val_history["val_step"], self.val_history[names[0]]
        value, earlier = values[-1], values[:-1][steps[:-1] >= 1]
        if math.isfinite(value) and not (earlier >= value).any() and self.rank == 0:
            self._write(kept_path(self.ckpt.path, None), self.step)

    def _write(self, path: Path, done: int) -> None:
        """Write the training state after step ``done`` to ``path`` (rank 0 only)."""
        ckpt = self.ckpt
        model_state = dict(self.feature_fn.state_dict())
        if self.head is not None:
            model_state.update({HEAD_PREFIX + k: v for k, v in self.head.state_dict().items()})
        optimizer = self.optimizer
        state = TrainingCheckpoint(
            steps_done=done,
            config=self.config.to_dict(),
            model=model_state,
            init={n: init for (n, _), init in zip(self.named_backbone, self.inits, strict=True)},
            optimizer={
                name: {k: v for k, v in optimizer.state[p].items() if isinstance(v, torch.Tensor)}
                for name, p in self.named
                if p in optimizer.state
            },
            sampler_state=dict(self.rng.bit_generator.state),
            sampler_buffer=self.batches.buffer,
            torch_rng=torch.get_rng_state(),
            flip_rng=self.flip_gen.get_state(),
            cuda_rng=(
                torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            ),
            history={**self.history.arrays(), **self.val_history.arrays()},
            data_sha256=ckpt.data_sha256,
            seconds=self.elapsed(),
            preserve_ids=self.preserve_ids,
            preserve_features=self.preserve_feats,
            grad_scaler=None if self.scaler is None else dict(self.scaler.state_dict()),
        )
        try:
            save_checkpoint(path, state)
        except CheckpointWriteError as exc:
            kept = (
                f"the last good checkpoint (step {ckpt.last_saved}) is kept there"
                if ckpt.last_saved is not None
                else "no earlier checkpoint of this run was written"
            )
            raise CheckpointWriteError(
                f"{exc}; training stopped, {kept}", path=exc.path, errno=exc.errno
            ) from exc

    # ----------------------------------------------------------------------------------------
    # the job

    def run(self) -> Job[DistillResult]:
        """The job: set up, (restore,) train every step, validate and checkpoint on schedule."""
        self.setup()
        if self.ckpt.resume is not None:
            self.restore(self.ckpt.resume)
        first = self.step + 1
        # the images of every micro-batch still to train, read ahead by the source
        self.train_images = self.source.batches(self._plan(), self.config.channels_last)
        try:
            yield from self._start()
            for step in range(first, self.config.steps + 1):
                yield from self._one_step(step)
                yield from self._report_skipped()
            yield from self._finish()
            yield from self._report_skipped()
        finally:
            self.train_images.close()  # stops the loader's workers
            self.source.close()
            for module, mode in self.modes.items():
                module.training = mode
            if self.head is not None:
                self.head.train(False)
        result = self.result(first)
        yield Message(STAGE, self._summary(first, result))
        return result

    def _plan(self) -> Iterator[np.ndarray]:
        """The ids of this rank's share of every micro-batch still to train, in order.

        Drawn from a copy of the sampler, so that the source may read ahead while the
        sampler itself (whose state the checkpoints keep) follows the steps trained.
        """
        # copied now, not at the first draw: by then the step has drawn from the original
        return self._shares(copy.deepcopy(self.batches))

    def _shares(self, sampler: TripletSampler) -> Iterator[np.ndarray]:
        """:meth:`_plan`'s ids, drawn from ``sampler``: (3 · batch_size / world,) int64 each."""
        b, parts = self.config.batch_size, self.config.accumulation_steps
        local = b // self.world
        for _ in range(self.step + 1, self.config.steps + 1):
            ids = self._ids(next(sampler))
            for part in range(parts):
                first = 3 * (b * part + local * self.rank)
                yield ids[first : first + 3 * local]

    def _report_skipped(self) -> Job[None]:
        """A warning for each unreadable image the source skipped since the last call."""
        skipped = list(self.source.skipped.items())
        for image_id, (where, reason) in skipped[self.skipped_reported :]:
            yield Message(
                STAGE,
                f"skipped unreadable pool image {image_id} ({where}): {reason}; the triplets "
                "that use it are left out",
                "WARNING",
            )
        self.skipped_reported = len(skipped)

    def _start(self) -> Job[None]:
        """The opening messages, the f₀ cache, the restored curves or the first validation."""
        config, device, resume = self.config, self.device, self.ckpt.resume
        n = len(self.triplets)
        if resume is None:
            text = (
                f"distilling {n} triplets: {config.steps} steps of "
                f"{config.effective_batch_size} triplets"
                + (
                    f" ({config.accumulation_steps} × {config.batch_size})"
                    if config.accumulation_steps > 1
                    else ""
                )
                + f", {config.loss} loss, lr {config.lr:g}, λ {config.weight_decay_to_init:g}"
                + (f", head {config.head_dim}" if config.head_dim else "")
                + (f", preserve {config.preserve_weight:g}" if config.preserve_weight else "")
                + f" on {device}"
            )
        else:
            text = (
                f"resuming distillation of {n} triplets at step {self.step + 1} of "
                f"{config.steps} on {device}"
            )
        logger.info(text)
        yield Message(STAGE, text)
        if config.amp and self.amp_dtype is None:
            yield Message(
                STAGE, f"amp has no effect on {device.type}: training in float32", "WARNING"
            )
        elif self.amp_dtype is not None:
            yield Message(STAGE, f"mixed precision: {str(self.amp_dtype).removeprefix('torch.')}")
        yield self.progress()
        if config.preserve_weight > 0 and self.preserve_feats is None:
            yield from self.cache_pretrained_features()
        set_mode(self.feature_fn, train=True, train_bn=config.train_bn)
        history, val_history = self.history, self.val_history
        if resume is not None:
            for curves in (history, val_history):
                if len(curves):
                    values = curves.arrays()
                    yield LossBatch(STAGE, values.pop(curves.key), values)
        elif self.val_names:
            self.clock.check()
            yield self.validate()
        # a validation cut short by a cancel: the checkpoint has its step but not its point
        step = self.step
        due = bool(config.val_every) and step % config.val_every == 0
        has_point = val_history.last() == step
        if (
            resume is not None
            and self.val_names
            and 0 < step < config.steps
            and due
            and not has_point
        ):
            yield self.validate()

    def _one_step(self, step: int) -> Job[None]:
        """Step ``step``: the step, its curve points, its validation and checkpoint if due."""
        config, ckpt = self.config, self.ckpt
        try:
            self.clock.check()
        except Cancelled:
            # step - 1 is complete (its validation too): keep it so the run can resume
            if ckpt.path is not None and step > 1 and ckpt.last_saved != step - 1:
                self.checkpoint(step - 1)
            raise
        oom = False
        try:
            result = self.train_step(step)
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = True
        if oom:  # outside the except block: the traceback no longer holds the activations
            self.optimizer.zero_grad(set_to_none=True)
            raise self._oom(f"training step {step}")
        self.step = step
        self.record(step, result)
        if self.throttle():
            yield self.flush()
            yield self.progress()
        # the last step's validation (and checkpoint) come after the final flush, in _finish
        last = step == config.steps
        due = config.val_every and step % config.val_every == 0 and not last
        if self.val_names and due:
            yield from self.validate_keeping_progress()
        every = config.checkpoint_every
        if ckpt.path is not None and every and step % every == 0 and not last:
            self.checkpoint(step)

    def _finish(self) -> Job[None]:
        """The last flush, the final validation and checkpoint, the last progress."""
        step, ckpt, val_history = self.step, self.ckpt, self.val_history
        if self.pending:
            yield self.flush()
        # a run resumed from its final checkpoint already has the last validation point
        if self.val_names and val_history.last() != step:
            yield from self.validate_keeping_progress()
        if ckpt.path is not None and ckpt.at_end and ckpt.last_saved != step:
            self.checkpoint(step)
        if self.progress_done != step:
            yield self.progress()

    def result(self, first: int) -> DistillResult:
        """The :class:`DistillResult` of the finished run (``first``: its first new step)."""
        result_history = self.history.arrays()
        if self.val_names:
            result_history.update(self.val_history.arrays())
        state = {
            k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
            for k, v in self.feature_fn.state_dict().items()
        }
        head_state = (
            None
            if self.head is None
            else {k: v.detach().to("cpu", copy=True) for k, v in self.head.state_dict().items()}
        )
        return DistillResult(
            state,
            result_history,
            self.config.steps,
            self.elapsed(),
            self.config,
            head_state,
            self.clock.paused,
            dict(self.source.skipped),
        )

    def _summary(self, first: int, result: DistillResult) -> str:
        """The closing line for the log: steps, speed, pauses, last loss, validation."""
        config, history = self.config, result.history
        segment = time.monotonic() - self.start - self.clock.paused
        done = f"{config.steps} steps" if first == 1 else f"steps {first}–{config.steps}"
        made = config.steps - first + 1
        summary = f"distilled {done} in {segment:.1f} s"
        if made > 0 and segment > 0:
            rate = made / segment
            summary += (
                f" ({rate:.2f} steps/s, {rate * 3 * config.effective_batch_size:.1f} images/s)"
            )
        if self.clock.paused >= 0.05:
            summary += f", {self.clock.paused:.1f} s paused"
        summary += f"; last loss {history['loss'][-1]:.4f}, drift {history['drift'][-1]:.2e}"
        if self.val is not None and len(history["val_agreement"]):
            summary += (
                f", val agreement {history['val_agreement'][0]:.3f} → "
                f"{history['val_agreement'][-1]:.3f}"
            )
        logger.info(summary)
        return summary
