"""The command line starts without importing the heavy libraries (issue 13 item 12).

``alignet-cli --version`` used to take 6–8 s and 1.15 GB because every command imported
torch, timm and scikit-learn. Each check runs in a fresh interpreter, so modules imported by
other tests cannot hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "safetensors", "PIL")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import alignet_engine.cli as c; c.build_parser()",
        "import alignet_engine.store",
        "import alignet_engine.config",
        # the GUI's session and navigator read these before any page needs torch
        "import alignet_engine.base.devices, alignet_engine.views.status",
    ],
)
def test_light_modules_import_no_heavy_library(code: str) -> None:
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_version_and_help_parse_without_heavy_libraries() -> None:
    for argv in (["--version"], ["--help"], ["evaluate", "--help"]):
        code = (
            "import alignet_engine.cli as c\n"
            f"try:\n    c.main({argv!r})\nexcept SystemExit:\n    pass"
        )
        loaded = _modules_after(code)
        assert not [m for m in HEAVY if m in loaded], argv


def test_info_reads_a_project_without_torch(tmp_path: Path) -> None:
    project = tmp_path / "p.alignet"
    code = (
        "import alignet_engine.cli as c\n"
        f"assert c.main(['new', {str(project)!r}]) == 0\n"
        f"assert c.main(['info', {str(project)!r}, '--json']) == 0"
    )
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_help_shows_defaults_and_a_plain_percent(capsys: pytest.CaptureFixture[str]) -> None:
    from alignet_engine.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "95% CI" in text and "%%" not in text
    assert "default: 1000" in text  # --n-boot
    with pytest.raises(SystemExit):
        parser.parse_args(["fit-transform", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "slot transform:NAME); 'teacher' is what clustering" in text  # the field's help
    assert "(default: teacher)" in text
