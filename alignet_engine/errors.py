"""Errors a user can cause, with a message that says where and how to fix it."""

from __future__ import annotations

import os


class AlignetError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(AlignetError, ValueError):
    """Bad input data: names the file, the row (1-based, as an editor shows it) and the field.

    Parameters
    ----------
    message : what is wrong and, where possible, what would fix it.
    source : the file (or a description of the in-memory source).
    row : 1-based row or line number in ``source``, if one applies.
    field : column, key or array name, if one applies.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | os.PathLike[str] | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source = str(source) if source is not None else None
        self.row = row
        self.field = field
        self.reason = message
        where = []
        if self.source:
            where.append(self.source)
        if row is not None:
            where.append(f"row {row}")
        if field:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class ProjectError(AlignetError):
    """The project file cannot be used as asked (locked, newer schema, missing run...)."""


class ProjectLockedError(ProjectError):
    """Another process holds the project's write lock."""


class ModelUnavailableError(AlignetError):
    """Model weights are not available offline; the message says where to put them."""
