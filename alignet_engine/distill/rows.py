"""Triplet rows read from the project's side files as training asks for them.

AligNet distils 10M triplets: their ids (int64) and teacher similarities (float32) are
360 MB, and loading them whole (plus the copies a train/validation split and a device tensor
make) put ~1.5 GB in the training process before the first step. A step needs only its
``batch_size`` rows. :class:`StoredRows` reads rows of a 2-D array stored *uncompressed* in
an HDF5 file — a side array, chunked by whole rows — straight from the file's bytes with
``os.pread``, at offsets taken once from the chunk index.

Why not h5py for each step: a fancy read of 512 random rows of a 10M × 3 chunked dataset
takes ~380 ms (HDF5 walks each selected chunk); 1024 ``pread`` calls take ~2 ms. Why not a
memory map: pages a long run touches count in the process's resident set, which would then
grow to the file's size; ``pread`` copies only the bytes asked for (the OS page cache keeps
the rest, shared and reclaimable).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import h5py
import numpy as np

#: rows read per block when a whole array is scanned (checks, digests, unique ids)
SCAN_ROWS = 1 << 16


class StoredRows:
    """Rows ``[lo, hi)`` of an uncompressed 2-D HDF5 dataset, read on demand.

    Parameters
    ----------
    ds : an (n, w) :class:`h5py.Dataset` of a plain numeric dtype in a file on disk,
        contiguous or chunked by whole rows, without filters (see :meth:`readable`).
    lo, hi : the row range this object shows (``hi=None``: to the end), so that a split of
        one stored array (training rows first, validation rows last) needs no index array.

    ``rows[i]`` for an int array ``i`` (k,) returns a new (k, w) array; ``len(rows)`` and
    ``rows.shape`` follow numpy's. The dataset's file may be closed afterwards: the rows
    are read through a file descriptor of their own (side files never change once written).
    """

    def __init__(self, ds: h5py.Dataset, lo: int = 0, hi: int | None = None) -> None:
        if not self.readable(ds):
            raise ValueError(f"{ds.name} is not an uncompressed 2-D array of whole-row chunks")
        n, width = (int(s) for s in ds.shape)
        hi = n if hi is None else hi
        if not 0 <= lo <= hi <= n:
            raise ValueError(f"row range [{lo}, {hi}) outside the array's {n} rows")
        self.dtype = np.dtype(ds.dtype)
        self.lo, self.n, self.width = lo, hi - lo, width
        self.row_bytes = self.dtype.itemsize * width
        self.path = ds.file.filename
        if ds.chunks is None:
            self.chunk_rows = max(n, 1)
            self.chunk_offsets = np.array([ds.id.get_offset() or 0], dtype=np.int64)
        else:
            self.chunk_rows = int(ds.chunks[0])
            count = -(-n // self.chunk_rows)
            self.chunk_offsets = np.zeros(count, dtype=np.int64)
            for i in range(ds.id.get_num_chunks()):
                info = ds.id.get_chunk_info(i)
                self.chunk_offsets[info.chunk_offset[0] // self.chunk_rows] = info.byte_offset
            if count and ds.id.get_num_chunks() != count:
                raise ValueError(f"{ds.name} has chunks never written")
        self._fd = os.open(self.path, os.O_RDONLY)

    @staticmethod
    def readable(ds: object) -> bool:
        """Whether ``ds`` can be read this way: an h5py dataset in a file on disk (not an
        in-memory copy), 2-D, numeric, no filters, chunks (if any) of whole rows."""
        return (
            isinstance(ds, h5py.Dataset)
            and ds.ndim == 2
            and ds.dtype.kind in "iuf"
            and ds.file.driver in ("sec2", "stdio")
            and not ds.compression
            and not ds.shuffle
            and not ds.fletcher32
            and ds.scaleoffset is None
            and (ds.chunks is None or tuple(ds.chunks[1:]) == tuple(ds.shape[1:]))
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.width)

    def __len__(self) -> int:
        return self.n

    def _offset(self, row: int) -> int:
        chunk, within = divmod(row, self.chunk_rows)
        return int(self.chunk_offsets[chunk]) + within * self.row_bytes

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (k,) int of this range, as a (k, w) array."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise TypeError("index StoredRows with a 1-D array of row numbers")
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"row out of range [0, {self.n})")
        size = self.row_bytes
        data = b"".join(os.pread(self._fd, size, self._offset(self.lo + r)) for r in rows.tolist())
        return np.frombuffer(data, dtype=self.dtype).reshape(len(rows), self.width).copy()

    def block(self, begin: int, end: int) -> np.ndarray:
        """Rows ``[begin, end)`` of this range, (end − begin, w), read chunk by chunk."""
        begin, end = max(begin, 0), min(end, self.n)
        parts = []
        row = self.lo + begin
        stop = self.lo + end
        while row < stop:
            upto = min(stop, (row // self.chunk_rows + 1) * self.chunk_rows)
            parts.append(os.pread(self._fd, (upto - row) * self.row_bytes, self._offset(row)))
            row = upto
        data = b"".join(parts)
        return np.frombuffer(data, dtype=self.dtype).reshape(-1, self.width).copy()

    def blocks(self, rows: int = SCAN_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, block)`` of consecutive blocks of ``rows`` rows, in order."""
        for begin in range(0, self.n, rows):
            yield begin, self.block(begin, begin + rows)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, object]:
        raise TypeError("StoredRows holds a file descriptor; send the array's file instead")


#: what the trainer accepts for triplets and similarities: in memory, or rows on disk
Rows = np.ndarray | StoredRows


def row_blocks(array: Rows, rows: int = SCAN_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, block)`` of ``array`` in consecutive blocks (an ndarray: views)."""
    if isinstance(array, StoredRows):
        yield from array.blocks(rows)
    else:
        for begin in range(0, len(array), rows):
            yield begin, array[begin : begin + rows]


def take_rows(array: Rows, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (k,) of ``array`` as a new (k, w) array."""
    return array[rows] if isinstance(array, StoredRows) else np.asarray(array)[rows]


def unique_ids(triplets: Rows) -> np.ndarray:
    """Sorted distinct values of ``triplets`` (the image ids it uses), read in blocks."""
    seen = np.empty(0, dtype=np.int64)
    for _, block in row_blocks(triplets):
        seen = np.union1d(seen, np.unique(block))
    return seen.astype(np.int64, copy=False)


def whole(array: Rows) -> np.ndarray:
    """All rows of ``array`` in memory."""
    return array.block(0, len(array)) if isinstance(array, StoredRows) else np.asarray(array)
