"""Importers of numeric arrays: AligNet pool representations, similarity matrices; npy/npz
helpers (AligNet triplet archives: :mod:`.alignet_npz`).

Every reader validates the whole input before it returns and raises
:class:`~alignet_engine.errors.InputError` naming the file, the row and the field (array
rows are 1-based: row ``i + 1`` is index ``[i]``; CSV matrices use the editor line).
Pickled Python objects are never loaded (``allow_pickle=False``, ``weights_only=True``):
an imported file must not be able to run code.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from alignet_engine.data._io_common import (
    LIST_LIMIT,
    PathLike,
    array_row,
    check_declared_size,
    check_file,
    check_n_items,
    check_npy_header,
    looks_number,
    read_npy_header,
    read_text,
    summarize,
    table_cells,
    text_lines,
)
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

MATRIX_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")


# --------------------------------------------------------------------------- npy / npz


def _magic(p: Path, n: int = 8) -> bytes:
    with p.open("rb") as fh:
        return fh.read(n)


def load_npy(p: Path) -> np.ndarray:
    """Load a plain (non-pickled) ``.npy`` array; InputError for anything else."""
    head = _magic(p)
    if head.startswith(b"PK"):
        raise InputError(
            "is an .npz archive, not a single .npy array; use the .npz option", source=p
        )
    if not head.startswith(b"\x93NUMPY"):
        raise InputError(
            "is not a NumPy .npy file (wrong header); save it with numpy.save", source=p
        )
    with p.open("rb") as fh:
        check_npy_header(fh, p.stat().st_size, p, None)
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise InputError(_np_load_reason(exc), source=p) from None
    except (OSError, EOFError) as exc:
        raise InputError(
            f"cannot be read as .npy ({exc}); the file may be truncated", source=p
        ) from None
    assert isinstance(arr, np.ndarray)
    return arr


def _np_load_reason(exc: Exception) -> str:
    if "pickle" in str(exc):
        return (
            "holds Python objects (pickled), which are not loaded for safety; save a plain "
            "numeric or fixed-width string array"
        )
    return f"cannot be read ({exc}); the file may be truncated or corrupt"


def npz_get(npz: Any, key: str, p: Path) -> np.ndarray:
    """Member ``key`` of the open archive ``npz`` (:func:`open_npz`); its header is checked
    against the member's real size and the memory available before it is read."""
    member = key if key in npz.zip.namelist() else f"{key}.npy"
    try:
        info = npz.zip.getinfo(member)
        with npz.zip.open(member) as fh:
            check_npy_header(fh, info.file_size, p, key)
    except (KeyError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise InputError(
            f"cannot be read ({exc}); the file may be truncated", source=p, field=key
        ) from None
    try:
        arr = npz[key]
    except ValueError as exc:
        raise InputError(_np_load_reason(exc), source=p, field=key) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"cannot be read ({exc}); the file may be truncated", source=p, field=key
        ) from None
    assert isinstance(arr, np.ndarray)
    return arr


def open_npz(p: Path) -> Any:
    if not _magic(p).startswith(b"PK"):
        raise InputError(
            "is not an .npz archive (not a zip file); save it with numpy.savez", source=p
        )
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"cannot be opened as .npz ({exc}); the file may be truncated", source=p
        ) from None


def npz_header(npz: Any, key: str, p: Path) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of member ``key`` of the open archive ``npz``, from its ``.npy``
    header alone (nothing of the data is read: members can be gigabytes)."""
    member = key if key in npz.zip.namelist() else f"{key}.npy"
    try:
        with npz.zip.open(member) as fh:
            shape, _, dtype = read_npy_header(fh)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"has a damaged .npy header ({exc})", source=p, field=key) from None
    return shape, dtype


@dataclass(frozen=True)
class NpyData:
    """Where the data of an ``.npy`` array lies in a file: enough to map it, nothing read.

    file : the file (a path, or an open binary file such as an unlinked temporary one).
    offset : bytes from the file's start to the first data byte.
    shape, dtype : from the ``.npy`` header. fortran : column-major data.
    """

    file: Path | IO[bytes]
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    def map(self) -> np.memmap:
        """A read-only memory map of the array (no data read until it is indexed)."""
        return np.memmap(
            self.file,
            dtype=self.dtype,
            mode="r",
            offset=self.offset,
            shape=self.shape,
            order="F" if self.fortran else "C",
        )


def _check_not_truncated(
    shape: tuple[int, ...], dtype: np.dtype, stored: int, p: Path, key: str
) -> None:
    """InputError when the header declares more data than the ``stored`` bytes hold. Only
    the truncation half of :func:`check_declared_size`: a mapped or streamed array is no
    allocation, so it may exceed the memory available."""
    declared = int(np.prod([int(d) for d in shape], dtype=object)) * dtype.itemsize
    if declared > stored:
        check_declared_size(shape, dtype, stored=stored, source=p, field=key)


def _member(zf: zipfile.ZipFile, key: str) -> str | None:
    """The archive member holding ``key`` (np.load accepts ``key.npy`` and ``key``)."""
    names = set(zf.namelist())
    member = key + ".npy" if key + ".npy" in names else key
    return member if member in names else None


def stored_npz_member(p: Path, zf: zipfile.ZipFile, key: str) -> NpyData | None:
    """Where ``key`` of the npz ``p`` (open as ``zf``) lies in ``p``, so it can be mapped in
    place; None if the member is compressed, missing, holds objects or has a damaged header
    (then the caller reads it through ``zf`` and names the damage).

    Raises InputError when the header declares more data than the member holds.
    """
    member = _member(zf, key)
    if member is None:
        return None
    info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(p, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)  # zip local file header: fixed part
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        try:
            shape, fortran, dtype = read_npy_header(fh)
        except (ValueError, OSError, EOFError):
            return None
        offset = fh.tell()
    if dtype.hasobject:
        return None
    _check_not_truncated(shape, dtype, info.file_size - (offset - start), p, key)
    return NpyData(p, offset, shape, dtype, fortran)


# --------------------------------------------------------------------------- AligNet pool files

#: Member names tried, in order, when a ``representations.npz`` is read without explicit keys.
#: The authors' README describes the file's content (so400m-siglip-webli384 last-layer
#: activations of every ImageNet-2012 train image and their k = 500 k-means cluster ids) but
#: not its member names, so arrays are recognised by shape and dtype, these names first.
REPRESENTATION_KEYS = ("representations", "activations", "features", "embeddings")
CLUSTER_KEYS = ("clusters", "cluster_ids", "cluster_labels", "cluster_assignments", "labels")
NAME_KEYS = ("filenames", "file_names", "names")


#: Bytes of the features member read (and checked, and for a deflated member copied) at a
#: time: the streaming pass's buffers are a few times this, whatever the file's size.
_STREAM_BYTES = 16 << 20
#: Rows gathered per mapping of the features. A read fault maps up to 64 KiB of the file's
#: cached pages around the page read (Linux "fault-around"), so a mapping holds up to
#: 64 KiB of resident pages per scattered row read until it is unmapped: 256 rows, <= 16 MiB.
#: (One mapping per 3,640-row block held all of a 100 k × 1152 pool's 440 MB resident.)
_MAP_ROWS = 256


class PoolFeatures:
    """The (N, d) features member of a ``representations.npz``, read by rows, never whole.

    The authors' file is 1.28 M × 1152 float32 (6 GB). An uncompressed member (``np.savez``)
    is mapped in place; a deflated one (``np.savez_compressed``) has been decompressed once,
    in blocks, into an unlinked temporary file and is mapped from there: a pool's rows are
    needed in its image-set order, which is not the file's, and a deflate stream can only be
    read front to back. :meth:`rows` maps, copies and unmaps every :data:`_MAP_ROWS` rows,
    so the pages it touches never pile up in the process's resident memory. (A Fortran-order
    member, as numpy writes a transposed array, is read correctly but column-strided: each
    mapping then touches pages all over the file, up to all of it; save such a file
    C-ordered to import it in bounded memory.)

    shape : (N, d). dtype : the stored dtype (rows are returned as float32).
    Close it (or use it as a context manager) to free the temporary file.
    """

    def __init__(self, data: NpyData, scratch: IO[bytes] | None) -> None:
        self._data = data
        self._scratch = scratch
        self.shape: tuple[int, int] = (int(data.shape[0]), int(data.shape[1]))
        self.dtype = data.dtype

    @property
    def copied(self) -> bool:
        """Whether the rows are read from a decompressed temporary copy (a deflated member)."""
        return self._scratch is not None

    def rows(self, index: np.ndarray) -> np.ndarray:
        """(len(index), d) float32: the file's rows ``index`` (0-based, any order)."""
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(index, kind="stable")  # read the map front to back
        out = np.empty((index.size, self.shape[1]), dtype=np.float32)
        for lo in range(0, index.size, _MAP_ROWS):
            at = order[lo : lo + _MAP_ROWS]
            mapped = self._data.map()
            try:
                out[at] = mapped[index[at]]
            finally:
                del mapped  # unmapped: the pages read leave this process's resident set
        return out

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None

    def __enter__(self) -> PoolFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class AlignetRepresentations:
    """The AligNet authors' pool representations (``representations.npz``).

    features : (N, d) real, one row per pool image (ImageNet-2012 train, TFDS order), read
        by rows (:class:`PoolFeatures`; close it when done).
    labels : (N,) int64 k-means cluster id of every row, >= 0.
    names : (N,) str file name of every row when the archive holds them, else None (then the
        row order is TFDS's, named by ``imagenet2012_filenames.npy``).
    keys : the members read, ``{"features": ..., "labels": ..., "names": ...}``.
    """

    features: PoolFeatures
    labels: np.ndarray
    names: np.ndarray | None
    keys: dict[str, str]


def _pick_member(
    headers: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    explicit: str | None,
    preferred: tuple[str, ...],
    fits: Any,
    what: str,
    p: Path,
) -> str | None:
    """The member holding ``what``: ``explicit`` (checked), else the first of ``preferred``
    that ``fits`` (shape, dtype), else the only member that fits; None when none does."""
    shown = ", ".join(f"{k} {headers[k][0]} {headers[k][1]}" for k in headers) or "none"
    if explicit is not None:
        if explicit not in headers:
            raise InputError(
                f"has no array '{explicit}' (arrays: {shown})", source=p, field=explicit
            )
        if not fits(*headers[explicit]):
            raise InputError(
                f"'{explicit}' has shape {headers[explicit][0]} and dtype "
                f"{headers[explicit][1]}; it cannot hold {what}",
                source=p,
                field=explicit,
            )
        return explicit
    for k in preferred:
        if k in headers and fits(*headers[k]):
            return k
    found = [k for k, (shape, dtype) in headers.items() if fits(shape, dtype)]
    if len(found) > 1:
        raise InputError(
            f"holds several arrays that could be {what} ({', '.join(found)}); name one "
            f"(arrays: {shown})",
            source=p,
        )
    return found[0] if found else None


def read_alignet_representations(
    path: PathLike,
    *,
    features_key: str | None = None,
    labels_key: str | None = None,
    scratch: Path | None = None,
) -> AlignetRepresentations:
    """Read the AligNet authors' ``representations.npz``: pool features and cluster ids.

    The features are the one 2-D real array (``features_key`` names it when there are
    several), the cluster ids the one 1-D integer array of the same length (``labels_key``);
    a 1-D string array of that length, if present, names the rows' image files.

    The features are never loaded whole: they are checked in blocks of ~16 MiB as they are
    streamed from the archive and returned as a :class:`PoolFeatures`. ``scratch``: the
    folder for the temporary copy of a deflated features member (N × d × itemsize bytes;
    default: the system's temporary folder); an uncompressed member needs none.

    Returns
    -------
    AlignetRepresentations

    Raises
    ------
    InputError
        Not an npz / pickled arrays, no (or several unnamed) candidate arrays, lengths that
        differ, non-finite features (rows named), negative cluster ids.
    """
    p = check_file(path)
    with open_npz(p) as npz:
        headers = {k: npz_header(npz, k, p) for k in npz.files}
        fkey = _pick_member(
            headers,
            features_key,
            REPRESENTATION_KEYS,
            lambda shape, dtype: len(shape) == 2 and dtype.kind in "fiu" and shape[0] > 0,
            "the features (a 2-D array of numbers)",
            p,
        )
        if fkey is None:
            raise InputError(
                "holds no 2-D numeric array (the pool features); arrays: "
                + (", ".join(f"{k} {s} {d}" for k, (s, d) in headers.items()) or "none"),
                source=p,
            )
        n = headers[fkey][0][0]
        lkey = _pick_member(
            headers,
            labels_key,
            CLUSTER_KEYS,
            lambda shape, dtype: shape == (n,) and dtype.kind in "iu",
            f"the cluster ids (a 1-D integer array of {n} values, one per feature row)",
            p,
        )
        if lkey is None:
            raise InputError(
                f"holds no 1-D integer array of {n} values (the cluster id of each of the "
                f"{n} feature rows in '{fkey}')",
                source=p,
            )
        nkey = _pick_member(
            headers,
            None,
            NAME_KEYS,
            lambda shape, dtype: shape == (n,) and dtype.kind in "SU",
            "the file names",
            p,
        )
        labels = npz_get(npz, lkey, p)
        names = npz_get(npz, nkey, p) if nkey is not None else None
        features = _pool_features(npz.zip, p, fkey, scratch)
    if (labels < 0).any():
        r = int(np.flatnonzero(labels < 0)[0])
        raise InputError(
            f"{array_row(r)} holds {int(labels[r])}; cluster ids must be >= 0",
            source=p,
            row=r + 1,
            field=lkey,
        )
    if names is not None:
        names = _names_1d(names, p, nkey or "")
    keys = {"features": fkey, "labels": lkey} | ({"names": nkey} if nkey else {})
    logger.info("read %d×%d AligNet representations from %s", *features.shape, p)
    return AlignetRepresentations(features, labels.astype(np.int64), names, keys)


def _pool_features(zf: zipfile.ZipFile, p: Path, key: str, scratch: Path | None) -> PoolFeatures:
    """Stream the (N, d) member ``key`` once, in blocks of :data:`_STREAM_BYTES`: check
    that every value is finite (the rows that are not are named, 1-based, all of them
    counted) and, for a deflated member, copy its data to an unlinked temporary file in
    ``scratch`` (nothing is left behind, even by a killed process). Memory: one block, and
    an (N,) bool of bad rows."""
    stored = stored_npz_member(p, zf, key)
    with contextlib.ExitStack() as cleanup:
        copy = None
        if stored is None:
            if scratch is not None:
                scratch.mkdir(parents=True, exist_ok=True)
            copy = cleanup.enter_context(tempfile.TemporaryFile(prefix="alignet-", dir=scratch))
        member = _member(zf, key) or key
        with _reading(p, key):
            fh = cleanup.enter_context(zf.open(member))
            shape, fortran, dtype = read_npy_header(fh)
        _check_not_truncated(shape, dtype, zf.getinfo(member).file_size - fh.tell(), p, key)
        bad = _scan_finite(fh, shape, fortran, dtype, copy, p, key)
        fh.close()
        rows = np.flatnonzero(bad)
        if rows.size:
            raise InputError(
                f"{array_row(int(rows[0]))} is not finite (NaN/inf). Rows affected: "
                f"{summarize([int(x) + 1 for x in rows[: LIST_LIMIT + 1]], total=rows.size)}.",
                source=p,
                row=int(rows[0]) + 1,
                field=key,
            )
        cleanup.pop_all()  # the copy now belongs to the PoolFeatures
    if copy is None:
        assert stored is not None
        return PoolFeatures(stored, None)
    copy.flush()
    return PoolFeatures(NpyData(copy, 0, shape, dtype, fortran), copy)


@contextlib.contextmanager
def _reading(p: Path, key: str) -> Iterator[None]:
    """Errors reading member ``key`` of ``p`` as an InputError naming both."""
    try:
        yield
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(
            f"cannot be read ({exc}); the file may be truncated", source=p, field=key
        ) from None


def _scan_finite(
    fh: IO[bytes],
    shape: tuple[int, ...],
    fortran: bool,
    dtype: np.dtype,
    copy: IO[bytes] | None,
    p: Path,
    key: str,
) -> np.ndarray:
    """(N,) bool, the rows of the (N, d) array whose data follows at ``fh`` that hold a
    NaN/inf; the data is also written to ``copy`` when given (a failed write, e.g. a full
    disk, is raised as it is: it is not the file's fault)."""
    n, d = shape
    bad = np.zeros(n, dtype=bool)
    total = n * d
    step = max(1, _STREAM_BYTES // dtype.itemsize)
    for start in range(0, total, step):
        want = min(step, total - start) * dtype.itemsize
        with _reading(p, key):
            buf = fh.read(want)
            if len(buf) < want:
                raise EOFError(f"the data ends after {start * dtype.itemsize + len(buf)} bytes")
        if copy is not None:
            copy.write(buf)
        if dtype.kind == "f":
            at = np.flatnonzero(~np.isfinite(np.frombuffer(buf, dtype=dtype))) + start
            bad[at % n if fortran else at // d] = True
    return bad


def _names_1d(a: np.ndarray, p: Path, key: str) -> np.ndarray:
    if a.dtype.kind == "S":
        try:
            a = np.char.decode(a, "utf-8")
        except UnicodeDecodeError:
            raise InputError("holds file names that are not UTF-8", source=p, field=key) from None
    elif a.dtype.kind != "U":
        raise InputError(f"has dtype {a.dtype}; expected file names", source=p, field=key)
    empty = np.flatnonzero(a == "")
    if empty.size:
        raise InputError(
            f"{array_row(int(empty[0]))} is an empty file name",
            source=p,
            row=int(empty[0]) + 1,
            field=key,
        )
    return np.ascontiguousarray(a)


def read_imagenet_filenames(path: PathLike) -> np.ndarray:
    """Read ``imagenet2012_filenames.npy``: the ImageNet-2012 train file name of every TFDS
    index (``tfds.data_source("imagenet2012", split="train")[i]``), the order that the
    authors' ``indices`` and ``representations.npz`` rows follow.

    Returns (N,) str; raises InputError for a non-1-D, non-string or pickled array or an
    empty name.
    """
    p = check_file(path)
    a = load_npy(p)
    if a.ndim != 1 or a.shape[0] == 0:
        raise InputError(
            f"has shape {a.shape}; expected (N,): one file name per TFDS index", source=p
        )
    return _names_1d(a, p, "filenames")


# --------------------------------------------------------------------------- matrices


def read_matrix(
    path: PathLike, n_items: int, *, rtol: float = 1e-5, atol: float = 1e-8
) -> np.ndarray:
    """Read a pairwise similarity (or dissimilarity) matrix.

    ``.npy``: shape (n, n) or (subjects, n, n), real dtype. ``.csv`` / ``.tsv`` / ``.txt``:
    no header, one matrix row per line, separated by ``,`` (if the first line has one),
    else tab, else whitespace. The matrix must be finite and symmetric:
    ``|A[i, j] - A[j, i]| <= atol + rtol * |A[j, i]|`` (numpy ``isclose``).

    Parameters
    ----------
    path : the file.
    n_items : size of the image set; the matrix must be (n_items, n_items).
    rtol, atol : symmetry tolerance.

    Returns
    -------
    (n, n) or (subjects, n, n) float64, as stored (not symmetrised).

    Raises
    ------
    InputError
        Unreadable/empty file, a header line, a non-numeric or empty cell, a ragged row, a
        non-square matrix or one whose size differs from n_items, a wrong ndim/dtype,
        NaN/inf (first cell named), asymmetry (the worst cell named). Row = CSV line or
        1-based matrix row; field = the column (and the subject for 3-D arrays).
    """
    n = check_n_items(n_items)
    assert n is not None
    p = check_file(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = load_npy(p)
        line_of = np.arange(1, arr.shape[-2] + 1 if arr.ndim >= 2 else 2)
        if arr.dtype.kind not in "fiu":
            raise InputError(f"has dtype {arr.dtype}; expected real numbers", source=p)
    elif suffix in MATRIX_TEXT_SUFFIXES:
        arr, line_of = _read_text_matrix(p)
    else:
        raise InputError(
            f"has an unsupported extension '{p.suffix}'; use .npy, "
            f"{', '.join(MATRIX_TEXT_SUFFIXES)}",
            source=p,
        )
    if arr.ndim not in (2, 3):
        raise InputError(f"has shape {arr.shape}; expected (n, n) or (subjects, n, n)", source=p)
    if arr.shape[-1] != arr.shape[-2]:
        raise InputError(f"is not square: shape {arr.shape}", source=p)
    if arr.shape[-1] != n:
        raise InputError(
            f"is {arr.shape[-1]}×{arr.shape[-1]} but the image set has {n} images; the matrix "
            "needs one row and column per image, in image-set order",
            source=p,
        )
    if arr.ndim == 3 and arr.shape[0] == 0:
        raise InputError("holds no subjects (shape (0, n, n))", source=p)
    mat = arr.astype(np.float64)
    mats = mat if mat.ndim == 3 else mat[None]

    def where(s: int, j: int) -> str:
        subject = f"subject {s + 1}, " if mat.ndim == 3 else ""
        return f"{subject}column {j + 1}"

    nonfinite = np.argwhere(~np.isfinite(mats))
    if nonfinite.size:
        s, i, j = (int(x) for x in nonfinite[0])
        raise InputError(
            f"cell [{i}, {j}] is {float(mats[s, i, j])}; the matrix must be finite (no NaN/inf). "
            f"{len(nonfinite)} cell(s) affected.",
            source=p,
            row=int(line_of[i]),
            field=where(s, j),
        )
    diff = np.abs(mats - mats.transpose(0, 2, 1))
    excess = diff - (atol + rtol * np.abs(mats.transpose(0, 2, 1)))
    if (excess > 0).any():
        s, i, j = (int(x) for x in np.unravel_index(np.argmax(excess), excess.shape))
        over = excess > 0
        count = int(np.triu(over | over.transpose(0, 2, 1), 1).sum())
        raise InputError(
            f"is not symmetric: the worst cell is [{i}, {j}] = {float(mats[s, i, j])!r} vs "
            f"[{j}, {i}] = {float(mats[s, j, i])!r} (difference {diff[s, i, j]:.3g}; "
            f"{count} pair(s) beyond rtol={rtol}, atol={atol}). Use a symmetric matrix, "
            "e.g. (A + A.T) / 2.",
            source=p,
            row=int(line_of[i]),
            field=where(s, j),
        )
    logger.info("read a %s similarity matrix from %s", "×".join(map(str, mat.shape)), p)
    return np.ascontiguousarray(mat)


def _read_text_matrix(p: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a header-less numeric text matrix; returns (rows, cols) float64 and line numbers."""
    _, text = read_text(p)
    lines = text_lines(text)
    first = next(ln for ln in lines if ln.strip())
    sep: str | None = "," if "," in first else "\t" if "\t" in first else None

    def check_first(cells: list[str], _line: str, line_no: int) -> None:
        if not all(looks_number(c) for c in cells):
            raise InputError(
                f"line {line_no} is not numeric; a matrix file has no header row or labels: "
                "delete them",
                source=p,
                row=line_no,
            )

    tokens, line_of, ncols = table_cells(
        lines,
        p,
        split=(lambda line: line.split(sep)) if sep else str.split,
        check_first=check_first,
        ragged=lambda n, ncols, first: (
            f"has {n} values but line {first} has {ncols}; every row of the "
            "matrix needs the same number of values"
        ),
    )
    try:
        arr = np.array(tokens, dtype=str).astype(np.float64)
    except ValueError:
        for t, tok in enumerate(tokens):
            if not looks_number(tok):
                r, c = divmod(t, ncols)
                what = "is empty" if not tok.strip() else f"{tok.strip()!r} is not a number"
                raise InputError(
                    f"{what}; every cell must be a number",
                    source=p,
                    row=int(line_of[r]),
                    field=f"column {c + 1}",
                ) from None
        raise
    return arr.reshape(len(line_of), ncols), line_of
