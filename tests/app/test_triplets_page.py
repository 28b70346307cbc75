"""The Triplets page: browse the demo's triplets and human judgments, filter, sample; 200 k rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from alignet_app.widgets.triplet_view import HUMAN_COLOUR, Col
from alignet_engine.base.types import ImageSet
from alignet_engine.jobs import run_job
from alignet_engine.store import Project
from alignet_engine.views import browse, inspector
from tests.app.conftest import save_screenshot
from tests.helpers import noise_pngs

IDLE_MS = 120_000


def _teacher_odd(sims_row: np.ndarray) -> tuple[int, np.ndarray]:
    """Independently: softmax over [s01, s02, s12]; pair (0,1) most similar => item 2 odd."""
    e = np.exp(sims_row - sims_row.max())
    p_pair = e / e.sum()
    p_odd = np.array([p_pair[2], p_pair[1], p_pair[0]])  # item 0 odd <=> pair (1,2) similar
    return int(np.argmax(p_odd)), p_odd


def _settle(window, qtbot) -> None:
    """Wait until the page's view jobs (filters, sorting, breakdown) delivered."""
    qtbot.waitUntil(lambda: not window.session.views.busy(), timeout=IDLE_MS)


def _open(window, qtbot, path: Path):
    window.resize(1440, 900)
    assert window.open_project(str(path))
    window.show_page("triplets")
    page = window.page("triplets")
    qtbot.waitUntil(lambda: page.view is not None, timeout=10_000)
    _settle(window, qtbot)
    return page


def _choose_source(page, qtbot, name: str) -> None:
    index = page.source_box.findData(name)
    assert index >= 0, name
    page.source_box.setCurrentIndex(index)
    page.source_box.activated.emit(index)
    qtbot.waitUntil(
        lambda: page.view is not None and page.view.source.name == name, timeout=IDLE_MS
    )
    qtbot.waitUntil(lambda: not page.session.views.busy(), timeout=IDLE_MS)


def test_inspector_lists_filters_and_steps_through_demo_triplets(window, qtbot, copy_demo):
    page = _open(window, qtbot, copy_demo)
    with Project.open(copy_demo, readonly=True) as p:
        run = p.run("triplets")
        paths = p.imageset("pool").paths
    n = run.arrays["triplets"].shape[0]
    assert page.model.rowCount() == n
    assert page.view.source.kind == "pool"

    # the detail panel shows the selected row's three images (in the row's fixed shuffled
    # order) and the teacher's choice; pool triplets have no human: no human in the legend
    page.table.select_row(7)
    shown = inspector.display_permutation(np.array([7]))[0]
    items = run.arrays["triplets"][7][shown]
    odd, p_odd = _teacher_odd(run.arrays["sims"][7].astype(np.float64))
    odd_shown = int(np.flatnonzero(shown == odd)[0])
    assert page.detail.teacher_odd == odd_shown
    np.testing.assert_allclose(page.detail.teacher_probs, p_odd[shown], rtol=1e-5)
    assert [c.path for c in page.detail.cards] == [paths[i] for i in items]
    assert [c.frame_colour is not None for c in page.detail.cards] == [
        i == odd_shown for i in range(3)
    ]
    assert page.model.data(page.model.index(7, Col.TEACHER)) == "ABC"[odd_shown]
    assert "Teacher: " + "ABC"[odd_shown] in page.detail.verdict.text()
    assert "human" not in page.detail.legend.text()
    # disabled filters say why on the page
    assert page.filter_notes.isVisible() and "needs human answers" in page.filter_notes.text()
    qtbot.waitUntil(
        lambda: all(page.thumbs.get(c.path) is not None for c in page.detail.cards),
        timeout=10_000,
    )
    assert page.detail.cards[0].image.pixmap().width() > 100  # the 224 px thumbnail, not "…"

    # arrow keys move the selection (Left / Right as well as Up / Down)
    page.table.setFocus()
    QTest.keyClick(page.table, Qt.Key.Key_Down)
    assert page.table.currentIndex().row() == 8
    QTest.keyClick(page.table, Qt.Key.Key_Right)
    assert page.table.currentIndex().row() == 9
    QTest.keyClick(page.table, Qt.Key.Key_Left)
    QTest.keyClick(page.table, Qt.Key.Key_Up)
    assert page.table.currentIndex().row() == 7
    save_screenshot(window, "triplets_inspector")

    # filters give the engine's count
    page.entropy_max.setValue(0.5)
    page.split_box.setCurrentIndex(page.split_box.findData("train"))
    page.cluster_box.setCurrentIndex(page.cluster_box.findData(3))
    _settle(window, qtbot)  # filters apply by themselves (debounced, as a view job)
    qtbot.waitUntil(lambda: page.model.result is not None, timeout=IDLE_MS)
    expected = run_job(
        browse.filter_triplets(
            page.view, browse.TripletFilter(entropy_max=0.5, split="train", cluster=3)
        )
    )
    assert 0 < expected.count < n
    assert page.model.rowCount() == expected.count
    assert page.count_label.text().startswith(f"{expected.count:,} of {n:,} triplets")
    # the breakdown counts the rows shown (all training rows here)
    assert [(r.kind, r.n) for r in page.breakdown_rows][:1] == [("all", expected.count)]
    first = page.model.source_row(0)
    assert page.detail.heading.text().startswith(f"<b>Row {first:,}</b>")
    # an empty entropy range is refused with a message, not a traceback
    page.entropy_min.setValue(1.0)
    page.apply_button.click()
    assert page.filter_error.isVisible() and "empty" in page.filter_error.text()
    assert page.model.rowCount() == expected.count  # nothing lost
    page.reset_button.click()
    _settle(window, qtbot)
    assert page.model.rowCount() == n
    # the breakdown of all rows: train and validation, as the run stored them
    kinds = {r.kind: r.n for r in page.breakdown_rows}
    assert kinds == {
        "all": n,
        "train": run.summary["n_train"],
        "validation": run.summary["n_val"],
    }

    # sorting by entropy (a view job): highest first on the second click
    header = page.table.horizontalHeader()
    header.sectionClicked.emit(Col.ENTROPY)
    _settle(window, qtbot)
    header.sectionClicked.emit(Col.ENTROPY)
    _settle(window, qtbot)
    entropy = browse.entropy_bits(browse.odd_probabilities(run.arrays["sims"]))
    shown_rows = [page.model.source_row(r) for r in range(n)]
    assert sorted(shown_rows) == list(range(n))
    np.testing.assert_allclose(entropy[shown_rows], np.sort(entropy)[::-1])
    # jump to a row, wherever the sort put it
    assert page.jump_to("123")
    assert page.model.source_row(page.table.currentIndex().row()) == 123
    assert page.detail.heading.text().startswith("<b>Row 123</b>")
    assert not page.jump_to(str(n + 5)) and "not shown" in page.jump_note.text()

    # sampling from the page runs stages.triplets.sample and the inspector follows it
    page.form.set_value("n_triplets", 300)
    page.form.set_value("n_val", 40)
    page.form.set_value("strategy", "within_cluster")
    with qtbot.waitSignal(window.session.runner.idle, timeout=IDLE_MS):
        page.sample_button.click()
    qtbot.waitUntil(lambda: page.model.rowCount() == 340, timeout=10_000)
    assert page.kind_box.findData("within_cluster") >= 0

    # the count's spin box stops at the declared range (SampleConfig.n_triplets ≥ 1) ...
    page.form.set_value("n_triplets", 0)
    assert page.form.values()["n_triplets"] == 1
    # ... and a value the form cannot stop is named next to it by the config's check
    page.form.set_value("teacher_temperature", 0.0)
    page.sample_button.click()
    assert page.sample_error.isVisible() and "teacher_temperature" in page.sample_error.text()


def test_inspector_shows_human_judgments(window, qtbot, copy_demo):
    page = _open(window, qtbot, copy_demo)
    _choose_source(page, qtbot, "test (simulated)")
    view = page.view
    assert isinstance(view, browse.JudgmentTriplets) and view.has_human
    with Project.open(copy_demo, readonly=True) as p:
        j, _ = p.judgments("test (simulated)")
    assert page.model.rowCount() == len(j)
    assert page.disagree.isEnabled() and not page.split_box.isEnabled()

    # the human's odd one is stored last, but shown in each row's fixed shuffled order:
    # the human column uses every letter, and the table and the detail agree
    human_col = [page.model.data(page.model.index(r, Col.HUMAN)) for r in range(60)]
    assert set(human_col) == {"A", "B", "C"}
    page.table.select_row(5)
    assert "ABC"[page.detail.human_odd] == human_col[5]
    assert "human" in page.detail.legend.text()
    # the breakdown of all rows and the disagreement rate match the engine's scores
    all_row = page.breakdown_rows[0]
    assert (all_row.kind, all_row.n) == ("all", len(j))
    assert all_row.disagreements == int((view.teacher_odd != 2).sum())
    assert f"disagrees with {all_row.disagreement_rate:.1%}" in page.count_label.text()

    page.disagree.setChecked(True)
    _settle(window, qtbot)
    qtbot.waitUntil(lambda: page.model.result is not None, timeout=IDLE_MS)
    expected = np.flatnonzero(view.teacher_odd != 2)
    assert page.model.rowCount() == expected.size > 0
    assert page.model.source_row(0) == expected[0]
    assert "disagrees with 100.0%" in page.count_label.text()
    detail = page.detail
    assert detail.human_odd >= 0 and detail.teacher_odd != detail.human_odd
    assert detail.cards[detail.human_odd].frame_colour == HUMAN_COLOUR
    assert detail.verdict.text().startswith("✗ Teacher disagrees")
    assert page.model.data(page.model.index(0, Col.VERDICT)) == "✗ disagree"
    assert np.isfinite(detail.human_probs).all()
    # repeated triplets: agreement among people is shown
    assert "%" in page.model.data(page.model.index(0, Col.AGREEMENT))
    assert "people agree" in page.source_info.text()
    qtbot.waitUntil(
        lambda: all(page.thumbs.get(c.path) is not None for c in detail.cards), timeout=10_000
    )
    save_screenshot(window, "triplets_human_judgments")


# ---------------------------------------------------------------------------- 200 k rows
N_BIG = 200_000


@pytest.fixture
def big_project(tmp_path: Path) -> Path:
    """A 200 k-row triplet run over a 2 k-item pool (images are a few files repeated)."""
    rng = np.random.default_rng(1)
    files = noise_pngs(tmp_path / "images", 20)
    n_items = 2000
    path = tmp_path / "big.alignet"
    with Project.create(path) as p:
        paths = tuple(files[i % len(files)] for i in range(n_items))
        p.write_imageset("pool", ImageSet(paths, ("",) * n_items), {})
        params = {"image_set": "pool", "model": "m", "transform": None, "k": 10}
        rid = p.begin_job("clusters", params)
        p.write_run(
            "clusters",
            rid,
            slot="clusters",
            params=params,
            arrays={"labels": np.arange(n_items) % 10, "centroids": np.zeros((10, 2))},
            summary={"k": 10, "clusters": []},
        )
        trip = rng.integers(0, n_items, size=(N_BIG, 3))
        sims = np.sort(rng.normal(size=(N_BIG, 3)), axis=1)[:, ::-1].astype(np.float32)
        is_val = np.zeros(N_BIG, bool)
        is_val[-10_000:] = True
        params = {"strategy": "random", "n_triplets": N_BIG - 10_000, "n_val": 10_000}
        rid = p.begin_job("triplets", params)
        p.write_run(
            "triplets",
            rid,
            slot="triplets",
            params=params,
            arrays={"triplets": trip, "sims": sims, "is_val": is_val},
            summary={"n_train": N_BIG - 10_000, "n_val": 10_000, "image_set": "pool"},
        )
    return path


def test_inspector_on_200k_rows_reads_lazily_and_filters_as_a_job(window, qtbot, big_project):
    page = _open(window, qtbot, big_project)
    model = page.model
    assert model.rowCount() == N_BIG
    # jumping to random places reads a block or two each, never the whole run
    rng = np.random.default_rng(0)
    before = model.reads
    for row in rng.integers(0, N_BIG, size=20):
        page.table.select_row(int(row))
        QTest.qWait(1)
        assert page.model.source_row(int(row)) == int(row)
    assert model.reads - before <= 20 * 4
    assert len(model._blocks) <= 48

    # a filter over all rows is a view job off the GUI thread (not the engine thread)
    spec = browse.TripletFilter(entropy_min=0.8, cluster=4, cluster_of="odd")
    page.entropy_min.setValue(0.8)
    page.cluster_box.setCurrentIndex(page.cluster_box.findData(4))
    page.cluster_of.setCurrentIndex(page.cluster_of.findData("odd"))
    page.apply_button.click()
    assert window.session.views.busy("triplets:filter")  # a job, not a freeze
    assert not window.session.runner.busy
    _settle(window, qtbot)
    expected = run_job(browse.filter_triplets(page.view, spec))
    qtbot.waitUntil(lambda: model.rowCount() == expected.count, timeout=10_000)
    assert 0 < expected.count < N_BIG
    np.testing.assert_array_equal(model.result.indices, expected.indices)
    # the filter job's end refreshed the session but the page kept its view and filter
    assert page.model.result is not None

    # arrow keys at the end of the filtered list stop at the last row
    page.table.select_row(model.rowCount() - 2)
    page.table.setFocus()
    QTest.keyClick(page.table, Qt.Key.Key_Down)
    QTest.keyClick(page.table, Qt.Key.Key_Down)
    assert page.table.currentIndex().row() == model.rowCount() - 1
    assert page.detail.heading.text().startswith(f"<b>Row {int(expected.indices[-1]):,}</b>")


# ---------------------------------------------------------------------------- laptop screens
@pytest.mark.parametrize("size", [(1280, 800), (1366, 768)])
def test_page_fits_laptop_screens_with_the_choices_in_view(window, qtbot, copy_demo, size):
    page = _open(window, qtbot, copy_demo)
    _choose_source(page, qtbot, "test (simulated)")
    window.resize(*size)
    qtbot.waitUntil(lambda: window.width() == size[0], timeout=5_000)
    qtbot.wait(100)
    # the page never asks for more than the screen
    assert page.minimumSizeHint().width() <= size[0] - 200
    assert window.minimumSizeHint().width() <= size[0]
    # the verdict, the human's and the teacher's choice are on screen without scrolling
    table = page.table
    for col in (Col.VERDICT, Col.HUMAN, Col.TEACHER, Col.P_ODD):
        right = table.columnViewportPosition(col) + table.columnWidth(col)
        assert table.columnViewportPosition(col) >= 0 and right <= table.viewport().width()
    # the cards scale into the room they have; the chart goes under them when narrow
    detail = page.detail
    for card in detail.cards:
        assert card.image.width() >= 96
        assert card.geometry().right() <= detail.width()
    if detail.width() < 640:
        assert detail.chart_below
    assert detail.plot.geometry().right() <= detail.width()
    save_screenshot(window, f"triplets_{size[0]}x{size[1]}")


# ---------------------------------------------------------------------------- while training
def _blocking_job(project, control):
    """An engine job that holds the engine thread until cancelled (a long training stand-in)."""
    import time

    from alignet_engine.jobs import Progress

    while True:
        control.check()
        yield Progress("distill", 0, 1, "holding the engine thread")
        time.sleep(0.02)


def test_inspector_works_while_the_engine_thread_is_busy(window, qtbot, copy_demo):
    page = _open(window, qtbot, copy_demo)
    runner = window.session.runner
    assert window.session.run("Hold the engine", _blocking_job)
    try:
        assert runner.busy
        # a judgment set is scored, filtered and broken down while the engine is held
        _choose_source(page, qtbot, "test (simulated)")
        page.disagree.setChecked(True)
        _settle(window, qtbot)
        qtbot.waitUntil(lambda: page.model.result is not None, timeout=IDLE_MS)
        expected = np.flatnonzero(page.view.teacher_odd != 2)
        assert page.model.rowCount() == expected.size
        assert runner.busy  # it never waited for the engine
    finally:
        with qtbot.waitSignal(runner.idle, timeout=IDLE_MS):
            runner.cancel()


def test_inspector_works_on_a_read_only_project(window, qtbot, copy_demo):
    # a project file without write permission opens read-only
    copy_demo.chmod(0o444)
    try:
        window.resize(1440, 900)
        window.open_project(str(copy_demo))
        assert window.session.read_only
        window.show_page("triplets")
        page = window.page("triplets")
        qtbot.waitUntil(lambda: page.view is not None, timeout=10_000)
        _choose_source(page, qtbot, "test (simulated)")
        assert page.model.rowCount() == page.view.n > 0
        page.entropy_max.setValue(0.5)
        _settle(window, qtbot)
        qtbot.waitUntil(lambda: page.model.result is not None, timeout=IDLE_MS)
        assert (page.view.entropy[page.model.result.indices] <= 0.5).all()
    finally:
        window.session.close()
        copy_demo.chmod(0o644)
