"""Jobs and the events they yield.

A *job* is a generator that yields small immutable events and returns its result::

    def my_job(..., control: JobControl | None = None) -> Job[int]:
        control = control or JobControl()
        for i in range(n):
            control.check()            # raises Cancelled; blocks while paused
            ...
            yield Progress("stage", i + 1, n)
        return result

Tests iterate jobs directly with :func:`run_job`; the GUI runs them on its engine thread and
turns events into signals. Only frozen dataclasses and numpy copies cross that boundary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of work finished in ``stage`` (``total`` 0 = unknown)."""

    stage: str
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass(frozen=True)
class LossBatch:
    """A batch of loss-curve points: ``steps (k,) int64`` and ``values[name] (k,) float64``."""

    stage: str
    steps: np.ndarray
    values: dict[str, np.ndarray]


@dataclass(frozen=True)
class Message:
    """A line for the log panel (``level`` is a logging level name)."""

    stage: str
    text: str
    level: str = "INFO"


@dataclass(frozen=True)
class StageDone:
    """A stage wrote run ``run_id``; ``summary`` is a small JSON-able dict of its results."""

    stage: str
    run_id: str
    summary: dict[str, Any] = field(default_factory=dict)


Event = Progress | LossBatch | Message | StageDone
Job = Generator[Event, None, T]


class Cancelled(Exception):
    """Raised inside a job by :meth:`JobControl.check` after :meth:`JobControl.cancel`."""


class JobControl:
    """Thread-safe cancel / pause switches a job checks at each step."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # wake a paused job so it can see the cancel

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancelled; block at this step boundary while paused."""
        while not self._running.wait(0.1):
            pass
        if self._cancel.is_set():
            raise Cancelled()


def run_job(job: Job[T], on_event: Callable[[Event], None] | None = None) -> T:
    """Drive ``job`` to completion, passing each event to ``on_event``; return its result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if on_event is not None:
            on_event(event)


class Throttle:
    """True at most once every ``interval`` seconds (the first call is always True)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._last = -float("inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False
