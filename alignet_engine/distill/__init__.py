"""Stage 5: distil the surrogate teacher's triplet similarities into a student backbone."""

from .losses import (
    contrastive_triplet_loss,
    jsd_triplet_loss,
    kl_triplet_loss,
    odd_one_out_agreement,
    triplet_similarities,
)
from .trainer import (
    DistillConfig,
    DistillDivergedError,
    DistillResult,
    distill,
    load_student_config,
    load_student_state,
    save_student,
)

__all__ = [
    "DistillConfig",
    "DistillDivergedError",
    "DistillResult",
    "contrastive_triplet_loss",
    "distill",
    "jsd_triplet_loss",
    "kl_triplet_loss",
    "load_student_config",
    "load_student_state",
    "odd_one_out_agreement",
    "save_student",
    "triplet_similarities",
]
