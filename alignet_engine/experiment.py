"""Experiment mode: collect odd-one-out judgments from a participant on a project's images.

The GUI shows the trials; everything that decides *what* is shown and *what* is stored lives
here, so it is tested without a window:

- :func:`plan_trials` draws the trials: uniformly random triplets of distinct images, each
  shown in a random left-to-right order, plus a fraction of repeats of earlier trials (shown
  later, in a new order) that measure the participant's own consistency — the noise ceiling.
- :class:`ExperimentLog` is the session on disk: a JSON-lines file next to the project. Line 1
  holds the configuration and the plan; every answer is appended and fsynced at once, so a
  crash or a closed laptop loses at most the trial on screen, and :meth:`ExperimentLog.open`
  resumes at the first unanswered trial. A torn last line (killed mid-write) is ignored.
- :func:`save_to_project` turns the answers into :class:`Judgments` (odd one out last, the
  participant's number, response times) and stores them, ready for alignment.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from alignet_engine.base.types import Judgments
from alignet_engine.config import StageConfig
from alignet_engine.errors import InputError
from alignet_engine.files import atomic_write_text
from alignet_engine.params import Interval, param

FORMAT = "alignet-experiment"
FORMAT_VERSION = 1

DEFAULT_CONSENT = (
    "You are invited to take part in a study of how people judge visual similarity. You will "
    "see three images at a time and choose the one that fits least with the other two. There "
    "are no right or wrong answers. Taking part is voluntary; you may stop at any time without "
    "giving a reason. Your answers and response times are stored without your name."
)
DEFAULT_INSTRUCTIONS = (
    "On each trial you see three images. Choose the ODD ONE OUT: the image that is least "
    "similar to the other two.\n\nClick it, or press 1, 2 or 3 (or ←, ↓, →) for the left, "
    "middle or right image. Answer quickly, going with your first impression.\n\n"
    "There are short breaks along the way. Press Esc to pause; your answers so far are kept."
)


@dataclass(frozen=True)
class ExperimentConfig(StageConfig):
    """One participant's session (each field's help and range are declared with it)."""

    image_set: str = param(
        help="The images the trials are drawn from (three different images per trial).",
        aliases=("--set",),
    )
    participant: int = param(
        1,
        "The participant's number; stored with every answer (no names are stored).",
        bounds=Interval(Integral, 0, None, closed="left"),
    )
    n_trials: int = param(
        60,
        "Trials in the session, repeats included. About 2–3 s per trial.",
        bounds=Interval(Integral, 1, None, closed="left"),
    )
    repeat_fraction: float = param(
        0.1,
        "Share of trials that show an earlier triplet again (in a new order), measuring the "
        "participant's own consistency — the noise ceiling.",
        bounds=Interval(Real, 0, 0.5, closed="both"),
    )
    break_every: int = param(
        30,
        "A break screen after this many trials (0 = none).",
        bounds=Interval(Integral, 0, None, closed="left"),
    )
    seed: int = param(
        0,
        "Seeds the trial plan; the same seed and participant give the same trials.",
        bounds=Interval(Integral, 0, None, closed="left"),
    )
    judgments_name: str = param(
        "experiment", "The answers are saved as judgments '<name>-p<participant>'."
    )
    instructions: str = param(DEFAULT_INSTRUCTIONS, "The instructions shown before the trials.")
    consent: str = param(DEFAULT_CONSENT, "The consent text the participant agrees to first.")

    def validate(self) -> None:
        if not self.image_set:
            raise InputError("choose the image set to show", field="image_set")
        if not self.judgments_name or "/" in self.judgments_name:
            raise InputError("give a name without '/'", field="judgments_name")


@dataclass(frozen=True)
class Plan:
    """The trials in the order shown.

    items : (n_trials, 3) int64 — image ids left, middle, right.
    repeat_of : (n_trials,) int64 — the earlier trial a repeat repeats, -1 for a new triplet.
    """

    items: np.ndarray
    repeat_of: np.ndarray

    def __len__(self) -> int:
        return int(self.items.shape[0])


def plan_trials(n_items: int, config: ExperimentConfig) -> Plan:
    """Draw the trials of ``config`` over ``n_items`` images (deterministic given the seed).

    New triplets are uniformly random sets of three distinct images, never the same set twice
    (while there are enough sets). A repeat shows an earlier trial's three images again in a
    fresh random order, at least 3 trials later so it is not recognised as an immediate echo.
    """
    if n_items < 3:
        raise InputError(
            f"the image set has {n_items} images; an odd-one-out trial needs at least 3",
            field="image_set",
        )
    rng = np.random.default_rng([config.seed, config.participant])
    n = config.n_trials
    n_repeat = round(n * config.repeat_fraction) if n >= 5 else 0
    n_new = n - n_repeat
    seen: set[tuple[int, ...]] = set()
    new = np.empty((n_new, 3), dtype=np.int64)
    n_sets = n_items * (n_items - 1) * (n_items - 2) // 6
    for t in range(n_new):
        while True:
            row = rng.choice(n_items, size=3, replace=False)
            key = tuple(sorted(int(i) for i in row))
            if key not in seen or len(seen) >= n_sets:
                seen.add(key)
                break
        new[t] = row
    # Repeats take random slots from the 4th on; each repeats a not-yet-repeated new trial
    # shown at least 3 slots earlier, in a fresh order. A slot with no such trial gets a new
    # triplet instead, so the session always has n trials.
    repeat_slots = set(
        rng.choice(np.arange(3, n), size=min(n_repeat, max(0, n - 3)), replace=False).tolist()
    )
    items: list[tuple[int, ...]] = []
    repeat_of: list[int] = []
    unused_new = iter(new)
    repeated: set[int] = set()
    for slot in range(n):
        sources = (
            [t for t in range(slot - 2) if repeat_of[t] == -1 and t not in repeated]
            if slot in repeat_slots
            else []
        )
        if sources:
            source = int(rng.choice(sources))
            repeated.add(source)
            items.append(tuple(int(i) for i in rng.permutation(np.asarray(items[source]))))
            repeat_of.append(source)
            continue
        unused = next(unused_new, None)
        # (only when repeats could not be placed) draw one more new triplet
        row = rng.choice(n_items, size=3, replace=False) if unused is None else unused
        items.append(tuple(int(i) for i in row))
        repeat_of.append(-1)
    return Plan(np.asarray(items, dtype=np.int64), np.asarray(repeat_of, dtype=np.int64))


class ExperimentLog:
    """A session on disk (JSON lines): header line, then one line per answer.

    Use :meth:`create` for a new session and :meth:`open` to resume one.
    """

    def __init__(self, path: Path, config: ExperimentConfig, plan: Plan, answers: list[dict]):
        self.path = path
        self.config = config
        self.plan = plan
        self.answers = answers

    # ----------------------------------------------------------------- files
    @classmethod
    def create(
        cls, path: str | os.PathLike[str], config: ExperimentConfig, n_items: int
    ) -> ExperimentLog:
        """Start a session file at ``path`` (refuses to overwrite an existing session)."""
        path = Path(path)
        if path.exists():
            raise InputError(
                f"a session already exists at {path}; resume it or choose another participant "
                "number",
                field="participant",
            )
        plan = plan_trials(n_items, config)
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "n_items": n_items,
            "config": config.to_dict(),
            "items": plan.items.tolist(),
            "repeat_of": plan.repeat_of.tolist(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(header) + "\n")
        return cls(path, config, plan, [])

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ExperimentLog:
        """Read a session to resume it; a torn last line (a crash mid-write) is dropped."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the session file: {exc}", source=str(path)) from exc
        try:
            header = json.loads(lines[0])
        except (IndexError, json.JSONDecodeError):
            raise InputError("not an experiment session (no header)", source=str(path)) from None
        if header.get("format") != FORMAT:
            raise InputError("not an experiment session file", source=str(path))
        if int(header.get("version", 0)) > FORMAT_VERSION:
            raise InputError(
                f"written by a newer AligNet Studio (format {header['version']})",
                source=str(path),
            )
        answers: list[dict] = []
        for number, line in enumerate(lines[1:], start=2):
            try:
                answers.append(json.loads(line))
            except json.JSONDecodeError:
                if number != len(lines):  # only the last line may be torn
                    raise InputError("corrupt answer line", source=str(path), row=number) from None
        config = ExperimentConfig.from_dict(header["config"])
        plan = Plan(
            np.asarray(header["items"], dtype=np.int64).reshape(-1, 3),
            np.asarray(header["repeat_of"], dtype=np.int64),
        )
        return cls(path, config, plan, answers)

    # ----------------------------------------------------------------- progress
    @property
    def next_trial(self) -> int:
        """Index of the first unanswered trial (== len(plan) when finished)."""
        return len(self.answers)

    @property
    def finished(self) -> bool:
        return self.next_trial >= len(self.plan)

    def is_break_before(self, trial: int) -> bool:
        """True when a break is due before ``trial`` (not before the first or after the last)."""
        every = self.config.break_every
        return every > 0 and 0 < trial < len(self.plan) and trial % every == 0

    def record(self, trial: int, position: int, response_ms: float) -> None:
        """Store the answer to ``trial``: the image at ``position`` (0 left, 1 middle, 2 right)
        is the odd one out; ``response_ms`` from the images appearing to the answer.

        The line is written and fsynced before this returns.
        """
        if trial != self.next_trial:
            raise InputError(
                f"trial {trial} answered but trial {self.next_trial} is next", field="trial"
            )
        if position not in (0, 1, 2):
            raise InputError(f"position must be 0, 1 or 2, got {position}", field="position")
        if not np.isfinite(response_ms) or response_ms < 0:
            raise InputError(f"bad response time {response_ms}", field="response_ms")
        answer = {
            "trial": trial,
            "position": position,
            "odd": int(self.plan.items[trial, position]),
            "response_ms": round(float(response_ms), 1),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(answer) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.answers.append(answer)

    # ----------------------------------------------------------------- results
    def judgments(self) -> Judgments:
        """The answers so far as odd-one-out judgments (odd one out LAST in each row)."""
        rows = []
        for a in self.answers:
            shown = [int(i) for i in self.plan.items[a["trial"]]]
            odd = shown[a["position"]]
            rest = sorted(i for i in shown if i != odd)  # the pair judged most similar
            rows.append((rest[0], rest[1], odd))
        n = len(rows)
        return Judgments(
            kind="oddone",
            triplets=np.asarray(rows, dtype=np.int64).reshape(n, 3),
            participant=np.full(n, self.config.participant, dtype=np.int64),
            meta={
                "format": "alignet-experiment",
                "source": self.path.name,
                "image_set": self.config.image_set,
                "consent": self.config.consent,
                "instructions": self.config.instructions,
            },
            types=np.asarray(
                ["repeat" if self.plan.repeat_of[a["trial"]] >= 0 else "new" for a in self.answers]
            ),
            response_ms=np.asarray([a["response_ms"] for a in self.answers], dtype=np.float64),
        )

    def consistency(self) -> dict[str, Any]:
        """Agreement of the participant with themself on repeated trials answered so far."""
        by_trial = {a["trial"]: a["odd"] for a in self.answers}
        pairs = [
            (by_trial[t], by_trial[int(self.plan.repeat_of[t])])
            for t in by_trial
            if self.plan.repeat_of[t] >= 0 and int(self.plan.repeat_of[t]) in by_trial
        ]
        same = sum(a == b for a, b in pairs)
        return {"n_repeats": len(pairs), "agreement": same / len(pairs) if pairs else None}


def session_path(project: Any, config: ExperimentConfig) -> Path:
    """Where a participant's session file lives: a side file next to the project."""
    return Path(
        project.side_path(f"experiment-{config.judgments_name}-p{config.participant}.jsonl")
    )


def sessions(project: Any) -> list[ExperimentLog]:
    """Every experiment session stored next to ``project`` (finished or not), by name."""
    folder = Path(project.side_path("x")).parent
    out = []
    for path in sorted(folder.glob("experiment-*.jsonl")) if folder.is_dir() else []:
        try:
            out.append(ExperimentLog.open(path))
        except InputError:
            continue  # not ours or unreadable: never block the list
    return out


def save_to_project(project: Any, log: ExperimentLog) -> str:
    """Store the session's answers as judgments ``<judgments_name>-p<participant>``.

    Saving again (e.g. after more trials) replaces that set. Returns its name.
    """
    if not log.answers:
        raise InputError("the session has no answers yet", source=log.path.name)
    name = f"{log.config.judgments_name}-p{log.config.participant}"
    project.write_judgments(
        name,
        log.judgments(),
        image_set=log.config.image_set,
        params={
            "session": log.path.name,
            "trials_answered": log.next_trial,
            "trials_planned": len(log.plan),
            **log.consistency(),
        },
    )
    return name
