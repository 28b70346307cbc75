"""The main window's frame: projects (new, open, read-only, Save As, recent), the engine thread
(progress, cancel, pause, failures), the log, preferences and drag and drop."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from alignet_app import settings
from alignet_app.jobrunner import JobFailure
from alignet_engine.base.types import ImageSet
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Progress
from alignet_engine.store import Project
from tests.app.conftest import save_screenshot


def counting_job(n: int, started: threading.Event | None = None, delay: float = 0.02):
    """A job that counts to ``n`` on the engine thread, one step per ``delay`` seconds."""

    def make(project: Project, control: JobControl) -> Job[int]:
        for i in range(n):
            control.check()
            if started is not None:
                started.set()
            time.sleep(delay)
            yield Progress("count", i + 1, n)
        return n

    return make


def test_new_project_save_as_and_recent(window, tmp_path: Path) -> None:
    session = window.session
    session.new(tmp_path / "a.alignet")
    assert window.windowTitle() == "AligNet Studio — a.alignet"
    session.project.write_imageset("s", ImageSet(("/x.png",) * 3, ("",) * 3), {})
    session.refresh()
    session.save_as(tmp_path / "b.alignet")
    assert session.path == (tmp_path / "b.alignet").resolve()
    assert session.info()["imagesets"] == {"s": 3}
    # the old file is closed (its lock released): another writer may open it now
    with Project.open(tmp_path / "a.alignet") as other:
        assert other.info()["imagesets"] == {"s": 3}
    assert settings.recent_projects()[:2] == [
        str((tmp_path / "b.alignet").resolve()),
        str((tmp_path / "a.alignet").resolve()),
    ]


def test_a_project_you_cannot_write_opens_read_only(window, tmp_path: Path) -> None:
    path = tmp_path / "p.alignet"
    with Project.create(path):
        pass
    # (a project open in another process stays writable: writes wait for each other's
    # transactions; one the user may not write opens read-only, with the reason)
    os.chmod(path, 0o444)
    assert window.open_project(str(path))
    assert window.session.read_only
    assert "0444" in window.session.project.readonly_reason
    assert "(read-only)" in window.windowTitle()
    # a page refuses to start a job instead of failing later
    assert not window.page("project").run_job("x", counting_job(1))


def test_opening_a_non_project_shows_a_message_not_a_traceback(window, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-project.alignet"
    bad.write_text("hello")
    assert not window.open_project(str(bad))
    assert not window.session.is_open


def test_progress_eta_and_done(window, qtbot, tmp_path: Path) -> None:
    window.session.new(tmp_path / "p.alignet")
    results = []
    with qtbot.waitSignal(window.session.runner.idle, timeout=20_000):
        window.session.run("count", counting_job(60, delay=0.03), results.append)
        qtbot.waitUntil(lambda: window.eta_label.text().startswith("ETA"), timeout=10_000)
        assert window.progress.isVisible() and window.cancel_button.isVisible()
        save_screenshot(window, "main_window_job_running")
    assert results == [60]
    assert window.job_label.text() == "count: done"
    assert not window.progress.isVisible()
    assert "started: count" in window.log_view.toPlainText()


def test_cancel_and_pause_reach_the_job(window, qtbot, tmp_path: Path) -> None:
    window.session.new(tmp_path / "p.alignet")
    runner = window.session.runner
    seen: list[int] = []
    runner.progress.connect(lambda p: seen.append(p.done))
    started = threading.Event()
    window.session.run("count", counting_job(10_000, started))
    qtbot.waitUntil(lambda: len(seen) > 2, timeout=10_000)
    window.pause_button.click()
    assert runner.paused and window.pause_button.text() == "Resume"
    qtbot.wait(300)
    frozen = len(seen)
    qtbot.wait(300)
    assert len(seen) <= frozen + 1  # at most the step in flight when pausing finished
    window.pause_button.click()
    qtbot.waitUntil(lambda: len(seen) > frozen + 2, timeout=10_000)
    with qtbot.waitSignal(runner.cancelled, timeout=10_000):
        window.cancel_button.click()
    assert window.job_label.text() == "count: cancelled"
    assert not runner.busy


def test_failures_are_reported_with_their_kind(window, qtbot, tmp_path: Path) -> None:
    window.session.new(tmp_path / "p.alignet")

    def bad_input(project: Project, control: JobControl) -> Job[None]:
        yield Progress("x", 0, 1)
        raise InputError("column 'odd' is missing", source="j.csv", row=3)

    def bug(project: Project, control: JobControl) -> Job[None]:
        yield Progress("x", 0, 1)
        return np.zeros(2)[5]  # IndexError: a bug, not the user's fault

    failures: list[JobFailure] = []
    window.session.runner.failed.connect(failures.append)
    for job in (bad_input, bug):
        with qtbot.waitSignal(window.session.runner.idle, timeout=10_000):
            window.session.run(job.__name__, job)
    assert [f.user_error for f in failures] == [True, False]
    assert "j.csv" in failures[0].text and "row 3" in failures[0].text
    assert "IndexError" in failures[1].text and "Traceback" in failures[1].details
    log = window.log_view.toPlainText()
    assert "bad_input failed" in log and "bug failed" in log


def test_only_one_job_at_a_time(window, qtbot, tmp_path: Path) -> None:
    window.session.new(tmp_path / "p.alignet")
    with qtbot.waitSignal(window.session.runner.idle, timeout=20_000):
        assert window.session.run("first", counting_job(20))
        assert not window.session.run("second", counting_job(1))


def test_preferences_persist_in_qsettings(window) -> None:
    prefs = settings.Preferences(device="cpu", cpu_threads=3, data_folder="/data")
    settings.save_preferences(prefs)
    assert settings.load_preferences() == prefs
    assert prefs.effective_threads == 3
    assert settings.Preferences().effective_threads >= 1


def test_dropping_a_project_opens_it(window, tmp_path: Path) -> None:
    path = tmp_path / "dropped.alignet"
    with Project.create(path):
        pass
    window.handle_dropped([str(path)])
    assert window.session.path == path.resolve()


@pytest.mark.parametrize("key", ["project", "data", "distill", "experiment"])
def test_view_menu_shortcuts_switch_pages(window, key: str) -> None:
    window.show_page(key)
    assert window.current_page() is window.page(key)


def test_the_preferred_device_presets_every_device_field(window, tmp_path: Path) -> None:
    from alignet_app.widgets.config_form import ConfigForm

    window.session.preferences = settings.Preferences(device="cpu")
    window.session.new(tmp_path / "p.alignet")
    for key in ("features", "clusters", "distill"):
        window.show_page(key)
        forms = [f for f in window.page(key).findChildren(ConfigForm) if "device" in f.editors]
        assert forms, key
        assert all(f.values()["device"] == "cpu" for f in forms), key


_EMPTY_WINDOW = """
import json, sys
from alignet_app.application import get_app
from alignet_app.main_window import MainWindow
app = get_app()
w = MainWindow()
w.show()
app.processEvents()
shown = {"welcome": w.central.currentIndex() == 0, "built": sorted(w.pages.built())}
w.session.shutdown()
print(json.dumps({"modules": sorted(sys.modules), **shown}))
"""


def test_the_empty_window_shows_without_torch_or_any_page(tmp_path: Path) -> None:
    """Issue 13: the window (welcome screen, navigator, menus) is on screen in a blink, so it
    imports neither torch nor pyqtgraph and builds no page until one is shown. Runs in a fresh
    interpreter: modules other tests imported cannot hide an import."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {
        "PYTHONPATH": str(repo),
        "PATH": "/usr/bin:/bin",
        "QT_QPA_PLATFORM": "offscreen",
        "HOME": str(tmp_path),  # no recent projects, no stored layout
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", _EMPTY_WINDOW],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["welcome"] and result["built"] == []
    heavy = {"torch", "torchvision", "timm", "sklearn", "scipy", "pyqtgraph"}
    assert not heavy & set(result["modules"])


def test_pages_are_built_when_first_shown(window, tmp_path: Path) -> None:
    window.session.new(tmp_path / "p.alignet")
    assert set(window.pages.built()) == {"project"}  # the page on show once a project opens
    window.show_page("clusters")
    assert set(window.pages.built()) == {"project", "clusters"}
    assert window.current_page() is window.page("clusters")
    assert window.page("evaluate").title == "Evaluation"  # asked for: built now
    assert list(window.pages) == [
        "project",
        "data",
        "features",
        "alignment",
        "clusters",
        "triplets",
        "distill",
        "evaluate",
        "export",
        "experiment",
    ]
