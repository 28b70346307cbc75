"""Stage 5: distil the surrogate teacher's triplet similarities into a student backbone."""

from .losses import (
    contrastive_triplet_loss,
    jsd_triplet_loss,
    kl_triplet_loss,
    odd_one_out_agreement,
    triplet_similarities,
)
from .trainer import (
    HEAD_PREFIX,
    DistillConfig,
    DistillDivergedError,
    DistillOutOfMemoryError,
    DistillResult,
    Validator,
    distill,
    load_student_config,
    load_student_head,
    load_student_state,
    make_triplet_head,
    save_student,
    triplet_head_from_state,
)

__all__ = [
    "HEAD_PREFIX",
    "DistillConfig",
    "DistillDivergedError",
    "DistillOutOfMemoryError",
    "DistillResult",
    "Validator",
    "contrastive_triplet_loss",
    "distill",
    "jsd_triplet_loss",
    "kl_triplet_loss",
    "load_student_config",
    "load_student_head",
    "load_student_state",
    "make_triplet_head",
    "odd_one_out_agreement",
    "save_student",
    "triplet_head_from_state",
    "triplet_similarities",
]
