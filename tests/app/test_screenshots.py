"""Screenshots of every page on the demo project, light and dark, at two laptop sizes.

Saved as build/screenshots/page_<key>_<w>x<h>_<theme>.png (the participant screens at
800×600 come from test_experiment_page.py). Look at them after a change to a page: clipped
labels, empty plots and broken layouts show here first. The test checks that each page draws
something on a project where every stage has run, that the window really is the requested
size (no page asks for more), and that showing it raises nothing (pytest-qt fails the test on
errors in slots). A second test renders the pages at device pixel ratio 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from alignet_app.pages import PAGES
from alignet_app.widgets import theme
from alignet_app.widgets.plots import LiveCurves
from tests.app.conftest import save_screenshot

SIZES = ((1280, 800), (1440, 900))
ROOT = Path(__file__).resolve().parents[2]


def _settle(window, qtbot) -> None:
    qtbot.wait(150)  # let lazy loads (thumbnails, tables) land
    runner, views = window.session.runner, window.session.views
    # a page may compute a view (the cluster map, the inspector's breakdown) as a job
    qtbot.waitUntil(lambda: not runner.busy and not views.busy(), timeout=60_000)
    # live curves draw one plot per timer tick: wait until every plot is drawn
    curves = window.findChildren(LiveCurves)
    qtbot.waitUntil(lambda: not any(c._dirty for c in curves), timeout=10_000)
    qtbot.wait(150)


def _distinct_colours(widget) -> int:
    image = widget.grab().toImage()
    return len(
        {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    )


@pytest.fixture
def themed(request):
    """Apply the theme named by the test's parameter; restore the application's look after."""
    app = QApplication.instance()
    style = app.style().name()
    theme.apply_theme(request.param)
    yield request.param
    app.setStyle(style)
    app.setPalette(QPalette())


@pytest.mark.parametrize("themed", ["light", "dark"], indirect=True)
def test_every_page_at_laptop_sizes(themed, qtbot, copy_demo: Path) -> None:
    from alignet_app.main_window import MainWindow

    window = MainWindow()  # created under the theme, as at start-up
    qtbot.addWidget(window)
    window.show()
    try:
        assert window.open_project(str(copy_demo))
        if themed == "dark":
            assert theme.is_dark() and theme.colours().dark
        for width, height in SIZES:
            window.resize(width, height)
            qtbot.waitUntil(lambda w=width: window.width() == w, timeout=5_000)
            for cls in PAGES:
                window.show_page(cls.key)
                _settle(window, qtbot)
                path = save_screenshot(window, f"page_{cls.key}_{width}x{height}_{themed}")
                # not a blank page: more than a handful of distinct colours in the page area
                assert _distinct_colours(window.page(cls.key)) > 8, (
                    f"{cls.key} looks empty ({path})"
                )
                # no page asks for more than the screen: the window kept the size asked for
                assert (window.width(), window.height()) == (width, height), cls.key
        # every stage ran in the demo, so the navigator shows each as done
        states = [window.navigator.item(i).toolTip() for i in range(window.navigator.count())]
        assert all(": done" in t for t, cls in zip(states, PAGES, strict=True) if cls.stage)
    finally:
        window.session.shutdown()


_HIDPI = """
import sys
from pathlib import Path
from PySide6.QtWidgets import QApplication
from alignet_app.application import get_app
from alignet_app.main_window import MainWindow
from alignet_app.pages import PAGES
app = get_app()
w = MainWindow()
w.resize(1280, 800)
w.show()
assert w.open_project(sys.argv[1])
out = Path(sys.argv[2])
ratios = set()
for cls in PAGES:
    w.show_page(cls.key)
    for _ in range(40):
        app.processEvents()
    w.session.views.wait(30)
    pixmap = w.grab()
    ratios.add(pixmap.devicePixelRatio())
    pixmap.save(str(out / f"page_{cls.key}_1280x800_dpr2.png"))
w.session.shutdown()
print("ratios", sorted(ratios), pixmap.width(), pixmap.height(), flush=True)
# this checks drawing at ratio 2, not teardown: skip Python's unordered destruction of the
# Qt objects at exit (it can crash offscreen after everything above is done)
import os
os._exit(0)
"""


def test_pages_render_at_device_pixel_ratio_2(copy_demo: Path) -> None:
    out = ROOT / "build" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "QT_SCALE_FACTOR": "2",
        "ALIGNET_NO_DIALOGS": "1",
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        [sys.executable, "-c", _HIDPI, str(copy_demo), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("ratios"))
    # every page was drawn at twice the pixels (a 1280×800 window → a 2560×1600 image)
    assert line.split("]")[0] == "ratios [2.0"
    assert line.split("]")[1].split() == ["2560", "1600"]
