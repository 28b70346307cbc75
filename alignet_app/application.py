"""The only place the QApplication is created."""

from __future__ import annotations

import logging
import os
import sys
import traceback

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from alignet_app.main_window import MainWindow
from alignet_app.settings import load_preferences
from alignet_app.widgets.theme import apply_theme
from alignet_resources import resource

log = logging.getLogger(__name__)


def get_app() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("AligNet Studio")
        app.setOrganizationName("AligNet Studio")
        app.setDesktopFileName("alignet-studio")  # matches packaging/alignet-studio.desktop
        app.setWindowIcon(QIcon(str(resource("icons/alignet-studio.svg"))))
    assert isinstance(app, QApplication)
    return app


def _excepthook(exc_type, exc, tb) -> None:
    """Log an unhandled error and show it, instead of killing the app."""
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    log.error("Unhandled error:\n%s", text)
    if QApplication.instance() is not None and not os.environ.get("ALIGNET_NO_DIALOGS"):
        QMessageBox.critical(None, "AligNet Studio", f"{exc_type.__name__}: {exc}")


def run(project: str | None = None, *, quit_after: float | None = None) -> int:
    app = get_app()
    sys.excepthook = _excepthook
    preferred = load_preferences().theme
    if preferred != "system":
        apply_theme(preferred)
    window = MainWindow()
    if project:
        if window.open_project(project):
            log.info("opened %s", window.session.path)
        else:
            log.error("could not open %s", project)
    window.show()
    quit_after = quit_after if quit_after is not None else _env_float("ALIGNET_TEST_QUIT_AFTER")
    if quit_after is not None:
        QTimer.singleShot(int(quit_after * 1000), window.close)
    return int(app.exec())


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None
