"""The engine never imports Qt, pyqtgraph or the GUI package (design.md: engine and GUI apart)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import alignet_engine

FORBIDDEN = ("PySide6", "pyqtgraph", "alignet_app", "PyQt5", "PyQt6", "shiboken6")
ENGINE = Path(alignet_engine.__file__).parent


def test_no_engine_module_imports_qt_statically() -> None:
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN
            ]
    assert offenders == []


def test_importing_the_whole_engine_loads_no_qt() -> None:
    """Import every engine module in a fresh interpreter; no Qt module may get loaded."""
    modules = sorted(
        "alignet_engine." + ".".join(p.relative_to(ENGINE).with_suffix("").parts)
        for p in ENGINE.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
