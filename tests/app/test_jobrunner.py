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


def _frozen(objs: list) -> bool:
    """Whether every object of ``objs`` is frozen: ``gc.freeze`` moves objects to a permanent
    generation that ``gc.get_objects()`` does not list. (The freeze *count* is no witness: on
    a busy heap, frozen objects freed meanwhile on the GUI thread can outnumber new ones.)"""
    listed = {id(o) for o in gc.get_objects()}
    return not any(id(o) in listed for o in objs)


class _Cycle:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_a_job_starts_on_a_settled_heap_and_refreezes_once_training(qtbot) -> None:
    runner = JobRunner()
    seen: dict[str, object] = {}
    garbage = _Cycle()
    alive = weakref.ref(garbage)
    earlier = [[] for _ in range(10)]  # objects of earlier work that stay alive
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
            seen["earlier frozen at start"] = _frozen(earlier)
            made = [[] for _ in range(1000)]  # objects the set-up leaves alive
            yield Message("probe", "set-up done")
            seen["set-up frozen before training"] = _frozen(made)
            yield LossBatch("probe", np.asarray([1]), {"loss": np.asarray([0.5])})
            seen["set-up frozen when training"] = _frozen(made)
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
    assert seen["earlier frozen at start"] is True
    # the set-up's survivors joined the frozen objects when the first loss arrived
    assert seen["set-up frozen before training"] is False
    assert seen["set-up frozen when training"] is True
