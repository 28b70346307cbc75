"""App tests: offscreen Qt, no modal dialogs, QSettings kept out of the user's config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["ALIGNET_NO_DIALOGS"] = "1"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Point QSettings at a fresh folder so tests never read or write the user's settings."""
    from PySide6.QtCore import QSettings

    folder = tmp_path_factory.mktemp("settings")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder))


@pytest.fixture
def window(qtbot):
    """The main window with no project; its engine thread is stopped at the end."""
    from alignet_app.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    w.session.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the demo project (directly or through ``copy_demo``) is marked
    ``slow``: the first one pays for running the whole demo pipeline."""
    for item in items:
        if "demo_project" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick demo's project (the whole pipeline, run once per test session), as a template.

    Tests that write must copy it (``copy_demo``); it takes about 40 s on a 2-core CPU.
    """
    from alignet_engine.demo.pipeline import DemoSettings, run_demo
    from alignet_engine.jobs import run_job

    out = tmp_path_factory.mktemp("demo")
    run_job(run_demo(out, DemoSettings(quick=True)))
    return out / "demo.alignet"


@pytest.fixture
def copy_demo(demo_project: Path, tmp_path: Path) -> Path:
    """A private copy of the demo project (with its side files) for a test that writes."""
    import shutil

    target = tmp_path / "demo"
    shutil.copytree(demo_project.parent, target, ignore=shutil.ignore_patterns("*.lock"))
    return target / "demo.alignet"


def save_screenshot(widget, name: str) -> Path:
    """Save ``widget.grab()`` as ``screenshots/<name>.png`` under the repo's build folder."""
    folder = Path(__file__).resolve().parents[2] / "build" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert widget.grab().save(str(path)), f"could not save {path}"
    return path
