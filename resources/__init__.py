"""AligNet Studio's own resources: the icon, the GUI's colours and the embedded demo's recipe.

Data only, and all of it this project's own work (Apache-2.0): no third-party data lives
here. The folder is the repository's top-level ``resources/`` and installs as the package
``alignet_resources`` (``pyproject.toml`` maps the name onto the folder), so the engine, the
GUI and a PyInstaller build read it the same way, from a source checkout or a wheel::

    icons/alignet-studio.svg, icons/alignet-studio-256.png   the application icon
    style/theme.toml                                         GUI and plot colours
    demo/recipe.toml                                         sizes and settings of the demo

Nothing here imports the engine or Qt, so any layer may read a resource.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any


def resource(name: str) -> Traversable:
    """The resource ``name``, a ``/``-separated path below ``resources/`` (e.g.
    ``"icons/alignet-studio.svg"``); :class:`FileNotFoundError` naming it when absent."""
    item = files(__name__).joinpath(*name.split("/"))
    if not item.is_file():
        raise FileNotFoundError(
            f"AligNet Studio resource '{name}' is missing from {files(__name__)}"
        )
    return item


@cache
def read_toml(name: str) -> dict[str, Any]:
    """The TOML resource ``name`` parsed (cached: resources do not change while running).

    Callers must not mutate the returned dict; it is shared.
    """
    return tomllib.loads(resource(name).read_text(encoding="utf-8"))
