"""packaging/: the PyInstaller spec, the desktop entry and the icon are consistent and present."""

from __future__ import annotations

import ast
import configparser
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_spec_is_python_and_names_files_that_exist() -> None:
    spec = (ROOT / "packaging" / "alignet-studio.spec").read_text()
    ast.parse(spec)  # PyInstaller executes the spec as Python
    for rel in (
        "alignet_app/__main__.py",
        "alignet_engine/cli.py",
        "resources/icons/alignet-studio-256.png",
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


def test_resources_install_as_a_package_with_the_icon_style_and_demo_recipe() -> None:
    from alignet_resources import read_toml, resource

    svg = resource("icons/alignet-studio.svg").read_text()
    assert svg == (ROOT / "resources" / "icons" / "alignet-studio.svg").read_text()
    assert svg.lstrip().startswith("<svg")
    png = resource("icons/alignet-studio-256.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_toml("style/theme.toml")["series"]) == 8
    assert read_toml("demo/recipe.toml")["models"]["teacher"] == "efficientnet_lite2"
    with pytest.raises(FileNotFoundError, match=r"icons/missing\.svg"):
        resource("icons/missing.svg")


def test_every_package_folder_is_listed_for_setuptools() -> None:
    """pyproject lists the packages (find cannot map resources/ to alignet_resources): a new
    sub-package that is not listed would be missing from wheels."""
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("alignet_engine", "alignet_app")
        for init in (ROOT / top).rglob("__init__.py")
    }
    resource_folders = {
        ".".join(("alignet_resources", *d.relative_to(ROOT / "resources").parts))
        for d in (ROOT / "resources").rglob("*")
        if d.is_dir() and d.name != "__pycache__"
    }
    # Each data folder is listed too: setuptools warns (and may one day drop) a folder that
    # Python can import as a namespace package but `packages` does not name.
    assert on_disk | {"alignet_resources"} | resource_folders == listed
    assert setuptools["package-dir"] == {"alignet_resources": "resources"}
    data = setuptools["package-data"]
    for path in (ROOT / "resources").rglob("*"):
        if path.suffix in (".svg", ".png", ".toml"):
            parts = path.parent.relative_to(ROOT / "resources").parts
            folder = ".".join(("alignet_resources", *parts))
            assert any(path.match(pattern) for pattern in data.get(folder, [])), path


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _constraints() -> dict[str, str]:
    """``{canonical name: exact version}`` of constraints.txt."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one, and it is ==
        assert spec.operator == "==", line
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_engine_declares_ranges_and_constraints_pin_every_dependency_within_them() -> None:
    """pyproject.toml holds ranges (so the engine installs beside other research code), the
    exact tested versions live in constraints.txt, and each pin satisfies its range."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = _pyproject()["project"]
    pins = _constraints()
    requirements = [Requirement(r) for r in project["dependencies"]]
    for reqs in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in reqs]
    for req in project["dependencies"]:
        assert "==" not in req, f"{req}: the engine's dependencies are ranges"
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    assert set(pins) == {canonicalize_name(r.name) for r in requirements}, "stale pins"


def test_python_and_build_requirements() -> None:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    data = _pyproject()
    python = SpecifierSet(data["project"]["requires-python"])
    assert "3.11" in python and "3.12" in python and "3.13" in python  # no needless cap
    assert data["project"]["license"] == "Apache-2.0"  # an SPDX string (PEP 639)
    (setuptools,) = [Requirement(r) for r in data["build-system"]["requires"]]
    # setuptools reads the license string from 77 on: no older one may be chosen
    assert not setuptools.specifier.contains("76.1")
    assert setuptools.specifier.contains("77.0")


def test_run_installs_with_the_constraints_and_reinstalls_when_they_change() -> None:
    run = (ROOT / "run").read_text()
    assert '-c constraints.txt -e ".[gui,test,export]"' in run
    # the install stamp covers both files
    assert "cat pyproject.toml constraints.txt" in run
