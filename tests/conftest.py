"""Shared fixtures: where the real human data lies (``../shared/data``, never copied here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ALIGNET_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reads ``../shared/data`` (through the fixture) is marked ``realdata``."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)


@pytest.fixture
def caltech_stimuli(shared_data: Path, tmp_path: Path) -> Path:
    """Six real photos in two categories (chair, dolphin), copied from the shared data to tmp."""
    import shutil

    root = tmp_path / "stimuli"
    for category in ("chair", "dolphin"):
        (root / category).mkdir(parents=True)
        for src in sorted((shared_data / "caltech101_mini" / category).glob("*.jpg"))[:3]:
            shutil.copy(src, root / category / src.name)
    return root


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``alignet-cli ARGS --json --quiet`` in-process; return its JSON object (exit 0)."""
    import json

    from alignet_engine.cli import main

    def run(*args: str) -> dict:
        code = main([*args, "--json", "--quiet"])
        out = capsys.readouterr().out.strip().splitlines()
        assert code == 0, out
        return json.loads(out[-1])

    return run
