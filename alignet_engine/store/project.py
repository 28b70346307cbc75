"""The project file: one HDF5 file per study, owned by this module alone.

Layout (schema 100)::

    / attrs: format, schema_version, created_with, last_written_with, uuid, created
    /current                attrs: slot -> run id (the active run of each slot)
    /journal                (J,) JSON strings, one record per job start / end
    /data/imagesets/<name>  path_bytes, path_offsets, category_codes, category_names; attrs
                            params, n, root (see ImageSet; older files: paths, categories)
    /data/judgments/<name>  triplets, participant[, votes]; attrs kind, image_set, params
    /data/matrices/<name>   matrix (n,n) or (s,n,n); attrs kind, image_set, params
    /<stage>/<run_id>/      one run of a pipeline stage: arrays + attrs params, inputs, summary

A *slot* names what a run produces, e.g. ``features:stimuli:efficientnet_lite2`` or
``transform``; ``/current`` maps slots to run ids and is written last in a transaction.

Crash safety: every write is a *copy-on-write transaction* — the file is copied to a
temporary sibling, the copy is changed, flushed and fsynced, then renamed over the project
(``os.replace`` is atomic on POSIX and Windows). A process killed at any point therefore
leaves either the old or the new file, never a half-written one (HDF5 has no journal of its
own: a crash while a file is open for writing can corrupt it). The cost is one file copy per
transaction, which is why callers batch their writes (a stage writes its run once, at the
end). Runs are append-only; a job records its start in ``/journal`` in its own transaction,
so a job that started and never ended is reported as interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from alignet_engine import __version__
from alignet_engine.data.types import ImageSet, Judgments
from alignet_engine.errors import ProjectError
from alignet_engine.store.lock import ProjectLock

log = logging.getLogger(__name__)

FORMAT = "alignet-project"
SCHEMA_VERSION = 100  # major * 100 + minor
_STR = h5py.string_dtype()

# Migrations from schema version v to the next one: (target_version, function(file)).
# A migration runs inside a transaction after a backup copy of the old file was written.
MIGRATIONS: dict[int, tuple[int, Callable[[h5py.File], None]]] = {}


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


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        _fsync_path(path)


def _commit_file(tmp: Path, target: Path) -> None:
    """Make the finished temporary file ``tmp`` durable, then atomically put it at ``target``."""
    _fsync_path(tmp)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _write_array(group: h5py.Group, name: str, value: np.ndarray) -> None:
    value = np.asarray(value)
    if value.dtype.kind in "UO":
        group.create_dataset(name, data=value.astype(object), dtype=_STR)
        return
    kwargs: dict[str, Any] = {}
    if value.ndim >= 1 and value.nbytes > 1 << 20:
        # Row chunks of ~1 MiB; lzf is fast and keeps feature matrices smaller on disk.
        row_bytes = max(1, value.nbytes // max(1, value.shape[0]))
        rows = int(max(1, min(value.shape[0], (1 << 20) // row_bytes)))
        kwargs = {"chunks": (rows, *value.shape[1:]), "compression": "lzf"}
    group.create_dataset(name, data=value, **kwargs)


def _read_array(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.array(ds.asstr()[()], dtype=object)
    return ds[()]


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
        if stage in ("current", "journal", "data"):
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
    """An AligNet Studio project file (see the module docstring for the layout).

    Open with :meth:`create` or :meth:`open`; use as a context manager so the write lock is
    released. Reading methods open the file briefly read-only; writing goes through
    :meth:`transaction`.
    """

    def __init__(self, path: Path, *, readonly: bool) -> None:
        self.path = Path(path).resolve()
        self.readonly = readonly
        self._lock = ProjectLock(self.path)

    # ----------------------------------------------------------------- open / close
    @classmethod
    def create(cls, path: str | Path, *, overwrite: bool = False) -> Project:
        """Create a new, empty project file at ``path`` and open it for writing."""
        path = Path(path).resolve()
        if path.exists() and not overwrite:
            raise ProjectError(f"{path} already exists; choose another name or open it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        project = cls(path, readonly=False)
        project._lock.acquire()
        try:
            tmp = path.with_name(f".{path.name}.new-{uuid.uuid4().hex[:8]}")
            with h5py.File(tmp, "w", locking=False) as f:
                f.attrs["format"] = FORMAT
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["created_with"] = __version__
                f.attrs["last_written_with"] = __version__
                f.attrs["uuid"] = uuid.uuid4().hex
                f.attrs["created"] = time.time()
                f.create_group("current")
                f.create_dataset("journal", shape=(0,), maxshape=(None,), dtype=_STR)
                f.create_group("data")
            _commit_file(tmp, path)
        except BaseException:
            project._lock.release()
            raise
        return project

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Project:
        """Open an existing project; takes the write lock unless ``readonly``.

        Raises
        ------
        ProjectError
            The file is missing, not a project, or written by a newer major schema.
        ProjectLockedError
            Another process holds the write lock.
        """
        path = Path(path).resolve()
        if not path.is_file():
            raise ProjectError(f"No project file at {path}.")
        version = cls._check_header(path)
        project = cls(path, readonly=readonly)
        if version > SCHEMA_VERSION and not readonly:
            log.warning("%s has a newer minor schema (%d); opening read-only", path, version)
            project.readonly = True
        if not project.readonly:
            project._lock.acquire()
            try:
                project._sweep_temporaries()
                if version < SCHEMA_VERSION:
                    project._migrate(version)
            except BaseException:
                project._lock.release()
                raise
        return project

    @staticmethod
    def _check_header(path: Path) -> int:
        try:
            with h5py.File(path, "r", locking=False) as f:
                fmt = f.attrs.get("format")
                version = int(f.attrs.get("schema_version", -1))
        except OSError as exc:
            raise ProjectError(f"{path} is not a readable project file ({exc}).") from exc
        if fmt != FORMAT:
            raise ProjectError(f"{path} is an HDF5 file but not an AligNet Studio project.")
        if version // 100 > SCHEMA_VERSION // 100:
            raise ProjectError(
                f"{path} was written by a newer AligNet Studio (schema {version}, this version "
                f"reads up to {SCHEMA_VERSION}). Update AligNet Studio to open it."
            )
        return version

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sweep_temporaries(self) -> None:
        """Delete transaction copies left behind by a killed writer (we hold the lock)."""
        for stray in self.path.parent.glob(f".{self.path.name}.*-*"):
            log.info("Removing leftover temporary file %s", stray)
            stray.unlink(missing_ok=True)

    def _migrate(self, version: int) -> None:
        backup = self.path.with_name(f"{self.path.name}.schema{version}.bak")
        shutil.copyfile(self.path, backup)
        log.info("Backed up %s to %s before migrating from schema %d", self.path, backup, version)
        with self.transaction() as f:
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise ProjectError(f"No migration from schema {version}; backup at {backup}.")
                version, step = MIGRATIONS[version]
                step(f)
                f.attrs["schema_version"] = version

    # ----------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def reading(self) -> Iterator[h5py.File]:
        """The project opened read-only for the duration of the ``with`` block."""
        with h5py.File(self.path, "r", locking=False) as f:
            yield f

    @contextlib.contextmanager
    def transaction(self) -> Iterator[h5py.File]:
        """Copy-on-write transaction: changes become visible atomically on success only."""
        if self.readonly:
            raise ProjectError(f"{self.path} is open read-only.")
        if not self._lock.held:
            raise ProjectError(f"{self.path} is closed; open it again to write.")
        tmp = self.path.with_name(f".{self.path.name}.tx-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(self.path, tmp)
        try:
            with h5py.File(tmp, "r+", locking=False) as f:
                yield f
                f.attrs["last_written_with"] = __version__
                f.flush()
            _commit_file(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ----------------------------------------------------------------- journal
    @staticmethod
    def _append_journal(f: h5py.File, record: dict[str, Any]) -> None:
        ds = f["journal"]
        ds.resize((ds.shape[0] + 1,))
        ds[-1] = _json({"time": time.time(), **record})

    def begin_job(self, stage: str, params: Mapping[str, Any]) -> str:
        """Record that a job of ``stage`` starts; returns the run id it will write."""
        run_id = new_run_id()
        with self.transaction() as f:
            self._append_journal(
                f, {"event": "start", "stage": stage, "run": run_id, "params": dict(params)}
            )
        return run_id

    def end_job(self, stage: str, run_id: str, status: str, message: str = "") -> None:
        """Record that a job ended without writing a run (``status``: cancelled / failed)."""
        with self.transaction() as f:
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

    def journal(self) -> list[dict[str, Any]]:
        with self.reading() as f:
            return [json.loads(s) for s in f["journal"].asstr()[()]]

    def interrupted_jobs(self) -> list[dict[str, Any]]:
        """Start records that have no end record: jobs killed while running."""
        records = self.journal()
        ended = {r["run"] for r in records if r["event"] == "end"}
        return [r for r in records if r["event"] == "start" and r["run"] not in ended]

    # ----------------------------------------------------------------- runs
    def write_run(
        self,
        stage: str,
        run_id: str,
        *,
        slot: str,
        params: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        inputs: Mapping[str, str] | None = None,
        summary: Mapping[str, Any] | None = None,
        make_current: bool = True,
    ) -> str:
        """Write run ``run_id`` of ``stage`` (append-only), end its job, then point ``slot`` at it.

        ``run_id`` comes from :meth:`begin_job`. ``inputs`` maps the slots this run read to
        the run ids it read, which is how staleness is derived. ``make_current=False`` keeps
        the slot's current run (a new run worse than it waits for the user: :meth:`set_current`).
        """
        with self.transaction() as f:
            if f"{stage}/{run_id}" in f:
                raise ProjectError(f"Run {stage}/{run_id} already exists (runs are append-only).")
            g = f.require_group(stage).create_group(run_id)
            for name, value in arrays.items():
                _write_array(g, name, value)
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
            if ref in f["current"].attrs:
                key = str(f["current"].attrs[ref])
            elif "/" in ref and not ref.startswith("data/") and ref in f:
                key = ref
            else:
                raise ProjectError(
                    f"No run '{ref}' in {self.path.name}; run that stage first "
                    f"(slots present: {sorted(f['current'].attrs)})."
                )
            g = f[key]
            if arrays:
                self._check_usable(f, key)
            stage, run_id = key.split("/", 1)
            return Run(
                stage=stage,
                run_id=run_id,
                slot=str(g.attrs["slot"]),
                params=json.loads(g.attrs["params"]),
                inputs=json.loads(g.attrs["inputs"]),
                summary=json.loads(g.attrs["summary"]),
                created=float(g.attrs["created"]),
                arrays={k: _read_array(v) for k, v in g.items()} if arrays else {},
            )

    def runs(self, stage: str | None = None) -> list[Run]:
        """Every run (of ``stage``), oldest first, without arrays."""
        with self.reading() as f:
            stages = [stage] if stage else [k for k in f if k not in ("current", "journal", "data")]
            keys = [f"{s}/{r}" for s in stages if s in f for r in f[s]]
        return sorted((self.run(k, arrays=False) for k in keys), key=lambda r: r.created)

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
                f"{s}/{r}": json.loads(f[s][r].attrs["inputs"])
                for s in f
                if s not in ("current", "journal", "data")
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
        with self.transaction() as f:
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
            for key, value in arrays.items():
                _write_array(g, key, value)
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
                {k: _read_array(v) for k, v in g.items()},
                {k: json.loads(v) for k, v in g.attrs.items()},
            )

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

    def matrix(self, name: str) -> tuple[np.ndarray, str, str]:
        """(matrix, kind, image_set) of the matrix named ``name``."""
        arrays, attrs = self._read_data("matrices", name)
        return arrays["matrix"], attrs["kind"], attrs["image_set"]

    # ----------------------------------------------------------------- side files
    def side_path(self, name: str) -> Path:
        """Where a large side file (a model checkpoint) of this project lives.

        Side files sit in ``<project>.files/`` next to the project and are referenced from
        a run together with their sha256, so a moved or damaged file is detected.
        """
        folder = self.path.with_name(self.path.name + ".files")
        folder.mkdir(exist_ok=True)
        return folder / name

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
        """A JSON-able overview: header, imported data, slots, runs, interrupted jobs."""
        with self.reading() as f:
            header = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            unusable = {
                f"{kind}/{name}": str(g.attrs["invalidated"])
                for kind in ("judgments", "matrices")
                if kind in f["data"]
                for name, g in f["data"][kind].items()
                if "invalidated" in g.attrs
            }
        stale = self.staleness()
        return {
            "path": str(self.path),
            "header": header,
            "imagesets": {n: len(self.imageset(n)) for n in self.names("imagesets")},
            "judgments": self.names("judgments"),
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
            "interrupted": self.interrupted_jobs(),
            # imported data whose image set was replaced (see _write_data), with the reason
            "unusable": unusable,
        }

    def save_as(self, new_path: str | Path) -> Project:
        """Copy the project to ``new_path`` (temp file, fsync, rename) and open the copy.

        This project is closed (its lock released) once the copy is open for writing.
        """
        new_path = Path(new_path).resolve()
        new = Project(new_path, readonly=False)
        new._lock.acquire()
        try:
            tmp = new_path.with_name(f".{new_path.name}.saveas-{uuid.uuid4().hex[:8]}")
            shutil.copyfile(self.path, tmp)
            _commit_file(tmp, new_path)
        except BaseException:
            new._lock.release()
            raise
        self.close()
        return new
