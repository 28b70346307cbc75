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
from alignet_engine.models.registry import (
    EMBEDDED_MODELS,
    Backbone,
    Preprocess,
    available_models,
    load_backbone,
    weights_path,
)

__all__ = [
    "BACKGROUND_RGB",
    "EMBEDDED_MODELS",
    "MAX_SHORT_SIDE",
    "Backbone",
    "DeviceUnavailableError",
    "ImageReadError",
    "Preprocess",
    "available_models",
    "extract_features",
    "is_image_path",
    "load_backbone",
    "load_image",
    "make_transform",
    "pick_device",
    "set_cpu_threads",
    "weights_path",
]
