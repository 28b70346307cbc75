"""A session lock file next to the project, so a second app instance cannot write to it.

HDF5's own file locks only hold while a file is open, and the project is closed between
transactions, so the lock is a separate ``<project>.lock`` created with ``O_EXCL``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from alignet_engine.errors import ProjectLockedError

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class ProjectLock:
    """Exclusive write lock on a project: ``<project>.lock`` holding pid, host and time."""

    def __init__(self, project_path: Path) -> None:
        self.path = project_path.with_name(project_path.name + ".lock")
        self._held = False

    def acquire(self) -> None:
        """Take the lock; a stale lock of a dead process on this host is taken over.

        Raises
        ------
        ProjectLockedError
            When another live process (or another host) holds it.
        """
        me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is not None and self._is_stale(holder):
                    log.warning("Removing stale lock %s of dead process %s", self.path, holder)
                    self.path.unlink(missing_ok=True)
                    continue
                raise ProjectLockedError(self._locked_message(holder)) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return
        raise ProjectLockedError(self._locked_message(self._read_holder()))

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def _read_holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _is_stale(holder: dict) -> bool:
        same_host = holder.get("host") == socket.gethostname()
        pid = holder.get("pid")
        return same_host and isinstance(pid, int) and not _pid_alive(pid)

    def _locked_message(self, holder: dict | None) -> str:
        project = self.path.name.removesuffix(".lock")
        if holder is None:
            who = "another process (the lock file is unreadable)"
        else:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
            who = f"process {holder.get('pid')} on host {holder.get('host')} since {since}"
        return (
            f"Project {project} is open for writing by {who}. Close it there first, or open "
            f"this project read-only. If that process crashed on another machine, delete "
            f"{self.path}."
        )
