"""packaging/: the PyInstaller spec, the desktop entry and the icon are consistent and present."""

from __future__ import annotations

import ast
import configparser
import importlib.resources
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_spec_is_python_and_names_files_that_exist() -> None:
    spec = (ROOT / "packaging" / "alignet-studio.spec").read_text()
    ast.parse(spec)  # PyInstaller executes the spec as Python
    for rel in (
        "alignet_app/__main__.py",
        "alignet_engine/cli.py",
        "alignet_app/resources/alignet-studio-256.png",
    ):
        parts = rel.split("/")
        assert " / ".join(f'"{p}"' for p in parts) in spec, rel
        assert (ROOT / rel).is_file(), rel


def test_desktop_entry_starts_the_installed_gui_with_its_icon() -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    entry.read(ROOT / "packaging" / "alignet-studio.desktop")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application"
    assert section["Exec"].split()[0] == "alignet"
    assert section["Icon"] == "alignet-studio"
    assert section["Categories"].endswith(";")
    # the file type the entry claims is declared by the shared-mime-info file beside it
    mime = ET.parse(ROOT / "packaging" / "alignet-studio-mime.xml").getroot()
    ns = {"m": "http://www.freedesktop.org/standards/shared-mime-info"}
    declared = mime.find("m:mime-type", ns)
    assert declared is not None
    assert section["MimeType"].rstrip(";") == declared.get("type")
    assert declared.find("m:glob", ns).get("pattern") == "*.alignet"


def test_repository_carries_licence_and_citation() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    citation = (ROOT / "CITATION.cff").read_text()
    assert "10.1038/s41586-025-09631-6" in citation  # the AligNet paper
    assert "cff-version:" in citation


def test_icon_ships_inside_the_app_package() -> None:
    resources = importlib.resources.files("alignet_app") / "resources"
    svg = (resources / "alignet-studio.svg").read_text()
    assert svg.lstrip().startswith("<svg")
    assert (resources / "alignet-studio-256.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
