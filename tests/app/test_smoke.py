"""The installed ``alignet`` entry point starts on a project and quits by itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet
from alignet_engine.store import Project


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    path = tmp_path / "p.alignet"
    with Project.create(path) as p:
        p.write_imageset("s", ImageSet(("/a.png", "/b.png"), ("x", "y")), {})
        rid = p.begin_job("features", {})
        p.write_run(
            "features",
            rid,
            slot="features:s:m",
            params={},
            arrays={"X": np.eye(2)},
            summary={"n": 2},
        )
    return path


def test_main_window_lists_runs(window, small_project: Path) -> None:
    assert window.open_project(str(small_project))
    page = window.page("project")
    tree = page.runs.tree
    features = tree.topLevelItem(0)
    assert features.text(0) == "features (1 run)"
    slot = features.child(0)
    assert slot.text(0) == "features:s:m" and slot.child(0).text(1) == "current"
    assert "s (2 images)" in page.heading.text()
    assert page.stage_boxes["features"].property("state") == "done"
    assert page.stage_boxes["transform"].property("state") == "not run"
    # the navigator shows the features stage as done, the transform as not run
    nav = {window.navigator.item(i).toolTip() for i in range(window.navigator.count())}
    assert "Models & features: done — 1 current run(s)" in nav
    assert "Alignment: not run — no run yet" in nav


def test_entry_point_starts_on_the_demo_project_and_quits(demo_project: Path) -> None:
    """The installed ``alignet`` opens the demo's project (every stage run) and exits 0."""
    exe = shutil.which("alignet", path=str(Path(sys.executable).parent))
    assert exe is not None, "the alignet entry point is not installed (pip install -e .)"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(
        [exe, str(demo_project), "--quit-after", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"opened {demo_project.resolve()}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_gui_entry_point_answers_version_without_opening_a_window() -> None:
    from alignet_engine import __version__

    exe = shutil.which("alignet", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"AligNet Studio {__version__}"
