"""The Project dashboard, run management, the welcome screen, help and the remembered layout.

On a copy of the quick demo: a second distillation that is worse than the demo's stays out of
the slot (and is offered), making it current marks the student's features and their
evaluation stale in every place that shows staleness, the advice says what to redo, runs
compare side by side and can be deleted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignet_engine.jobs import StageDone
from alignet_engine.views.evaluation import evaluation_table
from tests.app.conftest import save_screenshot


def _second_distill(project, *, agreement: float) -> str:
    """A second distill run (the demo run's settings, fewer steps, its own curves)."""
    old = project.run("distill")
    steps = max(2, int(old.params["training"]["steps"]) // 2)
    params = {**old.params, "training": {**old.params["training"], "steps": steps}}
    summary = {**old.summary, "steps": steps, "val_agreement_after": agreement}
    arrays = {k: np.asarray(v)[:steps] for k, v in old.arrays.items() if k.startswith("history_")}
    run_id = project.begin_job("distill", params)
    worse = agreement < old.summary["val_agreement_after"]
    project.write_run(
        "distill",
        run_id,
        slot="distill",
        params=params,
        arrays=arrays,
        inputs=old.inputs,
        summary=summary,
        make_current=not worse,
    )
    return f"distill/{run_id}"


def _open(window, path: Path):
    assert window.open_project(str(path))
    window.show_page("project")
    page = window.page("project")
    page.refresh()
    return page


def _wait_idle(qtbot, window) -> None:
    qtbot.waitUntil(lambda: not window.session.runner.busy, timeout=20_000)


def test_dashboard_switching_runs_and_the_advice(window, copy_demo: Path, qtbot) -> None:
    page = _open(window, copy_demo)
    project = window.session.project
    assert {s: b.property("state") for s, b in page.stage_boxes.items()} == dict.fromkeys(
        page.stage_boxes, "done"
    )
    assert "Everything is up to date" in page.advice.text()
    assert not page.rerun_button.isEnabled() and page.rerun_reason.text() == "Nothing is stale."
    # the headline chain shows the stored numbers with their CIs
    table = evaluation_table(project)
    cell = table.rows[0].cells["aligned_teacher"]
    assert f"{cell.value:.3f} [{cell.ci_low:.3f}, {cell.ci_high:.3f}]" in page.results.text()
    assert "per type" in page.results.text() and "calibration error" in page.results.text()
    demo_run = project.current("distill")

    # a worse run stays out of the slot; the window offers it once the job is over
    worse = _second_distill(project, agreement=0.5)
    assert project.current("distill") == demo_run
    window._stage_done(StageDone("distill", worse.split("/")[1], {"val_agreement_after": 0.5}))
    assert [(slot, ref) for slot, ref, _ in window.kept_runs] == [("distill", worse)]
    assert window.kept_runs[0][2].worse
    window.session.refresh()
    page.refresh()
    states = {
        page.runs.tree.topLevelItem(i).text(0): page.runs.tree.topLevelItem(i)
        for i in range(page.runs.tree.topLevelItemCount())
    }
    distill = states["distill (2 runs)"]
    rows = {distill.child(i).toolTip(0): distill.child(i).text(1) for i in range(2)}
    assert rows == {worse: "newer, not current", demo_run: "current"}

    # make the worse run current: the student's features and their evaluation go stale,
    # the same in the navigator, the dashboard and the Evaluation page
    assert page.make_current("distill", worse)
    _wait_idle(qtbot, window)
    assert project.current("distill") == worse
    page.refresh()
    assert page.stage_boxes["features"].property("state") == "stale"
    assert page.stage_boxes["evaluate"].property("state") == "stale"
    nav = {window.navigator.item(i).toolTip() for i in range(window.navigator.count())}
    assert any(t.startswith("Models & features: stale") for t in nav)
    assert any(t.startswith("Evaluation: stale") for t in nav)
    student = evaluation_table(project).rows[0].cells["distilled_student"]
    assert student.is_stale
    advice = page.advice.text()
    assert "Re-extract the student&#x27;s features of stimuli" in advice or (
        "Re-extract the student's features of stimuli" in advice
    )
    assert advice.index("Re-extract") < advice.index("Re-evaluate")
    assert "page:features" in advice and "page:evaluate" in advice
    assert page.rerun_button.isEnabled()
    assert page.rerun_reason.text().startswith("2 stale run(s)")
    save_screenshot(window, "project-dashboard-stale")

    # and back: everything is current again
    assert page.make_current("distill", demo_run)
    _wait_idle(qtbot, window)
    page.refresh()
    assert all(b.property("state") == "done" for b in page.stage_boxes.values())


def test_compare_and_delete_runs(window, copy_demo: Path, qtbot) -> None:
    page = _open(window, copy_demo)
    project = window.session.project
    demo_run = project.current("distill")
    other = _second_distill(project, agreement=0.5)
    window.session.refresh()
    page.refresh()
    page.runs.select([demo_run, other])
    assert page.runs.compare_button.isEnabled()
    assert not page.runs.current_button.isEnabled()
    assert "select one run" in page.runs.hint.text().lower()
    page.runs.compare_button.click()
    dialog = page.comparison
    assert dialog is not None
    assert "training" in dialog.differing("params")
    assert {"steps", "val_agreement_after"} <= set(dialog.differing("summary"))
    # one overlaid curve per run in each plot
    for plot in dialog.plots.values():
        assert len(plot.getPlotItem().listDataItems()) == 2
    save_screenshot(dialog, "compare-distill-runs")
    dialog.close()

    # details are readable tables, not JSON
    page.runs.select([demo_run])
    details = page.runs.details.toPlainText()
    assert "Data it read" in details and "triplets" in details and "took" in details
    assert "{" not in details.split("Parameters")[0]

    # a current run cannot go without a decision; a non-current one can
    page.runs.select([other])
    assert page.runs.delete_button.isEnabled()
    assert page.delete_run(other)
    _wait_idle(qtbot, window)
    assert [f"distill/{r.run_id}" for r in project.runs("distill")] == [demo_run]
    assert project.journal()[-1]["event"] == "delete"


def test_welcome_screen_recent_projects_and_demo(window, copy_demo: Path, monkeypatch) -> None:
    from alignet_app.widgets import welcome

    monkeypatch.setattr(welcome, "find_demo", lambda: None)
    window._show_welcome()
    assert window.central.currentWidget() is window.welcome
    w = window.welcome
    assert not w.open_recent.isEnabled() and w.recent_note.text() == "No recent projects yet."
    assert w.demo_button.text() == "Create the demo" and w.demo_button.isEnabled()
    save_screenshot(window, "welcome")
    assert window.open_project(str(copy_demo))
    assert window.central.currentIndex() == 1
    window.session.close()
    assert window.central.currentWidget() is window.welcome
    assert w.recent.count() == 1 and not w.open_recent.isEnabled()
    w.recent.setCurrentRow(0)
    assert w.open_recent.isEnabled() and not w.recent_note.isVisible()
    monkeypatch.setattr(welcome, "find_demo", lambda: copy_demo)
    w.refresh()
    assert w.demo_button.text() == "Open the demo"
    w.demo_button.click()
    assert window.session.path == copy_demo.resolve()


def test_help_menu_guide_shortcuts_and_method(window) -> None:
    from alignet_app.help import GUIDE
    from alignet_app.pages import PAGES

    assert [g[0] for g in GUIDE] == [p.title for p in PAGES]
    titles = [a.text() for a in window.menuBar().actions()[-1].menu().actions()]
    assert {"&User Guide", "&Keyboard Shortcuts", "The &Method (README)"} <= set(titles)
    dialog = window.show_help("shortcuts")
    keys = {
        dialog.shortcuts.item(r, 0).text(): dialog.shortcuts.item(r, 1).text()
        for r in range(dialog.shortcuts.rowCount())
    }
    assert keys["Project"] == "Ctrl+1" and keys["Pause / Resume"] == "Ctrl+P"
    assert "transform" in dialog.method.toPlainText()
    dialog.close()


def test_window_fits_small_screens_and_remembers_splitters(window, copy_demo: Path, qtbot) -> None:
    from alignet_app.main_window import MainWindow

    assert window.open_project(str(copy_demo))
    for key in window.pages:
        window.show_page(key)
        assert window.minimumSizeHint().width() <= 1280, key
        assert window.minimumSizeHint().height() <= 700, key
    window.resize(1280, 800)
    window.show_page("project")
    window.main_splitter.setSizes([230, 1050])
    window.page("project").splitter.setSizes([500, 200])
    qtbot.wait(50)
    nav = window.main_splitter.sizes()[0]
    top, runs = window.page("project").splitter.sizes()
    window.save_layout()
    again = MainWindow()
    qtbot.addWidget(again)
    try:
        again.show()
        again.resize(1280, 800)
        again.open_project(str(copy_demo))  # the pages show once a project is open
        assert again.session.is_open
        again.show_page("project")
        qtbot.wait(50)
        assert abs(again.main_splitter.sizes()[0] - nav) <= 2
        top2, runs2 = again.page("project").splitter.sizes()
        # the same share of the height (the window and so the page are the same size)
        assert abs(top2 / (top2 + runs2) - top / (top + runs)) < 0.02
    finally:
        again.session.shutdown()
