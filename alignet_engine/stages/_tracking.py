"""The journal bracket every stage job runs inside."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from alignet_engine.jobs import Cancelled, Job
from alignet_engine.store import Project

T = TypeVar("T")


def tracked(
    project: Project, stage: str, params: Mapping[str, Any], body: Callable[[str], Job[T]]
) -> Job[T]:
    """Run ``body(run_id)`` between a journal start record and its end record.

    A cancelled or failed job records why; a killed process records nothing, and the
    start without an end is later shown as an interrupted job.
    """
    run_id = project.begin_job(stage, params)
    try:
        return (yield from body(run_id))
    except (Cancelled, GeneratorExit):
        project.end_job(stage, run_id, "cancelled")
        raise
    except Exception as exc:
        project.end_job(stage, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
