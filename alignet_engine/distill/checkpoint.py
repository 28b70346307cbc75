"""Training checkpoints of the distillation job: everything needed to continue a run exactly.

A checkpoint is **one** safetensors file, so that replacing it is a single atomic
``os.replace`` (a JSON sidecar would need a second rename, and a crash between the two would
pair the tensors of one step with the scalars of another). Layout:

Tensors
    ``model/<key>``
        ``feature_fn.state_dict()`` (parameters *and* buffers) after ``steps_done`` steps.
    ``init/<name>``
        θ₀, the anchor of the decay-to-init, for each trainable parameter (by
        ``named_parameters`` name). Saved in every checkpoint: it is the weights at the
        start of the *original* run, which a resumed run cannot rebuild from its module.
    ``adam/<state key>/<name>``
        Adam's per-parameter state (``exp_avg``, ``exp_avg_sq``, ``step``) as torch keeps it.
    ``sampler/buffer``
        int64, the rest of the current triplet permutation not yet drawn.
    ``rng/torch``, ``rng/flip``, ``rng/cuda`` (optional)
        uint8 states of torch's global CPU generator (dropout on CPU), of the augmentation
        flip generator, and of the training CUDA device's generator.
    ``history/<name>``
        the per-step curves so far (``step`` int64, the rest float64) and the validation
        curves (``val_step`` int64, ``val_agreement``, ``val_loss``, ``val_<name>`` float64).
    ``preserve/ids``, ``preserve/features`` (optional)
        int64 (u,) sorted image ids and float32 (u, orientations, d) pretrained features of
        the representation-preservation term (computed once, before the first step).

    A triplet head's tensors are part of ``model/`` (and ``adam/``) under the
    ``triplet_head.`` prefix; it has no ``init/`` entry (it is not pulled toward its init).

Header metadata (all strings)
    ``format`` = ``"alignet-distill-checkpoint"``, ``format_version`` = ``"1"`` and
    ``state``: JSON with ``steps_done``, ``config`` (``DistillConfig.to_dict()``),
    ``sampler_bit_generator`` (numpy ``Generator.bit_generator.state``; its 128-bit integers
    are exact in JSON), ``data_sha256`` (of the training triplets and similarities),
    ``seconds`` (training time so far, pauses excluded), ``grad_scaler`` (the float16 AMP
    loss scaler's ``state_dict()``, or null) and ``torch_version``.

The learning-rate schedule needs no state of its own: it is a function of the step and the
configuration.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from alignet_engine.config.distill import RESUME_FREE, DistillConfig
from alignet_engine.errors import AlignetError, InputError
from alignet_engine.files import atomic_path

from .rows import Rows, row_blocks
from .student_io import HEAD_PREFIX

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "alignet-distill-checkpoint"
CHECKPOINT_FORMAT_VERSION = "1"

#: names of the history arrays stored with integer dtype; the others are float64
_INT_HISTORY = ("step", "val_step")

# a module-level name, not ``safetensors.torch.save_file`` at the call site, so a test can
# replace it with a writer that fails half-way (a full disk) without touching safetensors
_save_file = save_file


class CheckpointWriteError(AlignetError):
    """A training checkpoint could not be written (disk full, permission, ...).

    Attributes
    ----------
    path : the checkpoint file that was being replaced.
    errno : the ``OSError.errno`` of the failure, if it came from the OS.
    """

    def __init__(self, message: str, *, path: str | Path, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.errno = errno


@dataclass
class TrainingCheckpoint:
    """The state of a distillation run after ``steps_done`` steps (CPU tensors).

    Attributes
    ----------
    steps_done : optimizer steps completed (≥ 1).
    config : the run's ``DistillConfig.to_dict()``.
    model : ``feature_fn.state_dict()``.
    init : θ₀ per trainable parameter name.
    optimizer : Adam state per trainable parameter name: ``{state key: tensor}``.
    sampler_state : numpy ``bit_generator.state`` of the triplet sampler.
    sampler_buffer : (k,) int64 triplet rows of the current permutation not yet drawn.
    torch_rng : ``torch.get_rng_state()``.
    flip_rng : the augmentation generator's ``get_state()``.
    cuda_rng : ``torch.cuda.get_rng_state(device)`` of the training device, or None.
    history : curves so far (see the module docstring).
    data_sha256 : digest of the training triplets and similarities (see :func:`data_digest`).
    seconds : training time of the run up to ``steps_done``, s (pauses excluded).
    preserve_ids : (u,) int64 sorted ids of the cached pretrained features, or None.
    preserve_features : (u, orientations, d) float32 pretrained features, or None.
    grad_scaler : ``torch.amp.GradScaler.state_dict()`` (JSON scalars), or None.
    """

    steps_done: int
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]
    optimizer: dict[str, dict[str, torch.Tensor]]
    sampler_state: dict[str, Any]
    sampler_buffer: np.ndarray
    torch_rng: torch.Tensor
    flip_rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None
    history: dict[str, np.ndarray] = field(default_factory=dict)
    data_sha256: str = ""
    seconds: float = 0.0
    preserve_ids: np.ndarray | None = None
    preserve_features: torch.Tensor | None = None
    grad_scaler: dict[str, Any] | None = None


def data_digest(triplets: Rows, sims: Rows) -> str:
    """sha256 of int64 ``triplets`` and float32 ``sims`` (shapes included), read in blocks
    (arrays in memory or rows on disk give the same digest).

    A resumed run checks it so that a checkpoint is never continued on other triplets, which
    would silently mix two trainings in one curve.
    """
    digest = hashlib.sha256()
    for array, dtype in ((triplets, np.int64), (sims, np.float32)):
        digest.update(repr((len(array), *array.shape[1:])).encode())
        for _, block in row_blocks(array):
            digest.update(np.ascontiguousarray(block, dtype=dtype).tobytes())
    return digest.hexdigest()


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    # contiguous clones: safetensors refuses shared or strided (channels-last) storage
    return tensor.detach().to("cpu").contiguous().clone()


def save_checkpoint(path: str | os.PathLike[str], checkpoint: TrainingCheckpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically.

    The file is written to a temporary file in the same folder, fsynced, then moved over
    ``path`` with ``os.replace`` (and the folder fsynced on POSIX), so a crash or a full disk
    during the write leaves the previous checkpoint at ``path`` intact and no temporary file
    behind.

    Raises
    ------
    CheckpointWriteError
        The write failed; the message says why (a full disk is named as such) and where.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"model/{k}": _cpu(v) for k, v in checkpoint.model.items()})
    tensors.update({f"init/{k}": _cpu(v) for k, v in checkpoint.init.items()})
    for name, param_state in checkpoint.optimizer.items():
        tensors.update({f"adam/{key}/{name}": _cpu(v) for key, v in param_state.items()})
    tensors["sampler/buffer"] = torch.from_numpy(
        np.ascontiguousarray(checkpoint.sampler_buffer, dtype=np.int64)
    ).clone()
    tensors["rng/torch"] = _cpu(checkpoint.torch_rng)
    tensors["rng/flip"] = _cpu(checkpoint.flip_rng)
    if checkpoint.cuda_rng is not None:
        tensors["rng/cuda"] = _cpu(checkpoint.cuda_rng)
    if checkpoint.preserve_ids is not None and checkpoint.preserve_features is not None:
        tensors["preserve/ids"] = torch.from_numpy(
            np.ascontiguousarray(checkpoint.preserve_ids, dtype=np.int64)
        ).clone()
        tensors["preserve/features"] = _cpu(checkpoint.preserve_features)
    for name, values in checkpoint.history.items():
        dtype = np.int64 if name in _INT_HISTORY else np.float64
        tensors[f"history/{name}"] = torch.from_numpy(np.array(values, dtype=dtype))
    state = {
        "steps_done": int(checkpoint.steps_done),
        "config": dict(checkpoint.config),
        "sampler_bit_generator": checkpoint.sampler_state,
        "data_sha256": checkpoint.data_sha256,
        "seconds": float(checkpoint.seconds),
        "grad_scaler": checkpoint.grad_scaler,
        "torch_version": torch.__version__,
    }
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "state": json.dumps(state, sort_keys=True),
    }

    try:
        # the engine's one atomic writer: fsynced, renamed over path, folder fsynced, the
        # temporary file removed on any error (a full disk leaves the previous checkpoint)
        with atomic_path(path) as tmp:
            _save_file(tensors, tmp, metadata=metadata)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            why = "the disk is full"
        else:
            why = exc.strerror or str(exc)
        raise CheckpointWriteError(
            f"could not write the distillation checkpoint {path} (step "
            f"{checkpoint.steps_done}): {why}",
            path=path,
            errno=exc.errno,
        ) from exc
    logger.info("saved distillation checkpoint (step %d) to %s", checkpoint.steps_done, path)


def kept_path(path: str | os.PathLike[str], step: int | None) -> Path:
    """Where the policy keeps a copy of checkpoint ``path``: ``<stem>.step<k><suffix>`` for
    the checkpoint of step ``k``, ``<stem>.best<suffix>`` for ``step=None`` (the best one)."""
    path = Path(path)
    tag = "best" if step is None else f"step{step:08d}"
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def kept_steps(path: str | os.PathLike[str]) -> dict[int, Path]:
    """The step copies of checkpoint ``path`` on disk, ``{step: file}``."""
    path = Path(path)
    prefix, suffix = f"{path.stem}.step", path.suffix
    found = {}
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        digits = candidate.name[len(prefix) : len(candidate.name) - len(suffix)]
        if digits.isdigit():
            found[int(digits)] = candidate
    return found


def keep_checkpoints(path: str | os.PathLike[str], step: int, keep_last: int) -> None:
    """Apply the last-N policy after checkpoint ``path`` was written at ``step``.

    With ``keep_last > 1`` the file is linked (a hard link: no copy, and the next
    ``os.replace`` of ``path`` leaves it alone) or, where links are not supported, copied to
    :func:`kept_path` of ``step``; step copies older than the ``keep_last`` newest are deleted.
    """
    if keep_last <= 1:
        return
    path = Path(path)
    target = kept_path(path, step)
    target.unlink(missing_ok=True)
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)
    copies = kept_steps(path)
    for old in sorted(copies)[:-keep_last]:
        copies[old].unlink(missing_ok=True)


def checkpoint_steps(path: str | os.PathLike[str]) -> int:
    """``steps_done`` of a checkpoint, read from its header only (no tensor is loaded).

    Raises
    ------
    InputError
        The file is missing or not a readable distillation checkpoint.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("no checkpoint metadata")
        return int(json.loads(metadata["state"])["steps_done"])
    except Exception as exc:
        raise InputError(f"not a readable distillation checkpoint ({exc})", source=path) from exc


def load_checkpoint(path: str | os.PathLike[str]) -> TrainingCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (CPU tensors).

    Raises
    ------
    InputError
        The file is missing, unreadable, not a distillation checkpoint, or of an unsupported
        format version.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError("the distillation checkpoint does not exist", source=path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != CHECKPOINT_FORMAT or "state" not in metadata:
                raise InputError(
                    "not an AligNet distillation checkpoint (no checkpoint metadata)",
                    source=path,
                )
            version = metadata.get("format_version")
            if version != CHECKPOINT_FORMAT_VERSION:
                raise InputError(
                    f"distillation checkpoint format version {version} is not supported (this "
                    f"version reads {CHECKPOINT_FORMAT_VERSION}); update AligNet Studio",
                    source=path,
                )
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
        state = json.loads(metadata["state"])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"not a readable distillation checkpoint ({exc})", source=path) from exc

    def group(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    optimizer: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in group("adam/").items():
        state_key, name = key.split("/", 1)
        optimizer.setdefault(name, {})[state_key] = value
    history = {name: value.numpy() for name, value in group("history/").items()}
    try:
        return TrainingCheckpoint(
            steps_done=int(state["steps_done"]),
            config=dict(state["config"]),
            model=group("model/"),
            init=group("init/"),
            optimizer=optimizer,
            sampler_state=state["sampler_bit_generator"],
            sampler_buffer=tensors["sampler/buffer"].numpy(),
            torch_rng=tensors["rng/torch"],
            flip_rng=tensors["rng/flip"],
            cuda_rng=tensors.get("rng/cuda"),
            history=history,
            data_sha256=str(state.get("data_sha256", "")),
            seconds=float(state.get("seconds", 0.0)),
            preserve_ids=tensors["preserve/ids"].numpy() if "preserve/ids" in tensors else None,
            preserve_features=tensors.get("preserve/features"),
            grad_scaler=state.get("grad_scaler"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"incomplete distillation checkpoint (missing {exc})", source=path
        ) from exc


def check_resume(
    resume: TrainingCheckpoint,
    path: Path,
    feature_fn: nn.Module,
    config: DistillConfig,
    digest: str,
) -> None:
    """Raise :class:`InputError` unless ``resume`` can continue with these arguments."""
    try:
        saved = DistillConfig.from_dict(resume.config)
    except InputError as exc:
        raise InputError(f"the checkpoint's settings are unreadable ({exc})", source=path) from exc
    if resume.steps_done > config.steps:
        raise InputError(
            f"the checkpoint has already made {resume.steps_done} steps, more than the "
            f"{config.steps} asked for; steps may only be kept or increased on resume",
            source=path,
            field="steps",
        )
    differences = [
        (f.name, getattr(saved, f.name), getattr(config, f.name))
        for f in dataclasses.fields(DistillConfig)
        if f.name not in RESUME_FREE and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if config.steps < saved.steps:
        differences.insert(0, ("steps", saved.steps, config.steps))
    if differences:
        listed = "; ".join(
            f"{name} {old!r} in the checkpoint, {new!r} now" for name, old, new in differences
        )
        raise InputError(
            f"cannot resume: the checkpoint was trained with other settings ({listed}). Resume "
            "with the checkpoint's settings (steps may be increased) or start a new run",
            source=path,
            field=", ".join(name for name, _, _ in differences),
        )
    if resume.data_sha256 != digest:
        raise InputError(
            "cannot resume: the triplets or teacher similarities differ from those the "
            "checkpoint was trained on",
            source=path,
            field="triplets",
        )
    trainable = [n for n, p in feature_fn.named_parameters() if p.requires_grad]
    expected = {k: tuple(v.shape) for k, v in feature_fn.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in resume.model.items() if not k.startswith(HEAD_PREFIX)}
    head_ok = (f"{HEAD_PREFIX}weight" in resume.model) == (config.head_dim > 0)
    if set(trainable) != set(resume.init) or expected != found or not head_ok:
        missing = sorted(set(expected) - set(found))[:3]
        unexpected = sorted(set(found) - set(expected))[:3]
        reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])[:3]
        raise InputError(
            "cannot resume: the checkpoint's weights do not fit feature_fn (a different "
            f"architecture?); missing {missing}, unexpected {unexpected}, other shapes "
            f"{reshaped}, or other trainable parameters",
            source=path,
            field="feature_fn",
        )
