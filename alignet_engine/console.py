"""How the CLI shows a job's events on a terminal: progress bars, or a few plain lines.

A job (:mod:`alignet_engine.jobs`) yields ``Progress``, ``LossBatch`` and ``Message`` events,
often hundreds a second. :class:`ConsoleProgress` turns them into what a person at a
terminal or a CI log wants to read, always on stderr (stdout stays the result, e.g. the
one JSON object of ``--json``):

- on a terminal (stderr is a TTY): one tqdm bar per stage with done/total, rate and ETA,
  the latest loss and the stage's own message as its postfix; ``Message`` lines are written
  above the bar;
- otherwise (a log file, CI, a pipe): plain lines ``[stage] done/total (pct) rate eta
  message``, the first and last of each stage and at most one every ``interval_s`` seconds
  in between — never one per step.

Verbosity: 0 shows nothing (``--quiet``); 1 (the default) the bars or periodic lines and the
``INFO`` messages; 2 (``-v``) also ``DEBUG`` messages. Which ``logging`` records reach the
terminal is set separately (``--log-level``, see ``alignet_engine.cli``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from alignet_engine.jobs import Event, LossBatch, Message, Progress

#: Seconds between two plain progress lines of one stage when stderr is not a terminal: a
#: 5-minute distillation then logs ~30 lines, not one per step.
PLAIN_INTERVAL_S = 10.0

#: What one unit of work is, per stage (the bars show "12.3 img/s", "0.08 step/s").
UNITS: dict[str, str] = {
    "extract": "img",
    "distill": "step",
    "transform": "epoch",
    "evaluate": "eval",
}

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def _duration(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal with a size: tqdm draws no bar on a pseudo-terminal
    that reports 0 rows or columns (some CI runners, ``script``), so those get plain lines."""
    try:
        if not stream.isatty():
            return False
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return size.lines > 0 and size.columns > 0


class _StageState:
    """Where one stage's progress stands: its units done, total, and the units done and
    the time (s) of its first event, which the rate is counted from (a job reports its first
    batch when it is already done: counting it would show millions of images a second)."""

    def __init__(self, done: int, total: int, now: float) -> None:
        self.total = total
        self.done = done
        self.start_done = done
        self.start = now
        self.last_line = -float("inf")
        self.loss: float | None = None
        self.message = ""
        self.bar: Any = None  # a tqdm bar on a terminal

    def rate(self, now: float) -> float | None:
        """Units per second since the stage's first event, or None before any progress."""
        elapsed, done = now - self.start, self.done - self.start_done
        return done / elapsed if elapsed > 0 and done > 0 else None


class ConsoleProgress:
    """An ``on_event`` callback for :func:`alignet_engine.jobs.run_job` that reports on stderr.

    Parameters
    ----------
    verbosity : 0 silent, 1 progress and INFO messages, 2 also DEBUG messages.
    stream : where to write (default: ``sys.stderr`` at call time).
    bars : tqdm bars (True) or plain periodic lines (False); default: whether ``stream`` is
        a TTY.
    interval_s : seconds between plain lines of one stage (:data:`PLAIN_INTERVAL_S`).
    """

    def __init__(
        self,
        verbosity: int = 1,
        stream: IO[str] | None = None,
        bars: bool | None = None,
        interval_s: float = PLAIN_INTERVAL_S,
    ) -> None:
        self.verbosity = verbosity
        self.stream = stream if stream is not None else sys.stderr
        self.bars = _is_terminal(self.stream) if bars is None else bars
        self.interval_s = interval_s
        self._stages: dict[str, _StageState] = {}
        # (done, total) each stage finished with: a job that repeats its final Progress
        # (the trainer's last step, then its closing report) gets one final line, not two
        self._finished: dict[str, tuple[int, int]] = {}

    # ----------------------------------------------------------------------------- events
    def __call__(self, event: Event) -> None:
        if self.verbosity <= 0:
            return
        if isinstance(event, Message):
            if _LEVELS.get(event.level.upper(), 20) >= (10 if self.verbosity >= 2 else 20):
                self._write(f"[{event.stage}] {event.text}")
        elif isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, LossBatch) and "loss" in event.values and len(event.steps):
            state = self._stages.get(event.stage)
            if state is not None:
                state.loss = float(event.values["loss"][-1])
                # steps are 1-based optimizer steps: they advance the bar between Progress
                # events; only the stage's own Progress event closes it
                self._advance(event.stage, state, int(event.steps[-1]), state.total, False)

    def close(self) -> None:
        """Close every open bar (call once the job ended, also on an error)."""
        for state in self._stages.values():
            if state.bar is not None:
                state.bar.close()
                state.bar = None
        self._stages.clear()

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- internals
    def _progress(self, event: Progress) -> None:
        state = self._stages.get(event.stage)
        if state is None and self._finished.get(event.stage) == (event.done, event.total):
            return
        if state is None or event.done < state.done:  # a new pass of the stage starts over
            self._finish(event.stage)
            state = _StageState(event.done, event.total, time.monotonic())
            self._stages[event.stage] = state
        if event.message:
            state.message = event.message
        self._advance(event.stage, state, event.done, event.total)

    def _advance(
        self, stage: str, state: _StageState, done: int, total: int, may_finish: bool = True
    ) -> None:
        now = time.monotonic()
        first = state.bar is None and state.last_line == -float("inf")
        state.done, state.total = max(done, state.done), total
        finished = may_finish and bool(total) and state.done >= total
        if finished:
            self._finished[stage] = (state.done, total)
        if self.bars:
            self._bar_update(stage, state)
            if finished:
                self._finish(stage)
            return
        if first or finished or now - state.last_line >= self.interval_s:
            state.last_line = now
            self._write(self._plain_line(stage, state, now))
        if finished:
            self._stages.pop(stage, None)

    def _plain_line(self, stage: str, state: _StageState, now: float) -> str:
        unit = UNITS.get(stage, "it")
        parts = [f"[{stage}] {state.done}"]
        if state.total:
            parts[0] += f"/{state.total} ({100.0 * state.done / state.total:.0f}%)"
        rate = state.rate(now)
        if rate is not None:
            parts.append(f"{rate:.3g} {unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{unit}")
            if state.total and state.done < state.total:
                parts.append(f"ETA {_duration((state.total - state.done) / rate)}")
            else:
                parts.append(f"in {_duration(now - state.start)}")
        if state.loss is not None:
            parts.append(f"loss {state.loss:.4f}")
        if state.message:
            parts.append(state.message)
        return " ".join(parts)

    def _bar_update(self, stage: str, state: _StageState) -> None:
        if state.bar is None:
            from tqdm import tqdm  # only a terminal needs it

            state.bar = tqdm(
                total=state.total or None,
                initial=state.done,  # the rate counts from the first event, as in plain lines
                desc=stage,
                unit=UNITS.get(stage, "it"),
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
                smoothing=0.1,
            )
        bar = state.bar
        if state.total and bar.total != state.total:
            bar.total = state.total  # e.g. a transform fit that stops early
        postfix = f"loss {state.loss:.4f}" if state.loss is not None else ""
        if state.message:
            postfix = f"{postfix} {state.message}".strip()
        bar.set_postfix_str(postfix, refresh=False)
        bar.update(state.done - bar.n)

    def _finish(self, stage: str) -> None:
        state = self._stages.pop(stage, None)
        if state is not None and state.bar is not None:
            state.bar.close()

    def _write(self, line: str) -> None:
        if any(s.bar is not None for s in self._stages.values()):
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)  # above the bars, which are redrawn below
        else:
            print(line, file=self.stream, flush=True)
