"""Building models offline from torchvision, timm, TorchScript files and user modules.

Nothing here downloads. Pretrained weights come from the local caches the libraries
themselves use — torch hub's ``<TORCH_HOME>/hub/checkpoints`` for torchvision (and timm
weights hosted by URL), the Hugging Face hub cache for timm — or from a file the user names.
When a file is missing, :class:`ModelUnavailableError` says which file and where to put it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import nn

from alignet_engine.errors import InputError, ModelUnavailableError
from alignet_engine.models.preprocess import IMAGENET_DEFAULT, Preprocess, crop_pct_for
from alignet_engine.models.spec import RANDOM_WEIGHTS, ModelSpec

logger = logging.getLogger(__name__)

#: What the messages suggest for running without pretrained weights.
RANDOM_HINT = "or use weights=random (`--weights random`) for a randomly initialised model"

#: Keys under which training scripts commonly nest the state dict in a checkpoint dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module")
#: Prefixes wrappers add to every key: nn.DataParallel / DDP, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Built:
    """A model built by one of the loaders, before it becomes a :class:`Backbone`."""

    model: nn.Module
    preprocess: Preprocess
    arch: str
    weights: str  # a file name / path, "random-init", or "torchscript"


# ------------------------------------------------------------------------------- caches
def torch_hub_checkpoints() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``: where torch hub (and torchvision) cache weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def has_hf_hub() -> bool:
    return importlib.util.find_spec("huggingface_hub") is not None


def hf_cached_file(repo_id: str, filename: str) -> str | None:
    """Path of ``filename`` of ``repo_id`` in the local HF cache, or ``None``; never online."""
    if not has_hf_hub():
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_hub_cache()))
    return found if isinstance(found, str) and os.path.isfile(found) else None


# ------------------------------------------------------------------------------- weights files
def is_torchscript_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with compiled ``code/``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/")[1:2] == ["code"] for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, IndexError):
        return False


def read_state_dict(path: str | os.PathLike[str], *, field: str = "weights") -> dict[str, Any]:
    """Tensors of a state-dict file, unwrapped and with wrapper prefixes removed.

    Parameters
    ----------
    path : ``.safetensors``, or a ``torch.save`` file (zip or legacy format) holding a state
        dict, possibly nested under ``state_dict`` / ``model`` / ... in a checkpoint dict.
        Read with ``weights_only=True``: a file that needs arbitrary unpickling (a whole
        pickled model) is refused rather than executed.

    Returns
    -------
    dict[str, torch.Tensor]
        Keys without a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix.

    Raises
    ------
    ModelUnavailableError
        The file does not exist.
    InputError
        Not a readable state dict (the message says what the file holds and what to do).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelUnavailableError(
            f"weights file {p} not found (field '{field}'); give the path of a state dict "
            f"(.pt/.pth/.bin/.safetensors), {RANDOM_HINT}"
        )
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(
                f"not a readable safetensors file ({exc})", source=p, field=field
            ) from None
    else:
        if is_torchscript_file(p):
            raise InputError(
                "this is a TorchScript model, not a state dict; give it as the model itself "
                f"(--model {p}) instead of as weights",
                source=p,
                field=field,
            )
        try:
            data = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise InputError(
                "the file holds Python objects other than tensors (a whole pickled model?); "
                "weights are never unpickled as code: save `model.state_dict()` with torch.save "
                f"or safetensors, or save the model as TorchScript ({str(exc).splitlines()[0]})",
                source=p,
                field=field,
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise InputError(f"not a readable torch file ({exc})", source=p, field=field) from None
    state = _unwrap(data, p, field)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _unwrap(data: Any, path: Path, field: str) -> dict[str, torch.Tensor]:
    def tensors(d: Mapping[Any, Any]) -> dict[str, torch.Tensor]:
        return {str(k): v for k, v in d.items() if isinstance(v, torch.Tensor)}

    if isinstance(data, Mapping):
        direct = tensors(data)
        if direct and len(direct) * 2 >= len(data):
            return direct
        for key in _NESTED_KEYS:
            inner = data.get(key)
            if isinstance(inner, Mapping) and tensors(inner):
                logger.info("%s: using the state dict under '%s'", path, key)
                return tensors(inner)
        keys = ", ".join(map(str, list(data)[:8]))
        raise InputError(
            f"holds a dict without a state dict in it (keys: {keys}); expected tensors, or a "
            f"checkpoint with one of {', '.join(_NESTED_KEYS)}",
            source=path,
            field=field,
        )
    raise InputError(
        f"holds a {type(data).__name__}, not a state dict; save `model.state_dict()`",
        source=path,
        field=field,
    )


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], path: str, arch: str) -> None:
    """Load ``state`` into ``model``: every parameter and buffer must be there, shapes right.

    BatchNorm's ``num_batches_tracked`` counters may be missing (older torch did not save
    them; they do not affect eval outputs), nothing else. Mismatches raise :class:`InputError`
    listing the first offending keys, so a wrong architecture is named, not half-loaded.
    """
    target = model.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (file vs model: {'; '.join(wrong[:3])})")
        raise InputError(
            f"the weights do not fit architecture '{arch}': {'; '.join(parts)}; check that the "
            "file belongs to this architecture",
            source=path,
            field="weights",
        )
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)


def _head_mismatch_classes(
    model: nn.Module, state: Mapping[str, torch.Tensor], head: str | None
) -> int | None:
    """The file's class count when only the classifier ``head`` differs in shape, else None.

    A fine-tuned checkpoint (e.g. 10 CIFAR classes) fits the architecture built with that
    many classes; everything else must match exactly.
    """
    if not head:
        return None
    target = model.state_dict()
    wrong = [k for k in target if k in state and state[k].shape != target[k].shape]
    key = f"{head}.weight"
    if wrong and all(k.startswith(head + ".") for k in wrong) and key in state:
        return int(state[key].shape[0])
    return None


def _last_linear(model: nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _weights_label(path: str) -> str:
    return str(Path(path).expanduser())


# ------------------------------------------------------------------------------- torchvision
def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _unknown(kind: str, name: str, names: list[str]) -> InputError:
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.6)
    hint = f"; did you mean {', '.join(f'{kind}:{c}' for c in close)}?" if close else ""
    return InputError(
        f"{kind} has no architecture '{name}'{hint} (`alignet-cli models` explains the specs)",
        field="model",
    )


def _torchvision_weights(arch: str, member: str | None) -> Any:
    """The weights enum entry (``DEFAULT`` unless ``member`` names one), or None if none exist."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return None
    if member is None:
        return enum.DEFAULT if hasattr(enum, "DEFAULT") else next(iter(enum))
    if member not in enum.__members__:
        raise InputError(
            f"torchvision:{arch} has no weights '{member}'; it has {', '.join(enum.__members__)}",
            field="model",
        )
    return enum[member]


def torchvision_preprocess(weights: Any) -> Preprocess:
    """Eval preprocessing from a torchvision weights entry's ``transforms()``."""
    if weights is None:
        return IMAGENET_DEFAULT
    t = weights.transforms()
    try:
        crop = int(_first(t.crop_size))
        resize = int(_first(t.resize_size))
        interp = str(getattr(t.interpolation, "value", t.interpolation)).lower()
        return Preprocess(
            input_size=crop,
            mean=tuple(float(v) for v in t.mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in t.std),  # type: ignore[arg-type]
            interpolation=interp if interp in ("bicubic", "bilinear", "nearest") else "bilinear",
            crop_pct=crop_pct_for(crop, resize) if resize >= crop else 1.0,
        )
    except (AttributeError, TypeError, ValueError):
        logger.warning("cannot read the transforms of %s; using ImageNet defaults", weights)
        return IMAGENET_DEFAULT


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) else value


def build_torchvision(spec: ModelSpec, pretrained: bool) -> Built:
    """``torchvision:ARCH[.WEIGHTS]`` with cached, explicit or random weights."""
    import torchvision

    arch, _, member = spec.source.partition(".")
    names = torchvision_names()
    if arch not in names:
        raise _unknown("torchvision", arch, names)
    entry = _torchvision_weights(arch, member or None)
    preprocess = torchvision_preprocess(entry)
    explicit = spec.weights not in (None, RANDOM_WEIGHTS)
    if not pretrained or spec.weights == RANDOM_WEIGHTS:
        model = torchvision.models.get_model(arch, weights=None)
        return Built(model, preprocess, f"torchvision:{arch}", "random-init")
    if explicit:
        assert spec.weights is not None
        state = read_state_dict(spec.weights)
        model = torchvision.models.get_model(arch, weights=None)
        classes = _head_mismatch_classes(model, state, _last_linear(model))
        if classes is not None:
            model = torchvision.models.get_model(arch, weights=None, num_classes=classes)
        load_into(model, state, spec.weights, f"torchvision:{arch}")
        return Built(model, preprocess, f"torchvision:{arch}", _weights_label(spec.weights))
    if entry is None:
        raise ModelUnavailableError(
            f"torchvision:{arch} has no pretrained weights in torchvision; pass a state dict "
            f"with weights=PATH (`--weights PATH`), {RANDOM_HINT}"
        )
    filename = entry.url.rsplit("/", 1)[-1]
    folder = torch_hub_checkpoints()
    path = folder / filename
    if not path.is_file():
        raise ModelUnavailableError(
            f"torchvision:{arch} ({entry}) needs the weights file '{filename}' in {folder} and "
            f"nothing is downloaded; copy it there from a machine that has it (torchvision "
            f"downloads it from {entry.url}), or set TORCH_HOME to a folder whose "
            f"hub/checkpoints holds it, or pass the file with weights=PATH (`--weights PATH`), "
            f"{RANDOM_HINT}"
        )
    # The file exists, so torch.hub.load_state_dict_from_url only reads it (its hash is checked
    # on download only). Building through torchvision keeps its per-model fix-ups (DenseNet's
    # old key names, Inception's transform_input) that a plain load_state_dict would miss.
    model = torchvision.models.get_model(arch, weights=entry, progress=False)
    logger.info("loaded torchvision:%s from %s", arch, path)
    return Built(model, preprocess, f"torchvision:{arch}", str(path))


def cached_torchvision_weights() -> list[dict[str, str]]:
    """Every torchvision weights entry whose file lies in the torch hub cache."""
    import torchvision

    folder = torch_hub_checkpoints()
    if not folder.is_dir():
        return []
    present = {p.name for p in folder.iterdir()}
    found = []
    for arch in torchvision_names():
        try:
            enum = torchvision.models.get_model_weights(arch)
        except (ValueError, KeyError):
            continue
        for member in enum:
            filename = member.url.rsplit("/", 1)[-1]
            if filename in present:
                found.append(
                    {"spec": f"torchvision:{arch}.{member.name}", "file": str(folder / filename)}
                )
    return found


# ------------------------------------------------------------------------------- timm
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm_create(name: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise _unknown("timm", name, timm.list_models()) from None
        raise


def timm_cached_file(cfg: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(cached weights file or None, places looked in) for a timm pretrained config."""
    looked: list[str] = []
    hf_id = cfg.get("hf_hub_id")
    if hf_id:
        filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HF_FILES
        repo_dir = hf_hub_cache() / ("models--" + str(hf_id).replace("/", "--"))
        for filename in filenames:
            found = hf_cached_file(str(hf_id), filename)
            if found:
                return found, looked
        looked.append(
            f"{' or '.join(filenames)} of Hugging Face repo {hf_id} in {repo_dir}/snapshots/*"
        )
    url = cfg.get("url")
    if url:
        path = torch_hub_checkpoints() / str(url).rsplit("/", 1)[-1]
        if path.is_file():
            return str(path), looked
        looked.append(f"'{path.name}' in {path.parent}")
    return None, looked


def build_timm(spec: ModelSpec, pretrained: bool, drop_rate: float) -> Built:
    """``timm:NAME[.TAG]`` with cached (HF hub / torch hub), explicit or random weights."""
    name = spec.source
    model = _timm_create(name, pretrained=False, drop_rate=drop_rate)
    cfg = dict(cast(Mapping[str, Any], model.pretrained_cfg))
    preprocess = Preprocess.from_timm_model(model)
    arch = f"timm:{name}"
    if not pretrained or spec.weights == RANDOM_WEIGHTS:
        return Built(model, preprocess, arch, "random-init")
    if spec.weights is not None:
        state = read_state_dict(spec.weights)
        classes = _head_mismatch_classes(model, state, cfg.get("classifier"))
        if classes is not None:
            model = _timm_create(name, pretrained=False, drop_rate=drop_rate, num_classes=classes)
        load_into(model, state, spec.weights, arch)
        return Built(model, preprocess, arch, _weights_label(spec.weights))
    path, looked = timm_cached_file(cfg)
    if path is None:
        hf_id = cfg.get("hf_hub_id")
        where = "; ".join(looked) or "timm knows no weights source for it"
        no_hub = (
            "" if has_hf_hub() else " (huggingface_hub is not installed, so its cache is not read)"
        )
        fetch = (
            f" On a machine with network, `huggingface-cli download {hf_id} "
            f"{_HF_FILES[0]}` fills the cache (copy the models--... folder over), or download "
            f"https://huggingface.co/{hf_id}/resolve/main/{_HF_FILES[0]} and pass it"
            if hf_id
            else ""
        )
        raise ModelUnavailableError(
            f"timm:{name} (pretrained tag '{cfg.get('tag')}') has no weights in the local "
            f"caches and nothing is downloaded; looked for {where}{no_hub}.{fetch} with "
            f"weights=PATH (`--weights PATH`), {RANDOM_HINT}"
        )
    # timm's own loader on the local file: it applies the model's checkpoint filter (old key
    # layouts, position-embedding resizing) exactly as a download would, but reads the file.
    model = _timm_create(
        name, pretrained=True, drop_rate=drop_rate, pretrained_cfg_overlay={"file": path}
    )
    logger.info("loaded %s from %s", arch, path)
    return Built(model, preprocess, arch, path)


def cached_timm_weights() -> list[dict[str, str]]:
    """timm models (``timm/...`` repos) with weights in the Hugging Face cache."""
    root = hf_hub_cache()
    if not root.is_dir():
        return []
    found = []
    for repo in sorted(root.glob("models--timm--*")):
        repo_id = repo.name[len("models--") :].replace("--", "/")
        if any(hf_cached_file(repo_id, f) for f in _HF_FILES):
            found.append({"spec": f"timm:{repo_id.split('/', 1)[1]}", "file": str(repo)})
    return found


# ------------------------------------------------------------------------------- files, modules
def build_torchscript(spec: ModelSpec) -> Built:
    """A TorchScript file (``torch.jit.save``); its graph holds the weights."""
    path = Path(spec.source).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(
            f"model file {path} not found; give the path of a TorchScript file "
            "(torch.jit.save), or a state dict as weights=PATH together with its architecture "
            "(e.g. torchvision:resnet18?weights=PATH)"
        )
    if spec.weights is not None:
        raise InputError(
            "a TorchScript file holds its own weights; drop weights=... or give the state dict "
            "with its architecture instead (torchvision:ARCH, timm:NAME or module:factory)",
            field="weights",
        )
    if not is_torchscript_file(path):
        raise InputError(
            "not a TorchScript file; if it is a state dict, name its architecture and pass the "
            f"file as weights: torchvision:ARCH?weights={path} (or timm:NAME, module:factory)",
            source=path,
            field="model",
        )
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise InputError(f"cannot load the TorchScript file ({exc})", source=path) from None
    return Built(model, IMAGENET_DEFAULT, f"torchscript:{path.name}", str(path))


def build_module(spec: ModelSpec, pretrained: bool) -> Built:
    """``module.path:factory``: call the factory (no arguments) and load optional weights."""
    module_name, _, attr = spec.source.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"cannot import module '{module_name}' of '{spec.source}' ({exc}); it must be "
            "importable (on PYTHONPATH / installed) in the process that runs the engine",
            field="model",
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError(f"'{spec.source}': no attribute '{part}'{hint}", field="model")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"'{spec.source}' is not callable", field="model")
    model = obj()
    if not isinstance(model, nn.Module):
        raise InputError(
            f"'{spec.source}()' returned a {type(model).__name__}, not a torch.nn.Module",
            field="model",
        )
    cfg = getattr(model, "pretrained_cfg", None)
    preprocess = (
        Preprocess.from_timm_config(cfg)
        if isinstance(cfg, Mapping)
        and {"input_size", "mean", "std", "crop_pct"} <= set(cfg)
        and "interpolation" in cfg
        else IMAGENET_DEFAULT
    )
    weights = "factory"
    if spec.weights == RANDOM_WEIGHTS or not pretrained:
        weights = "random-init" if spec.weights == RANDOM_WEIGHTS else "factory"
    elif spec.weights is not None:
        load_into(model, read_state_dict(spec.weights), spec.weights, spec.source)
        weights = _weights_label(spec.weights)
    return Built(model, preprocess, spec.source, weights)
