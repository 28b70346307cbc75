"""Dialogs of the main window (import, ...)."""

from alignet_app.dialogs.import_dialog import ImportDialog

__all__ = ["ImportDialog"]
