"""Row-chunked access to (n, d) arrays that need not fit in memory.

Every large-pool algorithm here (mini-batch k-means, transforms, triplet similarities) reads
its features through one interface: an *array-like* with ``shape``, ``dtype`` and contiguous
row slicing ``X[a:b]`` — a numpy array, an :class:`numpy.memmap` or an ``h5py.Dataset``
(the project's lazily opened arrays). Peak memory is then set by the rows read at once, which
:func:`rows_for_budget` derives from a memory budget, never by n.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import numpy as np

from alignet_engine.config import DEFAULT_MEMORY_BUDGET_MB
from alignet_engine.errors import InputError

__all__ = ["DEFAULT_MEMORY_BUDGET_MB", "RowArray", "map_rows", "rows_for_budget"]


class RowArray(Protocol):
    """(n, d) array-like read by contiguous row slices (ndarray, memmap, h5py.Dataset)."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> Any: ...
    def __getitem__(self, key: Any) -> Any: ...


def is_in_memory(X: object) -> TypeGuard[np.ndarray]:
    """True for a plain in-memory numpy array (not a memory map, not an HDF5 dataset)."""
    return isinstance(X, np.ndarray) and not isinstance(X, np.memmap)


def rows_for_budget(row_bytes: int, budget_bytes: int, *, lo: int = 256, hi: int = 1 << 20) -> int:
    """Rows of ``row_bytes`` each that fit in ``budget_bytes`` (clipped to [lo, hi])."""
    return int(max(lo, min(hi, budget_bytes // max(1, row_bytes))))


def iter_row_chunks(X: RowArray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, X[start:start + rows] as a float32/float64 ndarray)`` over all rows."""
    n = int(X.shape[0])
    for start in range(0, n, rows):
        yield start, as_float(np.asarray(X[start : start + rows]))


def as_float(block: np.ndarray) -> np.ndarray:
    """float32 stays float32 (half the memory); anything else becomes float64."""
    return block if block.dtype in (np.float32, np.float64) else block.astype(np.float64)


def check_row_array(X: RowArray, rows: int, *, name: str = "Z") -> tuple[int, int, bool]:
    """Validate an (n, d) array-like chunk by chunk: 2-D, non-empty, numeric, finite.

    Returns ``(n, d, constant)``, ``constant`` True when all rows are identical.
    Raises :class:`InputError` naming the first bad row, as
    :func:`~alignet_engine.align.metrics.check_features` does for in-memory arrays.
    """
    shape = tuple(int(s) for s in X.shape)
    if len(shape) != 2:
        raise InputError(f"must be a 2-D (n, d) array, got shape {shape}", field=name)
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"is empty (shape {shape})", field=name)
    dtype = np.dtype(X.dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise InputError(f"must be numeric, got dtype {dtype}", field=name)
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    for start, block in iter_row_chunks(X, rows):
        ok = np.isfinite(block)
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            raise InputError(
                f"contains NaN or inf (first at row {start + bad[0]}, column {bad[1]}, 0-based)",
                field=name,
            )
        b_lo, b_hi = block.min(axis=0), block.max(axis=0)
        lo = b_lo if lo is None else np.minimum(lo, b_lo)
        hi = b_hi if hi is None else np.maximum(hi, b_hi)
    assert lo is not None and hi is not None  # at least one row: empty arrays were refused
    return shape[0], shape[1], bool(np.array_equal(lo, hi))


def gather_rows(X: RowArray, index: np.ndarray, rows: int) -> np.ndarray:
    """``X[index]`` for sorted unique ``index``, reading contiguous chunks of ``rows`` rows.

    Works on any row-sliceable array-like (h5py has no fast fancy indexing over a whole
    dataset); the memory is the result plus one chunk.
    """
    idx = np.asarray(index, dtype=np.int64)
    n = int(X.shape[0])
    out = np.empty((idx.size, int(X.shape[1])), dtype=as_float(np.asarray(X[0:1])).dtype)
    at = 0
    for start in range(0, n, rows):
        lo, hi = np.searchsorted(idx, [start, start + rows])
        if hi > lo:
            block = as_float(np.asarray(X[start : start + rows]))
            out[at : at + hi - lo] = block[idx[lo:hi] - start]
            at += hi - lo
    return out


def map_rows(
    X: RowArray,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    budget_bytes: int,
    folder: str | Path | None = None,
    in_memory_max_bytes: int | None = None,
) -> np.ndarray:
    """``fn`` applied to the rows of ``X`` chunk by chunk, as an array or a temporary memmap.

    Parameters
    ----------
    X : (n, d) array-like.
    fn : maps an (r, d) block to an (r, d') block (e.g. a transform's ``transform``); row i
        of the output may depend on row i of the input only.
    budget_bytes : working memory for one input + output chunk.
    folder : where the temporary memory map goes (default: the system's temp folder).
    in_memory_max_bytes : return an in-memory array when the output is at most this big
        (default: ``budget_bytes``); otherwise a read-only :class:`numpy.memmap` of an
        unlinked file on POSIX (its disk space is freed when the last reference goes).

    Returns
    -------
    (n, d') ndarray or memmap of ``fn``'s dtype.
    """
    n = int(X.shape[0])
    d = int(X.shape[1])
    first = fn(as_float(np.asarray(X[0:1])))
    d_out, dtype = first.shape[1], first.dtype
    limit = budget_bytes if in_memory_max_bytes is None else in_memory_max_bytes
    rows = rows_for_budget((d + d_out) * 8, budget_bytes)
    if n * d_out * dtype.itemsize <= limit:
        out: np.ndarray = np.empty((n, d_out), dtype=dtype)
    else:
        fd, name = tempfile.mkstemp(prefix="alignet-rows-", suffix=".f32", dir=folder)
        os.close(fd)
        out = np.memmap(name, dtype=dtype, mode="w+", shape=(n, d_out))
        if os.name == "posix":
            os.unlink(name)  # the mapping keeps the data; nothing is left behind on a crash
    for start, block in iter_row_chunks(X, rows):
        out[start : start + block.shape[0]] = fn(block)
    if isinstance(out, np.memmap):
        out.flush()
        out.flags.writeable = False
    return out
