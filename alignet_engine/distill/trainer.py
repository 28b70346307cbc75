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
    checkpoint_every: int = 0

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
        for name in ("weight_decay_to_init", "grad_clip", "log_every_s"):
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
        for name in ("train_bn", "augment", "channels_last"):
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
        ``"loss"`` (the minimised objective: the triplet loss — the decay-to-init is a
        decoupled update, not a loss term), ``"triplet"`` (the triplet loss),
        ``"agreement"`` (batch fraction where the student picks the teacher's odd one out),
        ``"lr"``, ``"grad_norm"`` (before clipping) and ``"drift"`` (‖θ − θ₀‖ / ‖θ₀‖ after
        the step). With a validation set also ``"val_step"`` int64 (0 = before training),
        ``"val_agreement"`` and ``"val_loss"``, each (n_validations,).
    steps_done : optimizer steps made.
    seconds : wall-clock duration of the job, s.
    config : the configuration used.
    """

    state_dict: dict[str, torch.Tensor]
    history: dict[str, np.ndarray]
    steps_done: int
    seconds: float
    config: DistillConfig = field(default_factory=DistillConfig)


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
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume_from: str | os.PathLike[str] | None = None,
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
    checkpoint_path : file holding the run's training checkpoint (see
        :mod:`alignet_engine.distill.checkpoint`; its folder must exist), replaced atomically
        every ``config.checkpoint_every`` steps, after the last step, and when the job is
        cancelled at a step boundary. None = no checkpoints.
    resume_from : a checkpoint of an earlier run (often the same file as
        ``checkpoint_path``). Its weights are loaded into ``feature_fn`` (same architecture;
        its own weights are ignored), and θ₀, the Adam state, the sampler and torch RNG
        states and the history are restored; training continues at step ``steps_done + 1``.
        With the same ``config``, device and thread count the loss curve and weights are
        bitwise those of an uninterrupted run. ``config`` must equal the checkpoint's except
        for ``log_every_s``, ``val_every``, ``eval_batch_size`` and ``checkpoint_every``, and
        ``steps``, which may be *increased* to extend training: the cosine schedule then
        follows the new ``steps`` from the resumed step on, which is **not** the curve of a
        run planned with the new ``steps`` from the start (its decay would have been slower
        from the first step). The images are not checked; pass the same pool.

    Yields
    ------
    Message
        Start and end lines for the log panel.
    Progress
        ``Progress("distill", step, steps)``, at most every ``config.log_every_s`` s, and
        always after the last step.
    LossBatch
        ``stage="distill"``; training points (values ``loss``, ``triplet``, ``agreement``,
        ``lr``, ``grad_norm``, ``drift``; every step is in exactly one batch) at most every
        ``config.log_every_s`` s plus a final flush; validation points in their own batches
        (values ``val_agreement``, ``val_loss``). All arrays are numpy copies. A resumed run
        first yields the restored points (one training and one validation batch), so a
        fresh plot shows the whole curve.

    Returns
    -------
    DistillResult
        A resumed run's history holds the whole run, restored steps included.

    Raises
    ------
    InputError
        Malformed triplets, similarities, images or features; an unreadable ``resume_from``
        checkpoint, or one whose settings (the differing fields are named), triplets or
        parameters do not match.
    jobs.Cancelled
        ``control.cancel()`` was called; raised at the next step boundary (after saving a
        checkpoint when ``checkpoint_path`` is given).
    DistillDivergedError
        The loss became non-finite.
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
    if device is None:
        device = params[0].device
    device = torch.device(device)
    source = _Images(images, device)
    triplets, teacher_sims = _check_triplets(triplets, teacher_sims, source.count, "triplets")
    val_data = None
    if val is not None:
        val_data = _check_triplets(val[0], val[1], source.count, "validation triplets")
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
        _Checkpointing(checkpoint_path, resume, last_saved, digest),
    )


@dataclass
class _Checkpointing:
    """Where the job saves checkpoints, what it resumes from and the last step saved."""

    path: Path | None
    resume: TrainingCheckpoint | None
    last_saved: int | None
    data_sha256: str


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
    found = {k: tuple(v.shape) for k, v in resume.model.items()}
    if set(trainable) != set(resume.init) or expected != found:
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
) -> Job[DistillResult]:
    start = time.monotonic()
    ckpt = ckpt or _Checkpointing(None, None, None, "")
    resume = ckpt.resume
    modes = {module: module.training for module in feature_fn.modules()}
    feature_fn.to(device)
    if config.channels_last:
        feature_fn.to(memory_format=torch.channels_last)
    named = [(n, p) for n, p in feature_fn.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    if resume is None:
        inits = [p.detach().clone() for p in params]
    else:
        with torch.no_grad():
            feature_fn.load_state_dict(resume.model)
        # empty_like keeps each parameter's memory layout (channels-last): a resumed run then
        # does its elementwise arithmetic on the same layouts as the uninterrupted one
        inits = [torch.empty_like(p).copy_(resume.init[n]) for n, p in named]
    init_norm = _global_norm(inits) or 1.0

    rng = np.random.default_rng(config.seed)
    # dropout / drop-path draw from torch's global RNG; seeding it makes runs repeatable
    torch.manual_seed(config.seed)
    flip_gen = torch.Generator().manual_seed(config.seed + 1)
    # a copy (torch.tensor, not from_numpy): the caller's arrays may be read-only
    teacher_sims = torch.tensor(teacher_sims_np, device=device)
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    batches = _TripletSampler(len(triplets), config.batch_size, rng)
    throttle = Throttle(config.log_every_s)

    names = ("loss", "triplet", "agreement", "lr", "grad_norm", "drift")
    history: dict[str, list[float]] = {name: [] for name in ("step", *names)}
    val_history: dict[str, list[float]] = {"val_step": [], "val_agreement": [], "val_loss": []}
    pending = 0  # history points not yet yielded in a LossBatch
    step = 0
    progress_done = -1  # the last step reported in a Progress event

    if resume is not None:
        rng.bit_generator.state = resume.sampler_state
        batches.buffer = np.array(resume.sampler_buffer, dtype=np.int64)
        torch.set_rng_state(resume.torch_rng)
        flip_gen.set_state(resume.flip_rng)
        if device.type == "cuda" and resume.cuda_rng is not None:
            torch.cuda.set_rng_state(resume.cuda_rng, device)
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
        step = resume.steps_done

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

    def validate_now() -> LossBatch:
        assert val is not None
        agreement, loss = _evaluate(feature_fn, source, val[0], val[1], config, device, control)
        _set_mode(feature_fn, train=True, train_bn=config.train_bn)
        val_history["val_step"].append(step)
        val_history["val_agreement"].append(agreement)
        val_history["val_loss"].append(loss)
        logger.debug("distill step %d: val agreement %.4f, val loss %.4f", step, agreement, loss)
        return LossBatch(
            STAGE,
            np.asarray([step], dtype=np.int64),
            {"val_agreement": np.asarray([agreement]), "val_loss": np.asarray([loss])},
        )

    def save(done: int) -> None:
        """Checkpoint the state after step ``done`` (the caller guarantees it is complete)."""
        assert ckpt.path is not None
        state = TrainingCheckpoint(
            steps_done=done,
            config=config.to_dict(),
            model=feature_fn.state_dict(),
            init={name: init for (name, _), init in zip(named, inits, strict=True)},
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

    try:
        first = step + 1
        if resume is None:
            text = (
                f"distilling {len(triplets)} triplets: {config.steps} steps of "
                f"{config.batch_size} triplets, {config.loss} loss, lr {config.lr:g}, "
                f"λ {config.weight_decay_to_init:g}, on {device}"
            )
        else:
            text = (
                f"resuming distillation of {len(triplets)} triplets at step {first} of "
                f"{config.steps} on {device}"
            )
        logger.info(text)
        yield Message(STAGE, text)
        yield progress()
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
                    {
                        n: np.asarray(val_history[n], dtype=np.float64)
                        for n in ("val_agreement", "val_loss")
                    },
                )
        elif val is not None:
            control.check()
            yield validate_now()

        for step in range(first, config.steps + 1):  # validate_now reads `step` too
            try:
                control.check()
            except Cancelled:
                # step - 1 is complete (its validation too): keep it so the run can resume
                if ckpt.path is not None and step > 1 and ckpt.last_saved != step - 1:
                    save(step - 1)
                raise
            rows = next(batches)
            batch_triplets = triplets[rows]
            batch_teacher = teacher_sims[torch.from_numpy(rows).to(device)]
            x = source(batch_triplets.reshape(-1), config.channels_last)
            if config.augment:
                flip = (torch.rand(x.shape[0], generator=flip_gen) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)

            lr = config.lr_at(step - 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
            features = _features(feature_fn, x)
            student = triplet_similarities(features.reshape(len(rows), 3, -1), config.similarity)
            loss = _triplet_loss(config, batch_teacher, student)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise DistillDivergedError(
                    f"the distillation loss became {loss_value} at step {step}; lower the "
                    f"learning rate (now {config.lr:g}) or raise the student temperature "
                    f"(now {config.student_temperature:g})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            with torch.no_grad():
                # decoupled pull toward θ₀, applied *before* the Adam step so that it uses the
                # pre-step θ: θ ← θ − η(Adam(g) + λ(θ − θ₀)) exactly, as optax's
                # scale_by_adam → decay_to_init → scale_by_lr chain does (Adam's update does
                # not depend on θ, so the order only decides which θ the pull sees)
                pull = min(lr * config.weight_decay_to_init, 1.0)
                if pull > 0:
                    torch._foreach_lerp_(params, inits, pull)
            optimizer.step()
            with torch.no_grad():
                agreement = float(odd_one_out_agreement(student, batch_teacher).float().mean())
                drift = _global_norm(torch._foreach_sub(params, inits))

            for name, value in (
                ("step", step),
                ("loss", loss_value),
                ("triplet", loss_value),
                ("agreement", agreement),
                ("lr", lr),
                ("grad_norm", grad_norm),
                ("drift", drift / init_norm),
            ):
                history[name].append(value)
            pending += 1
            if throttle():
                yield flush()
                yield progress()
            # the last step's validation (and checkpoint) come after the final flush, below
            last = step == config.steps
            due = config.val_every and step % config.val_every == 0 and not last
            if val is not None and due:
                yield validate_now()
            every = config.checkpoint_every
            if ckpt.path is not None and every and step % every == 0 and not last:
                save(step)

        if pending:
            yield flush()
        # a run resumed from its final checkpoint already has the last validation point
        if val is not None and not (
            val_history["val_step"] and val_history["val_step"][-1] == step
        ):
            yield validate_now()
        if ckpt.path is not None and ckpt.last_saved != step:
            save(step)
        if progress_done != step:
            yield progress()
    finally:
        for module, mode in modes.items():
            module.training = mode

    seconds = time.monotonic() - start
    result_history: dict[str, np.ndarray] = {
        "step": np.asarray(history["step"], dtype=np.int64),
        **{n: np.asarray(history[n], dtype=np.float64) for n in names},
    }
    if val is not None:
        result_history["val_step"] = np.asarray(val_history["val_step"], dtype=np.int64)
        result_history["val_agreement"] = np.asarray(val_history["val_agreement"])
        result_history["val_loss"] = np.asarray(val_history["val_loss"])
    done = f"{config.steps} steps" if first == 1 else f"steps {first}–{config.steps}"
    summary = (
        f"distilled {done} in {seconds:.1f} s; last loss "
        f"{result_history['loss'][-1]:.4f}, drift {result_history['drift'][-1]:.2e}"
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
    return DistillResult(state, result_history, config.steps, seconds, config)


def _evaluate(
    feature_fn: nn.Module,
    source: _Images,
    triplets: np.ndarray,
    teacher_sims: np.ndarray,
    config: DistillConfig,
    device: torch.device,
    control: JobControl,
) -> tuple[float, float]:
    """Agreement with the teacher's odd one out and mean loss on ``triplets``, in eval mode.

    Each distinct image is forwarded once (in chunks of ``config.eval_batch_size``).
    Returns ``(agreement in [0, 1], loss in nats)``.
    """
    feature_fn.eval()
    ids = np.unique(triplets)
    chunks = []
    with torch.no_grad():
        for begin in range(0, len(ids), config.eval_batch_size):
            control.check()
            chunk = source(ids[begin : begin + config.eval_batch_size], config.channels_last)
            chunks.append(_features(feature_fn, chunk))
        features = torch.cat(chunks)
        rows = torch.from_numpy(np.searchsorted(ids, triplets)).to(device)
        student = triplet_similarities(features[rows], config.similarity)
        teacher = torch.tensor(teacher_sims, device=device)
        agreement = float(odd_one_out_agreement(student, teacher).float().mean())
        loss = float(_triplet_loss(config, teacher, student))
    return agreement, loss


# --------------------------------------------------------------------------------------------
# checkpoints


def save_student(
    path: str | os.PathLike[str], feature_fn: nn.Module, config_json: Mapping[str, Any]
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
    """Read a state dict written by :func:`save_student` (CPU tensors)."""
    from safetensors.torch import load_file

    _read_metadata(path)  # refuses files that are not student checkpoints
    return load_file(str(path), device="cpu")


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
