"""Model specs: one short string that says which backbone to build and how to read it.

A spec is accepted wherever a model name is (``load_backbone``, ``ExtractConfig.model``,
``alignet-cli extract --model``, ``distill --student``) and is stored verbatim in run
parameters, so a run can always say, and rebuild, what produced it. Nothing here imports
torch: parsing and labels are pure string work, cheap enough for config validation.

Syntax::

    SPEC    = SOURCE [ "?" OPTION { "&" OPTION } ]
    SOURCE  = efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2     (embedded)
            | torchvision:ARCH[.WEIGHTS]      torchvision:resnet50, ...:resnet50.IMAGENET1K_V1
            | timm:NAME[.TAG]                 timm:convnext_tiny, timm:convnext_tiny.fb_in22k
            | torchscript:PATH | PATH         a TorchScript file (torch.jit.save)
            | MODULE:FACTORY                  my_lab.nets:resnet20 (callable -> nn.Module)
    OPTION  = weights=PATH|random    a state dict (.pt/.pth/.bin/.safetensors), or random init
            | layer=NAME             pre_logits (default), output, or a module name
            | pooling=auto|mean|cls|flatten
            | label=TEXT             the features label (default: derived, see ModelSpec.label)
            | input_size=INT | crop_pct=FLOAT | interpolation=bilinear|bicubic|nearest
            | mean=R,G,B | std=R,G,B  (preprocessing overrides)

A bare ``PATH`` is a source when it contains a path separator or ends in a model-file suffix
(``.pt``, ``.pth``, ``.ts``, ``.torchscript``, ``.jit``). Examples::

    torchvision:resnet18
    torchvision:resnet18?weights=/data/ckpt/finetuned.pth&layer=layer3&pooling=mean
    timm:vit_small_patch16_224.augreg_in21k?layer=blocks.11&pooling=cls
    /models/encoder.torchscript.pt?input_size=160
    lab_models.cifar:resnet20?weights=/data/resnet20-12fca82f.th&mean=0.485,0.456,0.406
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

from alignet_engine.errors import InputError

EMBEDDED_MODELS: tuple[str, ...] = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
)

#: how a layer's output becomes (n, d) features
POOLINGS: tuple[str, ...] = ("auto", "mean", "cls", "flatten")

SpecKind = Literal["embedded", "torchvision", "timm", "torchscript", "module"]
KINDS: tuple[str, ...] = ("embedded", "torchvision", "timm", "torchscript", "module")


#: The representation every model has a default for: the input of the final classifier (the
#: globally pooled features for CNNs, the normed class token for ViTs).
PRE_LOGITS = "pre_logits"
#: The model's own output (logits for a classifier, the embedding for a feature extractor).
OUTPUT = "output"

#: ``weights=random``: the architecture with its random initialisation (baselines, tests).
RANDOM_WEIGHTS = "random"

MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
PREPROCESS_KEYS = ("input_size", "crop_pct", "interpolation", "mean", "std")
OPTION_KEYS = ("weights", "layer", "pooling", "label", *PREPROCESS_KEYS)

#: Longest label; HDF5 names and file names are fine far beyond this, but labels are shown in
#: tables and typed on command lines.
MAX_LABEL = 80

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]+")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec (see the module docstring for the string syntax).

    Attributes
    ----------
    kind : ``"embedded"``, ``"torchvision"``, ``"timm"``, ``"torchscript"`` or ``"module"``.
    source : what follows the prefix: the embedded name, the torchvision architecture (with an
        optional ``.WEIGHTS`` enum member), the timm model name (with an optional ``.tag``),
        the TorchScript file path, or ``module.path:factory``.
    weights : a state-dict file replacing the default weights, ``"random"``, or ``None``
        (the default weights: the packaged ones, the local torch / Hugging Face caches).
    layer : ``None`` (= ``"pre_logits"``), ``"output"`` or a module name (see ``list_layers``).
    pooling : how a layer's output becomes a (b, d) vector; ``None`` = ``"auto"``.
    label : the features label to use instead of the derived one.
    preprocess : overrides of the model's own preprocessing, as sorted ``(key, value)`` pairs.
    """

    kind: SpecKind
    source: str
    weights: str | None = None
    layer: str | None = None
    pooling: str | None = None
    label_override: str | None = None
    preprocess: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown model kind {self.kind!r}; use one of {KINDS}", field="model")
        if not self.source:
            raise InputError("the model spec names no model", field="model")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise InputError(
                f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}", field="pooling"
            )
        for key, value in (("weights", self.weights), ("layer", self.layer)):
            if value is not None and (not value or "?" in value or "&" in value):
                raise InputError(f"{key} {value!r} is empty or contains '?' or '&'", field=key)
        object.__setattr__(
            self, "preprocess", tuple(sorted(_check_preprocess(dict(self.preprocess)).items()))
        )

    # ------------------------------------------------------------------ parsing / printing
    @classmethod
    def parse(cls, text: str | ModelSpec) -> ModelSpec:
        """Parse a spec string (a :class:`ModelSpec` is returned as is).

        Raises
        ------
        InputError
            Not a string, an empty spec, an unknown option, or a malformed value; the message
            shows the accepted syntax.
        """
        if isinstance(text, ModelSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise InputError(
                f"a model spec must be a non-empty string, got {text!r}", field="model"
            )
        text = text.strip()
        head, sep, query = text.partition("?")
        options = _parse_options(query, text) if sep else {}
        kind, source = _parse_source(head)
        pre = {k: options.pop(k) for k in PREPROCESS_KEYS if k in options}
        return cls(
            kind=kind,
            source=source,
            weights=options.get("weights"),
            layer=options.get("layer"),
            pooling=options.get("pooling"),
            label_override=options.get("label"),
            preprocess=tuple(pre.items()),
        )

    def to_string(self) -> str:
        """The canonical spec string; ``ModelSpec.parse(s.to_string()) == s``."""
        head = {
            "embedded": self.source,
            "torchvision": f"torchvision:{self.source}",
            "timm": f"timm:{self.source}",
            "torchscript": f"torchscript:{self.source}",
            "module": self.source,
        }[self.kind]
        opts: list[tuple[str, str]] = [
            (k, v)
            for k, v in (
                ("weights", self.weights),
                ("layer", self.layer),
                ("pooling", self.pooling),
                ("label", self.label_override),
            )
            if v is not None
        ]
        for key, value in self.preprocess:
            text = ",".join(_num(v) for v in value) if key in ("mean", "std") else _num(value)
            opts.append((key, text))
        return head + ("?" + "&".join(f"{k}={v}" for k, v in opts) if opts else "")

    def __str__(self) -> str:
        return self.to_string()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (only the fields that are set)."""
        out: dict[str, Any] = {"kind": self.kind, "source": self.source}
        for key in ("weights", "layer", "pooling"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.label_override is not None:
            out["label"] = self.label_override
        for key, value in self.preprocess:
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`."""
        known = {"kind", "source", "weights", "layer", "pooling", "label", *PREPROCESS_KEYS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown model spec keys {unknown}", field="model")
        if "kind" not in data or "source" not in data:
            raise InputError("a model spec dict needs 'kind' and 'source'", field="model")
        return cls(
            kind=data["kind"],
            source=str(data["source"]),
            weights=data.get("weights"),
            layer=data.get("layer"),
            pooling=data.get("pooling"),
            label_override=data.get("label"),
            preprocess=tuple((k, data[k]) for k in PREPROCESS_KEYS if k in data),
        )

    def with_options(
        self,
        *,
        weights: str | None = None,
        layer: str | None = None,
        pooling: str | None = None,
    ) -> ModelSpec:
        """A copy with the given options replacing the spec's own (``None`` keeps them)."""
        changes: dict[str, Any] = {}
        if weights is not None:
            changes["weights"] = str(weights)
        if layer is not None:
            changes["layer"] = layer
        if pooling is not None:
            changes["pooling"] = pooling
        return dataclasses.replace(self, **changes) if changes else self

    # ------------------------------------------------------------------ derived names
    @property
    def preprocess_overrides(self) -> dict[str, Any]:
        return dict(self.preprocess)

    @property
    def label(self) -> str:
        """A short label for features and files: safe in HDF5 paths, file names and slots.

        The user's ``label`` option wins. Otherwise: the embedded name as is
        (``efficientnet_lite0``), ``torchvision-ARCH``, ``timm-NAME``, the TorchScript file's
        stem, or the dotted ``module.factory`` path; then ``=STEM`` for a weights file,
        ``@LAYER`` for a layer other than the default and ``,POOLING`` for a pooling other
        than ``auto``. Characters other than ``A-Z a-z 0-9 . _ + = @ , -`` become ``-`` (no
        ``:`` or ``/``: those separate slot parts and HDF5 groups). Labels longer than
        :data:`MAX_LABEL` are shortened and end in a hash of the full label, so two long
        specs never share a label by truncation.
        """
        if self.label_override is not None:
            return sanitize_label(self.label_override)
        if self.kind == "embedded":
            base = self.source
        elif self.kind in ("torchvision", "timm"):
            base = f"{self.kind}-{self.source}"
        elif self.kind == "torchscript":
            base = _stem(self.source)
        else:
            base = self.source.replace(":", ".")
        if self.weights is not None:
            base += "=" + (
                RANDOM_WEIGHTS if self.weights == RANDOM_WEIGHTS else _stem(self.weights)
            )
        if self.layer not in (None, PRE_LOGITS):
            base += f"@{self.layer}"
        if self.pooling not in (None, "auto"):
            base += f",{self.pooling}"
        return sanitize_label(base)


def parse_spec(text: str | ModelSpec) -> ModelSpec:
    """Shorthand for :meth:`ModelSpec.parse`."""
    return ModelSpec.parse(text)


def resolve_spec(
    model: str | ModelSpec,
    *,
    weights: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
) -> ModelSpec:
    """Parse ``model`` and let explicit ``weights`` / ``layer`` / ``pooling`` replace its own.

    ``pooling="auto"`` and ``layer="pre_logits"`` given explicitly count as "not given", so a
    config's defaults never override options written into the spec string.
    """
    spec = ModelSpec.parse(model)
    return spec.with_options(
        weights=weights or None,
        layer=None if layer in (None, "", PRE_LOGITS) else layer,
        pooling=None if pooling in (None, "", "auto") else pooling,
    )


def model_label(
    model: str | ModelSpec,
    *,
    weights: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
) -> str:
    """The features label of ``model`` with these options (see :attr:`ModelSpec.label`)."""
    return resolve_spec(model, weights=weights, layer=layer, pooling=pooling).label


def sanitize_label(text: str) -> str:
    """Make ``text`` a safe label (see :attr:`ModelSpec.label`)."""
    clean = _LABEL_UNSAFE.sub("-", text).strip("-.") or "model"
    if len(clean) > MAX_LABEL:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        clean = clean[: MAX_LABEL - 9].rstrip("-.") + "-" + digest
    return clean


# ---------------------------------------------------------------------------------- helpers
def looks_like_path(text: str) -> bool:
    """Whether a spec source is a file path rather than a name."""
    return (
        "/" in text
        or "\\" in text
        or text.startswith((".", "~"))
        or text.lower().endswith(MODEL_FILE_SUFFIXES)
    )


def _parse_source(head: str) -> tuple[SpecKind, str]:
    syntax = (
        "write efficientnet_lite0|1|2, torchvision:ARCH, timm:NAME, a TorchScript file path, "
        "or module.path:factory"
    )
    if head in EMBEDDED_MODELS:
        return "embedded", head
    for prefix in ("torchvision", "timm", "torchscript"):
        if head.startswith(prefix + ":"):
            rest = head[len(prefix) + 1 :].strip()
            if not rest:
                raise InputError(
                    f"'{head}' names no model after '{prefix}:'; {syntax}", field="model"
                )
            return prefix, rest  # type: ignore[return-value]
    if looks_like_path(head):
        return "torchscript", head
    module, colon, attr = head.partition(":")
    if colon:
        if not all(_IDENT.match(p) for p in module.split(".")) or not all(
            _IDENT.match(p) for p in attr.split(".")
        ):
            raise InputError(
                f"'{head}' is not module.path:factory (dotted Python names); {syntax}",
                field="model",
            )
        return "module", head
    # A bare name: most likely a mistyped embedded model; the registry lists near matches.
    return "embedded", head


def _parse_options(query: str, text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise InputError(f"option '{item}' in '{text}' is not KEY=VALUE", field="model")
        if key not in OPTION_KEYS:
            raise InputError(
                f"unknown option '{key}' in '{text}'; options: {', '.join(OPTION_KEYS)}",
                field="model",
            )
        if key in options:
            raise InputError(f"option '{key}' given twice in '{text}'", field="model")
        options[key] = value
    return options


def _check_preprocess(values: dict[str, Any]) -> dict[str, Any]:
    """Typed, range-checked preprocessing overrides (strings from a spec are converted)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        try:
            if key == "input_size":
                out[key] = int(value)
                ok = out[key] >= 1
            elif key == "crop_pct":
                out[key] = float(value)
                ok = 0.0 < out[key] <= 1.0
            elif key == "interpolation":
                out[key] = str(value)
                ok = out[key] in ("bicubic", "bilinear", "nearest")
            elif key in ("mean", "std"):
                parts = value.split(",") if isinstance(value, str) else list(value)
                out[key] = tuple(float(v) for v in parts)
                ok = len(out[key]) == 3 and (key == "mean" or min(out[key]) > 0)
            else:
                raise InputError(f"unknown preprocessing key '{key}'", field=key)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(
                f"bad value {value!r}: input_size is a positive int, crop_pct in (0, 1], "
                "interpolation bicubic|bilinear|nearest, mean/std three numbers R,G,B "
                "(std > 0)",
                field=key,
            )
    return out


def _num(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _stem(path: str) -> str:
    name = PurePath(path.replace("\\", "/")).name
    suffixes = (".safetensors", *MODEL_FILE_SUFFIXES, ".bin", ".th", ".ckpt")
    stripped = True
    while stripped:  # "encoder.torchscript.pt" -> "encoder"
        stripped = False
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name, stripped = name[: -len(suffix)], True
                break
    return name
