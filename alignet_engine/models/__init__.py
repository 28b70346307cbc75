"""Vision backbones, image loading and feature extraction (headless; no Qt)."""

from alignet_engine.models.devices import DeviceUnavailableError, pick_device, set_cpu_threads
from alignet_engine.models.extract import extract_features
from alignet_engine.models.images import (
    BACKGROUND_RGB,
    MAX_SHORT_SIDE,
    ImageReadError,
    is_image_path,
    load_image,
    make_transform,
)
from alignet_engine.models.layers import LayerInfo, list_layers
from alignet_engine.models.registry import (
    EMBEDDED_MODELS,
    Backbone,
    Preprocess,
    available_models,
    backbone_for,
    backbone_layers,
    load_backbone,
    weights_path,
)
from alignet_engine.models.spec import POOLINGS, ModelSpec, model_label, parse_spec

__all__ = [
    "BACKGROUND_RGB",
    "EMBEDDED_MODELS",
    "MAX_SHORT_SIDE",
    "POOLINGS",
    "Backbone",
    "DeviceUnavailableError",
    "ImageReadError",
    "LayerInfo",
    "ModelSpec",
    "Preprocess",
    "available_models",
    "backbone_for",
    "backbone_layers",
    "extract_features",
    "is_image_path",
    "list_layers",
    "load_backbone",
    "load_image",
    "make_transform",
    "model_label",
    "parse_spec",
    "pick_device",
    "set_cpu_threads",
    "weights_path",
]
