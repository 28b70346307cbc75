"""Human-alignment numerics: affine transforms, metrics, clustering and triplet sampling.

Submodules
----------
transform        :class:`AffineTransform` (gLocal hard / uncertainty-distillation soft objective)
soft_targets     per-unique-triplet human choice distributions (soft targets)
metrics          triplet accuracies, bootstrap CIs, noise ceilings, RSA
clustering       k-means of embeddings
triplet_sampling AligNet cluster-boundary triplets, teacher odd-one-out labels, npz layout
fitloop          the epoch loop, batches, early stopping and history the estimators' fits share
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignet_engine.align.clustering import kmeans
from alignet_engine.align.metrics import (
    accuracy_summary,
    bootstrap_ci,
    noise_ceiling_oddone,
    noise_ceiling_twoafc,
    oddone_correct,
    pair_similarities,
    rsa,
    twoafc_correct,
)
from alignet_engine.align.soft_targets import choice_distributions
from alignet_engine.align.triplet_sampling import (
    sample_triplets,
    save_alignet_npz,
    teacher_odd_one_out,
)
from alignet_engine.data.alignet_npz import load_alignet_npz

__all__ = [
    "AffineTransform",
    "FitEpoch",
    "accuracy_summary",
    "bootstrap_ci",
    "choice_distributions",
    "kmeans",
    "load_alignet_npz",
    "noise_ceiling_oddone",
    "noise_ceiling_twoafc",
    "oddone_correct",
    "pair_similarities",
    "rsa",
    "sample_triplets",
    "save_alignet_npz",
    "teacher_odd_one_out",
    "twoafc_correct",
]


if TYPE_CHECKING:  # the lazy names below, for type checkers
    from alignet_engine.align.transform import AffineTransform as AffineTransform
    from alignet_engine.align.transform import FitEpoch as FitEpoch


def __getattr__(name: str) -> object:
    # transform imports torch (~1 s); load it only when the transform is actually used, so
    # metrics and sampling stay cheap to import.
    if name in ("AffineTransform", "FitEpoch"):
        from alignet_engine.align import transform

        return getattr(transform, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
