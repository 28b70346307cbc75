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

#: The stages in pipeline order (the names runs are stored under).
PIPELINE: tuple[str, ...] = (
    "features",
    "transform",
    "clusters",
    "triplets",
    "distill",
    "evaluate",
    "export",
)


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
