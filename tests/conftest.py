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
