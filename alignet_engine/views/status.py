"""Where each pipeline stage stands in a project, and why (for the GUI's navigator and ``info``).

A stage is

- ``"not run"``: no current run in any of its slots;
- ``"interrupted"``: a job of this stage started after its newest current run and never
  ended (the process was killed); training can be resumed, anything else re-run;
- ``"stale"``: a current run read an input that has since been replaced;
- ``"done"``: current runs exist and are up to date.

``"running"`` is not stored in the project: only the process running the job knows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alignet_engine.stages.order import PIPELINE, stale_order


@dataclass(frozen=True)
class StageState:
    """``state`` of ``stage`` and a one-line ``why``; ``runs`` are its current run refs."""

    stage: str
    state: str
    why: str
    runs: tuple[str, ...] = ()


def pipeline_status(info: Mapping[str, Any]) -> dict[str, StageState]:
    """Each stage's state from :meth:`Project.info`'s dict, in :data:`PIPELINE` order."""
    current = set(info.get("current", {}).values())
    out: dict[str, StageState] = {}
    for stage in PIPELINE:
        runs = [r for r in info.get("runs", []) if r["run"].split("/", 1)[0] == stage]
        live = [r for r in runs if r["run"] in current]
        # run ids start with a sortable UTC timestamp, so "newer than" is a string compare
        newest = max((r["run"].split("/", 1)[1] for r in live), default="")
        interrupted = [
            j for j in info.get("interrupted", []) if j["stage"] == stage and j["run"] > newest
        ]
        stale = [r for r in live if r["stale"]]
        refs = tuple(r["run"] for r in live)
        if interrupted:
            state = StageState(
                stage, "interrupted", f"job {interrupted[-1]['run']} never finished", refs
            )
        elif stale:
            first = stale[0]
            state = StageState(stage, "stale", f"{first['slot']}: {first['stale'][0]}", refs)
        elif live:
            state = StageState(stage, "done", f"{len(live)} current run(s)", refs)
        else:
            state = StageState(stage, "not run", "no run yet", refs)
        out[stage] = state
    return out


# --------------------------------------------------------------------- what to do next
#: What re-running each stage means, in words, and the page that does it.
_REDO: dict[str, tuple[str, str]] = {
    "features": ("re-extract {what}", "Models & features"),
    "transform": ("refit {what}", "Alignment"),
    "clusters": ("re-cluster the pool", "Clusters"),
    "triplets": ("re-sample the triplets", "Triplets"),
    "distill": ("re-distil the student", "Distillation"),
    "evaluate": ("re-evaluate ({what})", "Evaluation"),
    "export": ("export again", "Export"),
}
_FIRST: dict[str, tuple[str, str]] = {
    "features": ("extract the teacher's features of the stimuli and the pool", "Models & features"),
    "transform": ("fit the transform on the human judgments", "Alignment"),
    "clusters": ("cluster the pool", "Clusters"),
    "triplets": ("sample pool triplets", "Triplets"),
    "distill": ("distil the student", "Distillation"),
    "evaluate": ("evaluate on the held-out judgments", "Evaluation"),
    "export": ("export the aligned student", "Export"),
}


@dataclass(frozen=True)
class NextStep:
    """One piece of advice: what to do (``text``), for which stage, on which ``page``."""

    stage: str
    text: str
    page: str
    runs: tuple[str, ...] = ()


def _what(stage: str, slots: list[str]) -> str:
    if stage == "features":
        parts = []
        for slot in slots:
            _, image_set, model = [*slot.split(":", 2), "", ""][:3]
            who = "the student's" if model.endswith("+distilled") else f"{model}'s"
            parts.append(f"{who} features of {image_set}")
        return ", ".join(parts)
    if stage == "transform":
        names = [s.split(":", 1)[1] if ":" in s else s for s in slots]
        return "the transform" + ("s " if len(names) > 1 else " ") + ", ".join(names)
    if stage == "evaluate":
        return f"{len(slots)} evaluation{'s' if len(slots) != 1 else ''}"
    return ""


def next_steps(info: Mapping[str, Any]) -> list[NextStep]:
    """What to do next, in order: import data, re-run what is stale, run the first missing stage.

    Consecutive stale runs of one stage are one step ("re-extract the student's features of
    stimuli", then "re-evaluate (3 evaluations)"). Export is only advised once evaluated.
    """
    steps: list[NextStep] = []
    if not info.get("imagesets"):
        return [NextStep("data", "import images (a folder, or a list with categories)", "Data")]
    if not info.get("judgments"):
        steps.append(NextStep("data", "import human judgments about the stimuli", "Data"))
    runs = {r["run"]: r for r in info.get("runs", [])}
    for ref in stale_order(info):
        stage = ref.split("/", 1)[0]
        if steps and steps[-1].stage == stage and steps[-1].runs:
            refs = (*steps[-1].runs, ref)
            steps.pop()
        else:
            refs = (ref,)
        verb, page = _REDO.get(stage, (f"re-run {stage}", stage))
        text = verb.format(what=_what(stage, [runs[r]["slot"] for r in refs])).replace(" ()", "")
        steps.append(NextStep(stage, text, page, refs))
    status = pipeline_status(info)
    for stage in PIPELINE:
        if status[stage].state in ("not run", "interrupted"):
            text, page = _FIRST[stage]
            if status[stage].state == "interrupted":
                text = f"resume or re-run the interrupted {stage} job ({status[stage].why})"
            steps.append(NextStep(stage, text, page))
            break
    return steps


def advice(info: Mapping[str, Any]) -> str:
    """:func:`next_steps` as one sentence: "Re-extract …, then re-evaluate (2 evaluations)."."""
    steps = next_steps(info)
    if not steps:
        return "Everything is up to date."
    text = ", then ".join(s.text for s in steps)
    return text[0].upper() + text[1:] + "."
