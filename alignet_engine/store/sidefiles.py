"""Side arrays: large arrays as immutable HDF5 files next to the project's index file.

A project is the index file ``<project>`` plus the folder ``<project>.files/``. Arrays larger
than :data:`SIDE_ARRAY_MIN_BYTES` live in ``<project>.files/arrays/<token>-<name>-<rand>.h5``,
one array per file, as the dataset ``/data`` (chunked in ~1 MiB row blocks, uncompressed or
gzip, never an h5py-only filter such as lzf, so h5dump, MATLAB and R read them). A side file is
written to a ``.part`` temporary beside it, closed, fsynced and renamed (the engine's one
atomic writer, :mod:`alignet_engine.files`); after that it never changes.
The index refers to it with a small *reference group* in place of the dataset, whose
attributes are the file name, the sha256 of the file's bytes, the shape, the dtype and the
file size (see :class:`SideArray`).

Verification is cheap on every open (the file exists, has the recorded size, and its
``/data`` has the recorded shape and dtype) and complete on demand (:func:`verify`, used by
``alignet-cli gc --verify``): hashing 6 GB on every read would cost more than the read.

``<token>`` names the writing process's *lease* (``<project>.files/leases/<token>.json``:
pid, host, process start time). The garbage collector deletes an unreferenced side file
only when its lease is gone or stale (its process is dead), so a file a live process has
written but not yet referenced — a job between its side-file writes and its index
transaction — is never swept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from alignet_engine.errors import ProjectError
from alignet_engine.files import FileMode, atomic_write_text, commit_temporary, temporary_sibling
from alignet_engine.store.checks import (
    disk_full_as_error,
    ensure_free_space,
)
from alignet_engine.store.lock import identity_alive, process_identity

log = logging.getLogger(__name__)

#: Arrays above this size go to side files. 1 MiB keeps the index small (a project with
#: hundreds of runs of small arrays stays a few tens of MB, copied in well under a second
#: per transaction) without scattering loss curves of short runs into many tiny files.
SIDE_ARRAY_MIN_BYTES = 1 << 20
#: Target bytes per chunk: large enough for fast sequential reads, small enough that a
#: random row read (the triplet inspector) touches little.
CHUNK_BYTES = 1 << 20
#: Chunk bytes of arrays grown by appending (loss curves): a 100k-step curve of float64 is
#: 13 chunks, and a short curve does not occupy a whole MiB.
GROW_CHUNK_BYTES = 64 << 10
ARRAYS_DIR = "arrays"
LEASES_DIR = "leases"
REF_KIND = "alignet-side-array"
STR_DTYPE = "vlen-str"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.h5$")


@dataclass(frozen=True)
class SideArray:
    """A finished side array, as the index refers to it.

    Attributes
    ----------
    file : file name inside ``<project>.files/arrays/`` (no folders).
    sha256 : hex sha256 of the file's bytes (``sha256sum`` prints the same).
    shape : the array's shape.
    dtype : numpy dtype string (``"<f4"``) or ``"vlen-str"`` for strings.
    size : the file's size in bytes.
    """

    file: str
    sha256: str
    shape: tuple[int, ...]
    dtype: str
    size: int

    @property
    def nbytes(self) -> int:
        """Bytes of the array in memory (strings: the file size, a fair estimate)."""
        if self.dtype == STR_DTYPE:
            return self.size
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _dtype_str(dtype: Any) -> str:
    if isinstance(dtype, str) and dtype == STR_DTYPE:
        return STR_DTYPE
    if dtype is str or dtype is object:
        return STR_DTYPE
    dt = np.dtype(dtype)
    if dt.kind in "UO" or h5py.check_string_dtype(dt) is not None:
        return STR_DTYPE
    return dt.str


def _h5_dtype(dtype: str | np.dtype) -> Any:
    return h5py.string_dtype() if _dtype_str(dtype) == STR_DTYPE else np.dtype(dtype)


def row_chunks(
    shape: tuple[int | None, *tuple[int, ...]], itemsize: int, target: int = CHUNK_BYTES
) -> tuple[int, ...]:
    """Chunk shape of whole rows, ~``target`` bytes each (strings count 64 B per item);
    ``shape[0]`` None: rows still to be appended."""
    rest = tuple(int(s) for s in shape[1:])
    row_bytes = max(1, itemsize * int(np.prod(rest, dtype=np.int64)))
    rows = max(1, target // row_bytes)
    if shape[0] is not None:
        rows = max(1, min(rows, int(shape[0])))
    return (rows, *rest)


def estimated_nbytes(value: np.ndarray) -> int:
    """In-file size of an array: nbytes, or the total UTF-8 length for string arrays."""
    if value.dtype.kind in "UO":
        return int(sum(len(str(s).encode()) for s in value.reshape(-1))) + 16 * value.size
    return int(value.nbytes)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ leases
class Lease:
    """This process's claim on the side files it writes: ``leases/<token>.json``.

    Created on the first side-file write, removed by :meth:`release` (the project's
    ``close``). A lease left by a killed process is stale once that process is gone.
    """

    def __init__(self, files_dir: Path) -> None:
        self.token = uuid.uuid4().hex[:12]
        self.path = files_dir / LEASES_DIR / f"{self.token}.json"
        self._written = False

    def ensure(self) -> None:
        if self._written:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(process_identity()))
        self._written = True

    def release(self) -> None:
        if self._written:
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: another process's lease
                self.path.parent.rmdir()
            self._written = False


def lease_alive(files_dir: Path, token: str) -> bool:
    """Whether the lease ``token`` belongs to a live process (unreadable: stale)."""
    path = files_dir / LEASES_DIR / f"{token}.json"
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(holder, dict) and identity_alive(holder)


def token_of(file_name: str) -> str:
    """The lease token a side file's name starts with ('' if none)."""
    name = file_name.lstrip(".")
    return name.split("-", 1)[0] if "-" in name else ""


# ------------------------------------------------------------------------------ writing
class SideArrayWriter:
    """Writes one side array in pieces; :meth:`finish` makes it durable and returns its
    :class:`SideArray`, which ``Project.write_run(arrays={name: side})`` then references.

    Parameters
    ----------
    folder : ``<project>.files/arrays``.
    token : the writing process's lease token (prefix of the file name).
    name : array name (part of the file name, for people browsing the folder).
    shape : the full shape, or ``(None, *rest)`` for an array grown by :meth:`append`.
    dtype : numpy dtype, or ``str``/``object`` for strings.
    chunks : HDF5 chunk shape (default: whole rows, ~1 MiB).
    compression : None or ``"gzip"`` (portable filters only).
    mode : file mode bits to give the finished file (the project's), or None.

    Use as a context manager: leaving the block with an exception, or without calling
    :meth:`finish`, deletes the temporary file.
    """

    def __init__(
        self,
        folder: Path,
        token: str,
        name: str,
        shape: tuple[int | None, ...],
        dtype: Any,
        *,
        chunks: tuple[int, ...] | None = None,
        compression: str | None = None,
        mode: int | None = None,
    ) -> None:
        if compression not in (None, "gzip"):
            raise ProjectError(
                f"Side array compression {compression!r}: use None or 'gzip' (portable)."
            )
        shape = tuple(shape)
        if not shape or any(s is not None and int(s) < 0 for s in shape):
            raise ProjectError(f"Invalid side array shape {shape!r}.")
        if any(s is None for s in shape[1:]):
            raise ProjectError(f"Only the first dimension may grow, not {shape!r}.")
        rest = tuple(s for s in shape[1:] if s is not None)  # all of shape[1:] (checked)
        self.name = name
        self.dtype = _dtype_str(dtype)
        h5dtype = _h5_dtype(self.dtype)
        itemsize = 64 if self.dtype == STR_DTYPE else np.dtype(self.dtype).itemsize
        first = shape[0]  # None: grown by append
        self.growable = first is None
        if first is not None:
            n_items = int(np.prod((first, *rest), dtype=np.int64))
            ensure_free_space(folder, n_items * itemsize, what=f"array '{name}'")
        folder.mkdir(parents=True, exist_ok=True)
        stem = _SAFE_NAME.sub("_", name)[:40] or "array"
        self.final = folder / f"{token}-{stem}-{uuid.uuid4().hex[:8]}.h5"
        # The step-by-step form of the atomic writer (the file outlives any one `with`
        # block: append, flush, finish). `.part`, not `.h5`: never taken for a side file.
        self.tmp = temporary_sibling(self.final, suffix=".part")
        self._mode: FileMode = "umask" if mode is None else mode
        self.rows = 0
        self._done = False
        start = (0, *shape[1:]) if self.growable else shape
        try:
            self._file = h5py.File(self.tmp, "w", locking=False)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        try:
            self._ds = self._file.create_dataset(
                "data",
                shape=start,
                maxshape=shape,
                dtype=h5dtype,
                # A growing array (a loss curve) starts small: 64 KiB chunks waste little.
                chunks=None
                if shape[0] == 0  # a fixed empty array cannot be chunked
                else chunks
                or row_chunks(
                    (first, *rest), itemsize, GROW_CHUNK_BYTES if self.growable else CHUNK_BYTES
                ),
                compression=compression,
            )
            self._file.attrs["format"] = REF_KIND
            self._file.attrs["name"] = name
        except BaseException:
            self.abort()
            raise

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._ds.shape)

    def append(self, rows: Any) -> None:
        """Add rows ``(k, *rest)`` after the last appended row (growable or preallocated)."""
        rows = np.asarray(rows)
        if self.dtype == STR_DTYPE:
            rows = rows.astype(object)
        elif self.growable:
            # The size of a growing array is known block by block: stop before the disk is
            # full rather than let HDF5 fail mid-write (it may then crash on close).
            ensure_free_space(self.final.parent, rows.nbytes, what=f"array '{self.name}'")
        k = int(rows.shape[0]) if rows.ndim else 1
        end = self.rows + k
        if self.growable and end > self._ds.shape[0]:
            self._ds.resize(max(end, self._ds.shape[0]), axis=0)
        elif end > self._ds.shape[0]:
            raise ProjectError(
                f"Side array '{self.name}' holds {self._ds.shape[0]} rows; appending {k} "
                f"after row {self.rows} would overflow it."
            )
        with disk_full_as_error(self.final.parent):
            self._ds[self.rows : end] = rows
        self.rows = end

    def __setitem__(self, key: Any, value: Any) -> None:
        """Write a slice of a preallocated array, e.g. ``writer[lo:hi] = block``."""
        with disk_full_as_error(self.final.parent):
            self._ds[key] = value

    def flush(self) -> None:
        """Push written rows to the operating system (not durable until :meth:`finish`)."""
        with disk_full_as_error(self.final.parent):
            self._file.flush()

    def finish(self) -> SideArray:
        """Close, fsync and rename the file; return its reference (shape, dtype, sha256)."""
        if self._done:
            raise ProjectError(f"Side array '{self.name}' is already finished.")
        shape = self.shape
        try:
            with disk_full_as_error(self.final.parent):
                self._file.close()
        except BaseException:
            self.abort()
            raise
        try:
            side = SideArray(
                file=self.final.name,
                sha256=sha256_file(self.tmp),
                shape=shape,
                dtype=self.dtype,
                size=self.tmp.stat().st_size,
            )
            commit_temporary(self.tmp, self.final, mode=self._mode)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            self._done = True
            raise
        self._done = True
        return side

    def abort(self) -> None:
        """Drop the unfinished file."""
        if self._done:
            return
        # Free the file's space first: after ENOSPC, HDF5 closing a file whose metadata it
        # cannot write fails (and may crash the process); into a truncated file it can.
        with contextlib.suppress(OSError):
            os.truncate(self.tmp, 0)
        with contextlib.suppress(Exception):
            self._file.close()
        self.tmp.unlink(missing_ok=True)
        self._done = True

    def __enter__(self) -> SideArrayWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self._done:
            if exc_type is None:
                log.warning("Side array '%s' left unfinished; discarding it", self.name)
            self.abort()


def write_side_array(
    folder: Path, token: str, name: str, value: np.ndarray, *, mode: int | None = None
) -> SideArray:
    """Write a whole in-memory array as a side file (row blocks of ~1 MiB at a time)."""
    value = np.asarray(value)
    with SideArrayWriter(folder, token, name, value.shape, value.dtype, mode=mode) as w:
        step = w._ds.chunks[0] * 16 if w._ds.chunks else value.shape[0]
        for lo in range(0, value.shape[0], max(1, step)):
            w.append(value[lo : lo + step])
        return w.finish()


# ------------------------------------------------------------------------------ references
def write_ref(group: h5py.Group, name: str, side: SideArray) -> None:
    """Put a reference group for ``side`` at ``group[name]``."""
    g = group.create_group(name)
    g.attrs["kind"] = REF_KIND
    g.attrs["file"] = side.file
    g.attrs["sha256"] = side.sha256
    g.attrs["shape"] = np.asarray(side.shape, dtype=np.int64)
    g.attrs["dtype"] = side.dtype
    g.attrs["size"] = int(side.size)


def is_ref(obj: Any) -> bool:
    return isinstance(obj, h5py.Group) and obj.attrs.get("kind") == REF_KIND


def read_ref(group: h5py.Group) -> SideArray:
    """The :class:`SideArray` a reference group describes (validated: a hostile project
    must not make us open ``../../etc/passwd``)."""
    try:
        side = SideArray(
            file=str(group.attrs["file"]),
            sha256=str(group.attrs["sha256"]),
            shape=tuple(int(s) for s in np.asarray(group.attrs["shape"]).reshape(-1)),
            dtype=str(group.attrs["dtype"]),
            size=int(group.attrs["size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProjectError(f"Side-array reference {group.name} is malformed ({exc}).") from exc
    if not _FILE_NAME.match(side.file) or "/" in side.file or "\\" in side.file:
        raise ProjectError(
            f"Side-array reference {group.name} names {side.file!r}, which is not a file "
            f"name inside the project's arrays folder; refusing to open it."
        )
    return side


def open_side(folder: Path, side: SideArray, where: str) -> h5py.File:
    """Open a side file read-only after the cheap checks (exists, size, shape, dtype).

    Raises
    ------
    ProjectError
        Naming the file, when it is missing, damaged or not what the index recorded.
    """
    path = folder / side.file
    try:
        size = path.stat().st_size
    except OSError:
        raise ProjectError(
            f"Side file {path} (array {where}) is missing. Move the project together with its "
            f"'{folder.parent.name}' folder, or re-run the stage that wrote it."
        ) from None
    if size != side.size:
        raise ProjectError(
            f"Side file {path} (array {where}) is damaged or was replaced: {size} bytes, the "
            f"project recorded {side.size}. Restore it from a backup or re-run the stage."
        )
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise ProjectError(f"Side file {path} (array {where}) is unreadable ({exc}).") from exc
    try:
        link = f.get("data", getlink=True)
        ds = f.get("data") if isinstance(link, h5py.HardLink) else None
        if not isinstance(ds, h5py.Dataset) or ds.is_virtual:
            raise ProjectError(
                f"Side file {path} (array {where}) has no plain dataset /data (links and "
                f"virtual datasets are refused)."
            )
        if tuple(ds.shape) != side.shape or _dtype_str(ds.dtype) != side.dtype:
            raise ProjectError(
                f"Side file {path} (array {where}) is damaged or was replaced: shape "
                f"{tuple(ds.shape)} {_dtype_str(ds.dtype)}, the project recorded "
                f"{side.shape} {side.dtype}."
            )
    except BaseException:
        f.close()
        raise
    return f


def verify(folder: Path, side: SideArray, where: str) -> None:
    """The full check: the file's sha256 is the one recorded (reads the whole file)."""
    open_side(folder, side, where).close()
    digest = sha256_file(folder / side.file)
    if digest != side.sha256:
        raise ProjectError(
            f"Side file {folder / side.file} (array {where}) is damaged or was replaced: its "
            f"sha256 differs from the one recorded. Restore it or re-run the stage."
        )


def read_dataset(ds: h5py.Dataset, key: Any = ()) -> np.ndarray:
    """``ds[key]`` with HDF5 strings as a numpy object array of ``str``."""
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.array(ds.asstr()[key], dtype=object)
    return ds[key]
