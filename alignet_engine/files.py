"""The one atomic writer of the engine: files appear whole under their final name, or not at all.

Every output file (export, report, experiment files, transforms, triplet archives) is written
to a temporary sibling created *exclusively* with an unpredictable name (``mkstemp``:
``O_CREAT | O_EXCL``, mode 0600, so a planted file or symlink is never opened or followed),
flushed and fsynced, then renamed over the target (``os.replace`` replaces a symlink at the
target itself, never the file it points to) and the folder fsynced. On any error the
temporary file is removed. Before the rename the file gets the mode ``open()`` would have
given it (0o666 less the umask, usually 0o644): an exported model or report is readable by
whoever may read the folder, not only by its writer. A writer that replaces a file whose
mode matters (the project store) asks for ``mode="keep"``: the replaced file's permission
bits and group, so a private project stays private and a group-shared one shared. With
``overwrite=False`` an existing target (a file, folder or symlink, even a dangling one) is
refused with :class:`FileExistsError`; the final link is made with ``os.link``, which fails
if something appeared there in the meantime.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

__all__ = [
    "FileMode",
    "atomic_output",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "commit_temporary",
    "temporary_sibling",
]

#: The mode a committed file gets: ``"umask"`` (what ``open()`` gives: 0o666 less the
#: umask), ``"keep"`` (the permission bits and group of the file it replaces; a new file:
#: as ``"umask"``) or the permission bits themselves.
FileMode = Literal["umask", "keep"] | int


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


def _publish_mode(fd: int, path: Path, mode: FileMode = "umask") -> None:
    """Give the open temporary file its final :data:`FileMode` (mkstemp made it 0600);
    ``path`` is the target whose mode ``"keep"`` copies."""
    original = None
    if mode == "keep":
        with contextlib.suppress(OSError):
            original = path.stat()
    with contextlib.suppress(OSError):  # file systems without modes (FAT, some mounts)
        if original is not None:
            os.fchmod(fd, stat.S_IMODE(original.st_mode))
        else:
            os.fchmod(fd, mode if isinstance(mode, int) else 0o666 & ~_umask())
    if original is not None and hasattr(os, "fchown"):
        with contextlib.suppress(OSError):  # only a member of the group may set it
            os.fchown(fd, -1, original.st_gid)


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


def temporary_sibling(
    path: str | os.PathLike[str], *, label: str = "", suffix: str | None = None
) -> Path:
    """A fresh, empty file beside ``path``, created exclusively (``mkstemp``) and closed:
    ``.<name>.[<label>-]<random><suffix>``, ``suffix`` by default ``.tmp<path's suffix>``.

    The step-by-step form of :func:`atomic_path`, for a writer whose file outlives one
    ``with`` block (the store's side-array writer): hand the finished file to
    :func:`commit_temporary`, or remove it on failure. ``label`` says what writes it, so
    an owner can recognise (and sweep) its own leftovers.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.{label + '-' if label else ''}",
        suffix=f".tmp{path.suffix}" if suffix is None else suffix,
        dir=path.parent,
    )
    os.close(fd)
    return Path(name)


def commit_temporary(
    tmp: Path, path: str | os.PathLike[str], *, overwrite: bool = True, mode: FileMode = "umask"
) -> None:
    """Give the finished temporary file ``tmp`` its ``mode``, fsync it, rename it to
    ``path`` and fsync the folder (see the module docstring). ``tmp`` is left in place on
    error: its owner removes it."""
    path = Path(path)
    fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        _publish_mode(fd, path, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    _commit(tmp, path, overwrite)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    mode: FileMode = "umask",
    label: str = "",
) -> Iterator[Path]:
    """A fresh, empty temporary file beside ``path`` for a writer that needs a file *name*
    (``torch.jit.save``, an ONNX exporter, ``shutil.copyfile``, ``h5py.File``); on success
    it becomes ``path`` (fsynced, with ``mode``), on error it is removed. The name keeps
    ``path``'s suffix, so writers that look at it (``np.savez`` appends ``.npz`` otherwise)
    write exactly there; ``label`` goes into the name (see :func:`temporary_sibling`)."""
    path = Path(path)
    _check_target(path, overwrite)
    tmp = temporary_sibling(path, label=label)
    try:
        yield tmp
        commit_temporary(tmp, path, overwrite=overwrite, mode=mode)
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
            _publish_mode(fh.fileno(), path)
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
