"""Vision backbones, image loading and feature extraction (headless; no Qt).

The names below are imported on first use (PEP 562 ``__getattr__``): ``models.spec`` is pure
string work that :mod:`alignet_engine.config` validates with, and importing it must not pay
for torch, which the backbones, images and extraction modules import. The device choice
lives in :mod:`alignet_engine.base.devices`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_PUBLIC: dict[str, str] = {
    "extract_features": "extract",
    "BACKGROUND_RGB": "images",
    "MAX_SHORT_SIDE": "images",
    "ImageReadError": "images",
    "is_image_path": "images",
    "load_image": "images",
    "make_transform": "images",
    "LayerInfo": "layers",
    "list_layers": "layers",
    "EMBEDDED_MODELS": "registry",
    "Backbone": "registry",
    "Preprocess": "registry",
    "available_models": "registry",
    "backbone_for": "registry",
    "backbone_layers": "registry",
    "load_backbone": "registry",
    "weights_path": "registry",
    "POOLINGS": "spec",
    "ModelSpec": "spec",
    "model_label": "spec",
    "parse_spec": "spec",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *globals()})


if TYPE_CHECKING:  # type checkers and IDEs see the real definitions (explicit re-exports)
    from alignet_engine.models.extract import extract_features as extract_features
    from alignet_engine.models.images import BACKGROUND_RGB as BACKGROUND_RGB
    from alignet_engine.models.images import MAX_SHORT_SIDE as MAX_SHORT_SIDE
    from alignet_engine.models.images import ImageReadError as ImageReadError
    from alignet_engine.models.images import is_image_path as is_image_path
    from alignet_engine.models.images import load_image as load_image
    from alignet_engine.models.images import make_transform as make_transform
    from alignet_engine.models.layers import LayerInfo as LayerInfo
    from alignet_engine.models.layers import list_layers as list_layers
    from alignet_engine.models.registry import EMBEDDED_MODELS as EMBEDDED_MODELS
    from alignet_engine.models.registry import Backbone as Backbone
    from alignet_engine.models.registry import Preprocess as Preprocess
    from alignet_engine.models.registry import available_models as available_models
    from alignet_engine.models.registry import backbone_for as backbone_for
    from alignet_engine.models.registry import backbone_layers as backbone_layers
    from alignet_engine.models.registry import load_backbone as load_backbone
    from alignet_engine.models.registry import weights_path as weights_path
    from alignet_engine.models.spec import POOLINGS as POOLINGS
    from alignet_engine.models.spec import ModelSpec as ModelSpec
    from alignet_engine.models.spec import model_label as model_label
    from alignet_engine.models.spec import parse_spec as parse_spec
