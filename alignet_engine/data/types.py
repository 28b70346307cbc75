"""In-memory data types every stage shares.

Item ids are 0-based row indices into an *image set* (the order of its ``paths``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

JudgmentKind = Literal["oddone", "twoafc"]


@dataclass(frozen=True)
class ImageSet:
    """An ordered list of stimulus images.

    paths : (n,) absolute file paths, as str.
    categories : (n,) category label per image ("" when the set has none).
    """

    paths: tuple[str, ...]
    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.categories):
            raise ValueError("paths and categories must have the same length")

    def __len__(self) -> int:
        return len(self.paths)


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
