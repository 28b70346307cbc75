"""Colours of the GUI: one colour-blind-safe palette and plot colours that follow light / dark.

Every plot and every hand-coloured label takes its colours from here, so a dark window
palette (the system's, or Preferences ▸ Theme) gives dark plots and readable highlights.
Series colours are Okabe & Ito's eight (Okabe & Ito 2008, "Color Universal Design"), which
stay distinct for the common colour-vision deficiencies; on a dark background the black entry
is swapped for light grey. The colours themselves live in ``resources/style/theme.toml``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QWidget

from alignet_resources import read_toml

if TYPE_CHECKING:  # pyqtgraph takes ~1 s to import: the empty window must not wait for it
    import pyqtgraph as pg

#: everything in resources/style/theme.toml (named colours of particular views included)
STYLE = read_toml("style/theme.toml")
#: Okabe–Ito, ordered so the first few are the most distinct (blue, orange, green, …)
OKABE_ITO: tuple[str, ...] = tuple(STYLE["series"])
_BLACK_ON_DARK: str = STYLE["series_on_dark_black"]


@dataclass(frozen=True)
class PlotColours:
    """background, foreground (text, axes), grid, muted (reference lines), legend brush."""

    dark: bool
    background: str
    foreground: str
    axis: str
    muted: str
    legend_brush: tuple[int, int, int, int]
    disagree_bg: str
    stale: str
    stale_bg: str
    panel: str
    error: str

    def series(self, i: int) -> str:
        """The ``i``-th series colour (cycles; black becomes light grey on dark)."""
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        if self.dark and colour == "#000000":
            return _BLACK_ON_DARK
        return colour


def _plot_colours(name: str) -> PlotColours:
    fields = dict(STYLE["plot"][name])
    fields["legend_brush"] = tuple(fields["legend_brush"])
    return PlotColours(dark=name == "dark", **fields)


LIGHT = _plot_colours("light")
DARK = _plot_colours("dark")


def is_dark(palette: QPalette | None = None) -> bool:
    """True when the window background is darker than its text (the palette is dark)."""
    if palette is None:
        app = QApplication.instance()
        if app is None:
            return False
        palette = app.palette()  # type: ignore[attr-defined]
    window = palette.color(QPalette.ColorRole.Window)
    text = palette.color(QPalette.ColorRole.WindowText)
    return window.lightnessF() < text.lightnessF()


def colours() -> PlotColours:
    """The colours for the application's current palette."""
    return DARK if is_dark() else LIGHT


def readable(colour: str) -> str:
    """``colour`` as text on the current background: lightened on a dark palette (the
    Okabe–Ito blue #0072B2 is unreadable on dark grey)."""
    if not is_dark():
        return colour
    return QColor(colour).lighter(170).name()


def dark_palette() -> QPalette:
    """A dark Fusion palette (Preferences ▸ Theme ▸ dark, and the dark screenshots)."""
    p = QPalette()
    roles = QPalette.ColorRole
    for role, colour in STYLE["window"]["dark"].items():
        p.setColor(getattr(roles, role), QColor(colour))
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        p.setColor(
            QPalette.ColorGroup.Disabled, role, QColor(STYLE["window"]["dark_disabled"]["text"])
        )
    return p


def apply_theme(name: str) -> None:
    """Set the application palette: ``"light"``, ``"dark"`` or ``"system"`` (Qt's default)."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return
    if name == "dark":
        app.setStyle("Fusion")
        app.setPalette(dark_palette())
    elif name == "light":
        app.setStyle("Fusion")
        app.setPalette(app.style().standardPalette())
    else:
        app.setPalette(QPalette())


def restyle(root: QWidget) -> None:
    """Re-colour every plot under ``root`` after a theme change (widgets that know more,
    like the live curves, re-colour themselves through their ``apply_theme``)."""
    c = colours()
    pg = sys.modules.get("pyqtgraph")  # not imported yet: no plot exists to re-colour
    for widget in (root, *root.findChildren(QWidget)):
        method = getattr(widget, "apply_theme", None)
        if callable(method):
            method()
        elif pg is not None and isinstance(widget, pg.PlotWidget):
            style_canvas(widget, c)


def style_plot(plot: pg.PlotItem, c: PlotColours | None = None) -> PlotColours:
    """Give ``plot`` the theme's axis and title colours; returns the colours used."""
    c = c or colours()
    for axis in ("left", "bottom", "right", "top"):
        ax = plot.getAxis(axis)
        ax.setPen(c.axis)
        ax.setTextPen(c.foreground)
    title = plot.titleLabel
    if title is not None and title.text:
        title.setText(title.text, color=c.foreground)
    return c


def style_canvas(widget: pg.GraphicsView | pg.PlotWidget, c: PlotColours | None = None) -> None:
    """Set a pyqtgraph canvas's background (and its plot's axes) from the theme."""
    c = c or colours()
    widget.setBackground(c.background)
    import pyqtgraph as pg  # loaded already: ``widget`` is one of its canvases

    if isinstance(widget, pg.PlotWidget):
        style_plot(widget.getPlotItem(), c)
