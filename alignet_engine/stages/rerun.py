"""Re-run everything stale: each stale current run again, with its own stored parameters.

The runs go in :func:`~alignet_engine.stages.order.stale_order` (each after the stale runs
whose slots it reads), so every re-run reads up-to-date inputs. Exports are files outside
the project and are not re-run here (the Export page writes them again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alignet_engine.config import (
    ClusterConfig,
    EvaluateConfig,
    ExtractConfig,
    SampleConfig,
    TransformConfig,
)
from alignet_engine.config.distill import DistillStageConfig
from alignet_engine.jobs import Job, JobControl, Message
from alignet_engine.stages import clusters, distill, evaluate, features, transform, triplets
from alignet_engine.stages.order import stale_order
from alignet_engine.store import Project

#: stage -> function(project, params, control) -> job, for every stage that can be re-run.
RERUNNABLE: dict[str, Callable[[Project, dict[str, Any], JobControl], Job[Any]]] = {
    "features": lambda p, params, c: features.extract(p, ExtractConfig.from_dict(params), c),
    "transform": lambda p, params, c: transform.fit_transform(
        p, TransformConfig.from_dict(params), c
    ),
    "clusters": lambda p, params, c: clusters.cluster(p, ClusterConfig.from_dict(params), c),
    "triplets": lambda p, params, c: triplets.sample(p, SampleConfig.from_dict(params), c),
    "distill": lambda p, params, c: distill.run_distill(p, DistillStageConfig.from_dict(params), c),
    "evaluate": lambda p, params, c: evaluate.evaluate(p, EvaluateConfig.from_dict(params), c),
}


def rerun_stale(project: Project, control: JobControl | None = None) -> Job[list[str]]:
    """Re-run every stale current run in dependency order; returns the refs re-run.

    A run whose stage cannot be re-run here (export) is reported and skipped.
    """
    control = control or JobControl()
    order = stale_order(project.info())
    done: list[str] = []
    for i, ref in enumerate(order, 1):
        control.check()
        stage = ref.split("/", 1)[0]
        if stage not in RERUNNABLE:
            yield Message(stage, f"{ref} is stale; {stage} is not re-run automatically", "WARNING")
            continue
        if not project.stale_reasons(ref):
            continue  # an earlier re-run already brought it up to date
        run = project.run(ref, arrays=False)
        if run.params.get("imported"):
            yield Message(stage, f"{ref} was imported; import its file again", "WARNING")
            continue
        yield Message(stage, f"re-running {run.slot} ({i}/{len(order)}): {ref}")
        yield from RERUNNABLE[stage](project, _job_params(project, ref, run.params), control)
        done.append(ref)
    return done


def _job_params(project: Project, ref: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The configuration the run's job started with (its journal record), else the run's.

    The run's own ``params`` may add resolved values (the features' actual layer and
    device) that are not configuration fields.
    """
    run_id = ref.split("/", 1)[1]
    for record in project.journal():
        if record.get("event") == "start" and record.get("run") == run_id:
            return dict(record.get("params", stored))
    return stored
