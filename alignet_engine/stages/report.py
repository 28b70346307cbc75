"""The evaluation table, "evaluate all", the study report and the export job.

Everything the Evaluation and Export pages show or write is assembled here, so the GUI only
formats numbers it is given:

- :func:`evaluation_table` organises every current evaluate run as rows (judgment sets and
  matrices) × representations (base teacher, aligned teacher, base student, distilled
  student, plus any other representation that was evaluated), with CIs, noise ceilings and
  a (transitive) stale flag;
- :func:`evaluate_all` runs :func:`alignet_engine.stages.evaluate.evaluate` for each of the
  four representations whose features exist, on each chosen judgment set / matrix, skipping
  evaluations that are already current;
- :func:`write_report` writes ``report.json`` and a self-contained ``report.html`` (plus the
  plot PNGs it is given), each file atomically (temporary name, fsync, rename);
- :func:`export_prerequisites` says, before the user clicks, why a format cannot be
  exported yet; :func:`export_job` runs :func:`alignet_engine.stages.export.export` (and the
  report) as a job with progress.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alignet_engine import __version__
from alignet_engine.config import EvaluateConfig, features_slot
from alignet_engine.errors import InputError
from alignet_engine.files import atomic_write_bytes
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

#: Formats the Export page offers: the engine's EXPORTABLE plus the report.
EXPORT_FORMATS: tuple[str, ...] = (
    "student",
    "pt2",
    "torchscript",
    "onnx",
    "transform",
    "triplets",
    "report",
)
EXPORT_DESCRIPTIONS: dict[str, str] = {
    "student": "Distilled student: student.safetensors + student.json (architecture, "
    "preprocessing, metrics) + MODEL_CARD.md",
    "pt2": "torch.export program of the student (student.pt2; torch.export.load), checked "
    "against the eager model",
    "torchscript": "TorchScript module of the student (student.torchscript.pt), checked "
    "against the eager model",
    "onnx": "ONNX graph of the student (student.onnx, opset 18), checked against the "
    "eager model with onnxruntime",
    "transform": "The surrogate teacher's affine transform (transform.npz, gLocal / "
    "thingsvision layout)",
    "triplets": "The sampled pool triplets with the teacher's similarities (AligNet npz, "
    "train and val)",
    "report": "The evaluation report: report.html + report.json + one PNG chart per "
    "judgment set / matrix",
}


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


# --------------------------------------------------------------------------------------------
# The evaluation table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalCell:
    """One evaluate run: ``value`` is accuracy (judgments) or Spearman ρ (matrices).

    ``err_minus`` / ``err_plus`` are the distances from ``value`` to the CI bounds (what an
    error bar needs); ``stale`` lists why the run no longer reflects its inputs.
    """

    role: str
    representation: str
    model: str
    transform: str | None
    value: float
    ci_low: float
    ci_high: float
    n: int
    metric: str
    run: str
    stale: tuple[str, ...] = ()
    n_boot: int = 0
    # what the CI resampled ("triplets", "items", "responses"), and the paired comparison with
    # another representation when the run made one (difference, ci_low, ci_high, p_value,
    # unit, against)
    ci_unit: str = ""
    comparison: dict[str, Any] | None = None

    @property
    def err_minus(self) -> float:
        return max(self.value - self.ci_low, 0.0)

    @property
    def err_plus(self) -> float:
        return max(self.ci_high - self.value, 0.0)

    @property
    def is_stale(self) -> bool:
        return bool(self.stale)


@dataclass(frozen=True)
class EvalRow:
    """A judgment set or matrix with one cell per evaluated representation.

    ``noise_ceiling`` is the majority-agreement ceiling (judgments) or the upper RSA ceiling
    (per-subject matrices), None where the data has no repeats; ``chance`` is the accuracy
    of guessing (1/3 odd-one-out, 1/2 two-alternative, 0 for RSA); ``y_range`` is the value
    axis a chart should show (covers bars, CIs, ceiling and chance).
    """

    kind: str  # "judgments" | "matrix"
    name: str
    image_set: str
    task: str  # "oddone" | "twoafc" | "rsa"
    measure: str  # "accuracy" | "spearman"
    noise_ceiling: float | None
    ceiling_detail: dict[str, Any]
    chance: float
    cells: dict[str, EvalCell] = field(default_factory=dict)
    y_range: tuple[float, float] = (0.0, 1.0)
    # a row of one level / triplet type of the judgments ``parent`` (Levels: global, local,
    # class_boundary), with that level's own ceiling; None for a whole data set
    level: str | None = None
    parent: str | None = None

    @property
    def title(self) -> str:
        what = "judgments" if self.kind == "judgments" else "matrix"
        return f"{self.name} ({what}, {self.task})"


@dataclass(frozen=True)
class EvaluationTable:
    """Rows × representation columns; ``columns`` are the four roles then any extras."""

    roles: PipelineRoles
    columns: tuple[str, ...]
    labels: dict[str, str]
    rows: tuple[EvalRow, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (NaN → None) for report.json."""
        rows = []
        for row in self.rows:
            d = asdict(row)
            d["cells"] = {k: {**asdict(c), "stale": list(c.stale)} for k, c in row.cells.items()}
            d["y_range"] = list(row.y_range)
            rows.append(d)
        return _clean(
            {
                "roles": asdict(self.roles),
                "columns": list(self.columns),
                "labels": dict(self.labels),
                "rows": rows,
            }
        )


def _num(value: Any) -> float | None:
    """A finite float, or None (NaN, missing)."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ceiling(summary: Mapping[str, Any]) -> tuple[float | None, dict[str, Any]]:
    detail = summary.get("noise_ceiling") or {}
    if not isinstance(detail, Mapping):
        return _num(detail), {}
    key = "upper" if "upper" in detail else "majority_agreement"
    return _num(detail.get(key)), dict(detail)


class _StaleCache:
    """The current slots and every run's stale reasons (:meth:`Project.staleness`, which is
    transitive), read once: the same staleness the navigator and ``info`` show."""

    def __init__(self, project: Project) -> None:
        self.slots = project.slots()
        self._reasons = project.staleness()

    def reasons(self, ref: str) -> tuple[str, ...]:
        return tuple(self._reasons.get(ref, ["input run is missing"]))


def _cell_values(d: Mapping[str, Any], kind: str, ci_unit: str) -> dict[str, Any]:
    """The per-result fields of an :class:`EvalCell` from a summary (or one level of it)."""
    nan = float("nan")
    value = _num(d.get("accuracy" if kind == "judgments" else "spearman"))
    lo, hi = _num(d.get("ci_low")), _num(d.get("ci_high"))
    return {
        "value": nan if value is None else value,
        "ci_low": nan if lo is None else lo,
        "ci_high": nan if hi is None else hi,
        "n": int(d.get("n", 0)),
        "ci_unit": str(d.get("ci_unit", ci_unit)),
        "comparison": dict(d["comparison"]) if d.get("comparison") else None,
    }


def evaluation_table(project: Project) -> EvaluationTable:
    """Every current evaluate run as rows × representations (see :class:`EvaluationTable`)."""
    roles = pipeline_roles(project)
    stale = _StaleCache(project)
    refs = sorted(ref for slot, ref in stale.slots.items() if slot.startswith("evaluate:"))
    extras: list[str] = []
    labels = dict(ROLE_LABELS)
    found: dict[tuple[str, str, str | None], tuple[str, dict[str, Any], list[EvalCell]]] = {}
    for ref in refs:
        run = project.run(ref, arrays=False)
        p, s = run.params, run.summary
        model, transform = p.get("model", "?"), p.get("transform")
        rep = representation_name(model, transform)
        role = roles.role_of(model, transform) or rep
        if role not in ROLES and role not in extras:
            extras.append(role)
            labels[role] = rep
        kind = "judgments" if p.get("judgments") else "matrix"
        name = p.get("judgments") or p.get("matrix")
        base = EvalCell(
            role=role,
            representation=rep,
            model=model,
            transform=transform,
            run=ref,
            metric=str(s.get("metric", p.get("metric"))),
            stale=stale.reasons(ref),
            n_boot=int(p.get("n_boot", 0)),
            **_cell_values(s, kind, str(s.get("ci_unit", "responses"))),
        )
        entry = found.setdefault((kind, name, None), (p.get("image_set", ""), dict(s), []))
        entry[2].append(base)
        # Levels is read per level (its ceilings differ by level): one row per level
        levels = (s.get("by_type") or {}) if s.get("levels") else {}
        for level, d in levels.items():
            sub = found.setdefault(
                (kind, name, str(level)), (p.get("image_set", ""), {**s, **d}, [])
            )
            sub[2].append(replace(base, **_cell_values(d, kind, base.ci_unit)))
    order = {n: i for i, n in enumerate(project.names("judgments"))}
    order.update({n: 1000 + i for i, n in enumerate(project.names("matrices"))})
    rows = []
    for (kind, name, level), (image_set, summary, cells) in sorted(
        found.items(),
        key=lambda kv: (
            kv[0][0] != "judgments",
            order.get(kv[0][1], 10**6),
            kv[0][1],
            kv[0][2] is not None,
            kv[0][2] or "",
        ),
    ):
        task = str(summary.get("task", "rsa" if kind == "matrix" else "oddone"))
        ceiling, detail = _ceiling(summary)
        chance = {"oddone": 1 / 3, "twoafc": 0.5}.get(task, 0.0)
        values = [v for c in cells for v in (c.ci_low, c.ci_high, c.value) if math.isfinite(v)]
        values += [chance] + ([ceiling] if ceiling is not None else [])
        lo = min(0.0, min(values)) if values else 0.0
        hi = max(1.0, max(values)) if values else 1.0
        rows.append(
            EvalRow(
                kind=kind,
                name=name if level is None else f"{name} · {level}",
                level=level,
                parent=None if level is None else name,
                image_set=image_set,
                task=task,
                measure="accuracy" if kind == "judgments" else "spearman",
                noise_ceiling=ceiling,
                ceiling_detail=detail,
                chance=chance,
                cells={c.role: c for c in cells},
                y_range=(lo, hi),
            )
        )
    return EvaluationTable(
        roles=roles, columns=ROLES + tuple(extras), labels=labels, rows=tuple(rows)
    )


def format_cell(cell: EvalCell) -> str:
    """``"0.708 [0.688, 0.728]"`` (what the table and the report show)."""
    if not math.isfinite(cell.value):
        return "—"
    if math.isfinite(cell.ci_low) and math.isfinite(cell.ci_high):
        return f"{cell.value:.3f} [{cell.ci_low:.3f}, {cell.ci_high:.3f}]"
    return f"{cell.value:.3f}"


def evaluation_table_text(table: EvaluationTable) -> str:
    """The table as plain text (``alignet-cli evaluate-all``): one line per data set, one
    column per evaluated representation (value [95% CI], ``*`` = stale), then the noise
    ceiling and chance."""
    columns = [c for c in table.columns if any(c in row.cells for row in table.rows)]
    if not columns:
        return "no evaluations yet"
    header = ["data set", *(table.labels.get(c, c) for c in columns), "ceiling", "chance"]
    lines = []
    for row in table.rows:
        cells = [
            format_cell(row.cells[c]) + ("*" if row.cells[c].is_stale else "")
            if c in row.cells
            else ""
            for c in columns
        ]
        name = f"{row.name} [{row.level}]" if row.level else row.name
        ceiling = "—" if row.noise_ceiling is None else f"{row.noise_ceiling:.3f}"
        lines.append([f"{name} ({row.measure})", *cells, ceiling, f"{row.chance:.3f}"])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *lines]]
    if any(cell.is_stale for row in table.rows for cell in row.cells.values()):
        text.append("* stale: its inputs changed since it ran (evaluate-all re-runs it)")
    return "\n".join(text)


# --------------------------------------------------------------------------------------------
# Evaluate all
# --------------------------------------------------------------------------------------------
def _fmt(value: Any, signed: bool = False) -> str:
    v = _num(value)
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def comparison_text(cmp: Mapping[str, Any], indent: str = "", short: bool = False) -> str:
    """``paired vs B: difference +0.094 [-0.011, +0.206], p = 0.09 (...)``."""
    diff = (
        f"{_fmt(cmp.get('difference'), True)} [{_fmt(cmp.get('ci_low'), True)}, "
        f"{_fmt(cmp.get('ci_high'), True)}], p = {_fmt_p(cmp.get('p_value'))}"
    )
    if short:
        return f"vs {cmp.get('against', '?')}: {diff} (paired, over {cmp.get('unit')})"
    return (
        f"{indent}paired vs {cmp.get('against', '?')}: difference {diff} "
        f"(paired bootstrap over {cmp.get('unit')}, {cmp.get('n_boot')} resamples)"
    )


def _fmt_p(value: Any) -> str:
    v = _num(value)
    return "—" if v is None else f"{v:.3g}"


def evaluation_text(result: Mapping[str, Any]) -> str:
    """A few readable lines of one evaluate result (the CLI prints them): the score with its
    CI and what the CI resampled, the similarity used and why, the ceiling, the breakdown by
    level / triplet type, and the paired comparison when there is one."""
    rep = str(result.get("representation", "?"))
    if result.get("transform"):
        rep += f"+T({result['transform']})"
    target = result.get("judgments") or result.get("matrix")
    unit = result.get("ci_unit", "responses")
    lines = []
    measure = "spearman" if result.get("task") == "rsa" else "accuracy"
    lines.append(
        f"{rep} on {target} ({result.get('task')}): {measure} {_fmt(result.get(measure))} "
        f"[{_fmt(result.get('ci_low'))}, {_fmt(result.get('ci_high'))}] "
        f"(95% CI, bootstrap over {unit}; n = {result.get('n')})"
    )
    lines.append(f"similarity: {result.get('metric')} ({result.get('metric_source', 'given')})")
    ceiling = result.get("noise_ceiling")
    if isinstance(ceiling, Mapping):
        if "upper" in ceiling:
            lines.append(
                f"noise ceiling: lower {_fmt(ceiling['lower'])}, upper {_fmt(ceiling['upper'])}"
            )
        else:
            lines.append(
                f"noise ceiling: majority {_fmt(ceiling.get('majority_agreement'))}, "
                f"leave-one-out {_fmt(ceiling.get('leave_one_out'))}"
            )
    if result.get("levels"):
        lv = result["levels"]
        lines.append(
            f"Levels protocol: majority of {lv['n_sample']} sampled responses per triplet; "
            f"{result.get('n_tied', 0)} tied triplet(s) reported apart"
        )
    by_type = result.get("by_type") or {}
    if by_type:
        lines.append(
            f"{'level / type':<20}{'accuracy':>9}  {'95% CI':<16}{'n':>7}{'tied':>6}"
            f"{'ceil. LOO':>10}{'majority':>10}"
        )
        for name, d in by_type.items():
            c = d.get("noise_ceiling") or {}
            lines.append(
                f"{name:<20}{_fmt(d.get('accuracy')):>9}  "
                f"{'[' + _fmt(d.get('ci_low')) + ', ' + _fmt(d.get('ci_high')) + ']':<16}"
                f"{d.get('n', 0):>7}{d.get('n_tied', '—'):>6}"
                f"{_fmt(c.get('leave_one_out')):>10}{_fmt(c.get('majority_agreement')):>10}"
            )
            if d.get("comparison"):
                lines.append(comparison_text(d["comparison"], indent="  "))
    if result.get("comparison"):
        lines.append(comparison_text(result["comparison"]))
    return "\n".join(lines)


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
    stale = _StaleCache(project)
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
                    **({"judgments": name} if kind == "judgments" else {"matrix": name}),
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
        rep = representation_name(config.model, config.transform)
        yield Message(STAGE, f"evaluating {rep} on {target}")
        yield from evaluate(project, config, control)
        ran.append(str(project.current(evaluation_slot(config))))
        yield Progress(STAGE, i + 1, len(todo), f"{rep} on {target}")
    if not todo:
        yield Message(STAGE, "every evaluation is already current; nothing to run")
    return {"ran": ran, "skipped": skipped}


# --------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------
def check_output_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check a file can be written there.

    Raises :class:`InputError` naming the folder and what is wrong (cheap: the GUI calls it
    before starting a job, so the user sees the problem at once).
    """
    if not str(folder).strip():
        raise InputError("choose an output folder first", field="folder")
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".alignet-write-test.", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(
            f"cannot write to the output folder {path}: {reason}; choose another folder",
            field="folder",
        ) from None
    return path


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN / inf → None, tuples → lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(app_version: str | None = None) -> dict[str, str | None]:
    """Versions that make a report reproducible (read from metadata; torch is not imported)."""
    return {
        "alignet_studio": app_version or _version("alignet-studio") or __version__,
        "engine": __version__,
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
    }


def _run_record(project: Project, slot: str) -> dict[str, Any] | None:
    if project.current(slot) is None:
        return None
    run = project.run(slot, arrays=False)
    return {
        "run": f"{run.stage}/{run.run_id}",
        "params": run.params,
        "summary": run.summary,
        "inputs": run.inputs,
    }


def report_data(
    project: Project, plot_files: Mapping[str, str] | None = None, app_version: str | None = None
) -> dict[str, Any]:
    """What report.json holds: the table, run refs, pipeline parameters, versions, date."""
    table = evaluation_table(project)
    roles = table.roles
    pipeline: dict[str, Any] = {}
    if roles.transform:
        pipeline["transform"] = _run_record(project, transform_slot(roles.transform))
    for slot in ("clusters", "triplets", "distill"):
        pipeline[slot] = _run_record(project, slot)
    return _clean(
        {
            "format": "alignet-report",
            "format_version": 1,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "project": str(project.path),
            "versions": versions(app_version),
            "table": table.to_dict(),
            "runs": {
                row.name: {role: cell.run for role, cell in row.cells.items()} for row in table.rows
            },
            "pipeline": pipeline,
            "plots": dict(plot_files or {}),
        }
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "plot"


def _params_html(record: Mapping[str, Any] | None) -> str:
    if not record:
        return "<p class='muted'>not run</p>"
    items = [("run", record["run"])]
    items += [(k, v) for k, v in sorted(record["params"].items())]
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>"
        f"{html.escape(v if isinstance(v, str) else json.dumps(v, sort_keys=True))}</td></tr>"
        for k, v in items
    )
    return f"<table class='params'>{cells}</table>"


#: Bar colours of the SVG charts, one per representation column (colour-blind-safe Okabe-Ito).
_SVG_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
#: Plot area of an SVG chart, px: bars are drawn in [left, left + width] × [top, top + height].
_SVG_BOX = (40, 10, 60, 180)  # left, top, width per bar group, height


def svg_chart(row: Mapping[str, Any], columns: Sequence[str], labels: Mapping[str, str]) -> str:
    """One data set's results as an inline SVG bar chart (the CLI report's charts; the GUI
    renders its own PNGs): a bar per evaluated representation with its 95% CI as a whisker,
    the noise ceiling dashed, chance dotted, on the row's ``y_range``.

    Bars carry ``data-value`` and ``data-role`` and a height of ``(value - lo) / (hi - lo)``
    of the plot height, so a reader (or a test) can check them against report.json.
    """
    left, top, group, height = _SVG_BOX
    cells = [(c, row["cells"][c]) for c in columns if row["cells"].get(c)]
    cells = [(c, cell) for c, cell in cells if _num(cell["value"]) is not None]
    lo, hi = (float(v) for v in row.get("y_range") or (0.0, 1.0))
    span = (hi - lo) or 1.0

    def y(v: float) -> float:
        return top + height * (1.0 - (min(max(v, lo), hi) - lo) / span)

    width = left + group * max(len(cells), 1) + 10
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{top + height + 60}' "
        f"role='img' aria-label='{html.escape(str(row['name']))}' font-size='10'>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + height}' stroke='#444'/>",
    ]
    for tick in (lo, (lo + hi) / 2, hi):
        parts.append(
            f"<text x='{left - 4}' y='{y(tick) + 3:.1f}' text-anchor='end'>{tick:.2f}</text>"
        )
    for i, (column, cell) in enumerate(cells):
        value = float(cell["value"])
        x = left + i * group + 8
        colour = _SVG_COLOURS[columns.index(column) % len(_SVG_COLOURS)]
        bar_h = top + height - y(value)
        parts.append(
            f"<rect x='{x}' y='{y(value):.2f}' width='{group - 16}' height='{bar_h:.2f}' "
            f"fill='{colour}' data-role='{html.escape(column)}' data-value='{value:.6g}'>"
            f"<title>{html.escape(labels.get(column, column))}: {value:.3f}</title></rect>"
        )
        c_lo, c_hi = _num(cell["ci_low"]), _num(cell["ci_high"])
        if c_lo is not None and c_hi is not None:
            mid = x + (group - 16) / 2
            parts.append(
                f"<line x1='{mid}' y1='{y(c_lo):.2f}' x2='{mid}' y2='{y(c_hi):.2f}' "
                "stroke='#222' stroke-width='1.5'/>"
            )
        name = html.escape(labels.get(column, column))
        parts.append(
            f"<text x='{x + (group - 16) / 2}' y='{top + height + 12}' text-anchor='end' "
            f"transform='rotate(-30 {x + (group - 16) / 2} {top + height + 12})'>{name}</text>"
        )
    for level, dash, what in (
        (_num(row.get("noise_ceiling")), "6 3", "noise ceiling"),
        (_num(row.get("chance")), "2 3", "chance"),
    ):
        if level is not None and lo <= level <= hi:
            parts.append(
                f"<line x1='{left}' y1='{y(level):.2f}' x2='{width - 5}' y2='{y(level):.2f}' "
                f"stroke='#777' stroke-dasharray='{dash}'><title>{what} {level:.3f}</title></line>"
            )
    parts.append("</svg>")
    return "".join(parts)


def report_html(data: Mapping[str, Any]) -> str:
    """A self-contained HTML page (inline CSS, PNGs referenced by relative file name; without
    PNGs, inline SVG charts from :func:`svg_chart`)."""
    table = data["table"]
    cols = table["columns"]
    labels = table["labels"]
    esc = html.escape
    head = "".join(f"<th>{esc(labels[c])}</th>" for c in cols)
    body = []
    for row in table["rows"]:
        tds = []
        for c in cols:
            cell = row["cells"].get(c)
            if cell is None:
                tds.append("<td class='muted'>—</td>")
                continue
            text = (
                f"{cell['value']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"
                if None not in (cell["value"], cell["ci_low"], cell["ci_high"])
                else "—"
            )
            mark = " <span class='stale' title='stale'>◐ stale</span>" if cell["stale"] else ""
            unit = f"; CI over {cell['ci_unit']}" if cell.get("ci_unit") else ""
            title = esc(f"n = {cell['n']}{unit}; run {cell['run']}")
            cmp = cell.get("comparison")
            paired = (
                f"<br><span class='muted'>{esc(comparison_text(cmp, short=True))}</span>"
                if cmp
                else ""
            )
            tds.append(f"<td title='{title}'>{esc(text)}{mark}{paired}</td>")
        ceiling = row["noise_ceiling"]
        ceiling_text = "—" if ceiling is None else f"{ceiling:.3f}"
        loo = _num((row.get("ceiling_detail") or {}).get("leave_one_out"))
        if ceiling is not None and loo is not None:
            ceiling_text += f" (leave-one-out {loo:.3f})"
        body.append(
            f"<tr><th>{esc(row['name'])}<br><span class='muted'>{esc(row['task'])}, "
            f"{esc(row['measure'])}</span></th>{''.join(tds)}"
            f"<td>{esc(ceiling_text)}</td>"
            f"<td>{row['chance']:.3f}</td></tr>"
        )
    plots = "".join(
        f"<figure><img src='{esc(fname)}' alt='{esc(name)}'>"
        f"<figcaption>{esc(name)}</figcaption></figure>"
        for name, fname in data["plots"].items()
    ) or "".join(
        f"<figure>{svg_chart(row, cols, labels)}<figcaption>{esc(row['name'])}"
        f"{' [' + esc(str(row['level'])) + ']' if row.get('level') else ''}</figcaption></figure>"
        for row in table["rows"]
    )
    pipeline = "".join(
        f"<h3>{esc(stage)}</h3>{_params_html(rec)}" for stage, rec in data["pipeline"].items()
    )
    vers = ", ".join(f"{k} {v}" for k, v in data["versions"].items() if v)
    roles = table["roles"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>AligNet Studio report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
thead th {{ background: #f0f0f0; }}
.muted {{ color: #777; font-size: 90%; }}
.stale {{ color: #b36b00; font-size: 85%; }}
table.params td {{ font-family: monospace; font-size: 85%; word-break: break-all; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 520px; border: 1px solid #ddd; }}
</style></head><body>
<h1>AligNet Studio — evaluation report</h1>
<p class="muted">Project {esc(data["project"])}; written {esc(data["created"])}; {esc(vers)}</p>
<p>Teacher: {esc(str(roles["teacher"]))}, transform: {esc(str(roles["transform"]))},
student: {esc(str(roles["student"]))}. Cells are odd-one-out / two-alternative accuracy
(judgments) or Spearman ρ (RSA, matrices) with a 95% bootstrap confidence interval (hover a
cell for what it resampled: triplets, items or responses); a paired comparison with another
representation, when one was made, is shown under the cell (difference, its paired-bootstrap
CI and p-value). The noise ceiling is the human majority agreement (judgments; with the
leave-one-out ceiling where there is one) or the upper RSA ceiling. Levels judgments are
scored with the authors' protocol (majority of 4 sampled responses per triplet, ties apart)
and shown per level.</p>
<h2>Results</h2>
<table><thead><tr><th>judgments / matrix</th>{head}<th>noise ceiling</th><th>chance</th></tr>
</thead><tbody>{"".join(body)}</tbody></table>
<h2>Charts</h2>
{plots or "<p class='muted'>no charts</p>"}
<h2>Pipeline parameters</h2>
{pipeline}
<p class="muted">report.json beside this file holds the same numbers and every run reference.</p>
</body></html>
"""


def write_report(
    project: Project,
    folder: str | Path,
    plot_pngs: Mapping[str, str | Path] | None = None,
    *,
    app_version: str | None = None,
) -> dict[str, str]:
    """Write ``report.json``, ``report.html`` and the plot PNGs into ``folder``.

    ``plot_pngs`` maps a chart name (a judgment set / matrix) to a PNG file, which is copied
    into ``folder`` as ``plot_<name>.png``. Every file is written atomically; report.html is
    written last, so its presence means the report is complete. Returns ``{kind: path}``.
    """
    out = check_output_folder(folder)
    files: dict[str, str] = {}
    plot_files: dict[str, str] = {}
    for name, src in (plot_pngs or {}).items():
        target = out / f"plot_{_safe_name(name)}.png"
        if Path(src).resolve() != target.resolve():
            atomic_write_bytes(target, Path(src).read_bytes())
        plot_files[name] = target.name
        files[f"plot:{name}"] = str(target)
    data = report_data(project, plot_files, app_version)
    json_path = out / "report.json"
    atomic_write_bytes(json_path, json.dumps(data, indent=2, sort_keys=True).encode())
    html_path = out / "report.html"
    atomic_write_bytes(html_path, report_html(data).encode())
    files["report_json"] = str(json_path)
    files["report_html"] = str(html_path)
    return files


def write_report_job(
    project: Project,
    folder: str | Path,
    plot_pngs: Mapping[str, str | Path] | None = None,
    *,
    app_version: str | None = None,
    control: JobControl | None = None,
) -> Job[dict[str, str]]:
    """:func:`write_report` as a job (so the GUI writes it on the engine thread)."""
    control = control or JobControl()
    control.check()
    yield Progress("report", 0, 1, "writing the report")
    files = write_report(project, folder, plot_pngs, app_version=app_version)
    yield Progress("report", 1, 1)
    yield Message("report", f"report written to {files['report_html']}")
    return files


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
def export_prerequisites(slots: Mapping[str, str]) -> dict[str, str | None]:
    """For each of :data:`EXPORT_FORMATS`: None if it can be exported, else why not.

    ``slots`` is the project's current-run map (``Project.slots()`` or ``info()["current"]``).
    """
    why: dict[str, str | None] = dict.fromkeys(EXPORT_FORMATS)
    if "distill" not in slots:
        for fmt in ("student", "pt2", "torchscript", "onnx"):
            why[fmt] = "needs a distilled student: run the Distill stage first"
    if why["onnx"] is None and (
        importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None
    ):
        why["onnx"] = "needs the onnx and onnxruntime packages, which are not installed"
    if transform_slot("teacher") not in slots:
        why["transform"] = "needs a fitted transform named 'teacher': run the Alignment stage"
    if "triplets" not in slots:
        why["triplets"] = "needs sampled triplets: run the Triplets stage first"
    if not any(s.startswith("evaluate:") for s in slots):
        why["report"] = "needs at least one evaluation: run the Evaluation stage first"
    return why


def export_job(
    project: Project,
    folder: str | Path,
    what: Sequence[str],
    plot_pngs: Mapping[str, str | Path] | None = None,
    *,
    app_version: str | None = None,
    control: JobControl | None = None,
    overwrite: bool = False,
) -> Job[dict[str, str]]:
    """Export ``what`` (a subset of :data:`EXPORT_FORMATS`) into ``folder`` as a job.

    The model / transform / triplet formats go through :func:`stages.export.export` (which
    records an export run, and refuses to replace existing files unless ``overwrite``);
    ``"report"`` writes :func:`write_report`. Returns ``{kind: path}``.
    """
    from alignet_engine.stages.export import export

    control = control or JobControl()
    what = tuple(what)
    unknown = set(what) - set(EXPORT_FORMATS)
    if unknown or not what:
        raise InputError(
            f"choose what to export from {', '.join(EXPORT_FORMATS)}"
            + (f" (unknown: {sorted(unknown)})" if unknown else "")
        )
    missing = {f: w for f, w in export_prerequisites(project.slots()).items() if f in what and w}
    if missing:
        raise InputError("; ".join(f"{f}: {w}" for f, w in missing.items()))
    out = check_output_folder(folder)
    engine_formats = tuple(f for f in what if f != "report")
    total = int(bool(engine_formats)) + int("report" in what)
    files: dict[str, str] = {}
    yield Progress("export", 0, total, "exporting")
    if engine_formats:
        control.check()
        yield Message("export", f"exporting {', '.join(engine_formats)} to {out}")
        files.update(export(project, out, engine_formats, overwrite=overwrite))
        yield Progress("export", 1, total)
    if "report" in what:
        control.check()
        files.update(write_report(project, out, plot_pngs, app_version=app_version))
        yield Progress("export", total, total)
    yield Message("export", f"exported {len(files)} file(s) to {out}")
    return files
