"""The journal bracket every stage job runs inside, and the rule that a worse run waits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from alignet_engine.errors import ProjectError
from alignet_engine.jobs import Cancelled, Job, Message
from alignet_engine.stages.headlines import RunComparison, compare_headline
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
    return (yield from journalled(project, stage, run_id, lambda: body(run_id)))


def journalled(project: Project, stage: str, run_id: str, body: Callable[[], Job[T]]) -> Job[T]:
    """Run ``body()`` and record its end in the journal: :func:`tracked` for a job whose
    start record ``run_id`` is already written (under ``torchrun`` the distill stage writes
    it inside its first agreement, so that its run id reaches every rank)."""
    try:
        return (yield from body())
    except (Cancelled, GeneratorExit):
        project.end_job(stage, run_id, "cancelled")
        raise
    except Exception as exc:
        project.end_job(stage, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise


def worse_than_current(
    project: Project, stage: str, slot: str, summary: Mapping[str, Any]
) -> RunComparison | None:
    """The comparison with ``slot``'s current run if a new run (``summary``) is worse by the
    stage's headline metric, else None. A worse run is written without becoming current
    (``write_run(..., make_current=False)``): it never silently replaces a better one. A
    stale current run is always replaced (its metric was measured on replaced inputs)."""
    ref = project.current(slot)
    # a stale current run was measured on replaced inputs: the new run replaces it
    if ref is None or project.stale_reasons(ref):
        return None
    try:
        current = project.run(ref, arrays=False).summary
    except ProjectError:
        return None
    comparison = compare_headline(stage, summary, current, ref)
    return comparison if comparison is not None and comparison.worse else None


def kept_current_message(comparison: RunComparison, slot: str, new_ref: str) -> Message:
    """The warning a job yields when its run was kept out of ``slot`` (see above)."""
    return Message(
        comparison.stage,
        f"{comparison.sentence()} {comparison.current_ref} stays current; to use the new run, "
        f"make it current on the Project page or run `alignet-cli runs use PROJECT {new_ref}`.",
        "WARNING",
    )


def write_unless_worse(
    project: Project,
    stage: str,
    run_id: str,
    slot: str,
    *,
    params: Mapping[str, Any],
    arrays: Mapping[str, Any],
    inputs: Mapping[str, str],
    summary: Mapping[str, Any],
) -> RunComparison | None:
    """Write run ``stage/run_id`` into ``slot``, current unless :func:`worse_than_current`.

    Returns that comparison when the run was kept out of ``slot`` (the caller yields
    :func:`kept_current_message`), else None.
    """
    worse = worse_than_current(project, stage, slot, summary)
    project.write_run(
        stage,
        run_id,
        slot=slot,
        params=params,
        arrays=arrays,
        inputs=inputs,
        summary=summary,
        make_current=worse is None,
    )
    return worse
