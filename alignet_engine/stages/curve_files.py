"""Loss curves of long distillation runs, appended to side files while the job runs.

A run's curves are ~10 columns (training: ``step`` int64 and ``loss``, ``triplet``, …
float64; validation: ``val_step`` and ``val_*``). Stored inline in the project's index, a
100k-step run adds ~8 MB to the file that every later transaction copies. :class:`CurveFiles`
takes the :class:`~alignet_engine.jobs.LossBatch` events of the job as they are yielded: while
a group of curves is short its points stay in memory (a 300-step run is written inline, as
before, and does not scatter a dozen tiny files); once it passes :data:`STREAM_CURVES_ABOVE`
points each column is appended, in blocks, to a growable side array
(:meth:`Project.new_side_array` with shape ``(None,)``), so the points are written once, as
they arrive, and the run's index entry only references them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alignet_engine.jobs import LossBatch
from alignet_engine.store import Project
from alignet_engine.store.sidefiles import SideArray, SideArrayWriter

#: points of a curve group kept in memory before its columns go to side files: 8192 float64
#: points are 64 KiB a column, one chunk of a growable side array (GROW_CHUNK_BYTES)
STREAM_CURVES_ABOVE = 8192
#: points buffered between two appends once streaming (fewer HDF5 resizes and writes)
APPEND_BLOCK = 1024


class _Group:
    """One group of equally long columns (``key`` + ``names``) and where it is going."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.pending: list[LossBatch] = []
        self.pending_rows = 0
        self.writers: dict[str, SideArrayWriter] = {}
        self.rows = 0  # rows appended to the writers
        self.last: dict[str, Any] = {}  # the last row appended (a numpy scalar), by column


class CurveFiles:
    """Collects a run's curve points; streams long curves into side arrays of ``project``.

    Parameters
    ----------
    project : the project the run is written to (open for writing).
    prefix : prepended to each column name in :meth:`arrays` (``"history_"``).
    above : points of a group kept in memory before it streams (:data:`STREAM_CURVES_ABOVE`).
    block : points buffered between appends once streaming.

    Use as a context manager: leaving the block with an exception (a cancelled or failed
    job) deletes the side files not yet handed out by :meth:`arrays`.
    """

    def __init__(
        self,
        project: Project,
        *,
        prefix: str = "history_",
        above: int = STREAM_CURVES_ABOVE,
        block: int = APPEND_BLOCK,
    ) -> None:
        self.project = project
        self.prefix = prefix
        self.above = above
        self.block = block
        self.groups: dict[str, _Group] = {}

    def add(self, batch: LossBatch) -> None:
        """Take one batch of points: training (``step``) or validation (``val_step``)."""
        key = "val_step" if any(n.startswith("val_") for n in batch.values) else "step"
        group = self.groups.setdefault(key, _Group(key))
        group.pending.append(batch)
        group.pending_rows += len(batch.steps)
        if group.writers:
            if group.pending_rows >= self.block:
                self._append(group)
        elif group.pending_rows > self.above:
            self._open(group)
            self._append(group)

    def arrays(self, history: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | SideArray]:
        """The run's arrays (``prefix + column`` → array or finished side array).

        ``history`` is the run's whole history (:attr:`DistillResult.history`); a streamed
        group is checked against it (same length and last row) and, should they differ, is
        written from ``history`` instead.
        """
        out: dict[str, np.ndarray | SideArray] = {
            self.prefix + name: np.asarray(values) for name, values in history.items()
        }
        for group in self.groups.values():
            if not group.writers:
                continue
            self._append(group)
            columns = list(group.writers)
            n = len(history.get(group.key, ()))
            same = group.rows == n and all(name in history for name in columns)
            if same and n:  # the last row appended is the history's
                same = all(
                    np.array_equal(group.last[c], history[c][n - 1], equal_nan=True)
                    for c in columns
                )
            if not same:  # a bug; the history is the reference
                self._abort(group)
                continue
            for name in columns:
                out[self.prefix + name] = group.writers[name].finish()
            group.writers.clear()
        return out

    def abort(self) -> None:
        """Delete the side files not finished by :meth:`arrays`."""
        for group in self.groups.values():
            self._abort(group)

    def __enter__(self) -> CurveFiles:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()

    # ----------------------------------------------------------------------------------------

    def _open(self, group: _Group) -> None:
        first = group.pending[0]
        names = [group.key, *first.values]
        for name in names:
            dtype = np.int64 if name == group.key else np.float64
            group.writers[name] = self.project.new_side_array(
                f"{self.prefix}{name}", (None,), dtype
            )

    def _append(self, group: _Group) -> None:
        if not group.pending:
            return
        columns = {group.key: np.concatenate([b.steps for b in group.pending])}
        for name in group.writers:
            if name != group.key:
                columns[name] = np.concatenate(
                    [np.asarray(b.values[name], dtype=np.float64) for b in group.pending]
                )
        for name, writer in group.writers.items():
            writer.append(columns[name])
            group.last[name] = columns[name][-1]
        group.rows += len(columns[group.key])
        group.pending.clear()
        group.pending_rows = 0

    @staticmethod
    def _abort(group: _Group) -> None:
        for writer in group.writers.values():
            writer.abort()
        group.writers.clear()
