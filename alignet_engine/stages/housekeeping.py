"""Housekeeping of a project's side files as a job, for the GUI's File menu.

:meth:`Project.collect_garbage` does the work; this job adds progress and cancelling for
the slow part, checking the sha256 of every side file (gigabytes on a real study).
"""

from __future__ import annotations

import dataclasses

from alignet_engine.jobs import Job, JobControl, Progress
from alignet_engine.store import GcReport, Project

STAGE = "gc"


def collect_garbage_job(
    project: Project,
    *,
    delete: bool = False,
    verify: bool = False,
    control: JobControl | None = None,
) -> Job[GcReport]:
    """List (or with ``delete`` sweep) side files nothing refers to; with ``verify`` first
    check every referenced file's sha256, one file per progress step.

    Returns
    -------
    GcReport
        ``unreferenced`` (deleted unless a dry run), ``in_use`` (kept: a running job may
        still reference them), ``missing`` and ``damaged`` (referenced files that are gone
        or differ from what was recorded), ``freed_bytes``.
    """
    control = control or JobControl()
    damaged: list[str] = []
    if verify:
        sides = project.side_arrays()
        for i, (where, side) in enumerate(sides):
            yield Progress(STAGE, i, len(sides), f"checking {side.file}")
            control.check()
            problem = project.check_side_array(where, side)
            if problem is not None:
                damaged.append(problem)
    control.check()
    yield Progress(STAGE, 0, 1, "deleting unreferenced side files" if delete else "listing")
    report = project.collect_garbage(dry_run=not delete)
    yield Progress(STAGE, 1, 1, f"{len(report.unreferenced)} unreferenced file(s)")
    return dataclasses.replace(report, damaged=tuple(damaged))
