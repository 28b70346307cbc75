"""AligNet Studio engine: all numerics and storage, headless (never imports Qt).

The names below are the notebook-friendly public API::

    from alignet_engine import AffineTransform, EmbeddingHumanModel, Project, load_aligned_model

They are imported on first use (PEP 562 ``__getattr__``), so ``import alignet_engine`` — and
with it every ``alignet-cli`` command — does not pay for torch, timm or scikit-learn until a
name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC: dict[str, str] = {
    # the surrogate teacher and human models
    "AffineTransform": "alignet_engine.align.transform",
    "VICE": "alignet_engine.align.human_models",
    "EmbeddingHumanModel": "alignet_engine.align.human_models",
    "sample_random_triplets": "alignet_engine.align.human_models",
    "soft_targets_from_model": "alignet_engine.align.human_models",
    # clusters and pool triplets
    "kmeans": "alignet_engine.align.clustering",
    "sample_triplets": "alignet_engine.align.triplet_sampling",
    "load_alignet_npz": "alignet_engine.data.alignet_npz",
    "save_alignet_npz": "alignet_engine.align.triplet_sampling",
    # evaluation against people
    "oddone_correct": "alignet_engine.align.metrics",
    "accuracy_summary": "alignet_engine.align.metrics",
    "noise_ceiling_oddone": "alignet_engine.align.metrics",
    "noise_ceiling_matrix": "alignet_engine.align.metrics",
    "rsa": "alignet_engine.align.metrics",
    # data, the project file, the exported student
    "ImageSet": "alignet_engine.base.types",
    "Judgments": "alignet_engine.base.types",
    "Project": "alignet_engine.store.project",
    "load_aligned_model": "alignet_engine.export_model",
    # errors a user's code may catch
    "InputError": "alignet_engine.errors",
    "ProjectError": "alignet_engine.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'alignet_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # type checkers and IDEs see the real definitions (explicit re-exports)
    from alignet_engine.align.clustering import kmeans as kmeans
    from alignet_engine.align.human_models import VICE as VICE
    from alignet_engine.align.human_models import EmbeddingHumanModel as EmbeddingHumanModel
    from alignet_engine.align.human_models import sample_random_triplets as sample_random_triplets
    from alignet_engine.align.human_models import soft_targets_from_model as soft_targets_from_model
    from alignet_engine.align.metrics import accuracy_summary as accuracy_summary
    from alignet_engine.align.metrics import noise_ceiling_matrix as noise_ceiling_matrix
    from alignet_engine.align.metrics import noise_ceiling_oddone as noise_ceiling_oddone
    from alignet_engine.align.metrics import oddone_correct as oddone_correct
    from alignet_engine.align.metrics import rsa as rsa
    from alignet_engine.align.transform import AffineTransform as AffineTransform
    from alignet_engine.align.triplet_sampling import sample_triplets as sample_triplets
    from alignet_engine.align.triplet_sampling import save_alignet_npz as save_alignet_npz
    from alignet_engine.base.types import ImageSet as ImageSet
    from alignet_engine.base.types import Judgments as Judgments
    from alignet_engine.data.alignet_npz import load_alignet_npz as load_alignet_npz
    from alignet_engine.errors import InputError as InputError
    from alignet_engine.errors import ProjectError as ProjectError
    from alignet_engine.export_model import load_aligned_model as load_aligned_model
    from alignet_engine.store.project import Project as Project
