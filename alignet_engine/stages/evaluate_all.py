"""Which representation is which, and "evaluate all": every representation on every target.

The AligNet method compares four representations (:data:`ROLES`): the base teacher, the
aligned teacher (the teacher's features through the transform), the base student and the
distilled student. :func:`pipeline_roles` works out their models and transform from the
project's runs; :func:`evaluate_all` runs :func:`alignet_engine.stages.evaluate.evaluate` for
each of them whose features exist, on each chosen judgment set / matrix, skipping
evaluations that are already current. The Evaluation page's table
(:mod:`alignet_engine.views.evaluation`) shows the same roles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignet_engine.config import EvaluateConfig, features_slot
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Message, Progress
from alignet_engine.stages.evaluate import evaluate, evaluation_slot
from alignet_engine.stages.transform import transform_slot
from alignet_engine.store import Project

STAGE = "evaluate"

#: The four representations the AligNet method compares, in the order they are shown.
ROLES: tuple[str, ...] = ("base_teacher", "aligned_teacher", "base_student", "distilled_student")
ROLE_LABELS: dict[str, str] = {
    "base_teacher": "base teacher",
    "aligned_teacher": "aligned teacher",
    "base_student": "base student",
    "distilled_student": "distilled student",
}
DISTILLED_SUFFIX = "+distilled"


# --------------------------------------------------------------------------------------------
# Which representation is which
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineRoles:
    """The models and transform behind the four representations (None where unknown).

    ``teacher`` and ``transform`` come from the triplets run (the teacher that labelled the
    triplets), else from the current ``transform:teacher`` run (or the only transform);
    ``student`` comes from the distill run.
    """

    teacher: str | None = None
    transform: str | None = None
    student: str | None = None

    def representation(self, role: str) -> tuple[str, str | None] | None:
        """(model label, transform name) of ``role``, or None when the pipeline lacks it."""
        if role == "base_teacher" and self.teacher:
            return self.teacher, None
        if role == "aligned_teacher" and self.teacher and self.transform:
            return self.teacher, self.transform
        if role == "base_student" and self.student:
            return self.student, None
        if role == "distilled_student" and self.student:
            return self.student + DISTILLED_SUFFIX, None
        return None

    def role_of(self, model: str, transform: str | None) -> str | None:
        """The role of an evaluated (model, transform) pair, or None if it is none of the four."""
        for role in ROLES:
            if self.representation(role) == (model, transform):
                return role
        return None


def pipeline_roles(project: Project) -> PipelineRoles:
    """Work out the teacher, its transform and the student from the project's runs."""
    slots = project.slots()
    teacher = transform = student = None
    if "triplets" in slots:
        summary = project.run("triplets", arrays=False).summary
        teacher, transform = summary.get("teacher"), summary.get("transform")
    if transform is None:
        names = sorted(s.split(":", 1)[1] for s in slots if s.startswith("transform:"))
        if names:
            transform = "teacher" if "teacher" in names else names[0]
    if transform is not None and teacher is None and transform_slot(transform) in slots:
        teacher = project.run(transform_slot(transform), arrays=False).params.get("model")
    if "distill" in slots:
        student = project.run("distill", arrays=False).params.get("student")
    return PipelineRoles(teacher=teacher, transform=transform, student=student)


def representation_name(model: str, transform: str | None) -> str:
    """The label an evaluation slot uses for a representation (``model+T(name)``)."""
    return model + (f"+T({transform})" if transform else "")


class StaleCache:
    """The current slots and every run's stale reasons (:meth:`Project.staleness`, which is
    transitive), read once: the same staleness the navigator and ``info`` show."""

    def __init__(self, project: Project) -> None:
        self.slots = project.slots()
        self._reasons = project.staleness()

    def reasons(self, ref: str) -> tuple[str, ...]:
        return tuple(self._reasons.get(ref, ["input run is missing"]))


# --------------------------------------------------------------------------------------------
# Evaluate all
# --------------------------------------------------------------------------------------------
def _target_image_set(project: Project, kind: str, name: str) -> str:
    if kind == "judgments":
        return project.judgments(name)[1]
    return project.matrix(name)[2]


def fit_judgments(project: Project) -> list[str]:
    """Judgment sets a current transform was fitted on: not held out, so evaluating on them
    flatters the aligned teacher. :func:`evaluate_all` leaves them out unless asked."""
    names: set[str] = set()
    for slot in project.slots():
        if slot.startswith("transform:"):
            names.update(project.run(slot, arrays=False).params.get("judgments") or ())
    return sorted(names)


def evaluate_all(
    project: Project,
    judgments: Sequence[str] | None = None,
    matrices: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    random_state: int = 0,
    control: JobControl | None = None,
) -> Job[dict[str, Any]]:
    """Evaluate each available representation on each chosen judgment set / matrix.

    ``judgments`` default to every set in the project that no current transform was fitted
    on (:func:`fit_judgments`; name them to evaluate on them anyway), ``matrices`` to every
    matrix (pass ``()`` for none).
    A representation is available when its features of the target's image set exist (and,
    for the aligned teacher, the transform). Evaluations whose current run is up to date are
    skipped. Returns ``{"ran": [run refs], "skipped": [{"target", "role", "why"}]}``.
    """
    control = control or JobControl()
    roles = pipeline_roles(project)
    if judgments is None:
        fitted = set(fit_judgments(project))
        judgments = [n for n in project.names("judgments") if n not in fitted]
    chosen_j = list(judgments)
    chosen_m = list(project.names("matrices") if matrices is None else matrices)
    if not chosen_j and not chosen_m:
        raise InputError("choose at least one judgment set or matrix to evaluate on")
    for name in chosen_j:
        if name not in project.names("judgments"):
            raise InputError(f"no judgment set named '{name}' in the project", field="judgments")
    for name in chosen_m:
        if name not in project.names("matrices"):
            raise InputError(f"no matrix named '{name}' in the project", field="matrix")
    stale = StaleCache(project)
    todo: list[EvaluateConfig] = []
    skipped: list[dict[str, str]] = []
    for kind, names in (("judgments", chosen_j), ("matrix", chosen_m)):
        for name in names:
            image_set = _target_image_set(project, kind, name)
            for role in ROLES:
                rep = roles.representation(role)
                if rep is None:
                    skipped.append({"target": name, "role": role, "why": "not in this pipeline"})
                    continue
                model, transform = rep
                if features_slot(image_set, model) not in stale.slots:
                    why = f"no features of '{image_set}' by {model}"
                    skipped.append({"target": name, "role": role, "why": why})
                    continue
                if transform and transform_slot(transform) not in stale.slots:
                    skipped.append({"target": name, "role": role, "why": "no transform"})
                    continue
                config = EvaluateConfig(
                    image_set=image_set,
                    model=model,
                    transform=transform,
                    n_boot=n_boot,
                    random_state=random_state,
                    judgments=name if kind == "judgments" else None,
                    matrix=name if kind == "matrix" else None,
                )
                ref = stale.slots.get(evaluation_slot(config))
                if ref is not None and not stale.reasons(ref):
                    skipped.append({"target": name, "role": role, "why": "already current"})
                    continue
                todo.append(config)
    ran: list[str] = []
    yield Progress(STAGE, 0, len(todo), f"{len(todo)} evaluation(s) to run")
    for i, config in enumerate(todo):
        control.check()
        target = config.judgments or config.matrix
        label = representation_name(config.model, config.transform)
        yield Message(STAGE, f"evaluating {label} on {target}")
        yield from evaluate(project, config, control)
        ran.append(str(project.current(evaluation_slot(config))))
        yield Progress(STAGE, i + 1, len(todo), f"{label} on {target}")
    if not todo:
        yield Message(STAGE, "every evaluation is already current; nothing to run")
    return {"ran": ran, "skipped": skipped}
