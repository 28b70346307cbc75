"""Preferences kept in QSettings: device, CPU threads, default folders, recent projects."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings

MAX_RECENT = 8


def _default_threads() -> int:
    # Leave one core to the event loop so the window stays responsive during CPU training.
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class Preferences:
    device: str = "auto"
    cpu_threads: int = 0  # 0 = all cores but one
    data_folder: str = ""
    project_folder: str = ""
    theme: str = "system"  # "system", "light" or "dark" (alignet_app.widgets.theme)

    @property
    def effective_threads(self) -> int:
        return self.cpu_threads if self.cpu_threads > 0 else _default_threads()


def settings() -> QSettings:
    # An explicit INI format, so QSettings.setPath (used by the tests) can redirect it; the
    # (organisation, application) constructor alone uses the native format, which it cannot.
    return QSettings(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, "AligNet Studio", "AligNet Studio"
    )


def load_preferences() -> Preferences:
    s = settings()
    return Preferences(
        device=str(s.value("device", "auto")),
        cpu_threads=int(s.value("cpu_threads", 0)),  # type: ignore[call-overload]
        data_folder=str(s.value("data_folder", "")),
        project_folder=str(s.value("project_folder", "")),
        theme=str(s.value("theme", "system")),
    )


def save_preferences(prefs: Preferences) -> None:
    s = settings()
    s.setValue("device", prefs.device)
    s.setValue("cpu_threads", prefs.cpu_threads)
    s.setValue("data_folder", prefs.data_folder)
    s.setValue("project_folder", prefs.project_folder)
    s.setValue("theme", prefs.theme)


def recent_projects() -> list[str]:
    value = settings().value("recent", [])
    items = [value] if isinstance(value, str) else list(value or [])  # type: ignore[arg-type]
    return [p for p in items if Path(p).is_file()]


def add_recent(path: str | os.PathLike[str]) -> None:
    path = str(Path(path).resolve())
    items = [path, *[p for p in recent_projects() if p != path]][:MAX_RECENT]
    settings().setValue("recent", items)
