"""The write lock next to the project, and process identities for leases and jobs.

HDF5's own file locks only hold while a file is open, and the project is closed between
transactions, so the lock is a separate ``<project>.lock``. It is held for one index
transaction at a time (milliseconds, now that large arrays live in side files), not for a
whole session: a second process waits briefly for it instead of being locked out, and a
long job's own writes are short transactions between which others get their turn.

The lock file is created complete: its JSON (pid, host, process start time) is written to a
temporary file that is then hard-linked to ``<project>.lock`` (``link`` fails if the lock
exists, like ``O_EXCL``), so an empty or garbled lock file never belongs to a live holder
and is treated as stale (with a warning). Where hard links are unsupported the lock falls
back to ``O_EXCL`` creation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from alignet_engine.errors import ProjectLockedError

log = logging.getLogger(__name__)

#: How long a transaction waits for another process's transaction by default. Index
#: transactions take milliseconds; a migration or pack of a large project takes longer.
LOCK_WAIT_S = 30.0
_POLL_S = 0.02
_GARBAGE_AGE_S = 1.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_identity() -> dict[str, Any]:
    """This process, as lock files, leases and journal records name it."""
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": _start_time(pid),
        "time": time.time(),
    }


def identity_alive(holder: dict[str, Any]) -> bool:
    """Whether the process a :func:`process_identity` record names may still run.

    A process on another host is assumed alive (we cannot look); on this host, a dead pid,
    or a pid now used by a process started at another time, is dead.
    """
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    started = holder.get("started")
    return started is None or started == _start_time(pid)


class ProjectLock:
    """Exclusive write lock on a project: ``<project>.lock`` naming its holder."""

    def __init__(self, project_path: Path) -> None:
        self.path = project_path.with_name(project_path.name + ".lock")
        self._held = 0  # re-entrant within one object: nested transactions of one writer

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for another holder.

        A stale lock (its process is dead, or the file is empty or garbled) is taken over
        with a warning.

        Raises
        ------
        ProjectLockedError
            When another live process (or another host) still holds it after ``timeout``.
        """
        if self._held:
            self._held += 1
            return
        deadline = time.monotonic() + timeout
        while True:
            if self._try_create():
                self._held = 1
                return
            holder = self._read_holder()
            if holder is None or not isinstance(holder, dict):
                if self._unchanged_garbage():
                    log.warning("Removing unreadable lock file %s (treated as stale)", self.path)
                    self.path.unlink(missing_ok=True)
                    continue
                # Young garbage may be an O_EXCL holder mid-write: wait up to a second more.
                if time.monotonic() < deadline + _GARBAGE_AGE_S:
                    time.sleep(_POLL_S)
                    continue
            elif not identity_alive(holder):
                log.warning("Removing stale lock %s of dead process %s", self.path, holder)
                self.path.unlink(missing_ok=True)
                continue
            if time.monotonic() >= deadline:
                raise ProjectLockedError(self._locked_message(holder, timeout))
            time.sleep(_POLL_S)

    def _try_create(self) -> bool:
        content = json.dumps(process_identity())
        # ".<project>.lock-<rand>": the project's sweep of a killed writer's temporaries
        # removes these too.
        tmp = self.path.with_name(f".{self.path.name}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "x") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, self.path)
                return True
            except (FileExistsError, FileNotFoundError):  # taken, or our temp was swept
                return False
            except OSError:  # no hard links here (FAT, some network shares): O_EXCL
                return self._try_create_excl(content)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _try_create_excl(self, content: str) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _unchanged_garbage(self) -> bool:
        """An unreadable lock is stale, unless it may be an ``O_EXCL`` holder mid-write:
        accept it as stale once it has stayed unreadable for a moment."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return False
        return age > _GARBAGE_AGE_S

    def release(self) -> None:
        if self._held > 1:
            self._held -= 1
        elif self._held:
            self.path.unlink(missing_ok=True)
            self._held = 0

    @property
    def held(self) -> bool:
        return bool(self._held)

    def holder(self) -> dict | None:
        """Who holds the lock now (None: nobody, or the file is unreadable)."""
        h = self._read_holder()
        return h if isinstance(h, dict) else None

    def _read_holder(self) -> Any:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None

    def _locked_message(self, holder: Any, waited: float) -> str:
        project = self.path.name.removesuffix(".lock")
        if not isinstance(holder, dict) or not holder:
            who = "another process (the lock file is unreadable)"
        else:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
            who = f"process {holder.get('pid')} on host {holder.get('host')} since {since}"
        return (
            f"Project {project} is being written by {who}; waited {waited:.0f} s. Try again "
            f"when that write ends (reading the project works meanwhile). If that process "
            f"crashed on another machine, delete {self.path}."
        )
