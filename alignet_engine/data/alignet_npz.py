"""The one reader of AligNet triplet archives (``train_cluster_border_500.npz`` and ours).

Layout (method.md §1.2): ``filenames`` (m, 3) str, ``similarities`` (m, 3) real
``[s01, s02, s12]``, ``indices`` (m, 3) int; other members are ignored. Image 2 is the odd
one out, so ``s12`` is the smallest of the three.

:func:`read_alignet_npz` reads and validates; with ``mmap=True`` it maps the members of an
uncompressed archive in place (10 M rows of ImageNet file names are gigabytes; mapped, only
the pages touched stay in memory). Validation runs over blocks of :data:`_CHECK_BLOCK` rows,
so a mapped 10 M-row file is read once, never copied whole into memory. Every bad row is an
:class:`~alignet_engine.errors.InputError` naming the file, the 1-based row and the member.
:func:`load_alignet_npz` is the same reader returning a plain ``(filenames, similarities,
indices)`` tuple (the public name of the notebook API).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignet_engine.data._io_common import (
    LIST_LIMIT,
    PathLike,
    array_row,
    check_file,
    check_n_items,
    summarize,
)
from alignet_engine.data.arrays_io import npz_get, open_npz, stored_npz_member
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["AlignetTriplets", "load_alignet_npz", "read_alignet_npz"]

#: Rows checked per block: the block's temporaries are a few (k, 3) arrays (~6 MiB of
#: float64 at 2**18 rows) whatever m is.
_CHECK_BLOCK = 1 << 18

_KEYS = ("filenames", "similarities", "indices")


@dataclass(frozen=True)
class AlignetTriplets:
    """Teacher-labelled triplets in the AligNet ``.npz`` layout (method.md §1.2).

    filenames : (m, 3) str (numpy ``<U``), the three image file names of each triplet.
    similarities : (m, 3) float32, ``[s01, s02, s12]`` (pairwise teacher similarities);
        ``s12`` is the smallest, so image 2 is the teacher's odd one out.
    indices : (m, 3) int64, image ids: the file's ``indices`` (positions in the ImageNet
        train split), or the caller's ids when ``filenames_to_ids`` was given.

    Read with ``mmap=True``, members already of these dtypes are read-only ``np.memmap``.
    """

    filenames: np.ndarray
    similarities: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def read_alignet_npz(
    path: PathLike,
    n_items: int | None = None,
    filenames_to_ids: Mapping[str, int] | None = None,
    *,
    mmap: bool = False,
    allow_ties: bool = False,
) -> AlignetTriplets:
    """Read and validate an AligNet triplet archive.

    Parameters
    ----------
    path : the ``.npz`` file.
    n_items : when given, every id must be in ``0 .. n_items - 1``.
    filenames_to_ids : when given, the returned ``indices`` are looked up from the file
        names (exact string match), so ``indices`` may be absent from the file; every file
        name must be in the mapping.
    mmap : memory-map the members (read-only) when the archive is uncompressed (as
        :func:`~alignet_engine.align.triplet_sampling.save_alignet_npz` and ``np.savez``
        write it) and a member already has its returned dtype; others are read.
    allow_ties : the ordering rule is ``s12 < s01 and s12 < s02`` (strict, the published
        files); True accepts ``<=``, since our own writer keeps a teacher's exact ties.

    Returns
    -------
    AlignetTriplets

    Raises
    ------
    InputError
        Not an npz / pickled arrays, a missing key, a shape other than (m, 3) or different
        m per key, no rows, a wrong dtype (filenames not str/bytes, similarities not real,
        indices not integer), an empty file name, non-finite similarities or ones too large
        for float32, rows that break the ordering rule (all listed, up to a limit),
        negative or out-of-range ids, an id repeated within a row, file names missing from
        ``filenames_to_ids``, a member shorter than its header declares.
    """
    n = check_n_items(n_items, required=False)
    p = check_file(path)
    arrays = _read_members(p, need_indices=filenames_to_ids is None, mmap=mmap)
    m = _check_shapes(arrays, p)
    filenames = _filenames(arrays["filenames"], p)
    sims = _similarities(arrays["similarities"], p, allow_ties=allow_ties)
    if "indices" in arrays:
        # Checked even when filenames_to_ids replaces them: a broken array means a broken file.
        indices = _indices(arrays["indices"], p)
        # n_items bounds the file's ids only when they are the ids returned.
        _check_ids(indices, n if filenames_to_ids is None else None, p, "indices")
    if filenames_to_ids is not None:
        indices = _lookup(filenames, filenames_to_ids, p)
        _check_ids(indices, n, p, "filenames")
    logger.info("read %d AligNet triplets from %s", m, p)
    return AlignetTriplets(filenames=filenames, similarities=sims, indices=indices)


def load_alignet_npz(
    path: PathLike, *, mmap: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_alignet_npz` as a tuple: read an AligNet triplet file (ours or the
    published ``*_cluster_border_500.npz``), validated row by row, ties allowed.

    Returns
    -------
    filenames : (m, 3) str (unicode; bytes are decoded as UTF-8).
    similarities : (m, 3) float32 ``[s01, s02, s12]``.
    indices : (m, 3) int64.
    With ``mmap=True`` (see :func:`read_alignet_npz`) these may be read-only ``np.memmap``.
    """
    t = read_alignet_npz(path, mmap=mmap, allow_ties=True)
    return t.filenames, t.similarities, t.indices


# --------------------------------------------------------------------------- members


def _read_members(p: Path, *, need_indices: bool, mmap: bool) -> dict[str, np.ndarray]:
    """The archive's AligNet members, mapped where ``mmap`` allows, else read (checked)."""
    with open_npz(p) as npz:
        keys = list(npz.files)
        required = ["filenames", "similarities"] + (["indices"] if need_indices else [])
        for k in required:
            if k not in keys:
                raise InputError(
                    f"has no array '{k}' (a missing key; arrays present: "
                    f"{', '.join(keys) or 'none'}); an AligNet archive needs filenames, "
                    "similarities and indices",
                    source=p,
                    field=k,
                )
        arrays: dict[str, np.ndarray] = {}
        for k in _KEYS:
            if k not in keys:
                continue
            mapped = _memmap_member(p, npz.zip, k) if mmap else None
            arrays[k] = mapped if mapped is not None else npz_get(npz, k, p)
    return arrays


#: The dtypes a member may be mapped with: those it is returned in, so nothing is converted.
_MAPPABLE = {"filenames": "U", "similarities": "f4", "indices": "i8"}


def _memmap_member(p: Path, zf: zipfile.ZipFile, key: str) -> np.ndarray | None:
    """Memory-map ``key.npy`` of an npz in place; None if it is compressed, unusual or not
    yet in its returned dtype (then the caller reads it)."""
    data = stored_npz_member(p, zf, key)
    if data is None:
        return None
    wanted = _MAPPABLE[key]
    if (data.dtype.kind != "U") if wanted == "U" else (data.dtype != np.dtype(wanted)):
        return None
    return data.map()


def _check_shapes(arrays: Mapping[str, np.ndarray], p: Path) -> int:
    """The common row count m of the (m, 3) members (> 0)."""
    m: int | None = None
    for k, a in arrays.items():
        if a.ndim != 2 or a.shape[1] != 3:
            raise InputError(f"has shape {a.shape}; expected (m, 3)", source=p, field=k)
        if m is None:
            m = a.shape[0]
        elif a.shape[0] != m:
            raise InputError(
                f"has {a.shape[0]} rows but 'filenames' has {m}; all arrays need one row per "
                "triplet",
                source=p,
                field=k,
            )
    assert m is not None
    if m == 0:
        raise InputError("holds no triplets (0 rows)", source=p, field="filenames")
    return m


# --------------------------------------------------------------------------- row checks


@dataclass
class _BadRows:
    """0-based rows that fail one check, found block by block: the first few and a count
    (so a file where every row is bad costs no (m,) list)."""

    first: list[int] = field(default_factory=list)
    count: int = 0

    def add(self, rows: np.ndarray, start: int) -> None:
        """Record ``rows`` (0-based within the block that begins at row ``start``)."""
        self.count += int(rows.size)
        room = LIST_LIMIT + 1 - len(self.first)
        self.first.extend(int(r) + start for r in rows[:room])

    def summary(self) -> str:
        """The 1-based rows as :func:`summarize` lists them."""
        return summarize([r + 1 for r in self.first], total=self.count)

    def error(self, says: Callable[[int], str], p: Path, field: str) -> InputError:
        """The InputError naming the first row: ``array_row(r) + " " + says(r)``, then the
        rows affected."""
        r = self.first[0]
        return InputError(
            f"{array_row(r)} {says(r)}. Rows affected: {self.summary()}.",
            source=p,
            row=r + 1,
            field=field,
        )


def _scan(a: np.ndarray, *checks: Callable[[np.ndarray], np.ndarray]) -> tuple[_BadRows, ...]:
    """Run each ``check(block) -> (k,) bool`` (True: bad row) over ``a`` in blocks of
    :data:`_CHECK_BLOCK` rows; one pass over ``a`` whatever the number of checks."""
    found = tuple(_BadRows() for _ in checks)
    for start in range(0, a.shape[0], _CHECK_BLOCK):
        block = np.asarray(a[start : start + _CHECK_BLOCK])
        for check, bad in zip(checks, found, strict=True):
            bad.add(np.flatnonzero(check(block)), start)
    return found


def _filenames(a: np.ndarray, p: Path) -> np.ndarray:
    if a.dtype.kind == "S":
        try:
            a = np.char.decode(a, "utf-8")
        except UnicodeDecodeError:
            raise InputError(
                "holds file names that are not UTF-8", source=p, field="filenames"
            ) from None
    elif a.dtype.kind != "U":
        raise InputError(
            f"has dtype {a.dtype}; expected strings (file names)", source=p, field="filenames"
        )
    (empty,) = _scan(a, _empty_name_rows)
    if empty.count:
        raise InputError(
            f"has an empty file name; rows affected: {empty.summary()}",
            source=p,
            row=empty.first[0] + 1,
            field="filenames",
        )
    return a if isinstance(a, np.memmap) else np.ascontiguousarray(a)


def _empty_name_rows(b: np.ndarray) -> np.ndarray:
    """(k,) rows of the (k, 3) unicode block ``b`` holding an empty name. Only rows whose
    first code point is 0 can (numpy pads with NULs), so only those are compared whole:
    3x faster on 10 M rows of paths than comparing every name with ``""``."""
    width = b.dtype.itemsize // 4
    if width == 0:
        return np.ones(b.shape[0], dtype=bool)
    first = np.ascontiguousarray(b).view(np.uint32).reshape(b.shape[0], 3, width)[:, :, 0]
    out = (first == 0).any(axis=1)
    if out.any():
        out[out] = (b[out] == "").any(axis=1)
    return out


def _ordered(allow_ties: bool) -> Callable[[np.ndarray], np.ndarray]:
    """``check(block)``: rows whose ``s12`` is not the smallest (strictly, unless ties)."""
    if allow_ties:
        return lambda b: ~((b[:, 2] <= b[:, 0]) & (b[:, 2] <= b[:, 1]))
    return lambda b: ~((b[:, 2] < b[:, 0]) & (b[:, 2] < b[:, 1]))


def _similarities(a: np.ndarray, p: Path, *, allow_ties: bool) -> np.ndarray:
    if a.dtype.kind not in "fiu":
        raise InputError(
            f"has dtype {a.dtype}; expected real numbers", source=p, field="similarities"
        )
    # Checked on the stored values (not the float32 copy) so the rule is the file's own.
    nonfinite, unordered = _scan(a, lambda b: ~np.isfinite(b).all(axis=1), _ordered(allow_ties))
    if nonfinite.count:
        raise nonfinite.error(
            lambda r: f"holds {a[r].tolist()}; similarities must be finite (no NaN/inf)",
            p,
            "similarities",
        )
    if unordered.count:
        rule = "s12 <= s01 and s12 <= s02" if allow_ties else "s12 < s01 and s12 < s02"
        raise unordered.error(
            lambda r: (
                f"holds [s01, s02, s12] = {a[r].tolist()}, but s12 must be the smallest "
                f"({rule}: image 2 is the odd one out); reorder each triplet so the odd one "
                "is last"
            ),
            p,
            "similarities",
        )
    if a.dtype == np.float32:
        return a if isinstance(a, np.memmap) else np.ascontiguousarray(a)
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    if not np.isfinite(out).all():
        raise InputError("holds values too large for float32", source=p, field="similarities")
    return np.ascontiguousarray(out)


def _indices(idx: np.ndarray, p: Path) -> np.ndarray:
    """The file's ids as int64 (mapped ones stay mapped)."""
    if idx.dtype.kind not in "iu":
        raise InputError(f"has dtype {idx.dtype}; ids must be integers", source=p, field="indices")
    if idx.dtype == np.int64:
        return idx
    if idx.dtype.kind == "u" and idx.max() > np.iinfo(np.int64).max:
        raise InputError("holds an id too large for int64", source=p, field="indices")
    return idx.astype(np.int64)


def _lookup(filenames: np.ndarray, mapping: Mapping[str, int], p: Path) -> np.ndarray:
    uniq, inverse = np.unique(filenames.ravel(), return_inverse=True)
    ids_u = np.array([mapping.get(str(u), -1) for u in uniq], dtype=np.int64)
    missing = uniq[ids_u < 0]
    if missing.size:
        first_row = int(np.flatnonzero(np.isin(filenames, missing[:1]).any(axis=1))[0])
        hint = ""
        base = os.path.basename(str(missing[0]))
        if base != str(missing[0]) and base in mapping:
            hint = " (the image set knows the base name: map base names, not paths)"
        raise InputError(
            f"{missing.size} file name(s) are not in the image set{hint}: "
            f"{summarize([str(x) for x in missing])}",
            source=p,
            row=first_row + 1,
            field="filenames",
        )
    return np.ascontiguousarray(ids_u[inverse].reshape(filenames.shape))


def _check_ids(ids: np.ndarray, n: int | None, p: Path, field: str) -> None:
    def outside(b: np.ndarray) -> np.ndarray:
        bad = b < 0 if n is None else (b < 0) | (b >= n)
        return np.asarray(bad.any(axis=1))

    out_of_range, repeated = _scan(
        ids, outside, lambda b: (b[:, 0] == b[:, 1]) | (b[:, 0] == b[:, 2]) | (b[:, 1] == b[:, 2])
    )
    if out_of_range.count:
        limit = f"0..{n - 1} (the image set has {n} images)" if n is not None else ">= 0"
        raise out_of_range.error(
            lambda r: f"holds ids {ids[r].tolist()}; ids must be {limit}", p, field
        )
    if repeated.count:
        raise repeated.error(
            lambda r: (
                f"names the same image twice ({ids[r].tolist()}); a triplet needs three "
                "different images"
            ),
            p,
            field,
        )
