"""Student files: the trained backbone (and its triplet head) as one self-describing safetensors.

:func:`save_student` writes the state dict with the run's description in the safetensors
header metadata (``format`` = ``"alignet-student"``, ``format_version``, ``config`` JSON and,
with a head, ``head_dim``); the ``load_*`` functions read it back. A triplet head's tensors
are stored under :data:`HEAD_PREFIX`, so a reader that only knows the backbone keeps working.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignet_engine.errors import InputError
from alignet_engine.files import atomic_path

logger = logging.getLogger(__name__)

#: Keys of the safetensors header metadata written by :func:`save_student`.
STUDENT_FORMAT = "alignet-student"
STUDENT_FORMAT_VERSION = "1"

#: key prefix of the triplet head's tensors in checkpoints and student files
HEAD_PREFIX = "triplet_head."


def split_head(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a combined state dict into the backbone's and the head's (prefix removed)."""
    backbone = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    head = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    return backbone, head


def save_student(
    path: str | os.PathLike[str],
    feature_fn: nn.Module,
    config_json: Mapping[str, Any],
    head_state: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """Write ``feature_fn``'s state dict as safetensors, atomically; return its sha256.

    ``config_json`` (any JSON-able mapping: distill config, backbone name, run id...) is stored
    in the safetensors header metadata under ``"config"``, so one file is self-describing and
    the write goes through the engine's one atomic writer (a crash never leaves a half file).

    Parameters
    ----------
    path : target ``.safetensors`` file; its folder must exist.
    feature_fn : the student module (its ``state_dict()``: parameters and buffers).
    config_json : JSON-serialisable mapping.
    head_state : the triplet head's ``state_dict()`` (``weight`` (e, d), ``bias`` (e,)), or
        None. Stored under the ``triplet_head.`` prefix, with ``head_dim`` = e in the header
        metadata; :func:`load_student_state` leaves it out and :func:`load_student_head`
        returns it, so a reader that only knows the backbone keeps working.

    Returns
    -------
    str
        Hex sha256 of the written file, for the project's checksum reference.
    """
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {
        "format": STUDENT_FORMAT,
        "format_version": STUDENT_FORMAT_VERSION,
        "config": json.dumps(dict(config_json), sort_keys=True),
    }
    # clone → contiguous tensors that share no storage (safetensors refuses shared ones)
    tensors = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in feature_fn.state_dict().items()
    }
    if head_state is not None:
        if any(k.startswith(HEAD_PREFIX) for k in tensors):
            raise InputError(
                f"feature_fn's state already has '{HEAD_PREFIX}' keys", field="feature_fn"
            )
        if "weight" not in head_state or head_state["weight"].ndim != 2:
            raise InputError("head_state must hold a 2-D 'weight'", field="head_state")
        tensors.update(
            {
                HEAD_PREFIX + k: v.detach().to("cpu").contiguous().clone()
                for k, v in head_state.items()
            }
        )
        metadata["head_dim"] = str(int(head_state["weight"].shape[0]))
    digest = hashlib.sha256()
    with atomic_path(path) as tmp:  # fsynced and renamed over path; removed on error
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    logger.info("saved student (%d tensors) to %s", len(tensors), path)
    return digest.hexdigest()


def load_student_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the backbone's state dict written by :func:`save_student` (CPU tensors).

    A triplet head stored with it is left out (see :func:`load_student_head`), so the result
    loads strictly into the backbone module.
    """
    from safetensors.torch import load_file

    _read_metadata(path)  # refuses files that are not student checkpoints
    return split_head(load_file(str(path), device="cpu"))[0]


def load_student_head(path: str | os.PathLike[str]) -> dict[str, torch.Tensor] | None:
    """The triplet head's state dict stored by :func:`save_student`, or None if it has none.

    Returns
    -------
    dict or None
        ``{"weight": (head_dim, d), "bias": (head_dim,)}`` float CPU tensors.
    """
    from safetensors.torch import load_file

    if "head_dim" not in _read_metadata(path):
        return None
    head = split_head(load_file(str(path), device="cpu"))[1]
    if "weight" not in head:
        raise InputError("the student file names a triplet head but has no weights", source=path)
    return head


def triplet_head_from_state(state: Mapping[str, torch.Tensor]) -> nn.Linear:
    """An ``nn.Linear`` holding a saved triplet head (see :func:`load_student_head`)."""
    out_dim, in_dim = state["weight"].shape
    head = nn.Linear(int(in_dim), int(out_dim), bias="bias" in state)
    head.load_state_dict(dict(state), strict=True)
    return head


def load_student_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config_json`` stored by :func:`save_student`."""
    config: dict[str, Any] = json.loads(_read_metadata(path)["config"])
    return config


def _read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"student checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:
        raise InputError(f"not a readable safetensors file ({exc})", source=path) from exc
    if metadata.get("format") != STUDENT_FORMAT or "config" not in metadata:
        raise InputError("not an AligNet student checkpoint (no student metadata)", source=path)
    if metadata.get("format_version") != STUDENT_FORMAT_VERSION:
        raise InputError(
            f"student checkpoint format version {metadata.get('format_version')} is not "
            f"supported (this version reads {STUDENT_FORMAT_VERSION}); update AligNet Studio",
            source=path,
        )
    return metadata
