"""Stage 5: distil the surrogate teacher's triplet similarities into the student backbone.

The student is fine-tuned so that its odd-one-out distribution on pool triplets matches the
teacher's (method.md §5), while a decoupled pull toward the pretrained weights θ₀ keeps the
representation from drifting far::

    θ ← θ − η_t [ Adam(g) + λ (θ − θ₀) ]

``distill`` is an engine job (see :mod:`alignet_engine.jobs`). It is written against a
generic ``feature_fn: nn.Module`` (images → pooled features) and a pool of images given
either as one pre-decoded tensor or as a loader callable, so it does not depend on how
backbones are built or images decoded.

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
  see :mod:`alignet_engine.distill.distributed`); ``tests/engine/test_distill_ddp.py`` shows
  the engine use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignet_engine.errors import AlignetError, InputError
from alignet_engine.jobs import (
    Cancelled,
    Job,
    JobControl,
    LossBatch,
    Message,
    Progress,
    Throttle,
)

from .checkpoint import (
    CheckpointWriteError,
    TrainingCheckpoint,
    data_digest,
    load_checkpoint,
    save_checkpoint,
)
from .distributed import world_rank
from .losses import (
    contrastive_triplet_loss,
    jsd_triplet_loss,
    kl_triplet_loss,
    odd_one_out_agreement,
    triplet_similarities,
)

logger = logging.getLogger(__name__)

STAGE = "distill"

ImageSource = torch.Tensor | Callable[[np.ndarray], torch.Tensor]

_LOSSES = ("kl", "jsd", "contrastive")
_SCHEDULES = ("cosine", "constant")
_SIMILARITIES = ("dot", "cosine")
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

#: Keys of the safetensors header metadata written by :func:`save_student`.
STUDENT_FORMAT = "alignet-student"
STUDENT_FORMAT_VERSION = "1"


class DistillDivergedError(AlignetError):
    """The training loss became NaN or infinite."""


class DistillOutOfMemoryError(AlignetError):
    """The device ran out of memory; the message says which settings to lower."""


#: key prefix of the triplet head's tensors in checkpoints and student files
HEAD_PREFIX = "triplet_head."


# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class DistillConfig:
    """Parameters of the distillation stage (validated on construction).

    Attributes
    ----------
    steps : optimizer steps (≥ 1).
    batch_size : triplets per step (≥ 1); a step forwards ``3 * batch_size`` images.
    lr : peak learning rate η (> 0).
    warmup_steps : steps of linear warm-up to ``lr`` (0 ≤ warmup_steps ≤ steps).
    schedule : ``"cosine"`` — warm-up, then cosine decay to 0 at ``steps``;
        ``"constant"`` — warm-up, then ``lr``.
    weight_decay_to_init : λ ≥ 0 of the decoupled pull toward the initial weights θ₀ (AligNet
        uses 1.0). The per-step pull fraction ``η_t·λ`` is capped at 1 (a full reset to θ₀);
        beyond that the update would overshoot θ₀ and diverge.
    loss : ``"kl"`` (paper), ``"jsd"`` (released AligNet config) or ``"contrastive"`` (hard
        label: the teacher's most similar pair).
    similarity : ``"cosine"`` or ``"dot"`` — how student features become pair similarities
        (see the module docstring for why cosine is the default).
    teacher_temperature : τ_t > 0 dividing the teacher similarities.
    student_temperature : τ_s > 0 dividing the student similarities (the contrastive loss's τ).
    grad_clip : max global L2 norm of the gradient; 0 disables clipping.
    seed : ≥ 0; seeds triplet sampling, augmentation and torch's global RNG (dropout).
    log_every_s : minimum seconds between two yielded :class:`LossBatch` / :class:`Progress`
        events (points are batched, never dropped); 0 yields every step.
    val_every : run the validation set every this many steps (plus before the first and after
        the last step); 0 = only before and after.
    eval_batch_size : images per forward pass during validation.
    train_bn : False keeps BatchNorm layers in eval mode (see the module docstring).
    augment : True flips each training image horizontally with probability ½.
    channels_last : True trains in the channels-last memory layout (4-D weights and image
        batches). Same numbers up to float rounding; on this project's 2-core CPU it made an
        EfficientNet-Lite0 step about 1.6× faster. The module keeps that layout afterwards.
    checkpoint_every : write a training checkpoint every this many steps when
        :func:`distill` is given a ``checkpoint_path``; 0 = no periodic checkpoints (the
        end-of-run and on-cancel checkpoints are still written).
    head_dim : 0 = similarities of the student's own features; > 0 = of a new linear triplet
        head ``d → head_dim`` trained from scratch (AligNet: 1024). Not pulled toward its
        init (see the module docstring).
    preserve_weight : w ≥ 0 of the representation-preservation term ``1 − cos(f, f₀)``
        (mean over the step's images) added to the loss; 0 = off.
    accumulation_steps : micro-batches of ``batch_size`` triplets per optimizer step (≥ 1);
        the effective batch is ``batch_size * accumulation_steps`` triplets.
    amp : mixed precision on CUDA (bfloat16, or float16 with loss scaling); no effect elsewhere.
    """

    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-4
    warmup_steps: int = 20
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay_to_init: float = 1.0
    loss: Literal["kl", "jsd", "contrastive"] = "kl"
    similarity: Literal["dot", "cosine"] = "cosine"
    teacher_temperature: float = 1.0
    student_temperature: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every_s: float = 0.2
    val_every: int = 50
    eval_batch_size: int = 64
    train_bn: bool = False
    augment: bool = False
    channels_last: bool = True
    checkpoint_every: int = 100
    head_dim: int = 0
    preserve_weight: float = 0.0
    accumulation_steps: int = 1
    amp: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~alignet_engine.errors.InputError` (a ``ValueError``) naming the field."""

        def bad(name: str, why: str) -> InputError:
            value = getattr(self, name)
            return InputError(f"{why}; got {value!r}", source="distill config", field=name)

        def is_int(value: Any) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        def is_real(value: Any) -> bool:
            return (
                isinstance(value, int | float | np.integer | np.floating)
                and not isinstance(value, bool)
                and math.isfinite(float(value))
            )

        for name, low in (
            ("steps", 1),
            ("batch_size", 1),
            ("warmup_steps", 0),
            ("seed", 0),
            ("val_every", 0),
            ("eval_batch_size", 1),
            ("checkpoint_every", 0),
            ("head_dim", 0),
            ("accumulation_steps", 1),
        ):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise bad(name, f"must be an integer ≥ {low}")
        if self.warmup_steps > self.steps:
            raise bad("warmup_steps", f"must not exceed steps ({self.steps})")
        for name in ("lr", "teacher_temperature", "student_temperature"):
            value = getattr(self, name)
            if not is_real(value) or value <= 0:
                raise bad(name, "must be a finite number > 0")
        for name in ("weight_decay_to_init", "grad_clip", "log_every_s", "preserve_weight"):
            value = getattr(self, name)
            if not is_real(value) or value < 0:
                raise bad(name, "must be a finite number ≥ 0")
        for name, allowed in (
            ("schedule", _SCHEDULES),
            ("loss", _LOSSES),
            ("similarity", _SIMILARITIES),
        ):
            if getattr(self, name) not in allowed:
                raise bad(name, f"must be one of {', '.join(allowed)}")
        for name in ("train_bn", "augment", "channels_last", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown distill setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}",
                source="distill config",
                field=unknown[0],
            )
        return cls(**dict(data))

    @property
    def effective_batch_size(self) -> int:
        """Triplets per optimizer step: ``batch_size * accumulation_steps``."""
        return self.batch_size * self.accumulation_steps

    def lr_at(self, step: int) -> float:
        """Learning rate of the update made at 0-based ``step`` (0 ≤ step < steps)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        decay_steps = self.steps - self.warmup_steps
        progress = (step - self.warmup_steps) / decay_steps
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


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
    """

    state_dict: dict[str, torch.Tensor]
    history: dict[str, np.ndarray]
    steps_done: int
    seconds: float
    config: DistillConfig = field(default_factory=DistillConfig)
    head_state: dict[str, torch.Tensor] | None = None
    paused_seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# helpers


class _Images:
    """Images by id from a pre-decoded tensor or a loader callable, moved to ``device``."""

    def __init__(self, source: ImageSource, device: torch.device) -> None:
        self.device = device
        self.tensor: torch.Tensor | None = None
        self.load: Callable[[np.ndarray], torch.Tensor] | None = None
        if isinstance(source, torch.Tensor):
            if source.ndim != 4 or not source.is_floating_point():
                raise InputError(
                    "the image pool must be a float tensor (n, channels, height, width); "
                    f"got {source.dtype} {tuple(source.shape)}",
                    field="images",
                )
            self.tensor = source
        elif callable(source):
            self.load = source
        else:
            raise InputError(
                f"images must be a tensor or a callable; got {type(source).__name__}",
                field="images",
            )

    @property
    def count(self) -> int | None:
        return None if self.tensor is None else int(self.tensor.shape[0])

    def image_shape(self, image_id: int) -> tuple[int, ...]:
        """(C, H, W) of one image, without moving anything to the device (for messages)."""
        if self.tensor is not None:
            return tuple(self.tensor.shape[1:])
        assert self.load is not None
        return tuple(self.load(np.asarray([image_id], dtype=np.int64)).shape[1:])

    def __call__(self, ids: np.ndarray, channels_last: bool = False) -> torch.Tensor:
        if self.tensor is not None:
            index = torch.from_numpy(ids).to(self.tensor.device)
            batch = self.tensor.index_select(0, index)
        else:
            assert self.load is not None
            batch = self.load(ids)
            if (
                not isinstance(batch, torch.Tensor)
                or batch.ndim != 4
                or batch.shape[0] != len(ids)
                or not batch.is_floating_point()
            ):
                got = (
                    f"{batch.dtype} {tuple(batch.shape)}"
                    if isinstance(batch, torch.Tensor)
                    else type(batch).__name__
                )
                raise InputError(
                    f"load_batch must return a float tensor ({len(ids)}, channels, height, "
                    f"width) for {len(ids)} ids; got {got}",
                    field="images",
                )
        batch = batch.to(self.device, non_blocking=True)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch


def _check_triplets(
    triplets: np.ndarray, sims: np.ndarray, n_images: int | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``(m, 3)`` ids and ``(m, 3)`` similarities; return int64, float32."""
    triplets = np.asarray(triplets)
    sims = np.asarray(sims)
    if triplets.ndim != 2 or triplets.shape[1] != 3 or triplets.shape[0] == 0:
        raise InputError(f"must have shape (m, 3) with m ≥ 1; got {triplets.shape}", field=name)
    if not np.issubdtype(triplets.dtype, np.integer):
        raise InputError(f"must hold integer image ids; got {triplets.dtype}", field=name)
    if sims.shape != triplets.shape:
        raise InputError(
            f"similarities must have the triplets' shape {triplets.shape}; got {sims.shape}",
            field=f"{name} similarities",
        )
    if not np.all(np.isfinite(sims)):
        row = int(np.flatnonzero(~np.isfinite(sims).all(axis=1))[0])
        raise InputError("similarities must be finite", row=row + 1, field=f"{name} similarities")
    out_of_range = triplets < 0
    if n_images is not None:
        out_of_range |= triplets >= n_images
    if out_of_range.any():
        limit = f"[0, {n_images})" if n_images is not None else "≥ 0"
        row = int(np.flatnonzero(out_of_range.any(axis=1))[0])
        raise InputError(f"image ids must lie in {limit}", row=row + 1, field=name)
    return triplets.astype(np.int64, copy=False), sims.astype(np.float32, copy=False)


class _TripletSampler:
    """Endless stream of ``batch_size`` triplet rows: epochs of fresh permutations.

    A class rather than a generator so that its whole state — the numpy generator *and* the
    rest of the current permutation — can be saved in a checkpoint and restored exactly.
    """

    def __init__(self, m: int, batch_size: int, rng: np.random.Generator) -> None:
        self.m = m
        self.batch_size = batch_size
        self.rng = rng
        self.buffer = np.empty(0, dtype=np.int64)

    def __next__(self) -> np.ndarray:
        while self.buffer.size < self.batch_size:
            self.buffer = np.concatenate([self.buffer, self.rng.permutation(self.m)])
        rows = self.buffer[: self.batch_size]
        self.buffer = self.buffer[self.batch_size :]
        return rows

    def __iter__(self) -> Iterator[np.ndarray]:
        return self


def _set_mode(module: nn.Module, *, train: bool, train_bn: bool) -> None:
    module.train(train)
    if train and not train_bn:
        for sub in module.modules():
            if isinstance(sub, _BN_TYPES):
                sub.eval()


def _features(feature_fn: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = feature_fn(images)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"feature_fn must map ({images.shape[0]}, C, H, W) images to "
            f"({images.shape[0]}, d) features; got {shape}",
            field="feature_fn",
        )
    return out


def _global_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm of all ``tensors`` together, with one device sync (not one per tensor)."""
    norms = torch._foreach_norm(tensors)
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _triplet_loss(
    config: DistillConfig, teacher: torch.Tensor, student: torch.Tensor
) -> torch.Tensor:
    if config.loss == "kl":
        return kl_triplet_loss(
            teacher,
            student,
            teacher_temperature=config.teacher_temperature,
            student_temperature=config.student_temperature,
        )
    if config.loss == "jsd":
        return jsd_triplet_loss(
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


# --------------------------------------------------------------------------------------------
# the job


#: settings a resumed run may change because they do not touch the training trajectory
#: (``steps`` is checked apart: it may grow, to extend a finished or interrupted run)
_RESUME_FREE = frozenset(
    {"steps", "checkpoint_every", "log_every_s", "val_every", "eval_batch_size"}
)

#: what a validator is: the student (eval mode, under ``torch.no_grad``) → a float
Validator = Callable[[nn.Module], float]

#: validation curves every run with a validation set has (besides ``val_<validator>``)
_VAL_NAMES = ("val_agreement", "val_loss")


def distill(
    feature_fn: nn.Module,
    images: ImageSource,
    triplets: np.ndarray,
    teacher_sims: np.ndarray,
    config: DistillConfig,
    *,
    device: torch.device | str | None = None,
    control: JobControl | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
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
    images : the pool, either a float tensor (n, C, H, W) already preprocessed (resized,
        normalised) — indexed by image id — or a callable ``load_batch(ids (k,) int64) ->
        float tensor (k, C, H, W)`` for pools too big to hold decoded.
    triplets : (m, 3) int image ids, teacher's odd one out last.
    teacher_sims : (m, 3) float teacher similarities ``[s01, s02, s12]`` per triplet row.
    config : see :class:`DistillConfig`.
    device : where to train; None = the device of ``feature_fn``'s first parameter.
        ``feature_fn`` is moved there.
    control : cancel / pause switches, checked once per step (and per validation chunk).
    val : optional held-out ``(triplets (v, 3) int, sims (v, 3) float)``; its agreement with
        the teacher's odd one out (and loss) is measured before training, every
        ``config.val_every`` steps and after the last step.
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
    world, _ = _world()
    if config.batch_size % world:
        raise InputError(
            f"with {world} processes batch_size must be a multiple of {world} (each process "
            f"takes an equal share); got {config.batch_size}",
            source="distill config",
            field="batch_size",
        )
    if device is None:
        device = params[0].device
    device = torch.device(device)
    source = _Images(images, device)
    triplets, teacher_sims = _check_triplets(triplets, teacher_sims, source.count, "triplets")
    val_data = None
    if val is not None:
        val_data = _check_triplets(val[0], val[1], source.count, "validation triplets")
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
    digest = ""
    if checkpoint_path is not None or resume_from is not None:
        digest = data_digest(triplets, teacher_sims)
    if checkpoint_path is not None:
        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.parent.is_dir():
            raise InputError(
                "the checkpoint's folder does not exist", source=checkpoint_path.parent
            )
    resume = None
    if resume_from is not None:
        resume = load_checkpoint(resume_from)
        _check_resume(resume, Path(resume_from), feature_fn, config, digest)
    # the checkpoint being resumed is the "last good" one only if later ones replace it
    last_saved = None
    if resume is not None and resume_from is not None and checkpoint_path is not None:
        same = Path(resume_from).resolve() == checkpoint_path.resolve()
        last_saved = resume.steps_done if same else None
    return _distill_job(
        feature_fn,
        source,
        triplets,
        teacher_sims,
        config,
        device,
        control or JobControl(),
        val_data,
        _Checkpointing(checkpoint_path, resume, last_saved, digest, checkpoint_at_end),
        validators,
    )


@dataclass
class _Checkpointing:
    """Where the job saves checkpoints, what it resumes from and the last step saved."""

    path: Path | None
    resume: TrainingCheckpoint | None
    last_saved: int | None
    data_sha256: str
    at_end: bool = True


def _check_resume(
    resume: TrainingCheckpoint,
    path: Path,
    feature_fn: nn.Module,
    config: DistillConfig,
    digest: str,
) -> None:
    """Raise :class:`InputError` unless ``resume`` can continue with these arguments."""
    try:
        saved = DistillConfig.from_dict(resume.config)
    except InputError as exc:
        raise InputError(f"the checkpoint's settings are unreadable ({exc})", source=path) from exc
    if resume.steps_done > config.steps:
        raise InputError(
            f"the checkpoint has already made {resume.steps_done} steps, more than the "
            f"{config.steps} asked for; steps may only be kept or increased on resume",
            source=path,
            field="steps",
        )
    differences = [
        (f.name, getattr(saved, f.name), getattr(config, f.name))
        for f in dataclasses.fields(DistillConfig)
        if f.name not in _RESUME_FREE and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if config.steps < saved.steps:
        differences.insert(0, ("steps", saved.steps, config.steps))
    if differences:
        listed = "; ".join(
            f"{name} {old!r} in the checkpoint, {new!r} now" for name, old, new in differences
        )
        raise InputError(
            f"cannot resume: the checkpoint was trained with other settings ({listed}). Resume "
            "with the checkpoint's settings (steps may be increased) or start a new run",
            source=path,
            field=", ".join(name for name, _, _ in differences),
        )
    if resume.data_sha256 != digest:
        raise InputError(
            "cannot resume: the triplets or teacher similarities differ from those the "
            "checkpoint was trained on",
            source=path,
            field="triplets",
        )
    trainable = [n for n, p in feature_fn.named_parameters() if p.requires_grad]
    expected = {k: tuple(v.shape) for k, v in feature_fn.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in resume.model.items() if not k.startswith(HEAD_PREFIX)}
    head_ok = (f"{HEAD_PREFIX}weight" in resume.model) == (config.head_dim > 0)
    if set(trainable) != set(resume.init) or expected != found or not head_ok:
        missing = sorted(set(expected) - set(found))[:3]
        unexpected = sorted(set(found) - set(expected))[:3]
        reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])[:3]
        raise InputError(
            "cannot resume: the checkpoint's weights do not fit feature_fn (a different "
            f"architecture?); missing {missing}, unexpected {unexpected}, other shapes "
            f"{reshaped}, or other trainable parameters",
            source=path,
            field="feature_fn",
        )


class _TrainForward(nn.Module):
    """Training forward: images → (backbone features (B, d), embedding (B, e)).

    One module for both outputs, so that a ``DistributedDataParallel`` wrapper sees every
    trained parameter (backbone and head) in one forward.
    """

    def __init__(self, feature_fn: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.features = feature_fn
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = _features(self.features, x)
        return features, features if self.head is None else self.head(features)


def _world() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised default process group, else ``(1, 0)``."""
    return world_rank()


class _Student(nn.Module):
    """``feature_fn`` followed by the optional triplet head: images → embedding (B, e)."""

    def __init__(self, feature_fn: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.features = feature_fn
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _features(self.features, x)
        return out if self.head is None else self.head(out)


def make_triplet_head(in_dim: int, head_dim: int, seed: int = 0) -> nn.Linear:
    """A new linear triplet head ``in_dim → head_dim`` with a seeded default initialisation.

    The weights follow ``nn.Linear``'s own init (uniform in ±1/√in_dim for weight and bias),
    drawn from a private generator so that creating the head leaves torch's global RNG —
    and therefore dropout in the rest of the run — untouched.
    """
    head = nn.Linear(in_dim, head_dim)
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(in_dim)
    with torch.no_grad():
        head.weight.copy_(torch.empty(head_dim, in_dim).uniform_(-bound, bound, generator=gen))
        head.bias.copy_(torch.empty(head_dim).uniform_(-bound, bound, generator=gen))
    return head


def _is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory error (CUDA's typed one or a backend's text)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_device_memory(device: torch.device) -> None:
    """Return cached blocks to the driver so the next attempt (or the GUI) starts clean."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _oom_error(
    config: DistillConfig, device: torch.device, where: str, image_shape: tuple[int, ...]
) -> DistillOutOfMemoryError:
    size = f"{image_shape[-2]}×{image_shape[-1]} px" if len(image_shape) >= 2 else "unknown"
    half = max(1, config.batch_size // 2)
    keep = config.effective_batch_size // half if config.effective_batch_size % half == 0 else 0
    accumulate = (
        f"accumulation_steps={keep} keeps the effective batch of "
        f"{config.effective_batch_size} triplets"
        if keep
        else "raise accumulation_steps to keep the effective batch"
    )
    tips = [
        f"a smaller batch_size (now {config.batch_size}; e.g. {half} — {accumulate})",
        f"a smaller eval_batch_size (now {config.eval_batch_size}) if it failed in validation",
    ]
    if device.type == "cuda" and not config.amp:
        tips.append("amp=True (mixed precision roughly halves activation memory)")
    tips.append(f"a smaller image_size (images are {size})")
    return DistillOutOfMemoryError(
        f"{device} ran out of memory during {where}; try " + "; ".join(tips) + "."
    )


class _PauseClock:
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


def _amp_dtype(config: DistillConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32 training."""
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _distill_job(
    feature_fn: nn.Module,
    source: _Images,
    triplets: np.ndarray,
    teacher_sims_np: np.ndarray,
    config: DistillConfig,
    device: torch.device,
    control: JobControl,
    val: tuple[np.ndarray, np.ndarray] | None,
    ckpt: _Checkpointing | None = None,
    validators: Mapping[str, Validator] | None = None,
) -> Job[DistillResult]:
    start = time.monotonic()
    clock = _PauseClock(control)
    ckpt = ckpt or _Checkpointing(None, None, None, "")
    validators = dict(validators or {})
    resume = ckpt.resume
    modes = {module: module.training for module in feature_fn.modules()}
    feature_fn.to(device)
    if config.channels_last:
        feature_fn.to(memory_format=torch.channels_last)

    head: nn.Module | None = None
    if config.head_dim:
        # the head's input size is the features' length: one image through the model, in
        # eval mode (no batch statistics, no dropout, no RNG draw) tells it
        feature_fn.eval()
        with torch.no_grad():
            probe = _features(feature_fn, source(triplets[:1, 0], config.channels_last))
        head = make_triplet_head(int(probe.shape[1]), config.head_dim, config.seed + 2)
        head.to(device)
    student = _Student(feature_fn, head)
    named_backbone = [(n, p) for n, p in feature_fn.named_parameters() if p.requires_grad]
    named_head = [] if head is None else [(HEAD_PREFIX + n, p) for n, p in head.named_parameters()]
    named = named_backbone + named_head
    params = [p for _, p in named]
    pulled = [p for _, p in named_backbone]  # the head is not pulled (module docstring)
    if resume is None:
        inits = [p.detach().clone() for p in pulled]
    else:
        with torch.no_grad():
            feature_fn.load_state_dict(_split_head(resume.model)[0])
            if head is not None:
                head.load_state_dict(_split_head(resume.model)[1])
        # empty_like keeps each parameter's memory layout (channels-last): a resumed run then
        # does its elementwise arithmetic on the same layouts as the uninterrupted one
        inits = [torch.empty_like(p).copy_(resume.init[n]) for n, p in named_backbone]
    init_norm = _global_norm(inits) or 1.0
    world, rank = _world()
    forward: nn.Module = _TrainForward(feature_fn, head)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            forward,
            device_ids=[device.index or 0] if device.type == "cuda" else None,
            # a timm classifier's parameters are trainable but unused by the features
            find_unused_parameters=True,
        )

    rng = np.random.default_rng(config.seed)
    # dropout / drop-path draw from torch's global RNG; seeding it makes runs repeatable
    torch.manual_seed(config.seed)
    flip_gen = torch.Generator().manual_seed(config.seed + 1)
    # a copy (torch.tensor, not from_numpy): the caller's arrays may be read-only
    teacher_sims = torch.tensor(teacher_sims_np, device=device)
    # foreach: one multi-tensor kernel per update instead of a Python loop over ~150 tensors;
    # torch only picks it by default on CUDA, and on the CPU it saves ~6 ms of a Lite0 step.
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    # one draw of the effective batch per step: the rows a batch_size × accumulation run sees
    # are the rows a run with that (larger) batch_size sees
    batches = _TripletSampler(len(triplets), config.effective_batch_size, rng)
    throttle = Throttle(config.log_every_s)
    amp_dtype = _amp_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    names: tuple[str, ...] = ("loss", "triplet")
    if config.preserve_weight > 0:
        names += ("preserve",)
    names += ("agreement", "lr", "grad_norm", "drift")
    val_names = (_VAL_NAMES if val is not None else ()) + tuple(f"val_{n}" for n in validators)
    history: dict[str, list[float]] = {name: [] for name in ("step", *names)}
    val_history: dict[str, list[float]] = {name: [] for name in ("val_step", *val_names)}
    pending = 0  # history points not yet yielded in a LossBatch
    step = 0
    progress_done = -1  # the last step reported in a Progress event
    earlier_seconds = 0.0  # training time of the segments this run resumes
    # pretrained features f₀ of every training image (× orientation), for the preserve term
    preserve_ids: np.ndarray | None = None
    preserve_feats: torch.Tensor | None = None

    if resume is not None:
        rng.bit_generator.state = resume.sampler_state
        batches.buffer = np.array(resume.sampler_buffer, dtype=np.int64)
        torch.set_rng_state(resume.torch_rng)
        flip_gen.set_state(resume.flip_rng)
        if device.type == "cuda" and resume.cuda_rng is not None:
            torch.cuda.set_rng_state(resume.cuda_rng, device)
        if scaler is not None and resume.grad_scaler:
            scaler.load_state_dict(resume.grad_scaler)
        for name, param in named:
            saved = resume.optimizer.get(name)
            if saved:  # absent for a parameter that never had a gradient
                # "step" stays a CPU scalar as Adam keeps it; moments take the param's layout
                optimizer.state[param] = {
                    key: value.clone() if key == "step" else torch.empty_like(param).copy_(value)
                    for key, value in saved.items()
                }
        for store in (history, val_history):
            for name in store:
                if name in resume.history:
                    store[name] = resume.history[name].tolist()
        # a validator new to this segment has no value at the earlier validation points
        for name in val_names:
            missing = len(val_history["val_step"]) - len(val_history[name])
            val_history[name] = [math.nan] * missing + val_history[name]
        if resume.preserve_ids is not None and resume.preserve_features is not None:
            preserve_ids = resume.preserve_ids
            preserve_feats = resume.preserve_features.to(device)
        step = resume.steps_done
        earlier_seconds = resume.seconds

    def flush() -> LossBatch:
        nonlocal pending
        begin = len(history["step"]) - pending
        steps = np.asarray(history["step"][begin:], dtype=np.int64)
        values = {n: np.asarray(history[n][begin:], dtype=np.float64) for n in names}
        pending = 0
        return LossBatch(STAGE, steps, values)

    def progress() -> Progress:
        nonlocal progress_done
        progress_done = step
        return Progress(STAGE, step, config.steps)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def cache_pretrained_features() -> Job[None]:
        """f₀ of each training image (and its mirror image when augmenting), eval mode."""
        nonlocal preserve_ids, preserve_feats
        ids = np.unique(triplets)
        orientations = (False, True) if config.augment else (False,)
        chunks: list[torch.Tensor] = []
        feature_fn.eval()
        throttle_cache = Throttle(config.log_every_s)
        with torch.no_grad():
            for begin in range(0, len(ids), config.eval_batch_size):
                clock.check()
                x = source(ids[begin : begin + config.eval_batch_size], config.channels_last)
                with autocast():
                    chunks.append(
                        torch.stack(
                            [_features(feature_fn, x.flip(-1) if f else x) for f in orientations],
                            dim=1,
                        ).float()
                    )
                done = min(begin + config.eval_batch_size, len(ids))
                if throttle_cache() or done == len(ids):
                    yield Progress(STAGE, done, len(ids), "caching the pretrained features")
        _set_mode(feature_fn, train=True, train_bn=config.train_bn)
        preserve_ids = ids
        preserve_feats = torch.cat(chunks)  # (u, orientations, d)

    def validate_now() -> LossBatch:
        values: dict[str, float] = {}
        try:
            if val is not None:
                agreement, loss = _evaluate(
                    student, source, val[0], val[1], config, device, clock, autocast
                )
                values["val_agreement"], values["val_loss"] = agreement, loss
            student.eval()
            for name, fn in validators.items():
                clock.check()
                with torch.no_grad(), autocast():
                    values[f"val_{name}"] = float(fn(student))
        except Exception as exc:
            if not _is_oom(exc):
                raise
            oom = True
        else:
            oom = False
        if oom:  # outside the except block: the traceback no longer holds the activations
            _free_device_memory(device)
            raise _oom_error(config, device, "validation", source.image_shape(triplets[0, 0]))
        _set_mode(feature_fn, train=True, train_bn=config.train_bn)
        val_history["val_step"].append(step)
        for name in val_names:
            val_history[name].append(values[name])
        logger.debug("distill step %d: validation %s", step, values)
        return LossBatch(
            STAGE,
            np.asarray([step], dtype=np.int64),
            {name: np.asarray([values[name]], dtype=np.float64) for name in val_names},
        )

    def validate_keeping_progress() -> Job[None]:
        """Validate at ``step``; a cancel inside still checkpoints the completed step."""
        try:
            batch = validate_now()
        except Cancelled:
            # the resumed run validates this step first (see "a validation cut short" below)
            if ckpt.path is not None and step >= 1 and ckpt.last_saved != step:
                save(step)
            raise
        yield batch

    def train_step(step: int) -> tuple[float, float, float, float, float]:
        """One optimizer step (all micro-batches); returns the step's curve values.

        Returns ``(triplet loss, preserve term, agreement, grad norm, lr)``, each a mean
        over the effective batch. A function so that its activations die with its frame.
        """
        rows = next(batches)  # (batch_size * accumulation_steps,) triplet rows
        ids = triplets[rows].reshape(-1)  # (3 · effective batch,) image ids
        teacher = teacher_sims[torch.from_numpy(rows).to(device)]
        flip = None
        if config.augment:
            # one draw for the whole step, so the flips do not depend on how it is split
            flip = torch.rand(ids.shape[0], generator=flip_gen) < 0.5
        lr = config.lr_at(step - 1)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        b, parts = config.batch_size, config.accumulation_steps
        local = b // world  # this rank's triplets of each micro-batch
        sims_parts: list[torch.Tensor] = []
        teacher_parts: list[torch.Tensor] = []
        triplet_total = preserve_total = 0.0
        for part in range(parts):
            first = b * part + local * rank  # this rank's first row of the micro-batch
            mine = slice(first, first + local)
            images = slice(3 * first, 3 * (first + local))
            x = source(ids[images], config.channels_last)
            part_flip = None
            if flip is not None:
                part_flip = flip[images]
                f = part_flip.to(device)
                x = torch.where(f[:, None, None, None], x.flip(-1), x)
            # under DDP only the last micro-batch's backward all-reduces the summed gradients
            no_sync = world > 1 and part < parts - 1
            if no_sync:
                sync_context = forward.no_sync()  # type: ignore[operator]
                sync_context.__enter__()
            with autocast():
                features, embedding = forward(x)
            student_sims = triplet_similarities(
                embedding.float().reshape(local, 3, -1), config.similarity
            )
            triplet_loss = _triplet_loss(config, teacher[mine], student_sims)
            loss = triplet_loss
            if config.preserve_weight > 0:
                assert preserve_ids is not None and preserve_feats is not None
                where = torch.from_numpy(np.searchsorted(preserve_ids, ids[images])).to(device)
                orient = (
                    torch.zeros_like(where)
                    if part_flip is None
                    else part_flip.to(device=device, dtype=torch.long)
                )
                f0 = preserve_feats[where, orient]
                preserve = (1.0 - F.cosine_similarity(features.float(), f0, dim=-1)).mean()
                loss = loss + config.preserve_weight * preserve
                preserve_total += float(preserve.detach())
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise DistillDivergedError(
                    f"the distillation loss became {loss_value} at step {step}; lower the "
                    f"learning rate (now {config.lr:g}) or raise the student temperature "
                    f"(now {config.student_temperature:g})"
                )
            triplet_total += float(triplet_loss.detach())
            if parts > 1:
                # each micro-batch loss is a mean over b triplets: /parts makes the summed
                # gradient that of the mean over the effective batch (and DDP's average over
                # the ranks' equal slices that of the whole micro-batch)
                loss = loss / parts
            (loss if scaler is None else scaler.scale(loss)).backward()
            if no_sync:
                sync_context.__exit__(None, None, None)
            sims_parts.append(student_sims.detach())
            teacher_parts.append(teacher[mine])
        if scaler is not None:
            scaler.unscale_(optimizer)
        max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        # with loss scaling an overflowing step is skipped by scaler.step: skip the pull too
        skipped = scaler is not None and not math.isfinite(grad_norm)
        with torch.no_grad():
            # decoupled pull toward θ₀, applied *before* the Adam step so that it uses the
            # pre-step θ: θ ← θ − η(Adam(g) + λ(θ − θ₀)) exactly, as optax's
            # scale_by_adam → decay_to_init → scale_by_lr chain does (Adam's update does
            # not depend on θ, so the order only decides which θ the pull sees)
            pull = min(lr * config.weight_decay_to_init, 1.0)
            if pull > 0 and not skipped:
                torch._foreach_lerp_(pulled, inits, pull)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        with torch.no_grad():
            all_sims = sims_parts[0] if parts == 1 else torch.cat(sims_parts)
            all_teacher = teacher_parts[0] if parts == 1 else torch.cat(teacher_parts)
            agreement = float(odd_one_out_agreement(all_sims, all_teacher).float().mean())
        if world > 1:
            # the logged values of the whole batch: means of the ranks' equal-sized means
            totals = torch.tensor(
                [triplet_total, preserve_total, agreement], dtype=torch.float64, device=device
            )
            torch.distributed.all_reduce(totals)
            triplet_total, preserve_total, agreement = (totals / world).tolist()
        return triplet_total / parts, preserve_total / parts, agreement, grad_norm, lr

    def save(done: int) -> None:
        """Checkpoint the state after step ``done`` (the caller guarantees it is complete)."""
        assert ckpt.path is not None
        if rank != 0:  # the ranks hold the same state: one writer
            ckpt.last_saved = done
            return
        model_state = dict(feature_fn.state_dict())
        if head is not None:
            model_state.update({HEAD_PREFIX + k: v for k, v in head.state_dict().items()})
        state = TrainingCheckpoint(
            steps_done=done,
            config=config.to_dict(),
            model=model_state,
            init={name: init for (name, _), init in zip(named_backbone, inits, strict=True)},
            optimizer={
                name: {k: v for k, v in optimizer.state[p].items() if isinstance(v, torch.Tensor)}
                for name, p in named
                if p in optimizer.state
            },
            sampler_state=dict(rng.bit_generator.state),
            sampler_buffer=batches.buffer,
            torch_rng=torch.get_rng_state(),
            flip_rng=flip_gen.get_state(),
            cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            history={k: np.asarray(v) for k, v in {**history, **val_history}.items()},
            data_sha256=ckpt.data_sha256,
            seconds=elapsed(),
            preserve_ids=preserve_ids,
            preserve_features=preserve_feats,
            grad_scaler=None if scaler is None else dict(scaler.state_dict()),
        )
        try:
            save_checkpoint(ckpt.path, state)
        except CheckpointWriteError as exc:
            kept = (
                f"the last good checkpoint (step {ckpt.last_saved}) is kept there"
                if ckpt.last_saved is not None
                else "no earlier checkpoint of this run was written"
            )
            raise CheckpointWriteError(
                f"{exc}; training stopped, {kept}", path=exc.path, errno=exc.errno
            ) from exc
        ckpt.last_saved = done

    def elapsed() -> float:
        """Training seconds of the whole run so far, pauses left out."""
        return earlier_seconds + time.monotonic() - start - clock.paused

    try:
        first = step + 1
        if resume is None:
            text = (
                f"distilling {len(triplets)} triplets: {config.steps} steps of "
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
                f"resuming distillation of {len(triplets)} triplets at step {first} of "
                f"{config.steps} on {device}"
            )
        logger.info(text)
        yield Message(STAGE, text)
        if config.amp and amp_dtype is None:
            yield Message(
                STAGE,
                f"amp has no effect on {device.type}: training in float32",
                "WARNING",
            )
        elif amp_dtype is not None:
            yield Message(STAGE, f"mixed precision: {str(amp_dtype).removeprefix('torch.')}")
        yield progress()
        if config.preserve_weight > 0 and preserve_feats is None:
            yield from cache_pretrained_features()
        _set_mode(feature_fn, train=True, train_bn=config.train_bn)
        if resume is not None:
            if history["step"]:
                yield LossBatch(
                    STAGE,
                    np.asarray(history["step"], dtype=np.int64),
                    {n: np.asarray(history[n], dtype=np.float64) for n in names},
                )
            if val_history["val_step"]:
                yield LossBatch(
                    STAGE,
                    np.asarray(val_history["val_step"], dtype=np.int64),
                    {n: np.asarray(val_history[n], dtype=np.float64) for n in val_names},
                )
        elif val_names:
            clock.check()
            yield validate_now()
        # a validation cut short by a cancel: the checkpoint has its step but not its point
        due = bool(config.val_every) and step % config.val_every == 0
        has_point = bool(val_history["val_step"]) and val_history["val_step"][-1] == step
        if resume is not None and val_names and 0 < step < config.steps and due and not has_point:
            yield validate_now()

        for step in range(first, config.steps + 1):  # validate_now reads `step` too
            try:
                clock.check()
            except Cancelled:
                # step - 1 is complete (its validation too): keep it so the run can resume
                if ckpt.path is not None and step > 1 and ckpt.last_saved != step - 1:
                    save(step - 1)
                raise
            oom = False
            try:
                triplet_value, preserve_value, agreement, grad_norm, lr = train_step(step)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                oom = True
            if oom:  # outside the except block: the traceback no longer holds the activations
                optimizer.zero_grad(set_to_none=True)
                _free_device_memory(device)
                shape = source.image_shape(triplets[0, 0])
                raise _oom_error(config, device, f"training step {step}", shape)
            with torch.no_grad():
                drift = _global_norm(torch._foreach_sub(pulled, inits))
            values = {
                "step": step,
                "loss": triplet_value + config.preserve_weight * preserve_value,
                "triplet": triplet_value,
                "preserve": preserve_value,
                "agreement": agreement,
                "lr": lr,
                "grad_norm": grad_norm,
                "drift": drift / init_norm,
            }
            for name in history:
                history[name].append(values[name])
            pending += 1
            if throttle():
                yield flush()
                yield progress()
            # the last step's validation (and checkpoint) come after the final flush, below
            last = step == config.steps
            due = config.val_every and step % config.val_every == 0 and not last
            if val_names and due:
                yield from validate_keeping_progress()
            every = config.checkpoint_every
            if ckpt.path is not None and every and step % every == 0 and not last:
                save(step)

        if pending:
            yield flush()
        # a run resumed from its final checkpoint already has the last validation point
        if val_names and not (val_history["val_step"] and val_history["val_step"][-1] == step):
            yield from validate_keeping_progress()
        if ckpt.path is not None and ckpt.at_end and ckpt.last_saved != step:
            save(step)
        if progress_done != step:
            yield progress()
    finally:
        for module, mode in modes.items():
            module.training = mode
        if head is not None:
            head.train(False)

    seconds = elapsed()
    segment = time.monotonic() - start - clock.paused
    result_history: dict[str, np.ndarray] = {
        "step": np.asarray(history["step"], dtype=np.int64),
        **{n: np.asarray(history[n], dtype=np.float64) for n in names},
    }
    if val_names:
        result_history["val_step"] = np.asarray(val_history["val_step"], dtype=np.int64)
        for name in val_names:
            result_history[name] = np.asarray(val_history[name], dtype=np.float64)
    done = f"{config.steps} steps" if first == 1 else f"steps {first}–{config.steps}"
    made = config.steps - first + 1
    summary = f"distilled {done} in {segment:.1f} s"
    if made > 0 and segment > 0:
        rate = made / segment
        summary += f" ({rate:.2f} steps/s, {rate * 3 * config.effective_batch_size:.1f} images/s)"
    if clock.paused >= 0.05:
        summary += f", {clock.paused:.1f} s paused"
    summary += (
        f"; last loss {result_history['loss'][-1]:.4f}, drift {result_history['drift'][-1]:.2e}"
    )
    if val is not None and len(result_history["val_agreement"]):
        summary += (
            f", val agreement {result_history['val_agreement'][0]:.3f} → "
            f"{result_history['val_agreement'][-1]:.3f}"
        )
    logger.info(summary)
    yield Message(STAGE, summary)
    state = {
        k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
        for k, v in feature_fn.state_dict().items()
    }
    head_state = (
        None
        if head is None
        else {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}
    )
    return DistillResult(
        state, result_history, config.steps, seconds, config, head_state, clock.paused
    )


def _split_head(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a combined state dict into the backbone's and the head's (prefix removed)."""
    backbone = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    head = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    return backbone, head


def _evaluate(
    student: nn.Module,
    source: _Images,
    triplets: np.ndarray,
    teacher_sims: np.ndarray,
    config: DistillConfig,
    device: torch.device,
    control: JobControl | _PauseClock,
    autocast: Callable[[], Any],
) -> tuple[float, float]:
    """Agreement with the teacher's odd one out and mean loss on ``triplets``, in eval mode.

    Each distinct image is forwarded once (in chunks of ``config.eval_batch_size``).
    Returns ``(agreement in [0, 1], loss in nats)``.
    """
    student.eval()
    ids = np.unique(triplets)
    chunks = []
    with torch.no_grad():
        for begin in range(0, len(ids), config.eval_batch_size):
            control.check()
            chunk = source(ids[begin : begin + config.eval_batch_size], config.channels_last)
            with autocast():
                chunks.append(student(chunk).float())
        features = torch.cat(chunks)
        rows = torch.from_numpy(np.searchsorted(ids, triplets)).to(device)
        student_sims = triplet_similarities(features[rows], config.similarity)
        teacher = torch.tensor(teacher_sims, device=device)
        agreement = float(odd_one_out_agreement(student_sims, teacher).float().mean())
        loss = float(_triplet_loss(config, teacher, student_sims))
    return agreement, loss


# --------------------------------------------------------------------------------------------
# checkpoints


def save_student(
    path: str | os.PathLike[str],
    feature_fn: nn.Module,
    config_json: Mapping[str, Any],
    head_state: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """Write ``feature_fn``'s state dict as safetensors, atomically; return its sha256.

    ``config_json`` (any JSON-able mapping: distill config, backbone name, run id...) is stored
    in the safetensors header metadata under ``"config"``, so one file is self-describing and
    the write is a single temp-file + ``os.replace`` (a crash never leaves a half file).

    Parameters
    ----------
    path : target ``.safetensors`` file; its folder must exist.
    feature_fn : the student module (its ``state_dict()``: parameters and buffers).
    config_json : JSON-serialisable mapping.
    head_state : the triplet head's ``state_dict()`` (``weight`` (e, d), ``bias`` (e,)), or
        None. Stored under the ``triplet_head.`` prefix, with ``head_dim`` = e in the header
        metadata; :func:`load_student_state` leaves it out and :func:`load_student_head`
        returns it, so a reader that only knows the backbone keeps working.

    Returns
    -------
    str
        Hex sha256 of the written file, for the project's checksum reference.
    """
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {
        "format": STUDENT_FORMAT,
        "format_version": STUDENT_FORMAT_VERSION,
        "config": json.dumps(dict(config_json), sort_keys=True),
    }
    # clone → contiguous tensors that share no storage (safetensors refuses shared ones)
    tensors = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in feature_fn.state_dict().items()
    }
    if head_state is not None:
        if any(k.startswith(HEAD_PREFIX) for k in tensors):
            raise InputError(
                f"feature_fn's state already has '{HEAD_PREFIX}' keys", field="feature_fn"
            )
        if "weight" not in head_state or head_state["weight"].ndim != 2:
            raise InputError("head_state must hold a 2-D 'weight'", field="head_state")
        tensors.update(
            {
                HEAD_PREFIX + k: v.detach().to("cpu").contiguous().clone()
                for k, v in head_state.items()
            }
        )
        metadata["head_dim"] = str(int(head_state["weight"].shape[0]))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_file(tensors, tmp, metadata=metadata)
        digest = hashlib.sha256()
        with open(tmp, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("saved student (%d tensors) to %s", len(tensors), path)
    return digest.hexdigest()


def load_student_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the backbone's state dict written by :func:`save_student` (CPU tensors).

    A triplet head stored with it is left out (see :func:`load_student_head`), so the result
    loads strictly into the backbone module.
    """
    from safetensors.torch import load_file

    _read_metadata(path)  # refuses files that are not student checkpoints
    return _split_head(load_file(str(path), device="cpu"))[0]


def load_student_head(path: str | os.PathLike[str]) -> dict[str, torch.Tensor] | None:
    """The triplet head's state dict stored by :func:`save_student`, or None if it has none.

    Returns
    -------
    dict or None
        ``{"weight": (head_dim, d), "bias": (head_dim,)}`` float CPU tensors.
    """
    from safetensors.torch import load_file

    if "head_dim" not in _read_metadata(path):
        return None
    head = _split_head(load_file(str(path), device="cpu"))[1]
    if "weight" not in head:
        raise InputError("the student file names a triplet head but has no weights", source=path)
    return head


def triplet_head_from_state(state: Mapping[str, torch.Tensor]) -> nn.Linear:
    """An ``nn.Linear`` holding a saved triplet head (see :func:`load_student_head`)."""
    out_dim, in_dim = state["weight"].shape
    head = nn.Linear(int(in_dim), int(out_dim), bias="bias" in state)
    head.load_state_dict(dict(state), strict=True)
    return head


def load_student_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config_json`` stored by :func:`save_student`."""
    return json.loads(_read_metadata(path)["config"])  # type: ignore[no-any-return]


def _read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"student checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:
        raise InputError(f"not a readable safetensors file ({exc})", source=path) from exc
    if metadata.get("format") != STUDENT_FORMAT or "config" not in metadata:
        raise InputError("not an AligNet student checkpoint (no student metadata)", source=path)
    if metadata.get("format_version") != STUDENT_FORMAT_VERSION:
        raise InputError(
            f"student checkpoint format version {metadata.get('format_version')} is not "
            f"supported (this version reads {STUDENT_FORMAT_VERSION}); update AligNet Studio",
            source=path,
        )
    return metadata
