"""The study report and the export job: what the Export page writes.

- :func:`write_report` writes ``report.json`` and a self-contained ``report.html`` (plus the
  plot PNGs it is given), each file atomically (temporary name, fsync, rename), from the
  evaluation table (:mod:`alignet_engine.views.evaluation`);
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
import os
import platform
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alignet_engine import __version__
from alignet_engine.errors import InputError
from alignet_engine.files import atomic_write_bytes
from alignet_engine.jobs import Job, JobControl, Message, Progress
from alignet_engine.stages.transform import transform_slot
from alignet_engine.store import Project
from alignet_engine.views.evaluation import (
    comparison_text,
    evaluation_table,
    finite_float,
    json_safe,
)

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
    return json_safe(
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
    cells = [(c, cell) for c, cell in cells if finite_float(cell["value"]) is not None]
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
        c_lo, c_hi = finite_float(cell["ci_low"]), finite_float(cell["ci_high"])
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
        (finite_float(row.get("noise_ceiling")), "6 3", "noise ceiling"),
        (finite_float(row.get("chance")), "2 3", "chance"),
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
        loo = finite_float((row.get("ceiling_detail") or {}).get("leave_one_out"))
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
