"""The notebook-facing API: ``from alignet_engine import …`` works and costs nothing until used."""

from __future__ import annotations

import subprocess
import sys

import alignet_engine


def test_every_public_name_resolves_to_its_definition() -> None:
    for name in alignet_engine.__all__:
        value = getattr(alignet_engine, name)
        if name != "__version__":
            assert getattr(value, "__name__", name) == name, name
    assert set(alignet_engine.__all__) <= set(dir(alignet_engine))


def test_unknown_names_raise_attribute_error() -> None:
    try:
        alignet_engine.NotAThing  # noqa: B018
    except AttributeError as exc:
        assert "NotAThing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, alignet_engine; "
        "assert alignet_engine.__version__; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_runs_the_command_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "alignet_engine", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert alignet_engine.__version__ in out.stdout + out.stderr
