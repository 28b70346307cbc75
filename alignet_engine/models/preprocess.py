"""How images become a model's input tensor: the eval preprocessing of a backbone."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alignet_engine.errors import InputError

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
#: timm's eval crop modes (``timm.data.transforms_imagenet_eval``): ``center`` resizes the
#: shorter side and centre-crops (aspect kept, edges lost); ``squash`` resizes both sides to
#: ``floor(input_size / crop_pct)`` (aspect not kept) then centre-crops; ``border`` resizes the
#: longer side, pads with the mean colour, then crops (nothing lost at crop_pct 1).
CROP_MODES = ("center", "squash", "border")


@dataclass(frozen=True)
class Preprocess:
    """How images are turned into a model's input tensor (an eval-time centre crop).

    input_size : side of the square input, pixels.
    mean, std : per-channel (R, G, B) normalisation of [0, 1] pixel values.
    interpolation : resampling for the resize, ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    crop_pct : the shorter side is resized to ``floor(input_size / crop_pct)`` pixels, then the
        centre ``input_size`` square is cropped (timm's convention), in (0, 1].
    crop_mode : how that resize and crop are done, one of :data:`CROP_MODES` (timm's
        ``crop_mode``; ``center`` for every non-timm model).
    whole : True — the WHOLE image is resized to ``input_size`` × ``input_size`` (aspect ratio
        not kept, nothing cropped; ``crop_pct`` is then 1.0): what similarity studies show
        people, and what the AligNet authors' PyTorch port does. See :func:`whole_stimulus`.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    whole: bool = False
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive int, got {self.input_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std must have 3 values (R, G, B)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")
        if self.whole and self.crop_pct != 1.0:
            raise ValueError("a whole-stimulus preprocessing crops nothing: crop_pct must be 1.0")

    @classmethod
    def from_timm_config(cls, cfg: Mapping[str, Any]) -> Preprocess:
        """Build from a timm data config (``timm.data.resolve_model_data_config``) or
        pretrained config (``model.pretrained_cfg``) dict; no ``crop_mode`` means center."""
        input_size = cfg["input_size"]
        return cls(
            input_size=int(input_size[-1]),
            mean=_triple(cfg["mean"]),
            std=_triple(cfg["std"]),
            interpolation=str(cfg["interpolation"]),
            crop_pct=float(cfg["crop_pct"]),
            crop_mode=str(cfg.get("crop_mode") or "center"),
        )

    @classmethod
    def from_timm_model(cls, model: Any) -> Preprocess:
        """The eval preprocessing timm resolves for ``model``
        (``timm.data.resolve_model_data_config``: its pretrained config with timm's defaults
        for what it leaves out), ``crop_mode`` included."""
        from timm.data import resolve_model_data_config

        return cls.from_timm_config(resolve_model_data_config(model))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "whole": self.whole,
            "crop_mode": self.crop_mode,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; a missing or bad key raises :class:`InputError`."""
        for key in ("input_size", "mean", "std", "interpolation", "crop_pct"):
            if key not in d:
                raise InputError("preprocessing settings lack this key", field=key)
        try:
            return cls(
                input_size=int(d["input_size"]),
                mean=_triple(d["mean"]),
                std=_triple(d["std"]),
                interpolation=str(d["interpolation"]),
                crop_pct=float(d["crop_pct"]),
                whole=bool(d.get("whole", False)),  # absent in runs before the preset existed
                crop_mode=str(d.get("crop_mode", "center")),  # absent before timm's crop modes
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad preprocessing settings: {exc}") from exc


def _triple(values: Any) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) != 3:
        raise ValueError(f"expected 3 values (R, G, B), got {len(vals)}")
    return (vals[0], vals[1], vals[2])


#: ImageNet defaults for models that do not say how they were trained (TorchScript files, user
#: modules): 224 px, resize the shorter side to 256 (crop 0.875), bilinear, ImageNet mean/std.
#: torchvision's classic ImageNet recipe uses exactly these (bilinear, not bicubic).
IMAGENET_DEFAULT = Preprocess(
    input_size=224,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    interpolation="bilinear",
    crop_pct=0.875,
)


def crop_pct_for(crop: int, resize: int) -> float:
    """The ``crop_pct`` for which ``floor(crop / crop_pct) == resize`` holds exactly.

    torchvision states its eval transform as "resize the shorter side to ``resize``, centre
    crop ``crop``"; :class:`Preprocess` (timm's convention) stores ``crop / resize`` and
    recomputes the resize as ``floor(crop / crop_pct)``. Rounding can make that one pixel
    short (e.g. 224/232), so the fraction is nudged down by ulps until the floor is exact.
    """
    if not 0 < crop <= resize:
        raise ValueError(f"need 0 < crop <= resize, got crop={crop}, resize={resize}")
    pct = crop / resize
    for _ in range(8):
        if math.floor(crop / pct) >= resize:
            break
        pct = math.nextafter(pct, 0.0)
    return pct


#: How ``extract`` prepares images: ``model`` — the model's own eval preprocessing (resize the
#: shorter side, centre crop ``crop_pct``); ``whole`` — :func:`whole_stimulus`; ``auto`` —
#: ``whole`` for image sets evaluated against people (with judgments or matrices), else
#: ``model``.
PREPROCESSING_PRESETS: tuple[str, ...] = ("auto", "model", "whole")


def whole_stimulus(pre: Preprocess) -> Preprocess:
    """The "whole stimulus" preset of a model's preprocessing.

    The whole image resized to the model's input size (no centre crop: a similarity study
    shows people the whole stimulus, and a crop can cut off what they judged), normalised with
    ImageNet's mean/std, with the model's own interpolation. On a held-out set of natural object
    photos judged by 16 people, EfficientNet-Lite0's zero-shot RSA was 0.31 with the default
    crop, 0.33 with the whole image, 0.38 with the whole image and ImageNet mean/std (issue 11).
    """
    return Preprocess(
        input_size=pre.input_size,
        mean=IMAGENET_DEFAULT.mean,
        std=IMAGENET_DEFAULT.std,
        interpolation=pre.interpolation,
        crop_pct=1.0,
        whole=True,
    )
