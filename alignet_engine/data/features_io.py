"""Importer of feature matrices (one row per image) from npy, npz, HDF5 and PyTorch files.

The reader validates the whole array before it returns and raises
:class:`~alignet_engine.errors.InputError` naming the file, the row (1-based array row) and
the array/dataset/tensor name. Pickled Python objects are never loaded
(``allow_pickle=False``, ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from alignet_engine.data._io_common import PathLike, check_file, check_n_items
from alignet_engine.data.arrays_io import load_npy, npz_get, open_npz
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

FEATURE_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".pt", ".pth")


def read_features(path: PathLike, n_items: int | None = None, key: str | None = None) -> np.ndarray:
    """Read a feature matrix, one row per image in image-set order.

    Formats (by extension):

    * ``.npy``: the array (``key`` must be None).
    * ``.npz``: the single array, or ``key``.
    * ``.h5`` / ``.hdf5``: dataset ``key`` (a path such as ``"g/feats"``) if given, else the
      single dataset, else the dataset named ``features`` (what thingsvision writes).
    * ``.pt`` / ``.pth``: ``torch.load(..., weights_only=True)`` of a tensor (or array), or of
      a dict: entry ``key`` if given, else its single tensor, else its ``features`` entry.

    Without ``key``, an ``.npz`` with several arrays likewise falls back to ``features``.

    Parameters
    ----------
    path : the file.
    n_items : when given, the number of rows must equal it.
    key : array/dataset/dict key, for containers with several arrays.

    Returns
    -------
    (n, d) float32, C-contiguous.

    Raises
    ------
    InputError
        Unsupported extension, unreadable or pickled content, an ambiguous container without
        ``key`` (the message lists the keys) or a missing key, not 2-D, no rows or columns, a
        non-real dtype, values that are NaN/inf or overflow float32 (first row/column named),
        a row count different from ``n_items``.
    """
    n = check_n_items(n_items, required=False)
    p = check_file(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise InputError(
                f"a .npy file holds one array; key '{key}' does not apply", source=p, field=key
            )
        arr, name = load_npy(p), "features"
    elif suffix == ".npz":
        with open_npz(p) as npz:
            name = _pick_key(list(npz.files), key, p, "array")
            arr = npz_get(npz, name, p)
    elif suffix in (".h5", ".hdf5"):
        arr, name = _read_h5(p, key)
    elif suffix in (".pt", ".pth"):
        arr, name = _read_pt(p, key)
    else:
        raise InputError(
            f"has an unsupported extension '{p.suffix}'; features must be one of "
            f"{', '.join(FEATURE_SUFFIXES)}",
            source=p,
        )
    return _check_features(arr, n, p, name)


def _pick_key(keys: list[str], key: str | None, p: Path, what: str) -> str:
    if key is not None:
        if key not in keys:
            raise InputError(
                f"has no {what} '{key}' ({what}s present: {', '.join(keys) or 'none'})",
                source=p,
                field=key,
            )
        return key
    if len(keys) == 1:
        return keys[0]
    if "features" in keys:
        logger.info("%s: %d %ss, using 'features'", p, len(keys), what)
        return "features"
    raise InputError(
        f"holds {len(keys)} {what}s ({', '.join(keys) or 'none'}); choose one with key=...",
        source=p,
    )


def _read_h5(p: Path, key: str | None) -> tuple[np.ndarray, str]:
    import h5py

    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"is not a readable HDF5 file ({exc})", source=p) from None
    with fh:
        names: list[str] = []
        fh.visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        name = _pick_key(names, key.strip("/") if key else None, p, "dataset")
        try:
            arr = np.asarray(fh[name][()])
        except (OSError, TypeError, ValueError) as exc:
            raise InputError(f"cannot be read ({exc})", source=p, field=name) from None
    return arr, name


def _read_pt(p: Path, key: str | None) -> tuple[np.ndarray, str]:
    import pickle

    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot be loaded as a PyTorch file with weights_only=True ({first[:200]}); save "
            "a tensor or a dict of tensors with torch.save",
            source=p,
        ) from None
    name = "tensor"
    if isinstance(obj, Mapping):
        arrays = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor | np.ndarray)}
        if key is not None and key in obj and key not in arrays:
            raise InputError(
                f"entry '{key}' is a {type(obj[key]).__name__}, not a tensor", source=p, field=key
            )
        name = _pick_key(list(arrays), key, p, "tensor")
        obj = arrays[name]
    elif key is not None:
        raise InputError(
            f"holds a single {type(obj).__name__}; key '{key}' does not apply", source=p, field=key
        )
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.is_sparse:
            t = t.to_dense()
        if t.is_complex():
            raise InputError(f"has dtype {t.dtype}; expected real numbers", source=p, field=name)
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()  # numpy has no bfloat16
        if t.dtype == torch.bool:
            raise InputError("has dtype torch.bool; expected real numbers", source=p, field=name)
        return t.numpy(), name
    if isinstance(obj, np.ndarray):
        return obj, name
    raise InputError(
        f"holds a {type(obj).__name__}; expected a tensor or a dict of tensors", source=p
    )


def _check_features(arr: np.ndarray, n: int | None, p: Path, name: str) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise InputError(
            f"has dtype {arr.dtype}; features must be real numbers", source=p, field=name
        )
    if arr.ndim != 2:
        raise InputError(
            f"has shape {arr.shape}; features must be 2-D (images, dimensions). Flatten or "
            "pool the extra dimensions before saving",
            source=p,
            field=name,
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"is empty (shape {arr.shape})", source=p, field=name)
    if n is not None and arr.shape[0] != n:
        raise InputError(
            f"has {arr.shape[0]} rows but the image set has {n} images; features need one row "
            "per image, in image-set order",
            source=p,
            field=name,
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    bad = np.argwhere(~np.isfinite(out))
    if bad.size:
        i, j = (int(x) for x in bad[0])
        overflow = np.isfinite(arr[i, j])
        value = arr[i, j].item()
        what = f"{value!r} overflows float32" if overflow else f"is {value!r}"
        raise InputError(
            f"the value at [{i}, {j}] (column {j + 1}) {what}; features must be finite. "
            f"{len(bad)} value(s) in {len(np.unique(bad[:, 0]))} row(s) affected.",
            source=p,
            row=i + 1,
            field=name,
        )
    logger.info("read features %s from %s", out.shape, p)
    return out
