"""The job runner's heap settling: a job starts with the garbage of earlier work collected (on
the GUI thread, where closed windows' Qt objects may be destroyed) and the survivors frozen,
so automatic full collections during the job (which hold the GIL and froze the window ~0.5 s
mid-training) scan only what the job itself allocates."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np

from alignet_app.jobrunner import JobRunner
from alignet_engine.jobs import JobControl, LossBatch, Message


class _Cycle:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_a_job_starts_on_a_settled_heap_and_refreezes_once_training(qtbot) -> None:
    runner = JobRunner()
    seen: dict[str, object] = {}
    garbage = _Cycle()
    alive = weakref.ref(garbage)
    del garbage  # unreachable, but in a cycle: waits for a collection
    gc.disable()  # no automatic collection may free it before the job starts
    collectors: list[str] = []

    def note_thread(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            collectors.append(threading.current_thread().name)

    gc.callbacks.append(note_thread)
    try:

        def job(control: JobControl):
            seen["cycle freed at start"] = alive() is None
            seen["frozen at start"] = gc.get_freeze_count()
            made = [[] for _ in range(1000)]  # objects the set-up leaves alive
            yield Message("probe", "set-up done")
            yield LossBatch("probe", np.asarray([1]), {"loss": np.asarray([0.5])})
            seen["frozen when training"] = gc.get_freeze_count()
            return len(made)

        with qtbot.waitSignal(runner.idle, timeout=10_000):
            runner.submit("probe", job)
    finally:
        gc.callbacks.remove(note_thread)
        gc.enable()
        runner.shutdown()
    assert seen["cycle freed at start"] is True
    # the whole-heap collection ran on the GUI (main) thread, before the job's thread started
    assert collectors and collectors[0] == threading.main_thread().name
    assert isinstance(seen["frozen at start"], int) and seen["frozen at start"] > 0
    # the set-up's survivors joined the frozen objects when the first loss arrived
    assert seen["frozen when training"] >= seen["frozen at start"] + 1000
