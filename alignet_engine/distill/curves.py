"""The curves of a distillation run, held as compact growing numpy columns.

A 100k-step run has ~8 per-step curves: as Python lists of floats they cost ~25 MB and every
checkpoint converted them element by element; as float64 columns they cost 6.4 MB, appending
a row is amortised O(1) (the capacity doubles) and a checkpoint copies them in one memcpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

#: rows a new :class:`Curves` has room for before it first grows
_INITIAL_CAPACITY = 1024


class Curves:
    """Columns of equal length: ``key`` int64 (the step) and float64 ``names``.

    Parameters
    ----------
    key : the int64 column (``"step"`` or ``"val_step"``).
    names : the float64 columns.
    """

    def __init__(self, key: str, names: Iterable[str]) -> None:
        self.key = key
        self.names = tuple(names)
        self.columns = (key, *self.names)
        self._n = 0
        self._data: dict[str, np.ndarray] = {
            name: np.empty(_INITIAL_CAPACITY, dtype=np.int64 if name == key else np.float64)
            for name in self.columns
        }

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> np.ndarray:
        """Column ``name``, (len,) — a view, valid until the next :meth:`append`."""
        return self._data[name][: self._n]

    def last(self) -> int | None:
        """The key of the last row (None when empty)."""
        return int(self._data[self.key][self._n - 1]) if self._n else None

    def append(self, values: Mapping[str, float]) -> None:
        """Add one row: ``values`` holds every column."""
        if self._n == len(self._data[self.key]):
            for name, column in self._data.items():
                grown = np.empty(2 * len(column), dtype=column.dtype)
                grown[: self._n] = column[: self._n]
                self._data[name] = grown
        for name in self.columns:
            self._data[name][self._n] = values[name]
        self._n += 1

    def load(self, saved: Mapping[str, np.ndarray]) -> None:
        """Replace the rows with ``saved``'s columns (a checkpoint's history).

        A column ``saved`` lacks (a validator new to a resumed run) is NaN at the saved rows.
        """
        n = len(saved[self.key]) if self.key in saved else 0
        self._n = 0
        self._data = {
            name: np.empty(max(_INITIAL_CAPACITY, 2 * n), dtype=column.dtype)
            for name, column in self._data.items()
        }
        for name in self.columns:
            column = np.asarray(saved.get(name, ()))[:n]
            missing = n - len(column)
            if missing:  # never the int key column: it defines n
                self._data[name][:missing] = np.nan
            self._data[name][missing:n] = column
        self._n = n

    def arrays(self, begin: int = 0) -> dict[str, np.ndarray]:
        """Copies of the columns from row ``begin`` on."""
        return {name: self._data[name][begin : self._n].copy() for name in self.columns}
