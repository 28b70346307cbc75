"""Settings of the distillation stage (validated, JSON round-trip), declared like every
stage's (:func:`~alignet_engine.params.param`: help, range and CLI spellings per field).

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
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

from alignet_engine.config import (
    _DEVICE_HELP,
    _NONNEGATIVE,
    _NONNEGATIVE_INT,
    _POSITIVE,
    _POSITIVE_INT,
    StageConfig,
)
from alignet_engine.errors import InputError
from alignet_engine.params import Interval, param

#: distill settings a resumed run may change because they do not touch the
#: training trajectory (``steps`` is checked apart: it may grow, to extend a finished or
#: interrupted run)
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
class DistillConfig(StageConfig):
    """Optimisation settings of the distillation stage (``alignet_engine.distill``).

    ``weight_decay_to_init``: the per-step pull fraction ``η_t·λ`` is capped at 1 (a full
    reset to θ₀); beyond that the update would overshoot θ₀ and diverge. ``head_dim`` > 0:
    the new head is not pulled toward its init (see ``distill/trainer.py``). ``keep_last``
    N > 1 keeps the N newest checkpoints as ``<name>.step<k><suffix>`` files beside the
    checkpoint (any of them resumes); ``keep_best`` keeps ``<name>.best<suffix>``: the highest
    ``val_agreement``, or without a validation set the first validator's value.

    The learning-rate schedule is a function of the step and these settings
    (:meth:`lr_at`), so a checkpoint needs no schedule state.
    """

    steps: int = param(
        300,
        "Optimizer steps. Each step draws batch_size triplets from the training triplets. "
        "AligNet: 100,000 steps; a few hundred suffice for a pool of a few hundred images on "
        "a CPU.",
        bounds=_POSITIVE_INT,
    )
    batch_size: int = param(
        16,
        "Triplets per step; a step forwards 3 × batch_size images. AligNet: 512 triplets "
        "(1,536 images). Lower it if memory runs out.",
        bounds=_POSITIVE_INT,
    )
    lr: float = param(
        1e-4,
        "Peak learning rate η reached after the warm-up. AligNet: 3e-5 (ViT-B); 1e-4 suits "
        "the small CNN students here.",
        bounds=_POSITIVE,
    )
    warmup_steps: int = param(
        20,
        "Steps of linear warm-up to the peak learning rate (at most steps). AligNet: 5,000 of "
        "100,000 steps.",
        bounds=_NONNEGATIVE_INT,
    )
    schedule: Literal["cosine", "constant"] = param(
        "cosine",
        "cosine: warm-up, then cosine decay to 0 at the last step (AligNet); constant: "
        "warm-up, then the peak rate.",
    )
    weight_decay_to_init: float = param(
        1.0,
        "λ of the decoupled pull toward the pretrained weights θ₀ "
        "(θ ← θ − η[Adam(g) + λ(θ − θ₀)]); keeps the student's representation close to the "
        "pretrained one. AligNet: 1.0.",
        bounds=_NONNEGATIVE,
        aliases=("--decay-to-init",),
    )
    loss: Literal["kl", "jsd", "contrastive"] = param(
        "kl",
        "kl: KL(teacher ‖ student) over the triplet's odd-one-out distribution (the paper); "
        "jsd: Jensen–Shannon (the released AligNet config); contrastive: hard label, the "
        "teacher's most similar pair.",
    )
    similarity: Literal["dot", "cosine"] = param(
        "cosine",
        "How student features become pair similarities: cosine (default here: pretrained dot "
        "products are too large for a softmax) or dot (AligNet, on its triplet head).",
    )
    teacher_temperature: float = param(
        1.0,
        "τ_t dividing the teacher's similarities before the softmax. AligNet: 1.",
        bounds=_POSITIVE,
    )
    student_temperature: float = param(
        0.1,
        "τ_s dividing the student's similarities (the contrastive loss's τ). 0.1 with cosine "
        "similarity; AligNet uses 100 on dot products.",
        bounds=_POSITIVE,
    )
    grad_clip: float = param(
        1.0,
        "Maximum global L2 norm of the gradient; 0 disables clipping.",
        bounds=_NONNEGATIVE,
    )
    seed: int = param(
        0,
        "Seeds triplet sampling, augmentation and torch's RNG (AligNet: 42).",
        bounds=_NONNEGATIVE_INT,
        aliases=("--random-state",),
    )
    log_every_s: float = param(
        0.2,
        "Minimum seconds between two loss batches sent to the plots (points are batched, "
        "never dropped); 0 sends every step.",
        bounds=_NONNEGATIVE,
    )
    val_every: int = param(
        50,
        "Measure the held-out triplets (and the human validation judgments) every this many "
        "steps, besides before the first and after the last step; 0 = only then. AligNet: "
        "every 5,000 steps.",
        bounds=_NONNEGATIVE_INT,
    )
    eval_batch_size: int = param(
        64, "Images per forward pass during validation.", bounds=_POSITIVE_INT
    )
    train_bn: bool = param(
        False,
        "Off keeps BatchNorm layers in eval mode (their ImageNet statistics), so small noisy "
        "batches cannot shift them; their affine weights still train.",
    )
    augment: bool = param(False, "Flip each training image horizontally with probability ½.")
    channels_last: bool = param(
        True,
        "Train in the channels-last memory layout: same numbers, about 1.6× faster for "
        "EfficientNet on a CPU.",
    )
    checkpoint_every: int = param(
        100,
        "Write a training checkpoint every this many steps, so an interrupted run can be "
        "resumed; 0 = only at the end and on cancel. AligNet: 10,000.",
        bounds=_NONNEGATIVE_INT,
    )
    head_dim: int = param(
        0,
        "0: similarities of the student's own features; > 0: of a new linear triplet head "
        "d → head_dim trained from scratch. AligNet: 1024.",
        bounds=_NONNEGATIVE_INT,
    )
    preserve_weight: float = param(
        0.0,
        "Weight of an extra loss term 1 − cos(f(x), f₀(x)) that keeps the student's features "
        "close to the pretrained ones; 0 = off (AligNet relies on the decay to θ₀ alone).",
        bounds=_NONNEGATIVE,
    )
    accumulation_steps: int = param(
        1,
        "Micro-batches of batch_size triplets per optimizer step: the effective batch is "
        "batch_size × accumulation_steps with one micro-batch's memory.",
        bounds=_POSITIVE_INT,
    )
    amp: bool = param(False, "Mixed precision (bfloat16 / float16) on CUDA; no effect on a CPU.")
    keep_last: int = param(
        1,
        "Keep the N newest training checkpoints (any of them resumes); 1 keeps only the "
        "newest, replaced each time.",
        bounds=_POSITIVE_INT,
    )
    keep_best: bool = param(
        False, "Also keep the checkpoint of the best validation so far as a .best side file."
    )

    def validate(self) -> None:
        if self.warmup_steps > self.steps:
            raise InputError(
                f"must not exceed steps ({self.steps}); got {self.warmup_steps!r}",
                source="DistillConfig",
                field="warmup_steps",
            )

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

    The pool is read from its files as training goes, never decoded whole; the result does
    not depend on ``num_workers``. With ``skip_corrupt`` an unreadable image is left out with
    the triplets that use it and recorded in the run's summary (``skipped_images``).
    """

    student: str = param(
        "efficientnet_lite0",
        "The pretrained backbone to fine-tune (AligNet: ViT-B/16 from SigLIP). Small CNNs "
        "(efficientnet_lite0) train on a CPU.",
    )
    image_size: int | None = param(
        None,
        "Input size in pixels; auto = the student's own. Smaller is faster (64 px for a quick "
        "try), larger is closer to how the model was pretrained.",
        bounds=Interval(Integral, 32, None, closed="left"),
    )
    device: str = param(
        "auto",
        _DEVICE_HELP + " Under torchrun, auto and cuda mean cuda:LOCAL_RANK.",
    )
    training: DistillConfig = param(
        default_factory=DistillConfig, help="The optimisation settings."
    )
    val_judgments: str | None = param(
        None,
        "Human judgments (odd-one-out or two-alternative) to track the student's accuracy on "
        "during training (curve val_human).",
    )
    val_set: str | None = param(None, "Their image set (default: the one they were imported with).")
    num_workers: int = param(
        0,
        "Image-decoding worker processes feeding the training (0: decode in the job's own thread).",
        bounds=_NONNEGATIVE_INT,
        aliases=("--workers",),
    )
    skip_corrupt: bool = param(
        False,
        "Leave out unreadable pool images and their triplets (recorded in the run) instead "
        "of failing.",
    )

    def validate(self) -> None:
        if self.val_set is not None and self.val_judgments is None:
            raise InputError(
                "val_set names the image set of val_judgments; set val_judgments too",
                source="DistillStageConfig",
                field="val_set",
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillStageConfig:
        data = dict(data)
        training = DistillConfig.from_dict(data.pop("training", {}))
        return dataclasses.replace(super().from_dict(data), training=training)
