"""Reading a representation out of any ``nn.Module``: layer listing, hooks and pooling.

A representation is the output of one module (or, for ``pre_logits``, the *input* of the
final classifier layer), reduced to a (b, d) vector by a pooling rule. It is read with a
forward hook that stops the forward pass once the tensor is captured: nothing after the layer
is computed, and the captured tensor keeps its autograd graph, so distillation can train
through it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alignet_engine.errors import InputError
from alignet_engine.models.spec import OUTPUT, POOLINGS, PRE_LOGITS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerInfo:
    """One module of a model, as :func:`list_layers` reports it.

    name : the module's qualified name (what ``layer=`` takes); ``"output"`` for the model.
    type : the module's class name.
    shape : shape of its output for the probe input (batch axis included), or ``None`` when
        the module did not run in the probe's forward pass (or returned no tensor).
    calls : how often it ran in one forward pass (a module run twice is read at its first run).
    """

    name: str
    type: str
    shape: tuple[int, ...] | None
    calls: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "shape": list(self.shape) if self.shape is not None else None,
            "calls": self.calls,
        }


class _Captured(Exception):
    """Raised by a hook to end the forward pass once the wanted tensor is captured."""


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in a module's output (a tensor, or a tuple / list / dict holding one)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def is_scripted(model: nn.Module) -> bool:
    """TorchScript modules run a compiled graph: hooks on their submodules never fire."""
    return isinstance(model, torch.jit.ScriptModule)


def probe_input(model: nn.Module, size: int, batch: int = 1) -> torch.Tensor:
    """A fixed pseudo-random (batch, 3, size, size) input on the model's device and dtype."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=gen).to(device=device, dtype=dtype)


class _EvalNoGrad:
    """Eval mode and no autograd for a probe; the training flags are restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.grad = torch.no_grad()
        self.grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.grad.__exit__(*exc)
        for m, mode in self.modes:
            m.training = mode


def list_layers(model: nn.Module, input_size: int = 224) -> list[LayerInfo]:
    """Every module of ``model`` with its output shape for a probe image.

    Parameters
    ----------
    model : any ``nn.Module`` taking (b, 3, H, W) images.
    input_size : side of the square probe input, pixels (use the model's own input size:
        ViTs accept only that).

    Returns
    -------
    list[LayerInfo]
        ``"output"`` (the model itself) first, then every named submodule in registration
        order. TorchScript models list their modules with ``shape=None`` (their compiled
        graph runs no hooks), except ``"output"``.
    """
    x = probe_input(model, input_size)
    shapes: dict[str, tuple[int, ...] | None] = {}
    calls: dict[str, int] = {}
    handles = []
    named = [(n, m) for n, m in model.named_modules() if n]
    if not is_scripted(model):
        for name, module in named:

            def hook(_m: nn.Module, _args: Any, out: Any, name: str = name) -> None:
                calls[name] = calls.get(name, 0) + 1
                if name not in shapes:
                    t = first_tensor(out)
                    shapes[name] = tuple(t.shape) if t is not None else None

            handles.append(module.register_forward_hook(hook))
    try:
        with _EvalNoGrad(model):
            out = first_tensor(model(x))
    finally:
        for h in handles:
            h.remove()
    layers = [
        LayerInfo(OUTPUT, type(model).__name__, tuple(out.shape) if out is not None else None)
    ]
    for name, module in named:
        layers.append(LayerInfo(name, _type_name(module), shapes.get(name), calls.get(name, 0)))
    return layers


def _type_name(module: nn.Module) -> str:
    if is_scripted(module):
        return getattr(module, "original_name", type(module).__name__)
    return type(module).__name__


def find_classifier(model: nn.Module, input_size: int) -> str | None:
    """The name of the final classifier: the last ``nn.Linear`` run whose output is the model's.

    This is how ``pre_logits`` is found in models that do not say (torchvision, user modules):
    ResNet's ``fc``, VGG's ``classifier.6``, ViT's ``heads.head``, ConvNeXt's ``classifier.2``.
    Returns ``None`` when the output does not come from a Linear layer (a feature extractor,
    SqueezeNet's conv classifier, a TorchScript graph).
    """
    if is_scripted(model):
        return None
    order: list[tuple[str, torch.Tensor]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):

            def hook(_m: nn.Module, _args: Any, out: Any, name: str = name) -> None:
                order.append((name, out))

            handles.append(module.register_forward_hook(hook))
    try:
        with _EvalNoGrad(model):
            result = first_tensor(model(probe_input(model, input_size)))
    finally:
        for h in handles:
            h.remove()
    if not order or result is None:
        return None
    name, out = order[-1]
    if out is result or (out.shape == result.shape and torch.equal(out, result)):
        return name
    return None


def has_class_token(model: nn.Module) -> bool:
    """Whether the model has a class token (timm ``cls_token``, torchvision ``class_token``)."""
    return any(
        isinstance(getattr(model, attr, None), torch.Tensor)
        for attr in ("cls_token", "class_token")
    )


def pool(t: torch.Tensor, pooling: str, *, class_token: bool = False) -> torch.Tensor:
    """Reduce a layer's output to (b, d).

    Parameters
    ----------
    t : (b, d), (b, t, d) tokens, (b, c, h, w) channels-first maps, or any (b, ...) tensor.
    pooling : ``"mean"``: spatial mean over (h, w) of a 4-d map, token mean of a 3-d tensor;
        ``"cls"``: token 0 of a (b, t, d) tensor; ``"flatten"``: ``t.flatten(1)``;
        ``"auto"``: (b, d) as is, 4-d → mean, 3-d → cls when the model has a class token
        (``class_token``) else the token mean, anything else → flatten.

    Returns
    -------
    torch.Tensor
        (b, d), differentiable.
    """
    if pooling not in POOLINGS:
        raise InputError(
            f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}", field="pooling"
        )
    if t.ndim < 2:
        raise InputError(
            f"the layer's output has shape {tuple(t.shape)}, not (batch, ...); pick another layer",
            field="layer",
        )
    if pooling == "auto":
        if t.ndim == 2:
            return t
        if t.ndim == 4:
            pooling = "mean"
        elif t.ndim == 3:
            pooling = "cls" if class_token else "mean"
        else:
            pooling = "flatten"
    if pooling == "flatten":
        return t.flatten(1)
    if pooling == "cls":
        if t.ndim != 3:
            raise InputError(
                f"pooling 'cls' takes token 0 of a (b, tokens, d) output; this layer gives "
                f"{tuple(t.shape)}; use mean or flatten",
                field="pooling",
            )
        return t[:, 0]
    # mean
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    if t.ndim == 2:
        return t
    raise InputError(
        f"pooling 'mean' takes a (b, c, h, w) or (b, tokens, d) output; this layer gives "
        f"{tuple(t.shape)}; use flatten",
        field="pooling",
    )


class LayerReader:
    """Reads one layer's (pooled) representation; ``reader(model, x)`` gives (b, d).

    Parameters
    ----------
    model : the model the reader belongs to (used to find the module by name).
    layer : ``"output"``, or a module name, or a module name whose *input* is wanted
        (``use_input=True``, how ``pre_logits`` reads a classifier's input).
    pooling : see :func:`pool`.
    class_token : whether ``auto`` pooling of a (b, t, d) output takes token 0.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        pooling: str = "auto",
        use_input: bool = False,
        class_token: bool = False,
    ) -> None:
        self.layer = layer
        self.use_input = use_input
        self.pooling = pooling
        self.class_token = class_token
        if layer != OUTPUT:
            module_for(model, layer)  # fail now, with the list of names, not at the first batch

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.layer == OUTPUT:
            out = first_tensor(model(x))
            if out is None:
                raise InputError("the model's output holds no tensor", field="layer")
            return pool(out, self.pooling, class_token=self.class_token)
        module = module_for(model, self.layer)
        captured: list[Any] = []
        if self.use_input:

            def pre_hook(_m: nn.Module, args: Any) -> None:
                captured.append(args)
                raise _Captured

            handle = module.register_forward_pre_hook(pre_hook)
        else:

            def hook(_m: nn.Module, _args: Any, out: Any) -> None:
                captured.append(out)
                raise _Captured

            handle = module.register_forward_hook(hook)
        try:
            model(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        t = first_tensor(captured[0]) if captured else None
        if t is None:
            what = "input" if self.use_input else "output"
            raise InputError(
                f"layer '{self.layer}' did not run (or its {what} holds no tensor) in the "
                "forward pass; choose a layer that `alignet-cli layers` lists with a shape",
                field="layer",
            )
        return pool(t, self.pooling, class_token=self.class_token)


class MultiLayerReader:
    """Several representations of one model read in ONE forward pass; ``reader(model, x)``
    gives (b, d_1 + ... + d_k), the layers' pooled outputs side by side in the order given.

    Parameters
    ----------
    readers : one per layer: a :class:`LayerReader`, or None for timm's own pre-logits path
        (``forward_head(forward_features(x), pre_logits=True)``, as a :class:`Backbone`
        without a reader computes it).

    Every hooked module keeps the first output (or input) it produces, as a single
    :class:`LayerReader` does; the pass stops as soon as all are captured unless the model's
    output or timm's pre-logits are among the layers (then the whole network runs once).
    """

    def __init__(self, readers: list[LayerReader | None]) -> None:
        if not readers:
            raise ValueError("MultiLayerReader needs at least one layer")
        self.readers = readers

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        hooked = [j for j, r in enumerate(self.readers) if r is not None and r.layer != OUTPUT]
        pre_logits = any(r is None for r in self.readers)
        output = any(r is not None and r.layer == OUTPUT for r in self.readers)
        full = pre_logits or output
        captured: dict[int, Any] = {}

        def keep(j: int, value: Any) -> None:
            captured.setdefault(j, value)
            if not full and len(captured) == len(hooked):
                raise _Captured

        handles = []
        for j in hooked:
            r = self.readers[j]
            assert r is not None
            module = module_for(model, r.layer)
            if r.use_input:
                handles.append(
                    module.register_forward_pre_hook(lambda _m, args, j=j: keep(j, args))
                )
            else:
                handles.append(module.register_forward_hook(lambda _m, _a, out, j=j: keep(j, out)))
        pre: torch.Tensor | None = None
        out: Any = None
        try:
            if pre_logits:
                timm_model: Any = model
                f = timm_model.forward_features(x)
                pre = timm_model.forward_head(f, pre_logits=True)
                if output:
                    out = timm_model.forward_head(f)  # what model(x) is for a timm model
            else:
                out = model(x)
        except _Captured:
            pass
        finally:
            for h in handles:
                h.remove()
        parts = []
        for j, r in enumerate(self.readers):
            if r is None:
                assert pre is not None
                parts.append(pre)
                continue
            t = first_tensor(out if r.layer == OUTPUT else captured.get(j))
            if t is None:
                raise InputError(
                    f"layer '{r.layer}' did not run (or gives no tensor) in the forward pass; "
                    "choose layers that `alignet-cli layers` lists with a shape",
                    field="layer",
                )
            parts.append(pool(t, r.pooling, class_token=r.class_token))
        return torch.cat(parts, dim=1)


def module_for(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name lists the closest ones."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    import difflib

    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(
        f"the model has no layer '{name}'{hint} (`alignet-cli layers SPEC` lists them; "
        f"'{PRE_LOGITS}' and '{OUTPUT}' always exist)",
        field="layer",
    )
