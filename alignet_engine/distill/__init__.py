"""Stage 5: distil the surrogate teacher's triplet similarities into a student backbone."""

from .batching import StreamedImages
from .guards import DistillDivergedError, DistillOutOfMemoryError
from .losses import (
    contrastive_triplet_loss,
    jsd_triplet_loss,
    kl_triplet_loss,
    odd_one_out_agreement,
    stacked_pair_similarities,
)
from .student import make_triplet_head
from .student_io import (
    HEAD_PREFIX,
    load_student_config,
    load_student_head,
    load_student_state,
    save_student,
    triplet_head_from_state,
)
from .trainer import DistillResult, TrainingRun, Validator, distill

__all__ = [
    "HEAD_PREFIX",
    "DistillDivergedError",
    "DistillOutOfMemoryError",
    "DistillResult",
    "StreamedImages",
    "TrainingRun",
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
    "stacked_pair_similarities",
    "triplet_head_from_state",
]
