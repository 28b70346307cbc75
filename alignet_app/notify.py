"""Message boxes that never block tests or smoke runs.

With ``ALIGNET_NO_DIALOGS`` set (tests, ``--quit-after`` smoke runs) a modal box would wait
for a click that never comes, so the text goes to the log instead.
"""

from __future__ import annotations

import logging
import os

from PySide6.QtWidgets import QMessageBox, QWidget

log = logging.getLogger("alignet_app")


def dialogs_enabled() -> bool:
    return not os.environ.get("ALIGNET_NO_DIALOGS")


def inform(parent: QWidget | None, title: str, text: str) -> None:
    log.info("%s: %s", title, text)
    if dialogs_enabled():
        QMessageBox.information(parent, title, text)


def warn(parent: QWidget | None, title: str, text: str) -> None:
    log.warning("%s: %s", title, text)
    if dialogs_enabled():
        QMessageBox.warning(parent, title, text)
