"""The evaluation table the Evaluation, Overview and Export pages show, and its text forms.

:func:`evaluation_table` organises every current evaluate run as rows (judgment sets and
matrices) × representations (base teacher, aligned teacher, base student, distilled student,
plus any other representation that was evaluated), with CIs, noise ceilings and a
(transitive) stale flag, so the GUI only formats numbers it is given.
:func:`evaluation_text` is one evaluate run as the CLI prints it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from alignet_engine.stages.evaluate_all import (
    ROLE_LABELS,
    ROLES,
    PipelineRoles,
    StaleCache,
    pipeline_roles,
    representation_name,
)
from alignet_engine.store import Project


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
        return json_safe(
            {
                "roles": asdict(self.roles),
                "columns": list(self.columns),
                "labels": dict(self.labels),
                "rows": rows,
            }
        )


def json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN / inf → None, tuples → lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def finite_float(value: Any) -> float | None:
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
        return finite_float(detail), {}
    key = "upper" if "upper" in detail else "majority_agreement"
    return finite_float(detail.get(key)), dict(detail)


def _cell_values(d: Mapping[str, Any], kind: str, ci_unit: str) -> dict[str, Any]:
    """The per-result fields of an :class:`EvalCell` from a summary (or one level of it)."""
    nan = float("nan")
    value = finite_float(d.get("accuracy" if kind == "judgments" else "spearman"))
    lo, hi = finite_float(d.get("ci_low")), finite_float(d.get("ci_high"))
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
    stale = StaleCache(project)
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
        name = str(p.get("judgments") or p.get("matrix"))  # an evaluation names one of them
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


def _fmt(value: Any, signed: bool = False) -> str:
    v = finite_float(value)
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
    v = finite_float(value)
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
