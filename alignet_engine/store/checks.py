"""Durability and distrust: fsync helpers, free-space checks, disk-full errors, and the
structural check that refuses HDF5 links and virtual datasets in a project.

HDF5 external links and virtual datasets make reads (and, opened for writing, writes) go
to *other* files, outside the copy-on-write transaction and outside the project; the store
never writes them, so a project that holds one was crafted or damaged and is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py

from alignet_engine.errors import ProjectError


class DiskFullError(ProjectError):
    """A write ran out of space (ENOSPC, EFBIG or a quota); nothing was changed."""


#: Slack kept free beyond a large write's known size (HDF5 metadata, chunk rounding).
FREE_SPACE_MARGIN = 1 << 20
#: Slack for an index transaction: small, so the journal can still record a failed job on
#: an almost full disk.
INDEX_MARGIN = 64 << 10
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
# HDF5 reports the C errno inside its message, not as OSError.errno.
_FULL_TEXT = re.compile(r"errno = (28|27|122)\b|No space left|File too large|quota exceeded", re.I)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fsync_path(path)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return int(shutil.disk_usage(_existing(Path(path))).free)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e6:.2f} MB"


def disk_full_message(needed: int | None, path: Path) -> str:
    free = free_bytes(path)
    need = f"{_mb(needed)} needed, " if needed is not None else ""
    return f"disk full: {need}{_mb(free)} free at {_existing(Path(path))}"


def ensure_free_space(
    path: Path, needed: int, *, what: str = "", margin: int = FREE_SPACE_MARGIN
) -> None:
    """Raise :class:`DiskFullError` before writing ``needed`` bytes under ``path`` when the
    filesystem cannot hold them (plus ``margin``)."""
    if needed + margin > free_bytes(path):
        suffix = f" (writing {what})" if what else ""
        raise DiskFullError(disk_full_message(needed + margin, path) + suffix)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is the filesystem saying it is full or the file too big."""
    while exc is not None:
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and (exc.errno in _FULL_ERRNOS or _FULL_TEXT.search(str(exc))):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


@contextlib.contextmanager
def disk_full_as_error(path: Path, needed: int | None = None) -> Iterator[None]:
    """Turn ENOSPC/EFBIG (raw or wrapped by HDF5) inside the block into DiskFullError."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        if is_disk_full(exc):
            raise DiskFullError(disk_full_message(needed, path)) from exc
        raise


def refuse_links(f: h5py.File, source: Path) -> None:
    """Raise ProjectError naming the first external link, soft link or virtual dataset in
    ``f``. Walks groups only through hard links, so it cannot be led outside the file."""
    stack: list[h5py.Group] = [f]
    seen: set[object] = set()
    while stack:
        group = stack.pop()
        for name in group:
            link = group.get(name, getlink=True)
            path = f"{group.name.rstrip('/')}/{name}"
            if isinstance(link, h5py.ExternalLink):
                raise ProjectError(
                    f"{source} contains an HDF5 external link at {path} (to "
                    f"{link.filename}:{link.path}); projects never hold links, so this file was "
                    f"crafted or damaged. Refusing to open it."
                )
            if isinstance(link, h5py.SoftLink):
                raise ProjectError(
                    f"{source} contains an HDF5 soft link at {path} (to {link.path}); projects "
                    f"never hold links, so this file was crafted or damaged. Refusing to open it."
                )
            obj = group.get(name)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise ProjectError(
                        f"{source} contains a virtual dataset at {path}, which reads other "
                        f"files; refusing to open it."
                    )
            elif isinstance(obj, h5py.Group):
                key = obj.id.__hash__()
                if key not in seen:  # hard links can make cycles
                    seen.add(key)
                    stack.append(obj)
