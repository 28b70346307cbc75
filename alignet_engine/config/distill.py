"""Settings of the distillation stage (validated, JSON round-trip).

:class:`DistillConfig` holds the optimisation settings the trainer
(:func:`alignet_engine.distill.distill`) reads; :class:`DistillStageConfig` is the stage's
whole configuration: which student, on which device, validated on what, and ``training``.

The learning-rate schedule is a function of the step and these settings
(:meth:`DistillConfig.lr_at`), so a checkpoint needs no schedule state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from alignet_engine.config import StageConfig
from alignet_engine.errors import InputError

_LOSSES = ("kl", "jsd", "contrastive")
_SCHEDULES = ("cosine", "constant")
_SIMILARITIES = ("dot", "cosine")

#: settings a resumed run may change because they do not touch the training trajectory
#: (``steps`` is checked apart: it may grow, to extend a finished or interrupted run)
RESUME_FREE = frozenset(
    {
        "steps",
        "checkpoint_every",
        "log_every_s",
        "val_every",
        "eval_batch_size",
        "keep_last",
        "keep_best",
    }
)


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
    keep_last : training checkpoints kept (≥ 1): with N > 1 the N newest also stay as
        ``<name>.step<k><suffix>`` files beside the checkpoint (any of them resumes); 1 keeps
        only the checkpoint itself, replaced each time.
    keep_best : also keep the checkpoint of the best validation so far as
        ``<name>.best<suffix>``: the highest ``val_agreement``, or without a validation set
        the first validator's value (written right after that validation, steps ≥ 1).
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
    keep_last: int = 1
    keep_best: bool = False

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
            ("keep_last", 1),
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
        for name in ("train_bn", "augment", "channels_last", "amp", "keep_best"):
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
class DistillStageConfig(StageConfig):
    """Which student to train on the current triplets, where, and how (``training``).

    Attributes
    ----------
    student : registry name of the student backbone.
    image_size : input size in px; None = the student's own.
    device : ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    training : the optimisation settings (:class:`DistillConfig`).
    val_judgments : name of imported human judgments (odd-one-out or two-alternative) to
        track the student's accuracy on during training (curve ``val_human``); None = off.
    val_set : the image set those judgments refer to; None = the one they were imported with
        (given, it must be that one).
    num_workers : image-decoding processes feeding the training (0: decode in the job's own
        thread, the safe choice inside the GUI). The pool is read from its files as training
        goes, never decoded whole; the result does not depend on this.
    skip_corrupt : False — an unreadable pool image stops the job with an error naming the
        file; True — it is left out (with the triplets that use it) and recorded in the run's
        summary (``skipped_images``).
    """

    student: str = "efficientnet_lite0"
    image_size: int | None = None  # None: the student's own input size
    device: str = "auto"
    training: DistillConfig = field(default_factory=DistillConfig)
    val_judgments: str | None = None
    val_set: str | None = None
    num_workers: int = 0
    skip_corrupt: bool = False

    def validate(self) -> None:
        if (
            isinstance(self.num_workers, bool)
            or not isinstance(self.num_workers, int)
            or self.num_workers < 0
        ):
            raise InputError(
                f"must be an integer ≥ 0; got {self.num_workers!r}",
                source="distill config",
                field="num_workers",
            )
        if self.image_size is not None and (
            not isinstance(self.image_size, int) or self.image_size < 32
        ):
            raise InputError(
                f"must be an integer ≥ 32 px or None; got {self.image_size!r}",
                source="distill config",
                field="image_size",
            )
        if self.val_set is not None and self.val_judgments is None:
            raise InputError(
                "val_set names the image set of val_judgments; set val_judgments too",
                source="distill config",
                field="val_set",
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillStageConfig:
        data = dict(data)
        training = data.pop("training", {})
        base = super().from_dict.__func__(cls, data)  # type: ignore[attr-defined]
        return dataclasses.replace(base, training=DistillConfig.from_dict(training))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["training"] = self.training.to_dict()
        return out
