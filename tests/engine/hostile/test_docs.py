"""Issue 13 item 11: wherever a ``module:factory`` model spec is offered, the text says it runs
Python code from MODULE (the README, ``alignet-cli models``)."""

from __future__ import annotations

import re
from pathlib import Path

from alignet_engine.models.catalog import describe_models, format_models

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_says_module_specs_run_code() -> None:
    lines = [
        ln for ln in README.read_text().splitlines() if re.search(r"module(\.path)?:factory", ln)
    ]
    assert lines and all("runs Python code from MODULE" in ln for ln in lines)


def test_models_listing_says_module_specs_run_code() -> None:
    text = " ".join(format_models(describe_models()).split())
    assert "module.path:factory" in text
    assert "runs Python code from MODULE" in text
