"""The evaluation table, evaluate_all, the report and the export job — on a tiny project.

The project holds imported features of a teacher "T", a student "S" and its distilled copy
"S+distilled", a quickly fitted transform of T named "teacher", a stand-in distill run naming
the student, repeated odd-one-out judgments and a per-subject similarity matrix.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.config import TransformConfig
from alignet_engine.errors import InputError
from alignet_engine.jobs import run_job
from alignet_engine.stages import evaluate_all
from alignet_engine.stages.imports import import_features
from alignet_engine.stages.transform import fit_transform
from alignet_engine.store import Project
from alignet_engine.views import evaluation, report

N = 24


def _project(tmp_path: Path) -> Project:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(N, 4))
    project = Project.create(tmp_path / "p.alignet")
    project.write_imageset("s", ImageSet(tuple(f"/x/{i}.png" for i in range(N)), ("",) * N), {})
    for label, noise in (("T", 0.5), ("S", 2.0), ("S+distilled", 1.0)):
        X = np.hstack([truth, rng.normal(size=(N, 4))]) + noise * rng.normal(size=(N, 8))
        np.save(tmp_path / f"{label}.npy", X.astype(np.float32))
        import_features(project, tmp_path / f"{label}.npy", image_set="s", label=label)
    # Odd-one-out judgments, each triplet answered three times (so a noise ceiling exists).
    rows = []
    for _ in range(150):
        a, b, c = rng.choice(N, 3, replace=False)
        sims = [truth[b] @ truth[c], truth[a] @ truth[c], truth[a] @ truth[b]]
        odd = (a, b, c)[int(np.argmax(sims))]
        pair = [x for x in (a, b, c) if x != odd]
        rows += [(pair[0], pair[1], odd)] * 3
    j = Judgments("oddone", np.array(rows), np.arange(len(rows)) % 5)
    project.write_judgments("held-out", j, image_set="s", params={})
    project.write_judgments("fit", j, image_set="s", params={})
    subjects = np.stack([truth @ truth.T + rng.normal(size=(N, N)) for _ in range(3)])
    project.write_matrix("ratings", subjects, image_set="s", kind="similarity", params={})
    run_job(
        fit_transform(
            project,
            TransformConfig(
                image_set="s", judgments=("fit",), model="T", max_epochs=3, n_model_triplets=500
            ),
        )
    )
    run_id = project.begin_job("distill", {})
    project.write_run(
        "distill", run_id, slot="distill", params={"student": "S"}, arrays={}, summary={}
    )
    return project


@pytest.fixture
def project(tmp_path: Path):
    p = _project(tmp_path)
    yield p
    p.close()


def test_roles_come_from_the_transform_and_the_distill_run(project: Project) -> None:
    roles = evaluate_all.pipeline_roles(project)
    assert (roles.teacher, roles.transform, roles.student) == ("T", "teacher", "S")
    assert roles.role_of("T", "teacher") == "aligned_teacher"
    assert roles.role_of("S+distilled", None) == "distilled_student"
    assert roles.role_of("S", "teacher") is None


def test_evaluate_all_fills_the_table_and_skips_current_runs(project: Project) -> None:
    assert evaluation.evaluation_table(project).rows == ()
    result = run_job(evaluate_all.evaluate_all(project, ["held-out"], ["ratings"], n_boot=50))
    assert len(result["ran"]) == 8
    table = evaluation.evaluation_table(project)
    assert [r.name for r in table.rows] == ["held-out", "ratings"]
    assert table.columns == evaluate_all.ROLES
    for row in table.rows:
        assert set(row.cells) == set(evaluate_all.ROLES)
        for cell in row.cells.values():
            summary = project.run(cell.run, arrays=False).summary
            key = "accuracy" if row.kind == "judgments" else "spearman"
            assert cell.value == summary[key]
            assert (cell.ci_low, cell.ci_high) == (summary["ci_low"], summary["ci_high"])
            assert cell.n == summary["n"] and not cell.stale
            assert cell.err_minus >= 0 and cell.err_plus >= 0
            text = evaluation.format_cell(cell)
            assert text == f"{cell.value:.3f} [{cell.ci_low:.3f}, {cell.ci_high:.3f}]"
    held = table.rows[0]
    ceiling = project.run(held.cells["base_teacher"].run, arrays=False).summary["noise_ceiling"]
    assert held.noise_ceiling == ceiling["majority_agreement"]
    assert held.chance == pytest.approx(1 / 3) and held.task == "oddone"
    assert table.rows[1].task == "rsa" and table.rows[1].chance == 0.0
    lo, hi = held.y_range
    assert lo <= min(c.ci_low for c in held.cells.values()) and hi >= 1.0

    again = run_job(evaluate_all.evaluate_all(project, ["held-out"], ["ratings"], n_boot=50))
    assert again["ran"] == []
    assert {s["why"] for s in again["skipped"]} == {"already current"}


def test_replaced_features_mark_the_evaluation_stale_and_rerun_only_it(
    project: Project, tmp_path: Path
) -> None:
    run_job(evaluate_all.evaluate_all(project, ["held-out"], (), n_boot=20))
    import_features(project, tmp_path / "S.npy", image_set="s", label="S")
    cells = evaluation.evaluation_table(project).rows[0].cells
    assert cells["base_student"].stale and not cells["base_teacher"].stale
    result = run_job(evaluate_all.evaluate_all(project, ["held-out"], (), n_boot=20))
    assert len(result["ran"]) == 1
    assert not evaluation.evaluation_table(project).rows[0].cells["base_student"].stale


def test_staleness_is_transitive(project: Project) -> None:
    def write(slot: str, inputs: dict[str, str]) -> str:
        run_id = project.begin_job("dummy", {})
        project.write_run("dummy", run_id, slot=slot, params={}, arrays={}, inputs=inputs)
        return f"dummy/{run_id}"

    a = write("a", {})
    b = write("b", {"a": a})
    c = write("c", {"b": b})
    assert evaluate_all.StaleCache(project).reasons(c) == ()
    write("a", {})
    reasons = evaluate_all.StaleCache(project).reasons(c)
    assert len(reasons) == 1 and reasons[0].startswith("b: a changed")


def test_evaluate_all_rejects_unknown_targets(project: Project) -> None:
    with pytest.raises(InputError, match="no judgment set named"):
        run_job(evaluate_all.evaluate_all(project, ["nope"], ()))
    with pytest.raises(InputError, match="at least one"):
        run_job(evaluate_all.evaluate_all(project, (), ()))


def test_write_report_json_equals_the_table_and_html_shows_it(
    project: Project, tmp_path: Path
) -> None:
    run_job(evaluate_all.evaluate_all(project, ["held-out"], ["ratings"], n_boot=30))
    png = tmp_path / "chart.png"
    png.write_bytes(b"\x89PNG fake")
    out = tmp_path / "out" / "nested"
    files = report.write_report(project, out, {"held-out": png}, app_version="9.9")
    assert sorted(p.name for p in out.iterdir()) == [
        "plot_held-out.png",
        "report.html",
        "report.json",
    ]
    assert Path(files["plot:held-out"]).read_bytes() == png.read_bytes()
    data = json.loads((out / "report.json").read_text())
    table = evaluation.evaluation_table(project)
    assert data["versions"]["alignet_studio"] == "9.9"
    assert data["pipeline"]["transform"]["params"]["model"] == "T"
    assert data["plots"] == {"held-out": "plot_held-out.png"}
    for row, jrow in zip(table.rows, data["table"]["rows"], strict=True):
        assert jrow["name"] == row.name
        assert jrow["noise_ceiling"] == (
            row.noise_ceiling
            if row.noise_ceiling is None or math.isfinite(row.noise_ceiling)
            else None
        )
        for role, cell in row.cells.items():
            j = jrow["cells"][role]
            assert (j["value"], j["ci_low"], j["ci_high"]) == (
                cell.value,
                cell.ci_low,
                cell.ci_high,
            )
            assert data["runs"][row.name][role] == cell.run
    text = (out / "report.html").read_text()
    assert "plot_held-out.png" in text
    assert evaluation.format_cell(table.rows[0].cells["aligned_teacher"]) in text


def test_a_failed_write_leaves_no_half_file(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.replace

    def failing(src: str, dst: str | Path) -> None:
        if str(dst).endswith("report.html"):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(report.os, "replace", failing)
    with pytest.raises(OSError):
        report.write_report(project, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.json"]


def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write to the output folder"):
        report.check_output_folder(blocker / "sub")
    with pytest.raises(InputError, match="choose an output folder"):
        report.check_output_folder("  ")


def test_export_prerequisites_say_why() -> None:
    why = report.export_prerequisites({})
    assert "Distill" in why["student"] and "Distill" in why["torchscript"]
    assert "triplets" in why["triplets"] and "transform" in why["transform"]
    assert "evaluation" in why["report"]
    ok = report.export_prerequisites(
        {"distill": "d/1", "transform:teacher": "t/1", "triplets": "x/1", "evaluate:a": "e/1"}
    )
    assert {k for k, v in ok.items() if v} <= {"onnx"}


def test_export_job_writes_transform_and_report(project: Project, tmp_path: Path) -> None:
    run_job(evaluate_all.evaluate_all(project, ["held-out"], (), n_boot=20))
    files = run_job(report.export_job(project, tmp_path / "e", ("transform", "report")))
    assert Path(files["transform"]).is_file() and Path(files["report_html"]).is_file()
    assert project.run("export", arrays=False).summary["files"]["transform"] == files["transform"]
    with pytest.raises(InputError, match="triplets"):
        run_job(report.export_job(project, tmp_path / "e", ("triplets",)))


def test_cli_evaluate_all_then_report(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``alignet-cli evaluate-all`` and ``report``: the GUI's "Evaluate all" and "Export
    report", headless; the table printed and report.json are the project's runs."""
    from alignet_engine.cli import main

    path = str(project.path)
    project.close()
    out = tmp_path / "report"
    # no evaluations yet: a clear error (exit 2), nothing written
    assert main(["report", path, "--out", str(out), "--quiet"]) == 2
    assert "no evaluations" in capsys.readouterr().err and not out.exists()

    assert main(["evaluate-all", path, "--matrices", "--n-boot", "50", "--quiet"]) == 0
    text = capsys.readouterr().out
    # "fit" holds the transform's training judgments: left out by default; no matrices asked
    assert text.splitlines()[0].split()[:3] == ["data", "set", "base"]
    assert [line.split()[0] for line in text.splitlines()[1:]] == ["held-out"]
    with Project.open(path, readonly=True) as p:
        table = evaluation.evaluation_table(p)
        cell = table.rows[0].cells["aligned_teacher"]
        assert evaluation.format_cell(cell) in text
        assert p.run(cell.run, arrays=False).params["judgments"] == "held-out"

    assert main(["evaluate-all", path, "--json", "--quiet", "--n-boot", "50"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert len(again["ran"]) == 4  # only the matrix was new: four representations on it
    assert [r["name"] for r in again["table"]["rows"]] == ["held-out", "ratings"]

    assert main(["report", path, "--out", str(out), "--json", "--quiet"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    data = json.loads(Path(files["report_json"]).read_text())
    assert data["table"] == again["table"]
    page = Path(files["report_html"]).read_text()
    # without the GUI's PNGs the page draws SVG charts: one bar per cell, its height the
    # value's share of the row's value range (plot height 180 px)
    import re

    assert page.count("<svg") == len(data["table"]["rows"]) == 2
    for row, svg in zip(data["table"]["rows"], page.split("<svg")[1:], strict=True):
        bars = re.findall(r"<rect [^>]*height='([\d.]+)'[^>]*data-role='(\w+)'", svg)
        assert {role for _, role in bars} == set(row["cells"])
        lo, hi = row["y_range"]
        for bar_height, role in bars:
            share = (row["cells"][role]["value"] - lo) / (hi - lo)
            assert float(bar_height) == pytest.approx(180 * share, abs=0.01)
