"""In-memory data types every stage shares.

Item ids are 0-based row indices into an *image set* (the order of its ``paths``).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import numpy as np

JudgmentKind = Literal["oddone", "twoafc"]
#: how a human matrix reads: larger = more similar, or larger = more different
MatrixKind = Literal["similarity", "dissimilarity"]


class _Column(Sequence[str]):
    """A read-only, lazily decoded column of n strings (one per item).

    Indexing one item decodes one string; nothing per item is built until asked for, so a
    1.28 M-image pool costs its compact arrays only. Compares equal to any sequence of the
    same strings (a tuple, a list or another column).
    """

    __hash__ = None  # type: ignore[assignment]  # equality is by value, as a tuple's

    def _get(self, i: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...
    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        n = len(self)
        if isinstance(i, slice):
            return tuple(self._get(j) for j in range(*i.indices(n)))
        j = operator.index(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"item {i} out of range for {n} items")
        return self._get(j)

    def __iter__(self) -> Iterator[str]:
        return (self._get(j) for j in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        head = ", ".join(repr(self._get(j)) for j in range(min(3, len(self))))
        return f"<{type(self).__name__} of {len(self)}: {head}{', …' if len(self) > 3 else ''}>"


class PathColumn(_Column):
    """Item paths: ``root`` joined with each UTF-8 relative path of a byte blob.

    ``blob[offsets[i]:offsets[i + 1]]`` is item i's relative path; an empty one means the item
    has no file (a pool imported as features only) and reads as ``""``.
    """

    def __init__(self, root: str, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.root, self.blob, self.offsets = root, blob, offsets

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def _get(self, i: int) -> str:
        rel = self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")
        return self.root + rel if rel else ""  # concatenation: exactly the imported string


class CategoryColumn(_Column):
    """Item categories: ``names[codes[i]]``."""

    def __init__(self, codes: np.ndarray, names: tuple[str, ...]) -> None:
        self.codes, self.names = codes, names

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def _get(self, i: int) -> str:
        return self.names[int(self.codes[i])]


def _common_root(paths: Sequence[str]) -> str:
    """The longest directory that is a prefix of every non-empty path ("" if none)."""
    full = [p for p in paths if p]
    if not full:
        return ""
    # the common prefix of the smallest and the largest string is that of all strings
    # (a string prefix, not os.path.commonpath: the root must be a prefix of the exact string)
    a, b = min(full), max(full)
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    prefix = a[:i]
    cut = max(prefix.rfind(os.sep), prefix.rfind("/") if os.sep != "/" else -1)
    return prefix[: cut + 1] if cut >= 0 else ""


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class ImageSet:
    """An ordered list of stimulus images, stored compactly.

    A million-image pool is held as four arrays, never as a million Python strings:

    root : str, a common folder of the paths ("" when none; ends with a separator).
    path_bytes : (b,) uint8, the UTF-8 relative paths concatenated.
    path_offsets : (n + 1,) int64, item i's relative path is
        ``path_bytes[path_offsets[i]:path_offsets[i + 1]]`` (empty = the item has no file).
    category_codes : (n,) int32 index into ``category_names``.
    category_names : (c,) sorted distinct category labels ("" when an item has none).

    ``paths`` and ``categories`` are lazy (n,) sequences of str (absolute paths; category per
    image), decoded one item at a time; ``ImageSet(paths, categories)`` builds the compact form
    from two sequences of str.
    """

    __slots__ = ("category_codes", "category_names", "path_bytes", "path_offsets", "root")
    # the slots' types, for type checkers (set once, in _set)
    root: str
    path_bytes: np.ndarray
    path_offsets: np.ndarray
    category_codes: np.ndarray
    category_names: tuple[str, ...]

    def __init__(self, paths: Sequence[str], categories: Sequence[str]) -> None:
        if len(paths) != len(categories):
            raise ValueError("paths and categories must have the same length")
        root = _common_root(paths)
        rel = [p[len(root) :] if p else "" for p in paths]
        names = tuple(sorted(set(categories)))
        index = {c: i for i, c in enumerate(names)}
        codes = np.fromiter((index[c] for c in categories), dtype=np.int32, count=len(rel))
        self._set(root, *encode_paths(rel), codes, names)

    @classmethod
    def from_arrays(
        cls,
        root: str,
        path_bytes: np.ndarray,
        path_offsets: np.ndarray,
        category_codes: np.ndarray,
        category_names: Sequence[str] | np.ndarray,
    ) -> ImageSet:
        """An image set from its compact arrays (see the class docstring); checks them."""
        offsets = np.asarray(path_offsets, dtype=np.int64)
        codes = np.asarray(category_codes, dtype=np.int32)
        blob = np.asarray(path_bytes, dtype=np.uint8)
        names = tuple(str(c) for c in category_names)
        n = codes.shape[0]
        if offsets.shape != (n + 1,) or (n and (offsets[0] != 0 or offsets[-1] != blob.size)):
            raise ValueError("path_offsets must be (n + 1,) from 0 to len(path_bytes)")
        if n and (np.any(np.diff(offsets) < 0) or codes.min() < 0 or codes.max() >= len(names)):
            raise ValueError("path_offsets must not decrease; codes must index category_names")
        self = cls.__new__(cls)
        self._set(root, blob, offsets, codes, names)
        return self

    def _set(
        self,
        root: str,
        blob: np.ndarray,
        offsets: np.ndarray,
        codes: np.ndarray,
        names: tuple[str, ...],
    ) -> None:
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "path_bytes", _readonly(blob))
        object.__setattr__(self, "path_offsets", _readonly(offsets))
        object.__setattr__(self, "category_codes", _readonly(codes))
        object.__setattr__(self, "category_names", names)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ImageSet is immutable")

    def __reduce__(self) -> tuple:
        arrays = (self.path_bytes, self.path_offsets, self.category_codes, self.category_names)
        return (ImageSet.from_arrays, (self.root, *arrays))

    def __len__(self) -> int:
        return int(self.category_codes.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageSet):
            return NotImplemented
        return self.paths == other.paths and self.categories == other.categories

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ImageSet(n={len(self)}, root={self.root!r}, categories={len(self.category_names)})"

    @property
    def paths(self) -> PathColumn:
        """(n,) absolute paths, decoded lazily; ``""`` for an item without a file."""
        return PathColumn(self.root, self.path_bytes, self.path_offsets)

    @property
    def categories(self) -> CategoryColumn:
        """(n,) category per image ("" when the set has none), decoded lazily."""
        return CategoryColumn(self.category_codes, self.category_names)

    def path(self, i: int) -> str:
        """The absolute path of item ``i``."""
        return self.paths[i]

    def category_array(self) -> np.ndarray:
        """(n,) str (unicode) category per item, vectorised (no per-item Python object)."""
        return np.asarray(self.category_names, dtype=str)[self.category_codes]


def encode_paths(rel: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(path_bytes (b,) uint8, path_offsets (n + 1,) int64)`` of n relative paths."""
    encoded = [r.encode("utf-8") for r in rel]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return blob, offsets


@dataclass(frozen=True)
class Judgments:
    """Human (or simulated) triplet judgments over one image set.

    kind : ``"oddone"`` — ``triplets[t] = (i, j, odd)``: the odd one out is LAST, the pair
        (i, j) was judged most similar. ``"twoafc"`` — ``triplets[t] = (anchor, chosen, other)``:
        ``chosen`` was judged more similar to ``anchor`` than ``other``.
    triplets : (t, 3) int64, item ids.
    participant : (t,) int64, participant id per row, -1 when unknown.
    votes : (t, 2) int64 or None — for two-alternative data with vote counts, the number of
        responses for ``chosen`` and for ``other`` (e.g. ``[4, 1]``); a row may aggregate
        several responses. For odd-one-out data every row is one response.
    simulated : True when the judgments came from simulated observers (the demo).
    meta : free-form provenance strings (format, source file...).
    types : (t,) str or None — a triplet type per row when the data carry one (e.g. Levels'
        global / local / class-boundary); evaluation reports a breakdown by type.
    response_ms : (t,) float64 or None — response time per row in milliseconds, when the
        judgments were collected with timing (the app's experiment mode).
    """

    kind: JudgmentKind
    triplets: np.ndarray
    participant: np.ndarray
    votes: np.ndarray | None = None
    simulated: bool = False
    meta: dict[str, str] = field(default_factory=dict)
    types: np.ndarray | None = None
    response_ms: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.triplets.shape[0])

    @property
    def n_responses(self) -> int:
        if self.votes is not None:
            return int(self.votes.sum())
        return len(self)
