"""The project file: a small HDF5 index plus immutable side files, owned by this module alone.

Layout (schema 200)::

    <name>.alignet          the index (HDF5)
    <name>.alignet.files/   side files: arrays/ (large arrays), leases/, model checkpoints
    <name>.alignet.lock     the write lock, held for one index transaction at a time

    / attrs: format, schema_version, created_with, last_written_with, uuid, created
    /current                attrs: slot -> run id (the active run of each slot)
    /journal                (J,) JSON strings, one record per job start / end / import
    /data/imagesets/<name>  path_bytes, path_offsets, category_codes, category_names; attrs
                            params, n, root (see ImageSet; older files: paths, categories)
    /data/judgments/<name>  triplets, participant[, votes]; attrs kind, image_set, params
    /data/matrices/<name>   matrix (n,n) or (s,n,n); attrs kind, image_set, params
    /<stage>/<run_id>/      one run of a pipeline stage: arrays + attrs params, inputs, summary

A *slot* names what a run produces, e.g. ``features:stimuli:efficientnet_lite2`` or
``transform``; ``/current`` maps slots to run ids and is written last in a transaction.

Any array above :data:`~alignet_engine.store.sidefiles.SIDE_ARRAY_MIN_BYTES` (1 MiB) is
not stored in the index: it is written once to its own file under ``<name>.alignet.files/
arrays/`` (fsynced, then renamed into place) and the index holds a *reference group* in its
place — file name, sha256, shape, dtype, size (:mod:`alignet_engine.store.sidefiles`).
Callers see no difference: :meth:`Project.run` returns the arrays, :meth:`Project.open_array`
gives a lazily read, row-sliceable dataset wherever the array lives, and
:meth:`Project.new_side_array` streams arrays too large for memory.

Crash safety: every change of the index is a *copy-on-write transaction* — the index is
copied to a temporary sibling, the copy is changed, flushed and fsynced, then renamed over
the index (``os.replace`` is atomic on POSIX and Windows). A process killed at any point
leaves the old or the new index, never a half-written one (HDF5 has no journal of its own).
Side files are complete before any index refers to them, so a kill leaves at worst an
unreferenced side file, which ``gc`` sweeps.

Why this design, not the alternatives: the copy-on-write transaction is the one HDF5
write that is crash-safe without a journal of our own, and its cost is the index's size.
Keeping the large, write-once arrays (features, triplets, pool paths, long curves) outside
the index makes that size a few MB at any study size, so a journal record costs the same
on an empty project and on one with 6 GB of features. Writing HDF5 in place (no copy)
would corrupt the file on a kill; one HDF5 file per run would still need an index; a
database (SQLite) would hold the arrays no better and lose h5dump/MATLAB/R access.

Concurrency: readers never lock (they open the index read-only; a replace does not disturb
an open reader). Writers take ``<name>.alignet.lock`` for one index transaction (waiting up
to :data:`~alignet_engine.store.lock.LOCK_WAIT_S` for another), so a long job's
journal and run writes interleave with short writes of other processes. A job's journal
start record names its process; a second long job of the same stage from another live
process is refused, and its side files are protected from ``gc`` by the process's lease.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from alignet_engine import __version__
from alignet_engine.base.types import ImageSet, Judgments, MatrixKind
from alignet_engine.errors import ProjectError, ProjectLockedError
from alignet_engine.files import atomic_path
from alignet_engine.store import maintenance
from alignet_engine.store import sidefiles as sf
from alignet_engine.store.checks import (
    INDEX_MARGIN,
    DiskFullError,
    disk_full_as_error,
    ensure_free_space,
    fsync_dir,
    fsync_path,
    refuse_links,
)
from alignet_engine.store.lock import LOCK_WAIT_S, ProjectLock, identity_alive, process_identity
from alignet_engine.store.maintenance import GcReport
from alignet_engine.store.sidefiles import SideArray, SideArrayWriter

log = logging.getLogger(__name__)

FORMAT = "alignet-project"
SCHEMA_VERSION = 200  # major * 100 + minor; 200: large arrays in side files
_STR = h5py.string_dtype()
#: Stages whose jobs run long enough that a second one of the same stage, started from
#: another process while the first runs, is refused (both would race for /current).
LONG_STAGES = frozenset({"features", "transform", "clusters", "triplets", "distill"})

#: Where a packed project (:meth:`Project.pack`) carries its non-array side files
#: (checkpoints), as uint8 datasets; unpacked on the first writable open.
PACKED_FILES = "packed_files"
#: More journal records than any real project writes (one per job start, end, import).
_MAX_JOURNAL_RECORDS = 10_000_000
#: Top-level groups of the index that are not stages.
_NOT_STAGES = ("current", "journal", "data", PACKED_FILES)

# Migrations from schema version v to the next one: (target_version, step(project, file)).
# A migration runs inside a transaction after a backup copy of the old file was written;
# the index is compacted afterwards.
MIGRATIONS: dict[int, tuple[int, Callable[[Project, h5py.File], None]]] = {}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _index_writer(target: Path, label: str) -> contextlib.AbstractContextManager[Path]:
    """The temporary sibling every whole-index write (a transaction's copy, create, compact,
    pack, Save As) is written to, through the engine's one atomic writer: on success it is
    fsynced and renamed over ``target`` with the mode and group of the file it replaces (a
    private 0600 project stays private), on error removed. Its name,
    ``.<name>.<label>-<random>.tmp<suffix>``, is what :meth:`Project._sweep_temporaries`
    recognises after a kill."""
    return atomic_path(target, mode="keep", label=label)


def _write_inline(group: h5py.Group, name: str, value: np.ndarray) -> None:
    """A small array as a dataset of the index (no filters: any HDF5 reader reads it)."""
    value = np.asarray(value)
    if value.dtype.kind in "UO":
        group.create_dataset(name, data=value.astype(object), dtype=_STR)
        return
    group.create_dataset(name, data=value)


def _externalize(project: Project, f: h5py.File) -> None:
    """Move every dataset over 1 MiB out of the index into a side file, and rewrite the
    smaller lzf-compressed ones (an h5py-only filter) without compression: the schema
    100 -> 200 migration, and unpacking a packed project.

    Runs inside the migration's transaction, on its copy of the index; the side files are
    complete before that copy is committed (a kill leaves them unreferenced, for ``gc``).
    """
    found: list[tuple[str, bool]] = []  # (path, to a side file)

    def visit(name: str, obj: object) -> None:
        skip = name == "journal" or name.startswith(PACKED_FILES + "/")
        if not isinstance(obj, h5py.Dataset) or obj.ndim == 0 or skip:
            return
        strings = h5py.check_string_dtype(obj.dtype) is not None
        size = obj.id.get_storage_size() if strings else obj.size * obj.dtype.itemsize
        if size > sf.SIDE_ARRAY_MIN_BYTES:
            found.append((name, True))
        elif obj.compression == "lzf":
            found.append((name, False))

    f.visititems(visit)
    for name, external in found:
        ds = f[name]
        parent, leaf = ds.parent, name.rsplit("/", 1)[-1]
        if not external:
            data = sf.read_dataset(ds)
            del parent[leaf]
            _write_inline(parent, leaf, data)
            continue
        with project.new_side_array(leaf, ds.shape, ds.dtype) as writer:
            maintenance.stream_rows(ds, _slice_writer(writer))
            side = writer.finish()
        del parent[leaf]
        sf.write_ref(parent, leaf, side)
        log.info("Moved %s (%d bytes) to side file %s", name, side.size, side.file)


def _slice_writer(writer: SideArrayWriter) -> Callable[[int, np.ndarray], None]:
    def write(lo: int, rows: np.ndarray) -> None:
        writer[lo : lo + len(rows)] = rows

    return write


MIGRATIONS[100] = (200, _externalize)


def _loads(value: Any, path: Path, what: str) -> Any:
    """A JSON attribute of the project; ProjectError naming it when it is not JSON."""
    try:
        return json.loads(value)
    except (TypeError, ValueError, RecursionError):
        shown = repr(value)[:60]
        raise ProjectError(f"{path} is damaged: {what} is not JSON ({shown}).") from None


def _no_run_message(f: h5py.File, ref: str, name: str) -> str:
    """Why ``ref`` has no run, with a hint: for features, the labels the image set has."""
    if ref.startswith("features:") and ref.count(":") >= 2:
        _, image_set, label = ref.split(":", 2)
        labels = sorted(
            k.split(":", 2)[2] for k in f["current"].attrs if k.startswith(f"features:{image_set}:")
        )
        have = f"it has features of {', '.join(labels)}" if labels else "it has no features yet"
        return (
            f"No features of '{label}' for image set '{image_set}' in {name}; {have}. Choose "
            "one with --model, or extract (or import) features of that model first."
        )
    slots = sorted(f["current"].attrs)
    return f"No run '{ref}' in {name}; run that stage first (slots present: {slots})."


def _check_name(name: str) -> None:
    """A name of imported data: an HDF5 link name that cannot reach another group."""
    if (
        not name
        or name.strip() != name
        or "/" in name
        or name in (".", "..")
        or any(ord(c) < 32 for c in name)
    ):
        raise ProjectError(
            f"Invalid name {name!r}: use a non-empty name without '/', control characters or "
            "surrounding spaces, other than '.' and '..'."
        )


def _attr(g: h5py.HLObject, key: str) -> Any:
    value = g.attrs.get(key)
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over the arrays' names, dtypes, shapes and bytes (strings as UTF-8)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.asarray(arrays[key])
        h.update(f"{key}:{a.dtype.str if a.dtype != object else 'str'}:{a.shape};".encode())
        if a.dtype.kind in "OU":
            for item in a.ravel():
                h.update(str(item).encode("utf-8", "surrogatepass") + b"\0")
        else:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _imageset_users(f: h5py.File, name: str) -> list[str]:
    """Paths of the judgments, matrices and runs that read image set ``name``."""
    users = [
        f"data/{kind}/{n}"
        for kind in ("judgments", "matrices")
        if kind in f["data"]
        for n, g in f["data"][kind].items()
        if _attr(g, "image_set") == name
    ]
    for stage in f:
        if stage in _NOT_STAGES:
            continue
        for run_id, g in f[stage].items():
            params = _attr(g, "params") or {}
            slot = str(g.attrs.get("slot", ""))
            if name in (
                params.get("image_set"),
                params.get("pool"),
                params.get("val_set"),
            ) or slot.startswith(f"features:{name}:"):
                users.append(f"{stage}/{run_id}")
    return users


def _summarize_users(users: list[str]) -> str:
    shown = ", ".join(u.removeprefix("data/") for u in users[:5])
    return shown + (f" and {len(users) - 5} more" if len(users) > 5 else "")


def _unusable(f: h5py.File, path: str, seen: dict[str, list[str]]) -> list[str]:
    """Why ``path`` cannot be used: its own ``invalidated`` mark, or one of the runs it read
    (its ``inputs``, transitively)."""
    if path in seen:
        return seen[path]
    seen[path] = []
    g = f.get(path)
    if g is None:
        return []
    reasons = [str(g.attrs["invalidated"])] if "invalidated" in g.attrs else []
    for slot, used in (_attr(g, "inputs") or {}).items():
        if isinstance(used, str) and _unusable(f, used, seen):
            reasons.append(f"{slot} ({used}) is unusable: {_unusable(f, used, seen)[0]}")
    seen[path] = reasons
    return reasons


@dataclass(frozen=True)
class Run:
    """One run of a stage as stored: parameters, inputs (slot -> run id), summary, arrays."""

    stage: str
    run_id: str
    slot: str
    params: dict[str, Any]
    inputs: dict[str, str]
    summary: dict[str, Any]
    created: float
    arrays: dict[str, np.ndarray]


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class Project:
    """An AligNet Studio project (see the module docstring for the layout).

    Open with :meth:`create` or :meth:`open`; use as a context manager so this process's
    lease on its side files is released. Reading methods open the index briefly read-only;
    writing goes through :meth:`transaction`, which holds the write lock for its duration.

    Attributes
    ----------
    readonly : whether writes are refused.
    readonly_reason : why, in words the GUI and CLI show ("... you cannot write it ..."),
        or None when writable.
    """

    def __init__(self, path: Path, *, readonly: bool, reason: str | None = None) -> None:
        self.path = Path(path).resolve()
        self.readonly = readonly
        self.readonly_reason = reason if readonly else None
        if readonly and reason is None:
            self.readonly_reason = "opened read-only"
        self.files_dir = self.path.with_name(self.path.name + ".files")
        self.arrays_dir = self.files_dir / sf.ARRAYS_DIR
        self._lock = ProjectLock(self.path)
        self._lease = sf.Lease(self.files_dir)
        self._threads = threading.RLock()
        self._closed = False

    # ----------------------------------------------------------------- open / close
    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False) -> Project:
        """Create a new, empty project file at ``path`` and open it for writing."""
        path = Path(path).resolve()
        if path.exists() and not overwrite:
            raise ProjectError(f"{path} already exists; choose another name or open it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        project = cls(path, readonly=False)
        with (
            project._locked(),
            _index_writer(path, "new") as tmp,
            disk_full_as_error(path.parent),
            h5py.File(tmp, "w", locking=False) as f,
        ):
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["created_with"] = __version__
            f.attrs["last_written_with"] = __version__
            f.attrs["uuid"] = uuid.uuid4().hex
            f.attrs["created"] = time.time()
            f.create_group("current")
            f.create_dataset("journal", shape=(0,), maxshape=(None,), dtype=_STR)
            f.create_group("data")
        return project

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Project:
        """Open an existing project, for writing unless ``readonly``.

        Opening takes no lock: several processes may have a project open, and each write
        waits for the others' transactions. A project this user cannot write (file mode,
        folder mode, a read-only medium) opens read-only, with :attr:`readonly_reason`
        saying why.

        Raises
        ------
        ProjectError
            The file is missing, not a project, holds HDF5 links or virtual datasets, or
            was written by a newer major schema.
        ProjectLockedError
            A migration is needed and another process holds the write lock for too long.
        """
        path = Path(path).resolve()
        if not path.is_file():
            raise ProjectError(f"No project file at {path}.")
        version, packed = cls._check_header(path)
        reason = "opened read-only" if readonly else cls._unwritable_reason(path)
        if reason is None and version > SCHEMA_VERSION:
            reason = (
                f"written by a newer AligNet Studio (schema {version}; this version writes "
                f"{SCHEMA_VERSION}): opened read-only so nothing it added is lost"
            )
            log.warning("%s: %s", path, reason)
        if reason is not None and not readonly:
            log.warning("%s opens read-only: %s", path, reason)
        project = cls(path, readonly=reason is not None, reason=reason)
        if version < SCHEMA_VERSION and not project.readonly:
            # Read-only access needs no migration: older schemas hold plain datasets only.
            project._migrate(version)
        if packed and not project.readonly:
            project._unpack()
        if not project.readonly:
            # Sweep a killed writer's temporaries if the lock is free now; never wait for it
            # (a busy lock means a live writer, and the next free open sweeps).
            with contextlib.suppress(ProjectLockedError), project._locked(wait=0.0):
                project._sweep_temporaries()
        return project

    @staticmethod
    def _unwritable_reason(path: Path) -> str | None:
        """Why this user cannot replace ``path`` (None when they can)."""
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            return f"cannot read its permissions ({exc})"
        # No write bit at all: the owner made it read-only on purpose, which even an
        # administrator (for whom os.access always says yes) should respect.
        if not os.access(path, os.W_OK) or not mode & 0o222:
            return f"you cannot write {path} (mode {mode:04o}); opened read-only"
        if not os.access(path.parent, os.W_OK | os.X_OK):
            return (
                f"you cannot create files in {path.parent}, which each save needs; opened read-only"
            )
        return None

    @staticmethod
    def _check_header(path: Path) -> tuple[int, bool]:
        """(schema version, whether it is a packed project); refuses what is not a
        project, a newer major schema, and HDF5 links or virtual datasets."""
        try:
            with h5py.File(path, "r", locking=False) as f:
                fmt = f.attrs.get("format")
                raw = f.attrs.get("schema_version", -1)
                packed = "packed_from" in f.attrs or PACKED_FILES in f
                if fmt == FORMAT:
                    refuse_links(f, path)
        except OSError as exc:
            raise ProjectError(f"{path} is not a readable project file ({exc}).") from exc
        if fmt != FORMAT:
            raise ProjectError(f"{path} is an HDF5 file but not an AligNet Studio project.")
        try:
            version = int(raw)
        except (TypeError, ValueError):
            raise ProjectError(
                f"{path}: the schema version {raw!r} is not a number; the file is damaged."
            ) from None
        if version // 100 > SCHEMA_VERSION // 100:
            raise ProjectError(
                f"{path} was written by a newer AligNet Studio (schema {version}, this version "
                f"reads up to {SCHEMA_VERSION}). Update AligNet Studio to open it."
            )
        return version, packed

    def close(self) -> None:
        """Release this process's lease on its side files; the project is then closed."""
        self._lease.release()
        self._closed = True

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _locked(self, wait: float = LOCK_WAIT_S) -> Iterator[None]:
        # The thread lock first: the file lock is re-entrant per Project, so without it two
        # threads of one process could run transactions at once and lose one's changes.
        if not self._threads.acquire(timeout=wait):
            raise ProjectLockedError(
                f"Project {self.path.name} is being written by another thread of this "
                f"process; waited {wait:.0f} s."
            )
        try:
            self._lock.acquire(timeout=wait)
            try:
                yield
            finally:
                self._lock.release()
        finally:
            self._threads.release()

    def _sweep_temporaries(self) -> None:
        """Delete transaction copies left behind by a killed writer (we hold the lock, so no
        live transaction has a temporary file)."""
        for stray in self.path.parent.glob(f".{self.path.name}.*-*"):
            if stray.name.startswith(f".{self.path.name}.saveas-"):
                continue  # a Save As to this name is another project's business
            log.info("Removing leftover temporary file %s", stray)
            stray.unlink(missing_ok=True)

    def _migrate(self, version: int) -> None:
        backup = self.path.with_name(f"{self.path.name}.schema{version}.bak")
        with self._locked():
            with disk_full_as_error(self.path.parent, self.path.stat().st_size):
                ensure_free_space(self.path.parent, 2 * self.path.stat().st_size, what="backup")
                # Atomic: a kill or a full disk never leaves a half backup under its name;
                # and as private as the project (copyfile alone would publish it 0644).
                private = stat.S_IMODE(self.path.stat().st_mode)
                with atomic_path(backup, mode=private, label="backup") as tmp:
                    shutil.copyfile(self.path, tmp)
            log.info(
                "Backed up %s to %s before migrating from schema %d", self.path, backup, version
            )
            with self.transaction() as f:
                while version < SCHEMA_VERSION:
                    if version not in MIGRATIONS:
                        raise ProjectError(
                            f"No migration from schema {version}; backup at {backup}."
                        )
                    version, step = MIGRATIONS[version]
                    step(self, f)
                    f.attrs["schema_version"] = version
            self.compact()

    # ----------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def reading(self) -> Iterator[h5py.File]:
        """The index opened read-only for the duration of the ``with`` block.

        Large arrays in it are reference groups; read arrays with :meth:`run`,
        :meth:`open_array` or :meth:`array_reader`, which resolve them.
        """
        with h5py.File(self.path, "r", locking=False) as f:
            yield f

    def _check_writable(self) -> None:
        if self.readonly:
            raise ProjectError(f"{self.path} is read-only: {self.readonly_reason}.")
        if self._closed:
            raise ProjectError(f"{self.path} is closed; open it again to write.")

    @contextlib.contextmanager
    def transaction(self, wait: float = LOCK_WAIT_S) -> Iterator[h5py.File]:
        """Copy-on-write transaction on the index: changes become visible atomically on
        success only. Holds the write lock (waiting up to ``wait`` s for another writer).

        Raises
        ------
        DiskFullError
            The copy or a write ran out of space; nothing changed, no temporary is left.
        ProjectLockedError
            Another process's transaction held the lock longer than ``wait``.
        """
        self._check_writable()
        size = self.path.stat().st_size
        with (
            disk_full_as_error(self.path.parent, size),
            self._locked(wait),
            _index_writer(self.path, "tx") as tmp,
            disk_full_as_error(self.path.parent, size),
        ):
            ensure_free_space(self.path.parent, size, what="the project index", margin=INDEX_MARGIN)
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "r+", locking=False) as f:
                yield f
                f.attrs["last_written_with"] = __version__
                f.flush()

    # ----------------------------------------------------------------- journal
    @staticmethod
    def _append_journal(f: h5py.File, record: dict[str, Any]) -> None:
        ds = f["journal"]
        ds.resize((ds.shape[0] + 1,))
        ds[-1] = _json({"time": time.time(), **record})

    def begin_job(self, stage: str, params: Mapping[str, Any]) -> str:
        """Record that a job of ``stage`` starts; returns the run id it will write.

        The start record names this process (pid, host, start time): while it lives, the
        job is *running* for every other process (:meth:`running_jobs`), its side files
        are safe from ``gc``, and a second job of a long stage (:data:`LONG_STAGES`) from
        another process is refused.

        Raises
        ------
        ProjectLockedError
            A job of the same long stage runs in another live process.
        """
        run_id = new_run_id()
        with self.transaction() as f:
            if stage in LONG_STAGES:
                for other in self._running_in(f, others_only=True):
                    if other["stage"] == stage:
                        owner = other.get("owner", {})
                        since = time.strftime(
                            "%Y-%m-%d %H:%M:%S", time.localtime(other.get("time", 0))
                        )
                        raise ProjectLockedError(
                            f"A {stage} job (run {other['run']}) is running on {self.path.name} "
                            f"in process {owner.get('pid')} on {owner.get('host')} since "
                            f"{since}. Wait for it to end or cancel it, then start this one."
                        )
            self._append_journal(
                f,
                {
                    "event": "start",
                    "stage": stage,
                    "run": run_id,
                    "params": dict(params),
                    "owner": process_identity(),
                },
            )
        return run_id

    def end_job(self, stage: str, run_id: str, status: str, message: str = "") -> None:
        """Record that a job ended without writing a run (``status``: cancelled / failed).

        A job whose last end record already has this ``status`` gets no second one (a
        failed write records its failure, and the job's bracket would record it again); a
        new status (a cancelled job later ``resumed``) is recorded.
        """
        with self.transaction() as f:
            ends = [r for r in self._records(f) if r["event"] == "end" and r["run"] == run_id]
            if ends and ends[-1].get("status") == status:
                return
            self._append_journal(
                f,
                {
                    "event": "end",
                    "stage": stage,
                    "run": run_id,
                    "status": status,
                    "message": message,
                },
            )

    @staticmethod
    def _records(f: h5py.File) -> list[dict[str, Any]]:
        """The journal's records, checked: a damaged journal is a ProjectError naming the
        record, never a traceback or a 7 TiB allocation."""
        ds = f.get("journal")
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
            raise ProjectError(f"{f.filename}: the journal is missing or damaged.")
        if ds.shape[0] > _MAX_JOURNAL_RECORDS:
            raise ProjectError(
                f"{f.filename}: the journal declares {ds.shape[0]:,} records (a real one holds "
                f"thousands); the file is damaged."
            )
        records = []
        for i, text in enumerate(ds.asstr()[()]):
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("event"), str):
                raise ProjectError(
                    f"{f.filename}: journal record {i + 1} is not a JSON record; the file is "
                    f"damaged."
                )
            if record["event"] in ("start", "end") and not isinstance(record.get("run"), str):
                raise ProjectError(f"{f.filename}: journal record {i + 1} names no run.")
            records.append(record)
        return records

    def journal(self) -> list[dict[str, Any]]:
        with self.reading() as f:
            return self._records(f)

    @staticmethod
    def _open_starts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ended = {r["run"] for r in records if r["event"] == "end"}
        return [r for r in records if r["event"] == "start" and r["run"] not in ended]

    @classmethod
    def _running_in(cls, f: h5py.File, *, others_only: bool) -> list[dict[str, Any]]:
        me = process_identity()
        out = []
        for r in cls._open_starts(cls._records(f)):
            owner = r.get("owner")
            if not isinstance(owner, dict) or not identity_alive(owner):
                continue
            mine = owner.get("pid") == me["pid"] and owner.get("host") == me["host"]
            if not (mine and others_only):
                out.append(r)
        return out

    def running_jobs(self) -> list[dict[str, Any]]:
        """Start records without an end whose process (another one) is still alive."""
        with self.reading() as f:
            return self._running_in(f, others_only=True)

    def interrupted_jobs(self) -> list[dict[str, Any]]:
        """Start records that have no end record and no other live process running them:
        jobs killed while running (or, in this process, jobs that never recorded an end)."""
        running = {r["run"] for r in self.running_jobs()}
        return [r for r in self._open_starts(self.journal()) if r["run"] not in running]

    # ----------------------------------------------------------------- runs
    def write_run(
        self,
        stage: str,
        run_id: str,
        *,
        slot: str,
        params: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray | SideArray],
        inputs: Mapping[str, str] | None = None,
        summary: Mapping[str, Any] | None = None,
        make_current: bool = True,
    ) -> str:
        """Write run ``run_id`` of ``stage`` (append-only), end its job, then point ``slot`` at it.

        ``run_id`` comes from :meth:`begin_job`. ``inputs`` maps the slots this run read to
        the run ids it read, which is how staleness is derived. ``make_current=False`` keeps
        the slot's current run (a new run worse than it waits for the user: :meth:`set_current`).
        ``arrays`` values are numpy arrays (those over 1 MiB are written to side files first,
        outside the index transaction) or finished :class:`SideArray` s from
        :meth:`new_side_array`.
        """
        try:
            prepared = self._prepare_arrays(arrays)
        except DiskFullError as exc:
            # A job that cannot write its result failed (not "interrupted"), whoever runs it.
            with contextlib.suppress(ProjectError):
                self.end_job(stage, run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        with self._dropped_on_error(arrays, prepared), self.transaction() as f:
            if f"{stage}/{run_id}" in f:
                raise ProjectError(f"Run {stage}/{run_id} already exists (runs are append-only).")
            g = f.require_group(stage).create_group(run_id)
            for name, value in prepared.items():
                self._write_entry(g, name, value)
            g.attrs["slot"] = slot
            g.attrs["params"] = _json(dict(params))
            g.attrs["inputs"] = _json(dict(inputs or {}))
            g.attrs["summary"] = _json(dict(summary or {}))
            g.attrs["created"] = time.time()
            self._append_journal(
                f, {"event": "end", "stage": stage, "run": run_id, "status": "done"}
            )
            # The commit point: /current is changed last.
            if make_current or slot not in f["current"].attrs:
                f["current"].attrs[slot] = f"{stage}/{run_id}"
        return run_id

    def current(self, slot: str) -> str | None:
        """``"<stage>/<run_id>"`` of the active run in ``slot``, or None."""
        with self.reading() as f:
            value = f["current"].attrs.get(slot)
        return None if value is None else str(value)

    def slots(self) -> dict[str, str]:
        with self.reading() as f:
            return {k: str(v) for k, v in f["current"].attrs.items()}

    def run(self, ref: str, *, arrays: bool = True) -> Run:
        """Read a run by ``"<stage>/<run_id>"`` or by slot name (its current run)."""
        with self.reading() as f:
            key = self._run_key(f, ref)
            if arrays:
                self._check_usable(f, key)
            return self._run_at(f, key, arrays=arrays)

    def _run_at(self, f: h5py.File, key: str, *, arrays: bool) -> Run:
        g = f[key]
        stage, run_id = key.split("/", 1)

        def attr(name: str) -> Any:
            try:
                value = g.attrs[name]
                return json.loads(value) if name != "slot" else str(value)
            except (KeyError, TypeError, ValueError):
                raise ProjectError(
                    f"{self.path.name}: run {key} has a missing or damaged '{name}' attribute; "
                    f"the file is damaged (delete that run or re-run its stage)."
                ) from None

        try:
            created = float(g.attrs["created"])
        except (KeyError, TypeError, ValueError):
            created = 0.0
        return Run(
            stage=stage,
            run_id=run_id,
            slot=attr("slot"),
            params=attr("params"),
            inputs=attr("inputs"),
            summary=attr("summary"),
            created=created,
            arrays={k: self._entry_array(v, f"{key}/{k}") for k, v in g.items()} if arrays else {},
        )

    def _run_key(self, f: h5py.File, ref: str) -> str:
        if ref in f["current"].attrs:
            key = str(f["current"].attrs[ref])
            if key in f:
                return key
            raise ProjectError(
                f"Slot '{ref}' of {self.path.name} names run {key}, which is not in the file; "
                f"re-run that stage."
            )
        if "/" in ref and not ref.startswith("data/") and ref in f:
            return ref
        raise ProjectError(_no_run_message(f, ref, self.path.name))

    def _array_group_key(self, f: h5py.File, ref: str) -> str:
        """Index path of the group holding arrays: a run (slot or ``stage/id``) or imported
        data (``data/<kind>/<name>``)."""
        if ref.startswith("data/"):
            if ref.count("/") == 2 and ref in f and isinstance(f[ref], h5py.Group):
                return ref
            raise ProjectError(f"No imported data '{ref}' in {self.path.name}.")
        return self._run_key(f, ref)

    def runs(self, stage: str | None = None) -> list[Run]:
        """Every run (of ``stage``), oldest first, without arrays."""
        with self.reading() as f:  # one open for all of them: info lists every run
            stages = [stage] if stage else [k for k in f if k not in _NOT_STAGES]
            keys = [f"{s}/{r}" for s in stages if s in f for r in f[s]]
            runs = [self._run_at(f, k, arrays=False) for k in keys]
        return sorted(runs, key=lambda r: r.created)

    def stale_reasons(self, ref: str) -> list[str]:
        """Why a run is stale (see :meth:`staleness`); ``ref`` is a run or a slot."""
        run = self.run(ref, arrays=False)
        return self.staleness().get(f"{run.stage}/{run.run_id}", [])

    # ----------------------------------------------------------------- run management
    # Which run of a slot is current, deleting runs, and staleness: the one definition the
    # navigator, every page and the CLI's ``info`` use.
    def staleness(self) -> dict[str, list[str]]:
        """Why each run is stale, by ``"<stage>/<run_id>"`` (an empty list: up to date).

        A run is stale when a slot it read now names another run (``"transform changed
        (old → new)"``), or when a run it read is itself stale (``"features:…: distill
        changed (…)"``): student features that read a replaced distillation make their
        evaluation stale too. Reads every run's inputs in one pass over the file.
        """
        with self.reading() as f:
            current = {k: str(v) for k, v in f["current"].attrs.items()}
            inputs = {
                f"{s}/{r}": _loads(f[s][r].attrs.get("inputs"), self.path, f"{s}/{r} inputs")
                for s in f
                if s not in _NOT_STAGES
                for r in f[s]
            }
            # runs made unusable by replacing the image set they read (see _write_data)
            invalidated = {
                ref: str(f[ref].attrs["invalidated"])
                for ref in inputs
                if "invalidated" in f[ref].attrs
            }
        out: dict[str, list[str]] = {}

        def reasons(ref: str, seen: frozenset[str]) -> list[str]:
            if ref in out:
                return out[ref]
            found: list[str] = [invalidated[ref]] if ref in invalidated else []
            for slot, used in inputs.get(ref, {}).items():
                now = current.get(slot)
                if now != used:
                    found.append(f"{slot} changed ({used} → {now or 'deleted'})")
                elif used in inputs and used not in seen:
                    found += [f"{slot}: {why}" for why in reasons(used, seen | {ref})]
            out[ref] = found
            return found

        for ref in inputs:
            reasons(ref, frozenset())
        return out

    def judgment_image_sets(self) -> dict[str, str]:
        """Each imported judgment set's name -> the image set its item ids refer to."""
        with self.reading() as f:
            group = f["data"].get("judgments", {})
            return {name: json.loads(group[name].attrs["image_set"]) for name in group}

    def set_current(self, slot: str, ref: str) -> str | None:
        """Make run ``ref`` (``"<stage>/<run_id>"``) the current run of ``slot``.

        Returns the run that was current before (or None). The change is journalled
        (``{"event": "set_current", ...}``). Raises ProjectError if ``ref`` is not a run of
        ``slot``.
        """
        with self.transaction() as f:
            if "/" not in ref or ref.startswith("data/") or ref not in f:
                raise ProjectError(f"No run '{ref}' in {self.path.name}.")
            own = str(f[ref].attrs["slot"])
            if own != slot:
                raise ProjectError(f"Run {ref} belongs to slot '{own}', not '{slot}'.")
            before = f["current"].attrs.get(slot)
            before = None if before is None else str(before)
            self._append_journal(
                f, {"event": "set_current", "slot": slot, "run": ref, "previous": before}
            )
            f["current"].attrs[slot] = ref
        return before

    def delete_run(
        self, ref: str, *, replace_with: str | None = None, clear_slot: bool = False
    ) -> None:
        """Delete run ``ref`` (``"<stage>/<run_id>"``) from the project.

        A current run is only deleted together with a decision about its slot: another run
        of the slot is made current (``replace_with``) or the slot is cleared
        (``clear_slot``); otherwise ProjectError. Side files the run referenced are left to
        the store's garbage collection; the file's space is reclaimed when it is compacted.
        """
        with self.transaction() as f:
            if "/" not in ref or ref.startswith("data/") or ref not in f:
                raise ProjectError(f"No run '{ref}' in {self.path.name}.")
            slot = str(f[ref].attrs["slot"])
            is_current = f["current"].attrs.get(slot) == ref
            if replace_with is not None:
                if replace_with == ref or replace_with not in f:
                    raise ProjectError(f"Cannot make '{replace_with}' current instead of {ref}.")
                if str(f[replace_with].attrs["slot"]) != slot:
                    raise ProjectError(f"Run {replace_with} is not a run of slot '{slot}'.")
            if is_current and replace_with is None and not clear_slot:
                raise ProjectError(
                    f"Run {ref} is the current run of '{slot}': make another run current or "
                    "clear the slot to delete it."
                )
            if replace_with is not None:
                f["current"].attrs[slot] = replace_with
            elif is_current:
                del f["current"].attrs[slot]
            stage = ref.split("/", 1)[0]
            del f[ref]
            if not len(f[stage]):
                del f[stage]
            now = f["current"].attrs.get(slot)
            self._append_journal(
                f,
                {
                    "event": "delete",
                    "slot": slot,
                    "run": ref,
                    "current": None if now is None else str(now),
                },
            )

    # ----------------------------------------------------------------- imported data
    def _write_data(
        self,
        kind: str,
        name: str,
        arrays: Mapping[str, np.ndarray],
        attrs: Mapping[str, Any],
        *,
        replace: bool = False,
    ) -> None:
        """Write imported data ``/data/<kind>/<name>``; re-importing under a name replaces it.

        An image set is replaced only when nothing uses it, or with ``replace=True``: then
        every judgment, matrix and run that used it is marked unusable (attribute
        ``invalidated`` with the reason), so nothing computed from rows that no longer exist
        can be read again (item ids are row indices of the set).
        """
        _check_name(name)
        prepared = self._prepare_arrays(arrays)
        with self._dropped_on_error(arrays, prepared), self.transaction() as f:
            parent = f["data"].require_group(kind)
            if name in parent:
                if kind == "imagesets":
                    users = _imageset_users(f, name)
                    if users and not replace:
                        raise ProjectError(
                            f"image set '{name}' is used by {_summarize_users(users)}; its "
                            "item ids would point at other images. Import it under another "
                            "name, or replace it (CLI --replace) and redo what used it."
                        )
                    old_n = _attr(parent[name], "n")
                    reason = (
                        f"image set '{name}' was replaced ({old_n} → {attrs.get('n')} images, "
                        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC); redo it"
                    )
                    for path in users:
                        f[path].attrs["invalidated"] = reason
                del parent[name]
            g = parent.create_group(name)
            for key, value in prepared.items():
                self._write_entry(g, key, value)
            for key, value in attrs.items():
                g.attrs[key] = _json(value)
            if kind == "imagesets":
                g.attrs["digest"] = _json(_digest(arrays))
            self._append_journal(f, {"event": "import", "kind": kind, "name": name})

    def imageset_digest(self, name: str) -> str | None:
        """The content digest (sha256 of the stored arrays) of image set ``name``; None for a
        set written before digests were recorded."""
        with self.reading() as f:
            g = f["data"].get("imagesets", {}).get(name)
            return None if g is None else _attr(g, "digest")

    def _check_usable(self, f: h5py.File, path: str) -> None:
        """Raise ProjectError when ``path`` (a data group or a run) was invalidated or reads
        one that was (a replaced image set; see :meth:`_write_data`)."""
        reasons = _unusable(f, path, {})
        if reasons:
            raise ProjectError(f"'{path}' in {self.path.name} is unusable: {reasons[0]}")

    def _read_data(self, kind: str, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        with self.reading() as f:
            if name not in f["data"].get(kind, {}):
                have = sorted(f["data"][kind]) if kind in f["data"] else []
                raise ProjectError(f"No {kind} named '{name}' in {self.path.name} (have: {have}).")
            g = f["data"][kind][name]
            self._check_usable(f, g.name.lstrip("/"))
            return (
                {k: self._entry_array(v, f"{g.name}/{k}") for k, v in g.items()},
                {k: json.loads(v) for k, v in g.attrs.items()},
            )

    def data_image_set(self, kind: str, name: str) -> str | None:
        """The image set that judgments / matrices ``name`` refer to, read from the attributes
        only (no arrays); None if there is no such data or it names no image set."""
        with self.reading() as f:
            g = f["data"].get(kind, {}).get(name)
            if g is None or "image_set" not in g.attrs:
                return None
            return str(json.loads(g.attrs["image_set"]))

    def names(self, kind: str) -> list[str]:
        """Names of imported ``kind`` ("imagesets", "judgments", "matrices")."""
        with self.reading() as f:
            return sorted(f["data"][kind]) if kind in f["data"] else []

    def write_imageset(
        self, name: str, images: ImageSet, params: Mapping[str, Any], *, replace: bool = False
    ) -> None:
        """Store ``images`` in its compact form (see :class:`ImageSet`): a byte blob of relative
        paths with offsets, category codes and names; the root is an attribute. 1.28 M ImageNet
        paths take ~40 MB this way instead of ~130 MB of variable-length strings.

        Replacing a set that judgments, matrices or runs use needs ``replace=True`` and makes
        them unusable (see :meth:`_write_data`)."""
        self._write_data(
            "imagesets",
            name,
            {
                "path_bytes": images.path_bytes,
                "path_offsets": images.path_offsets,
                "category_codes": images.category_codes,
                "category_names": np.array(images.category_names, dtype=object),
            },
            {"params": dict(params), "n": len(images), "root": images.root},
            replace=replace,
        )

    def imageset(self, name: str) -> ImageSet:
        """The image set ``name``; reads the compact layout and the earlier one (``paths`` and
        ``categories`` string arrays, written by releases before the compact form)."""
        arrays, attrs = self._read_data("imagesets", name)
        if "paths" in arrays:
            return ImageSet(tuple(arrays["paths"]), tuple(arrays["categories"]))
        return ImageSet.from_arrays(
            attrs["root"],
            arrays["path_bytes"],
            arrays["path_offsets"],
            arrays["category_codes"],
            arrays["category_names"],
        )

    def write_judgments(
        self, name: str, judgments: Judgments, *, image_set: str, params: Mapping[str, Any]
    ) -> None:
        n_items = len(self.imageset(image_set))
        if len(judgments) and int(judgments.triplets.max()) >= n_items:
            raise ProjectError(
                f"Judgments '{name}' refer to item {int(judgments.triplets.max())} but image set "
                f"'{image_set}' has {n_items} images."
            )
        arrays = {"triplets": judgments.triplets, "participant": judgments.participant}
        if judgments.votes is not None:
            arrays["votes"] = judgments.votes
        if judgments.types is not None:
            arrays["types"] = np.asarray(judgments.types, dtype=object)
        if judgments.response_ms is not None:
            arrays["response_ms"] = np.asarray(judgments.response_ms, dtype=np.float64)
        self._write_data(
            "judgments",
            name,
            arrays,
            {
                "kind": judgments.kind,
                "image_set": image_set,
                "simulated": judgments.simulated,
                "meta": judgments.meta,
                "params": dict(params),
            },
        )

    def judgments(self, name: str) -> tuple[Judgments, str]:
        """The judgments named ``name`` and the name of the image set they refer to."""
        arrays, attrs = self._read_data("judgments", name)
        j = Judgments(
            kind=attrs["kind"],
            triplets=arrays["triplets"].astype(np.int64),
            participant=arrays["participant"].astype(np.int64),
            votes=arrays["votes"].astype(np.int64) if "votes" in arrays else None,
            simulated=bool(attrs["simulated"]),
            meta=attrs.get("meta", {}),
            types=arrays["types"].astype(str) if "types" in arrays else None,
            response_ms=arrays.get("response_ms"),
        )
        return j, attrs["image_set"]

    def write_matrix(
        self,
        name: str,
        matrix: np.ndarray,
        *,
        image_set: str,
        kind: str,
        params: Mapping[str, Any],
    ) -> None:
        if kind not in ("similarity", "dissimilarity"):
            raise ProjectError(f"matrix kind must be similarity or dissimilarity, not {kind!r}")
        self._write_data(
            "matrices",
            name,
            {"matrix": matrix},
            {"kind": kind, "image_set": image_set, "params": dict(params)},
        )

    def matrix(self, name: str) -> tuple[np.ndarray, MatrixKind, str]:
        """(matrix, kind, image_set) of the matrix named ``name``."""
        arrays, attrs = self._read_data("matrices", name)
        return arrays["matrix"], attrs["kind"], attrs["image_set"]

    # ----------------------------------------------------------------- side arrays
    def _side_mode(self) -> int | None:
        """Permission bits for new side files: the index's (rw bits only)."""
        try:
            return stat.S_IMODE(self.path.stat().st_mode) & 0o666
        except OSError:
            return None

    def new_side_array(
        self,
        name: str,
        shape: tuple[int | None, ...],
        dtype: Any,
        *,
        chunks: tuple[int, ...] | None = None,
        compression: str | None = None,
    ) -> SideArrayWriter:
        """A writer that streams one array into a new side file, for arrays too large for
        memory and for curves grown during a long job.

        Parameters
        ----------
        name : the array's name (used in the file name only).
        shape : full shape, e.g. ``(n, d)`` (write blocks with ``writer[lo:hi] = block`` or
            :meth:`~SideArrayWriter.append`), or ``(None, *rest)`` to grow by appending.
        dtype : numpy dtype (``str`` for strings).
        chunks : HDF5 chunk shape; default whole rows, ~1 MiB per chunk.
        compression : None (default, fastest) or ``"gzip"``.

        Returns
        -------
        SideArrayWriter
            Call ``finish()`` → :class:`SideArray`, then pass it as a value of
            ``write_run(arrays=...)``. A writer left without ``finish()`` deletes its file.
            Until an index transaction references it, the file is protected from ``gc`` by
            this process's lease, as long as this process lives.

        Raises
        ------
        DiskFullError
            The full size is known and the disk cannot hold it.
        """
        self._check_writable()
        self._lease.ensure()
        with disk_full_as_error(self.arrays_dir):
            return SideArrayWriter(
                self.arrays_dir,
                self._lease.token,
                name,
                tuple(shape),
                dtype,
                chunks=chunks,
                compression=compression,
                mode=self._side_mode(),
            )

    def _prepare_arrays(
        self, arrays: Mapping[str, np.ndarray | SideArray]
    ) -> dict[str, np.ndarray | SideArray]:
        """Write the large arrays of ``arrays`` to side files (before the index transaction,
        so the write lock is held only for the small index change)."""
        out: dict[str, np.ndarray | SideArray] = {}
        written: list[SideArray] = []
        try:
            for name, value in arrays.items():
                if isinstance(value, SideArray):
                    self._check_own_side(value, name)
                    out[name] = value
                    continue
                value = np.asarray(value)
                if value.ndim >= 1 and sf.estimated_nbytes(value) > sf.SIDE_ARRAY_MIN_BYTES:
                    self._check_writable()
                    self._lease.ensure()
                    with disk_full_as_error(self.arrays_dir, sf.estimated_nbytes(value)):
                        side = sf.write_side_array(
                            self.arrays_dir,
                            self._lease.token,
                            name,
                            value,
                            mode=self._side_mode(),
                        )
                    written.append(side)
                    out[name] = side
                else:
                    out[name] = value
        except BaseException:
            for side in written:  # unreferenced: delete now rather than leave them to gc
                (self.arrays_dir / side.file).unlink(missing_ok=True)
            raise
        return out

    @contextlib.contextmanager
    def _dropped_on_error(
        self,
        arrays: Mapping[str, np.ndarray | SideArray],
        prepared: Mapping[str, np.ndarray | SideArray],
    ) -> Iterator[None]:
        """If the block fails, delete the side files :meth:`_prepare_arrays` wrote for it
        (nothing refers to them; side arrays the caller passed in stay the caller's)."""
        try:
            yield
        except BaseException:
            for name, value in prepared.items():
                if isinstance(value, SideArray) and not isinstance(arrays[name], SideArray):
                    (self.arrays_dir / value.file).unlink(missing_ok=True)
            raise

    def _check_own_side(self, side: SideArray, name: str) -> None:
        path = self.arrays_dir / side.file
        try:
            size = path.stat().st_size
        except OSError:
            raise ProjectError(
                f"Array '{name}': side file {path} does not exist (was it written by "
                f"new_side_array of this project, and finished?)."
            ) from None
        if size != side.size:
            raise ProjectError(f"Array '{name}': side file {path} changed after it was finished.")

    @staticmethod
    def _write_entry(group: h5py.Group, name: str, value: np.ndarray | SideArray) -> None:
        if isinstance(value, SideArray):
            sf.write_ref(group, name, value)
        else:
            _write_inline(group, name, value)

    def _entry_array(self, obj: Any, where: str) -> np.ndarray:
        """The whole array behind an index entry (inline dataset or side-file reference)."""
        if sf.is_ref(obj):
            side = sf.read_ref(obj)
            with sf.open_side(self.arrays_dir, side, where) as f:
                return sf.read_dataset(f["data"])
        if isinstance(obj, h5py.Dataset):
            return sf.read_dataset(obj)
        raise ProjectError(f"{where} in {self.path.name} is a group, not an array.")

    def array_reader(self, ref: str) -> ArrayReader:
        """Lazy, read-only access to the arrays of a run (slot or ``stage/id``) or of
        imported data (``data/<kind>/<name>``), wherever each array lives.

        Close it (or use it as a context manager) to release the files it opened.
        """
        return ArrayReader(self, ref)

    @contextlib.contextmanager
    def open_array(self, ref: str, name: str) -> Iterator[h5py.Dataset]:
        """The array ``name`` of ``ref`` (see :meth:`array_reader`) as a read-only
        :class:`h5py.Dataset`: slice rows (``ds[lo:hi]``) to stream it in chunks.

        Raises
        ------
        ProjectError
            No such run or array, or its side file is missing or damaged (names the file).
        """
        with self.array_reader(ref) as reader:
            yield reader[name]

    def array_shape(self, ref: str, name: str) -> tuple[int, ...]:
        """Shape of the array ``name`` of ``ref`` (see :meth:`array_reader`), reading no data."""
        with self.reading() as f:
            key = self._array_group_key(f, ref)
            obj = f[key].get(name)
            if obj is None:
                raise ProjectError(f"{key} in {self.path.name} has no array '{name}'.")
            return sf.read_ref(obj).shape if sf.is_ref(obj) else tuple(obj.shape)

    def array_info(self, ref: str) -> dict[str, dict[str, Any]]:
        """Per array of ``ref``: shape, dtype and where it lives (``inline`` or the side
        file's path), without reading any data."""
        with self.array_reader(ref) as reader:
            return reader.describe()

    # ----------------------------------------------------------------- side files
    def side_path(self, name: str) -> Path:
        """Where a large side file (a model checkpoint) of this project lives.

        Side files sit in ``<project>.files/`` next to the project and are referenced from
        a run together with their sha256, so a moved or damaged file is detected. (Arrays
        live in its ``arrays/`` sub-folder; see :meth:`new_side_array`.)
        """
        self.files_dir.mkdir(exist_ok=True)
        return self.files_dir / name

    def check_side_file(self, path: str | Path, sha256: str) -> Path:
        """Return ``path`` if it exists and has checksum ``sha256``; raise ProjectError if not."""
        path = Path(path)
        if not path.is_absolute():
            path = self.path.with_name(self.path.name + ".files") / path
        if not path.is_file():
            raise ProjectError(f"Side file {path} of {self.path.name} is missing.")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha256:
            raise ProjectError(f"Side file {path} is damaged or was replaced (checksum differs).")
        return path

    # ----------------------------------------------------------------- whole file
    def info(self) -> dict[str, Any]:
        """A JSON-able overview: header, imported data, slots, runs, running and interrupted
        jobs, and whether (and why) the project is read-only."""
        with self.reading() as f:
            header = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            unusable = {
                f"{kind}/{name}": str(g.attrs["invalidated"])
                for kind in ("judgments", "matrices")
                if kind in f["data"]
                for name, g in f["data"][kind].items()
                if "invalidated" in g.attrs
            }
            sets = f["data"].get("imagesets", {})
            # the count is an attribute: reading 1.28M paths to count them would take seconds
            counted = {n: json.loads(sets[n].attrs["n"]) for n in sets if "n" in sets[n].attrs}
        imagesets = {n: counted.get(n) or len(self.imageset(n)) for n in self.names("imagesets")}
        stale = self.staleness()
        return {
            "path": str(self.path),
            "header": header,
            "readonly": self.readonly_reason,
            # why nobody opening it as this user could write it (None: writable)
            "unwritable": self._unwritable_reason(self.path),
            "imagesets": imagesets,
            "judgments": self.names("judgments"),
            "judgment_image_sets": self.judgment_image_sets(),
            "matrices": self.names("matrices"),
            "current": self.slots(),
            "runs": [
                {
                    "run": f"{r.stage}/{r.run_id}",
                    "slot": r.slot,
                    "created": r.created,
                    "inputs": r.inputs,
                    "summary": r.summary,
                    "stale": stale.get(f"{r.stage}/{r.run_id}", []),
                }
                for r in self.runs()
            ],
            "running": self.running_jobs(),
            "interrupted": self.interrupted_jobs(),
            # imported data whose image set was replaced (see _write_data), with the reason
            "unusable": unusable,
        }

    def _snapshot(self, target: Path) -> None:
        """Copy the index to ``target`` (one open file: a consistent version)."""
        size = self.path.stat().st_size
        with disk_full_as_error(target.parent, size):
            ensure_free_space(target.parent, size, what="a copy of the index")
            shutil.copyfile(self.path, target)

    def compact(self) -> None:
        """Rewrite the index without the space HDF5 leaves behind deleted objects."""
        self._check_writable()
        size = self.path.stat().st_size
        with (
            self._locked(),
            disk_full_as_error(self.path.parent, size),
            _index_writer(self.path, "compact") as tmp,
            self.reading() as src,
            h5py.File(tmp, "w", locking=False) as dst,
        ):
            maintenance.copy_tree(src, dst, arrays_dir=self.arrays_dir, inline=False)

    def pack(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write a self-contained single-file copy of the project at ``out`` (every side
        array inlined), for sending a study to a colleague; it opens like any project.

        Model checkpoints and other side files (``<project>.files/*``) travel inside it too
        (``/packed_files``). The first writable open of a packed project unpacks it: large
        arrays move back into side files and the other files into ``<out>.files/``, so its
        writes are cheap again; read-only opening reads it as it is.
        """
        out = Path(out).resolve()
        if out.exists() and not overwrite:
            raise ProjectError(f"{out} already exists; choose another name or allow overwrite.")
        if out == self.path:
            raise ProjectError(f"Cannot pack {self.path} onto itself.")
        out.parent.mkdir(parents=True, exist_ok=True)
        # The snapshot is scratch (read, then deleted), not a file anyone sees: no commit.
        snap = out.with_name(f".{out.name}.snap-{uuid.uuid4().hex[:8]}")
        try:
            self._snapshot(snap)
            with (
                h5py.File(snap, "r", locking=False) as src,
                _index_writer(out, "pack") as tmp,
            ):
                extra = self._plain_side_files()
                needed = sum(side.size for _, side in maintenance.referenced(src).values())
                needed += sum(path.stat().st_size for path in extra)
                with disk_full_as_error(out.parent, needed):
                    ensure_free_space(out.parent, needed, what=f"the packed project {out.name}")
                    with h5py.File(tmp, "w", locking=False) as dst:
                        maintenance.copy_tree(src, dst, arrays_dir=self.arrays_dir, inline=True)
                        dst.attrs["packed_from"] = str(self.path)
                        if extra:
                            packed = dst.create_group(PACKED_FILES)
                            for path in extra:
                                ds = packed.create_dataset(
                                    path.name, data=np.fromfile(path, dtype=np.uint8)
                                )
                                ds.attrs["sha256"] = sf.sha256_file(path)
        finally:
            snap.unlink(missing_ok=True)
        return out

    def _plain_side_files(self) -> list[Path]:
        """The non-array side files (checkpoints, logs) in ``<project>.files/``."""
        if not self.files_dir.is_dir():
            return []
        return sorted(
            p for p in self.files_dir.iterdir() if p.is_file() and not p.name.startswith(".")
        )

    def _unpack(self) -> None:
        """Turn a packed project back into index + side files (see :meth:`pack`)."""
        with self._locked(), self.transaction() as f:
            _externalize(self, f)
            packed = f.get(PACKED_FILES)
            if isinstance(packed, h5py.Group):
                self.files_dir.mkdir(parents=True, exist_ok=True)
                for name, ds in packed.items():
                    target = self.files_dir / name
                    if name.startswith(".") or target.exists():
                        continue  # never overwrite what is already beside the project
                    with atomic_path(target, label="unpack") as tmp:
                        ds[()].tofile(tmp)
                del f[PACKED_FILES]
            if "packed_from" in f.attrs:
                f.attrs["unpacked_from"] = f.attrs["packed_from"]
                del f.attrs["packed_from"]
        self.compact()
        log.info("Unpacked %s into %s", self.path, self.files_dir)

    def collect_garbage(self, *, dry_run: bool = True, verify: bool = False) -> GcReport:
        """Sweep side files no run or data set refers to (see :class:`GcReport`).

        Safe while other processes use the project: it holds the write lock (no index
        transaction can add a reference meanwhile), and files written by a live process
        that may still reference them (its lease is alive) are kept. ``verify`` also checks
        the sha256 of every referenced file (reads them all). Also compacts the index.
        """
        if not dry_run:
            self._check_writable()
        damaged: list[str] = []
        if verify:  # reads every side file: outside the lock, which writers need meanwhile
            for where, side in self.side_arrays():
                problem = self.check_side_array(where, side)
                if problem is not None:
                    damaged.append(problem)
        with self._locked():
            with self.reading() as f:
                report = maintenance.sweep(f, self.files_dir, dry_run=dry_run)
            if not dry_run:
                self.compact()
        return dataclasses.replace(report, damaged=tuple(damaged))

    def side_arrays(self) -> list[tuple[str, SideArray]]:
        """(index path, :class:`SideArray`) of every side array the project refers to."""
        with self.reading() as f:
            refs = maintenance.referenced(f)
        return [(where, side) for _, (where, side) in sorted(refs.items())]

    def check_side_array(self, where: str, side: SideArray) -> str | None:
        """The full check of one side array (reads the file for its sha256): None when it is
        whole, else why not (missing files are :class:`GcReport` ``missing``, not here)."""
        if not (self.arrays_dir / side.file).exists():
            return None
        try:
            sf.verify(self.arrays_dir, side, where)
        except ProjectError as exc:
            return str(exc)
        return None

    def verify(self) -> None:
        """Check the sha256 of every side file the project refers to.

        Raises
        ------
        ProjectError
            Naming the first missing or damaged file.
        """
        for where, side in self.side_arrays():
            sf.verify(self.arrays_dir, side, where)

    def save_as(self, new_path: str | Path) -> Project:
        """Copy the project to ``new_path`` — the index (temp file, fsync, rename) and its
        side files (hard links where possible: side arrays never change, so sharing them is
        safe; a copy otherwise) — and return the copy, open for writing. This project is
        closed. For a single self-contained file use :meth:`pack` instead.
        """
        new_path = Path(new_path).resolve()
        if new_path == self.path:
            raise ProjectError(f"{new_path} is this project; choose another name.")
        new = Project(new_path, readonly=False)
        with new._locked(), _index_writer(new_path, "saveas") as tmp:
            self._snapshot(tmp)
            with h5py.File(tmp, "r", locking=False) as f:
                refs = maintenance.referenced(f)
            self._copy_side_files(refs, new)
        self.close()
        return new

    def _copy_side_files(self, refs: dict[str, tuple[str, SideArray]], new: Project) -> None:
        needed = 0
        if self.files_dir.is_dir():
            needed = sum(p.stat().st_size for p in self.files_dir.iterdir() if p.is_file())
        with disk_full_as_error(new.files_dir, needed):
            ensure_free_space(new.path.parent, needed, what="side files")
            new.arrays_dir.mkdir(parents=True, exist_ok=True)
            for name in refs:
                src, dst = self.arrays_dir / name, new.arrays_dir / name
                if dst.exists():
                    continue
                if not src.is_file():
                    raise ProjectError(f"Side file {src} is missing; cannot Save As.")
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
                    fsync_path(dst)
            if self.files_dir.is_dir():  # checkpoints, experiment logs
                for path in self.files_dir.iterdir():
                    if path.is_file() and not path.name.startswith("."):
                        shutil.copy2(path, new.files_dir / path.name)
            fsync_dir(new.arrays_dir)


class ArrayReader:
    """Read-only, lazy access to the arrays of one run or imported data set.

    ``reader[name]`` is an :class:`h5py.Dataset` opened read-only: in its side file, or —
    for a small inline array — in an in-memory copy, so the index itself is not held open
    (a writer may replace it meanwhile; a side file never changes). Side files are opened
    on first access after the cheap checks (exists, size, shape, dtype).

    Parameters
    ----------
    project : the project. ref : slot, ``stage/run_id`` or ``data/<kind>/<name>``.
    """

    def __init__(self, project: Project, ref: str) -> None:
        self.project = project
        self._sides: dict[str, SideArray] = {}
        self._files: dict[str, h5py.File] = {}
        self._inline: h5py.File | None = None
        self._index: h5py.File | None = None  # only for large inline arrays (old schemas)
        with project.reading() as f:
            self.key = project._array_group_key(f, ref)
            project._check_usable(f, self.key)  # a replaced image set's dependants
            g = f[self.key]
            small: list[str] = []
            large: list[str] = []
            for name, obj in g.items():
                if sf.is_ref(obj):
                    self._sides[name] = sf.read_ref(obj)
                elif isinstance(obj, h5py.Dataset):
                    size = obj.id.get_storage_size()
                    (large if size > sf.SIDE_ARRAY_MIN_BYTES else small).append(name)
            self.names: tuple[str, ...] = tuple(g)
            if small:
                # An in-memory HDF5 file of HDF5's own "core" driver, not h5py's Python file
                # object driver: a reader left open until exit is then closed by HDF5 alone,
                # whereas a BytesIO-backed one calls back into a finalised interpreter from
                # HDF5's atexit handler (a segfault after the app or the tests had finished).
                self._inline = h5py.File(
                    f"inline-{uuid.uuid4().hex}", "w", driver="core", backing_store=False
                )
                for name in small:
                    f.copy(g[name], self._inline, name)
        self._large = set(large)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> h5py.Dataset:
        if name in self._sides:
            if name not in self._files:
                self._files[name] = sf.open_side(
                    self.project.arrays_dir, self._sides[name], f"{self.key}/{name}"
                )
            return self._files[name]["data"]
        if name in self._large:
            if self._index is None:
                self._index = h5py.File(self.project.path, "r", locking=False)
            return self._index[self.key][name]
        if self._inline is not None and name in self._inline:
            return self._inline[name]
        raise ProjectError(
            f"{self.key} in {self.project.path.name} has no array '{name}' "
            f"(it has: {list(self.names)})."
        )

    def describe(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.names:
            side = self._sides.get(name)
            if side is not None:
                out[name] = {
                    "shape": list(side.shape),
                    "dtype": side.dtype,
                    "file": str(self.project.arrays_dir / side.file),
                    "sha256": side.sha256,
                }
            elif name in self._large or (self._inline is not None and name in self._inline):
                ds = self[name]
                out[name] = {"shape": list(ds.shape), "dtype": str(ds.dtype), "file": "inline"}
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        for f in (self._inline, self._index):
            if f is not None:
                f.close()
        self._inline = self._index = None

    def __enter__(self) -> ArrayReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
