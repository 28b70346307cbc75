"""Whole-project operations on the index and its side files: copying the index tree (for
compaction, packing and the schema-100 migration) and sweeping unreferenced side files.

These functions work on open h5py files and folders; :class:`~alignet_engine.store.Project`
wraps them with its lock, transactions and lease (``compact``, ``pack``, ``collect_garbage``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from alignet_engine.store import sidefiles as sf
from alignet_engine.store.sidefiles import SideArray

log = logging.getLogger(__name__)

#: Rows copied per block when a dataset is streamed into a side file (~8 MiB blocks).
_COPY_BLOCK_BYTES = 8 << 20

Externalize = Callable[[str, h5py.Dataset], SideArray]


def referenced(f: h5py.File) -> dict[str, tuple[str, SideArray]]:
    """Side files the index ``f`` refers to: file name → (index path, :class:`SideArray`)."""
    out: dict[str, tuple[str, SideArray]] = {}

    def visit(name: str, obj: object) -> None:
        if sf.is_ref(obj):
            side = sf.read_ref(obj)  # type: ignore[arg-type]
            out[side.file] = (name, side)

    f.visititems(visit)
    return out


def stream_rows(src: h5py.Dataset, write: Callable[[int, np.ndarray], None]) -> None:
    """Call ``write(lo, rows)`` over ``src`` in blocks of ~8 MiB (bounded memory)."""
    if src.ndim == 0:
        write(0, src[()])
        return
    row_bytes = max(1, src.dtype.itemsize * int(np.prod(src.shape[1:], dtype=np.int64)))
    step = max(1, _COPY_BLOCK_BYTES // row_bytes)
    for lo in range(0, src.shape[0], step):
        write(lo, sf.read_dataset(src, slice(lo, lo + step)))


def copy_tree(
    src: h5py.Group,
    dst: h5py.Group,
    *,
    arrays_dir: Path,
    inline: bool,
    externalize: Externalize | None = None,
) -> None:
    """Copy ``src`` (attributes, datasets, groups) into ``dst``.

    Parameters
    ----------
    arrays_dir : the source project's side-array folder.
    inline : replace side-file references by the arrays themselves (a packed project).
    externalize : if given, called for each plain dataset larger than
        :data:`~alignet_engine.store.sidefiles.SIDE_ARRAY_MIN_BYTES`, returning the side
        array written in its place (the schema-100 migration).
    """
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, obj in src.items():
        where = f"{src.name.rstrip('/')}/{name}"
        if sf.is_ref(obj):
            if inline:
                side = sf.read_ref(obj)
                with sf.open_side(arrays_dir, side, where) as side_file:
                    _copy_plain(side_file["data"], dst, name)
            else:
                src.copy(obj, dst, name)
        elif isinstance(obj, h5py.Dataset):
            big = obj.ndim >= 1 and obj.id.get_storage_size() > sf.SIDE_ARRAY_MIN_BYTES
            if externalize is not None and big:
                sf.write_ref(dst, name, externalize(where, obj))
            else:
                src.copy(obj, dst, name)
        elif isinstance(obj, h5py.Group):
            copy_tree(
                obj,
                dst.create_group(name),
                arrays_dir=arrays_dir,
                inline=inline,
                externalize=externalize,
            )


def _copy_plain(src: h5py.Dataset, dst: h5py.Group, name: str) -> None:
    """A side array into ``dst[name]``: chunked like the source, no filters."""
    itemsize = 64 if h5py.check_string_dtype(src.dtype) is not None else src.dtype.itemsize
    chunks = sf.row_chunks(src.shape, itemsize) if src.ndim and src.shape[0] else None
    ds = dst.create_dataset(name, shape=src.shape, dtype=src.dtype, chunks=chunks)

    def write(lo: int, rows: np.ndarray) -> None:
        if src.ndim == 0:
            ds[()] = rows
        else:
            ds[lo : lo + len(rows)] = rows

    stream_rows(src, write)


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection found (sizes in bytes; paths absolute).

    Attributes
    ----------
    dry_run : nothing was deleted.
    unreferenced : side files no run or data set refers to and no live process may still
        reference: deleted unless ``dry_run``.
    in_use : unreferenced files a live process wrote (its job may still reference them).
    damaged : referenced files that fail verification, each with the reason.
    missing : referenced files that are not there, each with the index path using them.
    freed_bytes : total size of ``unreferenced``.
    stale_leases : lease files of dead processes (deleted unless ``dry_run``).
    """

    dry_run: bool
    unreferenced: tuple[str, ...] = ()
    in_use: tuple[str, ...] = ()
    damaged: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    freed_bytes: int = 0
    stale_leases: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "unreferenced": list(self.unreferenced),
            "freed_bytes": self.freed_bytes,
            "in_use": list(self.in_use),
            "damaged": list(self.damaged),
            "missing": list(self.missing),
        }


def sweep(f: h5py.File, files_dir: Path, *, dry_run: bool) -> GcReport:
    """Find (and unless ``dry_run`` delete) unreferenced side files of dead writers, and
    list referenced files that are missing.

    The caller holds the project's write lock, so no index transaction adds a reference
    while this runs; a live writer's not-yet-referenced files are protected by its lease.
    """
    arrays_dir = files_dir / sf.ARRAYS_DIR
    refs = referenced(f)
    missing = [
        f"{arrays_dir / name} (used by {where})"
        for name, (where, _) in sorted(refs.items())
        if not (arrays_dir / name).exists()
    ]
    unreferenced, in_use = [], []
    freed = 0
    present = sorted(arrays_dir.iterdir()) if arrays_dir.is_dir() else []
    live: dict[str, bool] = {}
    for path in present:
        if not path.is_file() or path.name in refs:
            continue
        if not path.name.endswith((".h5", ".part")):
            continue  # not ours
        token = sf.token_of(path.name)
        if token not in live:
            live[token] = sf.lease_alive(files_dir, token)
        if live[token]:
            in_use.append(str(path))
            continue
        unreferenced.append(str(path))
        freed += path.stat().st_size
    stale = []
    leases = files_dir / sf.LEASES_DIR
    if leases.is_dir():
        for lease in leases.glob("*.json"):
            if not sf.lease_alive(files_dir, lease.stem):
                stale.append(str(lease))
    if not dry_run:
        for name in unreferenced + stale:
            log.info("gc: deleting %s", name)
            Path(name).unlink(missing_ok=True)
    return GcReport(
        dry_run=dry_run,
        unreferenced=tuple(unreferenced),
        in_use=tuple(in_use),
        missing=tuple(missing),
        freed_bytes=freed,
        stale_leases=tuple(stale),
    )
