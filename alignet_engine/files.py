"""The one atomic writer of the engine: files appear whole under their final name, or not at all.

Every output file (export, report, experiment files, transforms, triplet archives) is written
to a temporary sibling created *exclusively* with an unpredictable name (``mkstemp``:
``O_CREAT | O_EXCL``, mode 0600, so a planted file or symlink is never opened or followed),
flushed and fsynced, then renamed over the target (``os.replace`` replaces a symlink at the
target itself, never the file it points to) and the folder fsynced. On any error the
temporary file is removed. Before the rename the file gets the mode ``open()`` would have
given it (0o666 less the umask, usually 0o644): an exported model or report is readable by
whoever may read the folder, not only by its writer. With ``overwrite=False`` an existing
target (a file, folder or symlink, even a dangling one) is refused with
:class:`FileExistsError`; the final link is made with ``os.link``, which fails if something
appeared there in the meantime.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_output", "atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / file system can
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux
    ``/proc/self/status``): setting it to read it back races with other threads' files."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish_mode(fd: int) -> None:
    """Give the open temporary file the mode a plain ``open()`` would have (mkstemp: 0600)."""
    with contextlib.suppress(OSError):  # file systems without modes (FAT, some mounts)
        os.fchmod(fd, 0o666 & ~_umask())


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path, follow_symlinks=False)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists") from None
        except OSError:  # no hard links here (some network / FAT file systems)
            if os.path.lexists(path):
                raise FileExistsError(f"{path} already exists") from None
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _check_target(path: Path, overwrite: bool) -> None:
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} already exists")
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"{path} is a folder")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """A fresh, empty temporary file beside ``path`` for a writer that needs a file *name*
    (``torch.jit.save``, an ONNX exporter, ``shutil.copyfile``); on success it becomes
    ``path`` (fsynced), on error it is removed. The name keeps ``path``'s suffix, so writers
    that look at it (``np.savez`` appends ``.npz`` otherwise) write exactly there."""
    path = Path(path)
    _check_target(path, overwrite)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            _publish_mode(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, path, overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """A binary file object writing a temporary sibling of ``path`` (see the module
    docstring); on success it is fsynced and renamed to ``path``, on error removed."""
    path = Path(path)
    _check_target(path, overwrite)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            _publish_mode(fh.fileno())
            os.fsync(fh.fileno())
        _commit(tmp, path, overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
