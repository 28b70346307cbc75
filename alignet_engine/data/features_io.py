"""Importer of feature matrices (one row per image) from npy, npz, HDF5 and PyTorch files.

The reader validates the whole array before it returns and raises
:class:`~alignet_engine.errors.InputError` naming the file, the row (1-based array row) and
the array/dataset/tensor name. Pickled Python objects are never loaded
(``allow_pickle=False``, ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from alignet_engine.data._io_common import (
    PathLike,
    check_declared_size,
    check_file,
    check_n_items,
    looks_number,
    read_text,
    text_lines,
)
from alignet_engine.data.arrays_io import load_npy, npz_get, open_npz
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

FEATURE_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".pt", ".pth", ".mat", ".txt")
#: thingsvision's split files: ``features_01.npy``, ``features_02.npy``... (1-based, in order)
_SPLIT_NAME = re.compile(r"^features_(\d+)$")
#: the file thingsvision writes beside the features: one image path per line, in row order
FILE_NAMES = "file_names.txt"


def read_features(path: PathLike, n_items: int | None = None, key: str | None = None) -> np.ndarray:
    """Read a feature matrix, one row per image in image-set order.

    Formats (by extension):

    * ``.npy``: the array (``key`` must be None).
    * ``.npz``: the single array, or ``key``.
    * ``.h5`` / ``.hdf5``: dataset ``key`` (a path such as ``"g/feats"``) if given, else the
      single dataset, else the dataset named ``features`` (what thingsvision writes).
    * ``.pt`` / ``.pth``: ``torch.load(..., weights_only=True)`` of a tensor (or array), or of
      a dict: entry ``key`` if given, else its single tensor, else its ``features`` entry.
    * ``.txt``: whitespace-separated numbers, one row per line (thingsvision / ``np.savetxt``).
    * ``.mat``: MATLAB variable ``key``, else ``features``, else the single variable; a file
      of one variable per image (thingsvision's layout when ``file_names.txt`` exists) is
      stacked in the order of the ``file_names.txt`` beside it.
    * a folder (thingsvision's output folder): its ``features.<ext>``, or its split files
      ``features_01.<ext>``, ``features_02.<ext>``... stacked in number order; an HDF5 file
      whose datasets are all ``features_NN`` is stacked the same way.

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
    if Path(path).is_dir():
        return _check_features(_read_folder(Path(path), key), n, Path(path), "features")
    p = check_file(path)
    suffix = p.suffix.lower()
    if suffix == ".txt":
        arr, name = _read_txt(p), "features"
    elif suffix == ".mat":
        arr, name = _read_mat(p, key)
    elif suffix == ".npy":
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
        splits = sorted(
            (int(m.group(1)), nm) for nm in names if (m := _SPLIT_NAME.match(nm)) is not None
        )
        if key is None and len(names) > 1 and len(splits) == len(names):
            parts = [_h5_array(fh, nm, p) for _, nm in splits]
            return _stack(parts, [f"{p.name}:{nm}" for _, nm in splits], p), "features"
        name = _pick_key(names, key.strip("/") if key else None, p, "dataset")
        ds = fh[name]
        # chunked / compressed storage says nothing of the size: only memory bounds it
        check_declared_size(ds.shape or (), ds.dtype, stored=None, source=p, field=name)
        try:
            arr = np.asarray(ds[()])
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


def _h5_array(fh: object, name: str, p: Path) -> np.ndarray:
    try:
        return np.asarray(fh[name][()])  # type: ignore[index]
    except (OSError, TypeError, ValueError) as exc:
        raise InputError(f"cannot be read ({exc})", source=p, field=name) from None


def _stack(parts: list[np.ndarray], names: list[str], source: Path) -> np.ndarray:
    """Row-stack split feature arrays, checking they agree in width."""
    for arr, name in zip(parts, names, strict=True):
        if arr.ndim != 2 or arr.shape[1] != parts[0].shape[1]:
            raise InputError(
                f"split {name} has shape {arr.shape}; every split must be (rows, "
                f"{parts[0].shape[1] if parts[0].ndim == 2 else 'd'}) like the first",
                source=source,
                field=name,
            )
    return np.concatenate(parts, axis=0)


def _read_folder(folder: Path, key: str | None) -> np.ndarray:
    """A thingsvision output folder: ``features.<ext>`` or its ``features_NN.<ext>`` splits."""
    whole = [f for f in sorted(folder.iterdir()) if f.stem == "features" and f.is_file()]
    whole = [f for f in whole if f.suffix.lower() in FEATURE_SUFFIXES]
    if len(whole) == 1:
        return read_features(whole[0], None, key=key)
    if len(whole) > 1:
        raise InputError(
            f"holds several feature files ({', '.join(f.name for f in whole)}); import one",
            source=folder,
        )
    splits = sorted(
        (int(m.group(1)), f)
        for f in folder.iterdir()
        if f.is_file()
        and f.suffix.lower() in FEATURE_SUFFIXES
        and (m := _SPLIT_NAME.match(f.stem)) is not None
    )
    if not splits:
        raise InputError(
            "holds no features file (features.npy/.mat/.txt/.hdf5/.pt or thingsvision's "
            "features_01.<ext> splits)",
            source=folder,
        )
    suffixes = {f.suffix.lower() for _, f in splits}
    if len(suffixes) > 1:
        raise InputError(
            f"holds split files of several formats ({', '.join(sorted(suffixes))}); keep one",
            source=folder,
        )
    numbers = [k for k, _ in splits]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise InputError(
            f"split files are numbered {numbers}: one is missing, so the rows would be misaligned",
            source=folder,
        )
    parts = [read_features(f, None, key=key) for _, f in splits]
    logger.info("%s: stacked %d split files", folder, len(parts))
    return _stack(parts, [f.name for _, f in splits], folder)


def _read_txt(p: Path) -> np.ndarray:
    """Whitespace-separated real numbers, one row per non-blank line (``np.savetxt``)."""
    _, text = read_text(p)
    rows: list[list[float]] = []
    width: int | None = None
    for k, line in enumerate(text_lines(text)):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(x) for x in parts]
        except ValueError:
            col = next(c for c, x in enumerate(parts) if not looks_number(x))
            raise InputError(
                f"{parts[col]!r} is not a number; a features .txt holds numbers only (no "
                "header, no names)",
                source=p,
                row=k + 1,
                field=f"column {col + 1}",
            ) from None
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise InputError(
                f"has {len(values)} values but the rows above have {width}; every row needs "
                "one value per feature dimension",
                source=p,
                row=k + 1,
            )
        rows.append(values)
    return np.asarray(rows, dtype=np.float64)


def _read_mat(p: Path, key: str | None) -> tuple[np.ndarray, str]:
    """A MATLAB file (v5; v7.3 files are HDF5 and read as such)."""
    import scipy.io

    try:
        data = scipy.io.loadmat(p)
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        return _read_h5(p, key)
    except (ValueError, OSError, TypeError) as exc:
        raise InputError(f"is not a readable MATLAB .mat file ({exc})", source=p) from None
    names = [k for k in data if not k.startswith("__")]
    if key is not None or "features" in names or len(names) == 1:
        name = _pick_key(names, key, p, "variable")
        return np.asarray(data[name]), name
    # thingsvision: one variable per image, named by the image file without its extension,
    # written in file_names.txt order
    listing = p.parent / FILE_NAMES
    if not listing.is_file():
        raise InputError(
            f"holds {len(names)} variables and no 'features'; per-image variables need the "
            f"{FILE_NAMES} that thingsvision wrote beside the file (it gives the row order), "
            "or choose one variable with key=...",
            source=p,
        )
    order = [_strip_image_suffix(Path(x).as_posix()) for x in read_file_names(listing)]
    missing = [x for x in order if x not in data]
    if missing:
        raise InputError(
            f"has no variable for {len(missing)} of the {len(order)} images listed in "
            f"{FILE_NAMES} (first: {missing[0]!r})",
            source=p,
            field=missing[0],
        )
    rows = []
    for x in order:
        v = np.asarray(data[x])
        if v.ndim != 2 or (v.shape[0] != 1 and v.shape[1] != 1):
            raise InputError(f"must be a vector, got shape {v.shape}", source=p, field=x)
        rows.append(v.reshape(-1))
    return _stack([r[None] for r in rows], order, p), "features"


_IMAGE_SUFFIX = re.compile(r"(\.eps|\.jpg|\.jpeg|\.png|\.PNG|\.tif|\.tiff)$")


def _strip_image_suffix(name: str) -> str:
    """thingsvision's ``rm_suffix``: the variable name of an image in a per-image .mat."""
    return _IMAGE_SUFFIX.sub("", name)


def read_file_names(path: PathLike) -> list[str]:
    """The image paths of thingsvision's ``file_names.txt``, one per non-blank line."""
    _, text = read_text(path)
    return [ln.strip() for ln in text_lines(text) if ln.strip()]


def file_names_order(names: list[str], image_paths: list[str], source: Path) -> np.ndarray:
    """For each image of an image set, the feature row that ``file_names.txt`` gives it.

    An entry matches an image when its path components are the last components of the
    image's path (thingsvision writes paths relative to the image root, e.g. ``cat/01.jpg``).

    Returns
    -------
    (n_images,) int64: row of ``names`` (= of the features) for every image, in image order.

    Raises
    ------
    InputError naming ``source`` (the file_names.txt) and the 1-based line: an entry that
    matches no image or several, two entries for one image, or images without an entry.
    """

    def tail(path: str, k: int) -> tuple[str, ...]:
        return tuple(Path(path.replace("\\", "/")).parts[-k:])

    lookup: dict[tuple[str, ...], list[int]] = {}
    depth = {len(Path(x.replace("\\", "/")).parts) for x in names}
    for k in depth:
        for i, path in enumerate(image_paths):
            lookup.setdefault(tail(path, k), []).append(i)
    row_of = np.full(len(image_paths), -1, dtype=np.int64)
    for line, name in enumerate(names):
        key = tail(name, len(Path(name.replace("\\", "/")).parts))
        hits = lookup.get(key, [])
        if len(hits) != 1:
            what = "no image of the set" if not hits else f"{len(hits)} images of the set"
            raise InputError(
                f"{name!r} matches {what}; the features must be of this image set",
                source=source,
                row=line + 1,
            )
        if row_of[hits[0]] >= 0:
            raise InputError(
                f"{name!r} is listed twice (also on line {row_of[hits[0]] + 1})",
                source=source,
                row=line + 1,
            )
        row_of[hits[0]] = line
    if (row_of < 0).any():
        first = image_paths[int(np.flatnonzero(row_of < 0)[0])]
        raise InputError(
            f"lists {len(names)} images but the set has {len(image_paths)}; no entry for {first!r}",
            source=source,
        )
    return row_of
