"""The Clusters page: run k-means with diagnostics, plots equal the stored run, map clicks."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from alignet_app.pages.clusters import parse_ks
from alignet_engine.store import Project
from tests.app.conftest import save_screenshot

IDLE_MS = 180_000


def test_parse_ks() -> None:
    assert parse_ks("2-4, 8;10") == (2, 3, 4, 8, 10)
    assert parse_ks("") == ()
    with pytest.raises(ValueError, match="'x'"):
        parse_ks("2, x")


def test_cluster_with_diagnostics_map_and_typical_images(window, qtbot, copy_demo):
    window.resize(1440, 900)
    assert window.open_project(str(copy_demo))
    window.show_page("clusters")
    page = window.page("clusters")
    # the demo's run (k=12, no diagnostics) is loaded and its map computed on view workers
    qtbot.waitUntil(lambda: page.overview is not None, timeout=IDLE_MS)
    assert page.overview.k == 12
    qtbot.waitUntil(lambda: page.pool_map is not None, timeout=IDLE_MS)

    page.form.set_value("k", 4)
    page.ks_edit.setText("2-6")
    page.form.set_value("n_nearest", 5)
    assert page.transform_box.currentText() == "teacher"
    with qtbot.waitSignal(window.session.runner.idle, timeout=IDLE_MS):
        page.run_button.click()
    qtbot.waitUntil(lambda: page.overview is not None and page.overview.k == 4, timeout=10_000)
    with Project.open(copy_demo, readonly=True) as p:
        run = p.run("clusters")
    assert run.params["k"] == 4 and run.params["diagnose_ks"] == [2, 3, 4, 5, 6]
    diag = run.summary["diagnostics"]

    # the diagnostics plots show exactly the stored values
    x, y = page.diagnostics.inertia_curve.getData()
    np.testing.assert_array_equal(x, diag["k"])
    np.testing.assert_allclose(y, diag["inertia"])
    x, y = page.diagnostics.silhouette_curve.getData()
    np.testing.assert_allclose(y, [np.nan if v is None else v for v in diag["silhouette"]])
    assert page.diagnostics.k_lines[0].value() == 4

    # typical images: n_nearest per cluster, the run's own lists
    assert page.grid.items == [c["nearest"] for c in run.summary["clusters"]]
    assert all(len(items) == 5 for items in page.grid.items)

    # the map of the new run, coloured by its labels; clicking a point shows its image
    qtbot.waitUntil(
        lambda: page.pool_map is not None and page.pool_map.ref.endswith(run.run_id),
        timeout=IDLE_MS,
    )
    np.testing.assert_array_equal(page.pool_map.labels, run.arrays["labels"])
    assert len(page.map_view.scatter.points()) == run.arrays["labels"].size
    # a legend of the 4 clusters with their sizes, beside the map; hover names the point
    sizes = np.bincount(run.arrays["labels"], minlength=4)
    assert [label.text for _, label in page.map_view.legend.items] == [
        f"{c} ({sizes[c]})" for c in range(4)
    ]
    assert page.map_view._tip(0, 0, 17).startswith(f"item 17 · cluster {run.arrays['labels'][17]}")
    item = 17
    view_box = page.map_view.plotItem.vb
    scene_pos = view_box.mapViewToScene(QPointF(*page.pool_map.xy[item].astype(float)))
    widget_pos = page.map_view.mapFromScene(scene_pos)
    hits = page.map_view.scatter.pointsAt(QPointF(*page.pool_map.xy[item].astype(float)))
    QTest.mouseClick(page.map_view.viewport(), Qt.MouseButton.LeftButton, pos=widget_pos)
    qtbot.waitUntil(lambda: page.selected is not None, timeout=5_000)
    # the click picks the point under the cursor (item 17, or one drawn on top of it)
    assert page.selected in [int(h.data()) for h in hits]
    chosen = page.selected
    with Project.open(copy_demo, readonly=True) as p:
        images = p.imageset("pool")
    assert images.paths[chosen] in page.item_caption.text()
    assert f"cluster {int(run.arrays['labels'][chosen])}" in page.item_caption.text()
    assert images.categories[chosen] in page.item_caption.text()
    qtbot.waitUntil(lambda: page.big_thumbs.get(images.paths[chosen]) is not None, timeout=5000)
    assert page.item_image.pixmap().width() > 100

    # a typical image is clickable too
    first = page.grid.items[2][0]
    page.grid.buttons[images.paths[first]][0].click()
    assert page.selected == first

    # bad input: a message next to the form, no job
    page.ks_edit.setText("2-x")
    page.run_button.click()
    assert page.form_error.isVisible() and "2-x" in page.form_error.text()
    assert not window.session.runner.busy
    page.ks_edit.setText("2-6")
    page.select_item(chosen)
    qtbot.waitUntil(
        lambda: all(b.icon().availableSizes() for bs in page.grid.buttons.values() for b in bs),
        timeout=10_000,
    )
    page.grid_thumbs.wait(5000)
    QTest.qWait(200)
    save_screenshot(window, "clusters_page")
