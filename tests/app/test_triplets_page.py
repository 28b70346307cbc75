"""The Triplets page: browse the demo's triplets and human judgments, filter, sample; 200 k rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from alignet_engine.data.types import ImageSet
from alignet_engine.jobs import run_job
from alignet_engine.stages import browse
from alignet_engine.store import Project
from tests.app.conftest import save_screenshot

IDLE_MS = 120_000


def _teacher_odd(sims_row: np.ndarray) -> tuple[int, np.ndarray]:
    """Independently: softmax over [s01, s02, s12]; pair (0,1) most similar => item 2 odd."""
    e = np.exp(sims_row - sims_row.max())
    p_pair = e / e.sum()
    p_odd = np.array([p_pair[2], p_pair[1], p_pair[0]])  # item 0 odd <=> pair (1,2) similar
    return int(np.argmax(p_odd)), p_odd


def _open(window, qtbot, path: Path):
    window.resize(1440, 900)
    assert window.open_project(str(path))
    window.show_page("triplets")
    page = window.page("triplets")
    qtbot.waitUntil(lambda: page.view is not None, timeout=10_000)
    return page


def _choose_source(page, qtbot, name: str) -> None:
    index = page.source_box.findData(name)
    assert index >= 0, name
    page.source_box.setCurrentIndex(index)
    page.source_box.activated.emit(index)
    qtbot.waitUntil(
        lambda: page.view is not None and page.view.source.name == name, timeout=IDLE_MS
    )


def test_inspector_lists_filters_and_steps_through_demo_triplets(window, qtbot, copy_demo):
    page = _open(window, qtbot, copy_demo)
    with Project.open(copy_demo, readonly=True) as p:
        run = p.run("triplets")
        paths = p.imageset("pool").paths
    n = run.arrays["triplets"].shape[0]
    assert page.model.rowCount() == n
    assert page.view.source.kind == "pool"

    # the detail panel shows the selected row's three images and the teacher's choice
    page.table.select_row(7)
    items = run.arrays["triplets"][7]
    odd, p_odd = _teacher_odd(run.arrays["sims"][7].astype(np.float64))
    assert page.detail.teacher_odd == odd
    np.testing.assert_allclose(page.detail.teacher_probs, p_odd, rtol=1e-5)
    assert [c.path for c in page.detail.cards] == [paths[i] for i in items]
    assert [c.frame_colour is not None for c in page.detail.cards] == [i == odd for i in range(3)]
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
    page.apply_button.click()
    expected = run_job(
        browse.filter_triplets(
            page.view, browse.TripletFilter(entropy_max=0.5, split="train", cluster=3)
        )
    )
    assert 0 < expected.count < n
    assert page.model.rowCount() == expected.count
    assert page.count_label.text() == f"{expected.count:,} of {n:,} triplets"
    first = page.model.source_row(0)
    assert page.detail.heading.text().startswith(f"<b>Row {first:,}</b>")
    # an empty entropy range is refused with a message, not a traceback
    page.entropy_min.setValue(1.0)
    page.apply_button.click()
    assert page.filter_error.isVisible() and "empty" in page.filter_error.text()
    assert page.model.rowCount() == expected.count  # nothing lost
    page.reset_button.click()
    assert page.model.rowCount() == n

    # sampling from the page runs stages.triplets.sample and the inspector follows it
    page.form.set_value("n_triplets", 300)
    page.form.set_value("n_val", 40)
    page.form.set_value("strategy", "within_cluster")
    with qtbot.waitSignal(window.session.runner.idle, timeout=IDLE_MS):
        page.sample_button.click()
    qtbot.waitUntil(lambda: page.model.rowCount() == 340, timeout=10_000)
    assert page.kind_box.findData("within_cluster") >= 0

    page.form.set_value("n_triplets", 0)
    page.sample_button.click()
    assert page.sample_error.isVisible() and "n_triplets" in page.sample_error.text()


def test_inspector_shows_human_judgments(window, qtbot, copy_demo):
    page = _open(window, qtbot, copy_demo)
    _choose_source(page, qtbot, "test (simulated)")
    view = page.view
    assert isinstance(view, browse.JudgmentTriplets) and view.has_human
    with Project.open(copy_demo, readonly=True) as p:
        j, _ = p.judgments("test (simulated)")
    assert page.model.rowCount() == len(j)
    assert page.disagree.isEnabled() and not page.split_box.isEnabled()

    page.disagree.setChecked(True)
    page.apply_button.click()
    expected = np.flatnonzero(view.teacher_odd != 2)
    assert page.model.rowCount() == expected.size > 0
    assert page.model.source_row(0) == expected[0]
    detail = page.detail
    assert detail.human_odd == 2 and detail.teacher_odd != 2
    assert detail.cards[2].frame_colour == "#1c71d8"  # the human's choice, in blue
    assert "disagrees" in detail.heading.text()
    assert np.isfinite(detail.human_probs).all()
    # repeated triplets: agreement among people is shown
    assert "%" in page.model.data(page.model.index(0, 10))
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
    images = Path("/tmp/gui-demo/images")
    files = sorted(str(f) for f in images.rglob("*.png"))[:20] or ["/nonexistent.png"]
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

    # a filter over all rows runs on the engine thread (status bar progress), same result
    spec = browse.TripletFilter(entropy_min=0.8, cluster=4, cluster_of="odd")
    page.entropy_min.setValue(0.8)
    page.cluster_box.setCurrentIndex(page.cluster_box.findData(4))
    page.cluster_of.setCurrentIndex(page.cluster_of.findData("odd"))
    with qtbot.waitSignal(window.session.runner.idle, timeout=IDLE_MS):
        page.apply_button.click()
        assert window.session.runner.busy  # it is a job, not a freeze
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
