"""Derive odd-one-out judgments from a stored similarity-matrix set (the Data page's action).

The form is a :class:`ConfigForm` over the engine's ``MatrixTripletsConfig``; the work is the
engine job ``stages.matrix_triplets.derive_triplets``, the same one ``alignet-cli
matrix-triplets`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from alignet_app.pages.base import error_label
from alignet_app.widgets.config_form import ConfigForm
from alignet_engine.config import MatrixTripletsConfig
from alignet_engine.errors import AlignetError

if TYPE_CHECKING:
    from alignet_app.pages.base import Page


class MatrixTripletsDialog(QDialog):
    """Choose a matrix set and a split; :meth:`derive` runs the job on ``page``."""

    def __init__(self, page: Page, matrices: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent or page)
        self.page = page
        self.setWindowTitle("Triplets from a similarity matrix")
        self.form = ConfigForm(MatrixTripletsConfig, choices={"matrix": list(matrices)})
        self.form.set_choices("matrix", list(matrices), strict=True)
        self.error = error_label()
        intro = QLabel(
            "Each subject's matrix answers every sampled triplet (the item outside the most "
            "similar pair is the odd one out); together they give a choice distribution for "
            "the soft objective. Derive the fit side to fit a transform and evaluate RSA on "
            "the test side's items."
        )
        intro.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.derive_button = buttons.addButton("Derive", QDialogButtonBox.ButtonRole.AcceptRole)
        self.derive_button.setObjectName("derive")
        buttons.accepted.connect(self.derive)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def derive(self) -> bool:
        """Start the job (the dialog closes); False with the reason shown if it cannot."""
        self.error.hide()
        try:
            config = self.form.config()
        except (ValueError, AlignetError) as exc:
            self.error.setText(str(exc))
            self.error.show()
            return False

        def make_job(project, control):  # type: ignore[no-untyped-def]
            from alignet_engine.stages.matrix_triplets import derive_triplets

            return derive_triplets(project, config, control)

        if not self.page.run_job(f"judgments '{config.name}' from matrix", make_job):
            return False
        self.accept()
        return True
