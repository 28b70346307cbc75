"""Use an exported aligned student outside AligNet Studio: load it, embed images, convert it.

This is the module users call from their own Python code. A typical session::

    from alignet_engine.export_model import (
        export_onnx, export_pt2, load_aligned_model, write_model_card,
    )

    model = load_aligned_model("exports/my-run")          # folder with student.safetensors
    feats = model.embed(["a.jpg", "b.png"])               # (2, 1280) float32 numpy array

    export_pt2(model, "student.pt2")                      # torch.export: torch-only runtimes
    export_onnx(model, "student.onnx")                    # for onnxruntime, TensorRT...
    write_model_card("exports/my-run", model.config, {"accuracy": 0.61})  # MODEL_CARD.md

An export folder is what :func:`alignet_engine.stages.export.export_student` writes:
``student.safetensors`` (the student classifier's state dict, with its training config in the
safetensors header metadata, see :func:`alignet_engine.distill.save_student`) and
``student.json`` (architecture, layer, image size, distill parameters, run summary, sha256).

The representation is the one that was aligned. The student may be any model spec the
registry builds (:mod:`alignet_engine.models.spec`: the embedded EfficientNet-Lites,
``torchvision:ARCH``, ``timm:NAME``, ``module.path:factory``, each with ``layer=`` and
``pooling=``); the file records the spec (without its ``weights`` option: the trained weights
are in the file), the layer, the pooling, the feature length and the classifier's class count,
and loading rebuilds that architecture with random weights, resizes its final Linear layer
when the student was fine-tuned from a checkpoint with another class count, loads the file
strictly and reads the representation exactly as training did
(:meth:`alignet_engine.models.Backbone.features`). The default is ``layer = "pre_logits"``,
the classifier's input (for the embedded models the globally pooled output of the last conv
block). A student distilled with a triplet head (``head_dim > 0``) has the head's tensors in
its file (``triplet_head.weight``, ``triplet_head.bias``); the model's embedding is then the
head's output, (b, head_dim) — the space the triplet similarities were trained in — and
``model.backbone_features`` gives the pre-head features. A TorchScript student needs its
``.pt`` file at the path its spec names (the file is its architecture).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from alignet_engine import __version__
from alignet_engine.distill import (
    load_student_config,
    load_student_head,
    load_student_state,
    triplet_head_from_state,
)
from alignet_engine.errors import InputError, ModelUnavailableError
from alignet_engine.files import atomic_path, atomic_write_text
from alignet_engine.models.images import load_image, make_transform
from alignet_engine.models.preprocess import whole_stimulus
from alignet_engine.models.registry import Backbone, ModelSpec, Preprocess, load_backbone

logger = logging.getLogger(__name__)

STUDENT_WEIGHTS = "student.safetensors"
STUDENT_CONFIG = "student.json"
MODEL_CARD = "MODEL_CARD.md"

#: Tolerances of the round-trip checks: TorchScript runs the same kernels as eager PyTorch, so
#: only rounding-level differences are acceptable; onnxruntime fuses and reorders float ops
#: (e.g. BatchNorm folded into convs), which over ~60 layers costs a little more.
TORCHSCRIPT_TOL = 1e-4
#: ``torch.export`` runs the same ATen kernels as eager PyTorch, like TorchScript.
PT2_TOL = 1e-4
ONNX_TOL = 1e-3

#: The lowest opset torch's ``torch.export``-based ONNX exporter writes natively.
MIN_DYNAMO_OPSET = 18

ImageLike = str | os.PathLike[str] | Image.Image


class AlignedModel(nn.Module):
    """An aligned student as a plain PyTorch module: images in, aligned features out.

    Attributes
    ----------
    backbone : the rebuilt :class:`~alignet_engine.models.Backbone` (its :meth:`features`
        reads the stored layer with the stored pooling).
    model : ``backbone.model``, the network holding the loaded weights (registered here, so
        ``.to()``, ``state_dict()`` and tracing see its parameters).
    architecture : the student as the distill run named it (a registry name or model spec).
    spec : the model spec the student was rebuilt from (no ``weights`` option).
    layer : the representation read: ``"pre_logits"``, ``"output"`` or a module name.
    pooling : how that layer's output became (b, d): ``auto``, ``mean``, ``cls``, ``flatten``.
    preprocess : the eval preprocessing, with the exported ``image_size`` (if any) as
        ``input_size``.
    feature_dim : length of the returned vector: ``head_dim`` with a triplet head, else
        ``backbone.feature_dim``.
    head : the triplet head (``nn.Linear`` d → head_dim), or None.
    config : the export's configuration (``student.json`` merged over the checkpoint's own).
    source : the ``.safetensors`` file the weights came from.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        architecture: str,
        preprocess: Preprocess,
        config: Mapping[str, Any],
        source: str,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone  # not an nn.Module: a plain attribute
        self.model = backbone.model
        self.architecture = architecture
        self.spec = backbone.name
        self.layer = backbone.layer
        self.pooling = backbone.pooling
        self.preprocess = preprocess
        self.config = dict(config)
        self.source = source
        self.feature_dim = int(backbone.feature_dim)
        self.head = head
        if head is not None:
            self.feature_dim = int(head.out_features)  # type: ignore[arg-type]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Aligned features of a preprocessed batch.

        Parameters
        ----------
        images : (b, 3, H, W) float32, already preprocessed (see :attr:`transform`); CNNs
            accept any H, W >= 32, :attr:`preprocess` ``.input_size`` is what the model was
            aligned at (and what ``flatten`` pooling and ViTs need).

        Returns
        -------
        torch.Tensor
            (b, feature_dim) float32.
        """
        # The check is skipped while tracing: its Python branches would be baked into the graph
        # as constants (and raise TracerWarnings) without protecting anything at run time.
        if not torch.jit.is_tracing() and (images.ndim != 4 or images.shape[1] != 3):
            raise InputError(
                f"expected a (b, 3, H, W) image batch, got shape {tuple(images.shape)}",
                field="images",
            )
        feats = self.backbone_features(images)
        return feats if self.head is None else self.head(feats)

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's representation (b, d) (stored layer and pooling), before any head."""
        return self.backbone.features(images)

    @property
    def device(self) -> torch.device:
        """The device the parameters are on."""
        return next(self.parameters()).device

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL RGB image → (3, S, S) float32 tensor, ``S = preprocess.input_size``."""
        return make_transform(self.preprocess)

    @torch.no_grad()
    def embed(self, images: Iterable[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Aligned features of image files or PIL images, in input order.

        Parameters
        ----------
        images : file paths (read with :func:`alignet_engine.models.load_image`: EXIF-rotated,
            alpha composited on white) and/or PIL images (converted to RGB).
        batch_size : images per forward pass (>= 1).

        Returns
        -------
        np.ndarray
            (n, feature_dim) float32; (0, feature_dim) for no images.

        Raises
        ------
        InputError
            An unreadable image file (the message names it) or a bad ``batch_size``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(images, str | os.PathLike | Image.Image):
            images = [images]  # one image is a list of one, not a string of characters
        items: Sequence[ImageLike] = list(images)
        transform = self.transform
        was_training = self.training
        self.eval()
        device = self.device
        out: list[np.ndarray] = []
        try:
            for start in range(0, len(items), batch_size):
                batch = [transform(_as_rgb(item)) for item in items[start : start + batch_size]]
                feats = self(torch.stack(batch).to(device))
                out.append(feats.float().cpu().numpy())
        finally:
            self.train(was_training)
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A random (batch, 3, S, S) float32 input at the model's input size, on its device."""
        size = self.preprocess.input_size
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch, 3, size, size, generator=gen).to(self.device)


def _as_rgb(item: ImageLike) -> Image.Image:
    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else item.convert("RGB")
    if isinstance(item, str | os.PathLike):
        return load_image(item)
    raise InputError(f"expected an image file path or a PIL image, got {type(item).__name__}")


# --------------------------------------------------------------------------------------------
# loading


def _resolve(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The weights file and ``student.json``'s content ({} when there is none) for ``path``."""
    p = Path(path)
    if p.is_dir():
        cfg_file = p / STUDENT_CONFIG
        exported = _read_json(cfg_file) if cfg_file.is_file() else {}
        weights = p / str(exported.get("weights", STUDENT_WEIGHTS))
        if not weights.is_file():
            raise InputError(
                f"no {weights.name} in this folder; point at a folder written by "
                "'export student' or at the .safetensors file itself",
                source=p,
            )
        return weights, exported
    if p.is_file():
        if p.suffix != ".safetensors":
            raise InputError(
                "not an aligned-model file; expected an export folder or a .safetensors "
                "student checkpoint",
                source=p,
            )
        # A student.json next to the file describes it only if it names this very file.
        cfg_file = p.with_name(STUDENT_CONFIG)
        exported = _read_json(cfg_file) if cfg_file.is_file() else {}
        if exported.get("weights") != p.name:
            exported = {}
        return p, exported
    raise InputError("no such file or folder", source=p)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable student.json ({exc})", source=path) from None
    if not isinstance(data, dict):
        raise InputError("student.json must hold a JSON object", source=path)
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_aligned_model(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    preprocessing: Literal["model", "whole"] = "model",
) -> AlignedModel:
    """Load an exported aligned student, ready to embed images (no network access).

    Parameters
    ----------
    path : a folder written by AligNet Studio's export (``student.safetensors`` +
        ``student.json``) or a ``.safetensors`` student checkpoint itself.
    device : where to put the model (``"cpu"``, ``"cuda"``, a :class:`torch.device`).
    preprocessing : how :meth:`AlignedModel.embed` prepares images: ``"model"`` — the
        student's own eval preprocessing (resize, centre crop), as it was trained on the pool;
        ``"whole"`` — the whole stimulus resized to the input size with ImageNet mean/std, as
        the app extracts features of image sets people judged (a features run records which
        one it used in ``params["preprocessing"]``).

    Returns
    -------
    AlignedModel
        In eval mode, weights loaded strictly (every tensor present, every shape right).

    Raises
    ------
    InputError
        Missing path, a file that is not a student checkpoint, a checksum mismatch between
        ``student.json`` and the weights, or weights that do not fit the architecture.
    """
    weights, exported = _resolve(path)
    try:
        embedded = load_student_config(weights)
        state = load_student_state(weights)
        head_state = load_student_head(weights)
    except FileNotFoundError:
        raise InputError("no such file", source=weights) from None
    expected_sha = exported.get("weights_sha256")
    if expected_sha and _sha256(weights) != expected_sha:
        raise InputError(
            "the weights do not match the sha256 recorded in student.json; the file was "
            "changed or replaced after export",
            source=weights,
        )
    config = {**embedded, **exported}
    arch = config.get("architecture")
    spec_text = config.get("spec", arch)
    if not isinstance(arch, str) or not isinstance(spec_text, str):
        raise InputError("the checkpoint does not say its architecture", source=weights)
    layer = config.get("layer")
    pooling = config.get("pooling")
    image_size = config.get("image_size")
    backbone = _rebuild(spec_text, layer, pooling, image_size, weights)
    _fit_classifier(backbone.model, config, weights)
    try:
        backbone.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(
            f"the weights do not fit architecture '{arch}': {exc}", source=weights
        ) from None
    expected_dim = config.get("feature_dim")
    if expected_dim is not None and int(expected_dim) != backbone.feature_dim:
        raise InputError(
            f"'{backbone.name}' gives {backbone.feature_dim}-d features here but the student "
            f"was trained on {expected_dim}-d ones (another layer, pooling or input size?)",
            source=weights,
        )

    head = None
    if head_state is not None:
        head = triplet_head_from_state(head_state)
        backbone_dim = backbone.feature_dim
        if head.in_features != backbone_dim:
            raise InputError(
                f"the triplet head expects {head.in_features}-d features but '{arch}' gives "
                f"{backbone_dim}",
                source=weights,
            )

    preprocess = backbone.preprocess
    if isinstance(config.get("preprocess"), Mapping):
        preprocess = Preprocess.from_dict(config["preprocess"])
    if image_size is not None:
        # The student was aligned on inputs of this size (e.g. 128 px for speed on a CPU), so
        # that is the resolution its features are calibrated for.
        preprocess = dataclasses.replace(preprocess, input_size=int(image_size))
    if preprocessing == "whole":
        preprocess = whole_stimulus(preprocess)
    elif preprocessing != "model":
        raise InputError(
            f"preprocessing must be 'model' or 'whole', not {preprocessing!r}",
            field="preprocessing",
        )

    model = AlignedModel(
        backbone,
        architecture=arch,
        preprocess=preprocess,
        config=config,
        source=str(weights),
        head=head,
    )
    model.eval()
    model.to(device)
    logger.info("loaded aligned %s from %s (input %d px)", arch, weights, preprocess.input_size)
    return model


def _rebuild(
    spec_text: str,
    layer: Any,
    pooling: Any,
    image_size: Any,
    source: Path,
) -> Backbone:
    """The student's architecture with random weights, reading the stored layer / pooling.

    The spec's ``weights`` option (a file on the machine that trained the student, or
    ``random``) is dropped: every tensor comes from the student file, so nothing else is
    read or downloaded (``pretrained=False``).
    """
    try:
        spec = dataclasses.replace(ModelSpec.parse(spec_text), weights=None)
    except InputError as exc:
        raise InputError(f"the stored model spec is not valid: {exc}", source=source) from None
    return load_backbone(
        spec,
        pretrained=False,
        layer=str(layer) if layer is not None else None,
        pooling=str(pooling) if pooling is not None else None,
        probe_size=int(image_size) if image_size is not None else None,
    )


def _fit_classifier(model: nn.Module, config: Mapping[str, Any], source: Path) -> None:
    """Resize the final Linear layer to the stored class count if the rebuilt one differs.

    A student fine-tuned from a checkpoint with, e.g., 10 classes has a (10, d) classifier;
    the architecture rebuilt from its spec has the default (1000, d) one. Only that layer's
    shape changes (the representation read before it is the same); its values then come
    from the file.
    """
    name, classes = config.get("classifier"), config.get("num_classes")
    if not isinstance(name, str) or classes is None:
        return
    modules = dict(model.named_modules())
    layer = modules.get(name)
    if not isinstance(layer, nn.Linear) or layer.out_features == int(classes):
        return
    parent_name, _, attr = name.rpartition(".")
    parent = modules[parent_name] if parent_name else model
    replacement = nn.Linear(layer.in_features, int(classes), bias=layer.bias is not None)
    setattr(parent, attr, replacement)
    if hasattr(model, "num_classes"):  # timm models keep their class count as an attribute
        model.num_classes = int(classes)  # type: ignore[assignment]  # Module's __setattr__
    logger.info("resized %s of %s to %d classes", name, source, int(classes))


# --------------------------------------------------------------------------------------------
# conversion


def _max_abs(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a_np = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b_np = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return float(np.max(np.abs(a_np.astype(np.float64) - b_np.astype(np.float64))))


def export_pt2(model: AlignedModel, path: str | os.PathLike[str]) -> Path:
    """Export ``model`` with ``torch.export`` to a ``.pt2`` file and check that it reproduces it.

    ``torch.export`` is PyTorch's successor of TorchScript (deprecated since torch 2.14): the
    file holds the whole graph and the weights, with a dynamic batch axis; the runtime needs
    torch only, not AligNet Studio.

    Parameters
    ----------
    model : from :func:`load_aligned_model`; exported from a CPU copy.
    path : output file, conventionally ``.pt2`` (its folder is created).

    Returns
    -------
    Path
        ``path``. ``torch.export.load(path).module()(x)`` maps (b, 3, S, S) float32 to
        (b, d) float32, for any b >= 1.

    Raises
    ------
    InputError
        The student is read at a hooked layer (a named module, or a classifier's input
        outside timm's pre-logits path): the hook ends the forward pass with an exception,
        which ``torch.export`` cannot follow; export TorchScript or ONNX (opset < 18) instead.
    RuntimeError
        The reloaded program differs from eager PyTorch by more than :data:`PT2_TOL`.
    """
    if _reads_by_hook(model):
        raise InputError(
            f"the student is read at layer {model.layer!r} through a forward hook, which "
            "torch.export cannot follow; export torchscript or onnx instead",
            field="what",
        )
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = model if model.device.type == "cpu" else _cpu_copy(model)
    cpu_model.eval()
    example = cpu_model.example_input(2)
    # written and checked under a temporary name: a failed check leaves no file behind
    with atomic_path(final) as out, torch.no_grad():
        program = torch.export.export(
            cpu_model,
            (example,),
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
        )
        torch.export.save(program, str(out))
        reloaded = torch.export.load(str(out)).module()
        check = cpu_model.example_input(3)  # a batch size unlike the export's: axis is dynamic
        diff = _max_abs(cpu_model(check), reloaded(check))
        if not diff <= PT2_TOL:
            raise RuntimeError(f"torch.export program differs from the model by {diff:.3g}")
    logger.info("wrote torch.export program %s (max abs diff %.3g)", final, diff)
    return final


def export_torchscript(model: AlignedModel, path: str | os.PathLike[str]) -> Path:
    """Trace ``model`` to a TorchScript file and check that the file reproduces it.

    TorchScript is deprecated since torch 2.14 (prefer :func:`export_pt2`); it stays for
    runtimes that only read TorchScript, and for students read at a hooked layer. torch's
    deprecation warnings of the calls made here are not shown: the user chose the format.

    Parameters
    ----------
    model : from :func:`load_aligned_model`.
    path : output ``.pt`` file (its folder is created).

    Returns
    -------
    Path
        ``path``. ``torch.jit.load(path)(x)`` maps (b, 3, S, S) float32 to (b, d) float32.

    Raises
    ------
    RuntimeError
        The reloaded file differs from eager PyTorch by more than :data:`TORCHSCRIPT_TOL`.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = model.example_input(2)
    # written and checked under a temporary name: a failed check leaves no file behind
    with atomic_path(final) as out, torch.no_grad(), _shape_check_traced(), _jit_deprecation():
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out))
        reloaded = torch.jit.load(str(out), map_location=model.device)
        # a different batch size than the trace's, to show the batch axis is not frozen
        check = model.example_input(3)
        diff = _max_abs(model(check), reloaded(check))
        if not diff <= TORCHSCRIPT_TOL:
            raise RuntimeError(
                f"TorchScript export differs from the model by {diff:.3g} (> {TORCHSCRIPT_TOL})"
            )
    logger.info("wrote TorchScript %s (max abs diff %.3g)", final, diff)
    return final


@contextlib.contextmanager
def _shape_check_traced() -> Iterator[None]:
    """Silence the TracerWarning of ``Backbone.features``'s shape check while tracing.

    The check reads the batch's shape in Python; traced, it becomes a constant for the
    traced (b, 3, H, W) layout, which is what the exported graph assumes anyway.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Converting a tensor to a Python boolean", torch.jit.TracerWarning
        )
        yield


@contextlib.contextmanager
def _jit_deprecation() -> Iterator[None]:
    """Silence torch's FutureWarnings that ``torch.jit.trace/save/load`` are deprecated (torch
    2.14), and only those: :func:`export_torchscript` is the caller's explicit choice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime  # type: ignore[import-untyped]
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it, fail early and clearly
    except ImportError:
        raise ModelUnavailableError(
            "ONNX export needs the onnx, onnxruntime and onnxscript packages; install them "
            "with `pip install onnx onnxruntime onnxscript`"
        ) from None
    return onnx, onnxruntime


def export_onnx(
    model: AlignedModel, path: str | os.PathLike[str], opset: int = 18
) -> dict[str, Any]:
    """Export ``model`` to ONNX (dynamic batch axis) and check it with onnxruntime.

    Parameters
    ----------
    model : from :func:`load_aligned_model`.
    path : output ``.onnx`` file (its folder is created).
    opset : ONNX opset version (>= 13). The default 18 uses torch's ``torch.export``-based
        exporter (needs ``onnxscript``), which writes 18 and newer only; below 18, and for a
        student read at a hooked layer (which ``torch.export`` cannot follow), torch's
        deprecated TorchScript-based exporter is used (it warns, and may leave torch).

    Returns
    -------
    dict
        ``{"path": str, "max_abs_diff": float, "opset": int}``: the file, the largest absolute
        difference between onnxruntime (CPU) and PyTorch features on a random batch, and the
        opset written. The graph
        has input ``"images"`` (batch, 3, S, S) float32 and output ``"features"``
        (batch, d) float32.

    Raises
    ------
    ModelUnavailableError
        onnx / onnxruntime are not installed (the message says what to ``pip install``).
    InputError
        A bad ``opset``.
    RuntimeError
        onnxruntime's output differs from PyTorch's by :data:`ONNX_TOL` or more, or the
        exporter did not write the requested opset.
    """
    onnx, ort = _require_onnx()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise InputError(f"opset must be an int >= 13, got {opset!r}", field="opset")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Export from a CPU copy: the file must not depend on where the model happens to live.
    cpu_model = model if model.device.type == "cpu" else _cpu_copy(model)
    cpu_model.eval()
    example = cpu_model.example_input(2)
    # written and checked under a temporary name: a failed check leaves no file behind
    with atomic_path(final) as out:
        with torch.no_grad():
            if opset < MIN_DYNAMO_OPSET or _reads_by_hook(cpu_model):
                # torch.export's ONNX exporter writes opset 18+ and, asked for less, tries a
                # version conversion that fails on Pad (TF "SAME" padding) and silently keeps 18.
                # The TorchScript-based exporter writes older opsets natively (deprecated in torch,
                # hence a FutureWarning, but still the only way to honour opset < 18). It also
                # exports students read at a hooked layer: the hook ends the forward pass with an
                # exception, which tracing follows and torch.export cannot.
                with _shape_check_traced():
                    torch.onnx.export(
                        cpu_model,
                        (example,),
                        str(out),
                        input_names=["images"],
                        output_names=["features"],
                        opset_version=opset,
                        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                        dynamo=False,
                    )
            else:
                program = torch.onnx.export(
                    cpu_model,
                    (example,),
                    input_names=["images"],
                    output_names=["features"],
                    opset_version=opset,
                    dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                    dynamo=True,
                    verbose=False,
                )
                if program is None:  # only the TorchScript-based path returns None
                    raise RuntimeError("torch.onnx.export returned no ONNX program")
                program.save(str(out))
        onnx.checker.check_model(str(out))
        written = {o.domain: o.version for o in onnx.load(str(out)).opset_import}.get("")
        if written != opset:
            raise RuntimeError(f"asked for ONNX opset {opset}, but the exporter wrote {written}")

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        check = cpu_model.example_input(3)  # a batch size unlike the export's: axis is dynamic
        with torch.no_grad():
            expected = cpu_model(check)
        (got,) = session.run(["features"], {"images": check.numpy()})
        diff = _max_abs(expected, got)
        if not diff < ONNX_TOL:
            raise RuntimeError(f"ONNX export differs from the model by {diff:.3g} (>= {ONNX_TOL})")
    logger.info("wrote ONNX %s (opset %d, max abs diff %.3g)", final, opset, diff)
    return {"path": str(final), "max_abs_diff": diff, "opset": opset}


def _reads_by_hook(model: AlignedModel) -> bool:
    """Whether the representation is read by a forward hook (a named layer, or a classifier's
    input outside timm's own pre-logits path), see ``alignet_engine.models.registry``."""
    return model.layer not in ("pre_logits", "output") or model.backbone.head is not None


def _cpu_copy(model: AlignedModel) -> AlignedModel:
    import copy

    return copy.deepcopy(model).to("cpu")


# --------------------------------------------------------------------------------------------
# model card


def _fmt(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _table(rows: Mapping[str, Any]) -> list[str]:
    lines = ["| key | value |", "| --- | --- |"]
    for key, value in rows.items():
        lines.append(f"| {key} | {_fmt(value)} |".replace("\n", " "))
    return lines


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def write_model_card(
    folder: str | os.PathLike[str],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``MODEL_CARD.md`` describing an exported aligned student.

    Only facts from ``config`` and ``metrics`` are written; anything they do not record is
    shown as "not recorded" rather than guessed.

    Parameters
    ----------
    folder : the export folder (created if missing).
    config : the export's configuration, e.g. ``student.json``'s content or
        :attr:`AlignedModel.config` (keys used: ``architecture``, ``layer``, ``image_size``,
        ``preprocess``, ``distill``, ``summary``, ``run``, ``weights``, ``weights_sha256``,
        and, if present, ``triplet_run``, ``image_set``, ``n_triplets``).
    metrics : evaluation results to report (name → value; nested mappings are flattened
        to dotted names), or ``None``.

    Returns
    -------
    Path
        The written ``MODEL_CARD.md``.
    """
    import timm

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    distill = _mapping(config.get("distill"))
    summary = _mapping(config.get("summary"))
    training = _mapping(distill.get("training"))
    arch = config.get("architecture", "not recorded")

    pre = config.get("preprocess")
    if not isinstance(pre, Mapping) and isinstance(arch, str):
        try:
            pre = load_backbone(arch, pretrained=False).preprocess.to_dict()
        except InputError:
            pre = None
    pre_rows: dict[str, Any] = dict(pre) if isinstance(pre, Mapping) else {}
    if config.get("image_size") is not None:
        pre_rows["input_size"] = config["image_size"]

    lines = [
        f"# Model card: aligned {arch}",
        "",
        "A vision backbone fine-tuned with AligNet Studio so that its representation agrees "
        "better with (surrogate) human similarity judgments on odd-one-out triplets.",
        "",
        "## Model",
        "",
        *_table(
            {
                "architecture": arch,
                "representation (layer)": config.get("layer", "pre_logits"),
                "weights file": config.get("weights"),
                "weights sha256": config.get("weights_sha256"),
                "distill run": config.get("run"),
            }
        ),
        "",
        "Load it with `alignet_engine.export_model.load_aligned_model(folder)`; "
        "`model.embed(paths)` returns the aligned features.",
        "",
        "## Preprocessing",
        "",
        "Resize the shorter side to floor(input_size / crop_pct), centre-crop input_size, "
        "scale to [0, 1], normalise with mean/std.",
        "",
        *(_table(pre_rows) if pre_rows else ["not recorded"]),
        "",
        "## Training data",
        "",
        *_table(
            {
                "triplet run": config.get("triplet_run"),
                "pool image set": config.get("image_set", config.get("pool")),
                "number of triplets": config.get("n_triplets"),
                "optimizer steps done": summary.get("steps"),
                "steps configured": training.get("steps"),
            }
        ),
        "",
        "## Parameters",
        "",
        *(_table(_flatten(distill)) if distill else ["not recorded"]),
        "",
        "## Training summary",
        "",
        *(_table(_flatten(summary)) if summary else ["not recorded"]),
        "",
        "## Metrics",
        "",
        *(_table(_flatten(metrics)) if metrics else ["No evaluation metrics were supplied."]),
        "",
        "## Software",
        "",
        *_table(
            {
                "alignet_engine": __version__,
                "exported by AligNet Studio": config.get("alignet_studio"),
                "torch": torch.__version__,
                "timm": timm.__version__,
            }
        ),
        "",
        f"Card written {_dt.date.today().isoformat()}.",
        "",
    ]
    path = atomic_write_text(out_dir / MODEL_CARD, "\n".join(lines))
    logger.info("wrote %s", path)
    return path
