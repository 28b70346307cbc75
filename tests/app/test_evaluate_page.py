"""The Evaluation page on a copy of the quick demo: table, charts, Evaluate all, the report."""

from __future__ import annotations

import json
from pathlib import Path

from alignet_engine.config import EvaluateConfig
from alignet_engine.stages.evaluate import evaluation_slot
from tests.app.conftest import save_screenshot

TEACHER, STUDENT = "efficientnet_lite2", "efficientnet_lite0"
# (column, model, transform) as the demo ran them; the page must find the roles itself.
REPRESENTATIONS = (
    ("base teacher", TEACHER, None),
    ("aligned teacher", TEACHER, "teacher"),
    ("base student", STUDENT, None),
    ("distilled student", STUDENT + "+distilled", None),
)


def _summary(project, judgments: str, model: str, transform: str | None) -> dict:
    cfg = EvaluateConfig(image_set="stimuli", model=model, transform=transform, judgments=judgments)
    return project.run(evaluation_slot(cfg), arrays=False).summary


def _open(window, path: Path):
    window.session.open(path)
    window.show_page("evaluate")
    page = window.page("evaluate")
    page.refresh()
    return page


def test_table_and_bars_equal_the_stored_runs(window, copy_demo: Path) -> None:
    page = _open(window, copy_demo)
    project = window.session.project
    table = page.table
    assert table.rowCount() == 1
    assert table.verticalHeaderItem(0).text().startswith("test (simulated)")
    chart = page.charts.charts["test (simulated)"]
    heights = list(chart.bars.opts["height"])
    for col, (label, model, transform) in enumerate(REPRESENTATIONS):
        assert table.horizontalHeaderItem(col).text().startswith(label)
        s = _summary(project, "test (simulated)", model, transform)
        expected = f"{s['accuracy']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        item = table.item(0, col)
        assert item.text() == expected
        assert f"n = {s['n']}" in item.toolTip() and "run evaluate/" in item.toolTip()
        assert heights[col] == s["accuracy"]
    ceiling = _summary(project, "test (simulated)", TEACHER, None)["noise_ceiling"]
    assert table.item(0, 4).text() == f"{ceiling['majority_agreement']:.3f}"
    assert chart.ceiling_line is not None
    assert chart.ceiling_line.value() == ceiling["majority_agreement"]


def test_evaluate_all_then_export_the_report(
    window, copy_demo: Path, tmp_path: Path, qtbot
) -> None:
    page = _open(window, copy_demo)
    page.n_boot.setValue(100)
    with qtbot.waitSignal(window.session.runner.idle, timeout=180_000):
        assert page.evaluate_all(["fit (simulated)"], [])
    assert not page.error.isVisible() or page.error.isHidden()
    project = window.session.project
    assert page.table.rowCount() == 2
    row = [page.table.verticalHeaderItem(i).text().split("\n")[0] for i in range(2)].index(
        "fit (simulated)"
    )
    for col, (_label, model, transform) in enumerate(REPRESENTATIONS):
        s = _summary(project, "fit (simulated)", model, transform)
        assert s["n"] > 0
        assert page.table.item(row, col).text().startswith(f"{s['accuracy']:.3f} [")
    assert set(page.charts.charts) == {"test (simulated)", "fit (simulated)"}
    window.resize(1400, 980)
    qtbot.wait(300)  # new charts are shown by a queued call; let the layout settle
    save_screenshot(window, "evaluate_page")

    out = tmp_path / "report"
    with qtbot.waitSignal(window.session.runner.idle, timeout=60_000):
        assert page.export_report(out)
    assert page.last_report is not None
    names = sorted(p.name for p in out.iterdir())
    assert "report.html" in names and "report.json" in names
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 2 and all((out / n).stat().st_size > 1000 for n in pngs)
    assert not [n for n in names if n.startswith(".")]  # no temporaries left behind
    data = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in data["table"]["rows"]}
    for name in ("test (simulated)", "fit (simulated)"):
        for role, (_label, model, transform) in zip(
            ("base_teacher", "aligned_teacher", "base_student", "distilled_student"),
            REPRESENTATIONS,
            strict=True,
        ):
            s = _summary(project, name, model, transform)
            cell = rows[name]["cells"][role]
            assert (cell["value"], cell["ci_low"], cell["ci_high"]) == (
                s["accuracy"],
                s["ci_low"],
                s["ci_high"],
            )
    html = (out / "report.html").read_text()
    for png in pngs:
        assert png in html
    assert "report.html" in page.report_label.text()


def test_bad_single_evaluation_shows_an_inline_error(window, copy_demo: Path) -> None:
    page = _open(window, copy_demo)
    page.form.set_value("judgments", None)
    page.form.set_value("matrix", None)
    assert not page.evaluate_one()
    assert "exactly one of judgments or matrix" in page.error.text()
    blocker = Path(copy_demo).parent / "afile"
    blocker.write_text("x")
    assert not page.export_report(blocker / "sub")
    assert "cannot write to the output folder" in page.error.text()


def test_a_paired_comparison_shows_under_its_cell(window, copy_demo: Path, qtbot) -> None:
    """Evaluate the aligned teacher against the base teacher from the form: the cell shows the
    paired difference the run stored, and the tooltip says what the CI resampled."""
    page = _open(window, copy_demo)
    for name, value in (
        ("image_set", "stimuli"),
        ("model", TEACHER),
        ("judgments", "test (simulated)"),
        ("matrix", None),
        ("transform", "teacher"),
        ("compare", TEACHER),
        ("n_boot", 100),
    ):
        page.form.set_value(name, value)
    with qtbot.waitSignal(window.session.runner.idle, timeout=180_000):
        assert page.evaluate_one()
    s = _summary(window.session.project, "test (simulated)", TEACHER, "teacher")
    cmp = s["comparison"]
    assert cmp["against"] == TEACHER and cmp["unit"] == "triplets"
    page.refresh()
    item = page.table.item(0, 1)  # the aligned teacher's column
    assert f"vs {TEACHER}: {cmp['difference']:+.3f}" in item.text()
    assert "over triplets" in item.toolTip()
