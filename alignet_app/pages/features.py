"""The Models & features page (placeholder until it is built)."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from alignet_app.pages.base import Page
from alignet_app.session import Session


class FeaturesPage(Page):
    key = "features"
    title = "Models & features"
    stage = "features"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        QVBoxLayout(self).addWidget(QLabel("Models & features: not built yet."))
