"""A screenshot of every page on the demo project (build/screenshots/page_<key>.png).

Look at them after a change to a page: clipped labels, empty plots and broken layouts show
here first. The test checks that each page draws something on a project where every stage
has run, and that showing it raises nothing (pytest-qt fails the test on errors in slots).
"""

from __future__ import annotations

from pathlib import Path

from alignet_app.pages import PAGES
from tests.app.conftest import save_screenshot


def test_every_page_on_the_demo_project(window, qtbot, copy_demo: Path) -> None:
    window.resize(1440, 900)
    assert window.open_project(str(copy_demo))
    for cls in PAGES:
        window.show_page(cls.key)
        qtbot.wait(200)  # let lazy loads (thumbnails, tables) land
        runner = window.session.runner
        if runner.busy:  # a page may compute a view (e.g. the cluster map) as a job
            qtbot.waitUntil(lambda runner=runner: not runner.busy, timeout=60_000)
            qtbot.wait(200)
        path = save_screenshot(window, f"page_{cls.key}")
        image = window.grab().toImage()
        page = window.page(cls.key).grab().toImage()
        # not a blank page: more than a handful of distinct colours in the page area
        colours = {
            page.pixel(x, y) for x in range(0, page.width(), 7) for y in range(0, page.height(), 7)
        }
        assert len(colours) > 8, f"{cls.key} looks empty ({path})"
        assert image.width() >= 1440
    # every stage ran in the demo, so the navigator shows each as done
    states = [window.navigator.item(i).toolTip() for i in range(window.navigator.count())]
    assert all(": done" in t for t, cls in zip(states, PAGES, strict=True) if cls.stage)
