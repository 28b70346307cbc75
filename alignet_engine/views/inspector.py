"""What the triplet inspector computes beyond :mod:`~alignet_engine.views.browse`: the order
items are shown in, sorting rows, and the per-type breakdown of the rows a filter keeps.

Display order. Stored rows put the odd one out last (judgments: the human's odd one, pool:
the sampler's cross-cluster item), so showing items in stored order would put every answer in
column C. The presentation order of a judgment is not stored, so every row is shown in a fixed
pseudo-random permutation of its three items: a function of the row number only (a splitmix64
hash), the same in the table, the detail panel and every session.

Sorting and breakdowns run over up to tens of millions of rows, so they are jobs that read the
source in chunks (:data:`~alignet_engine.views.browse.FILTER_CHUNK` rows) and check their
:class:`JobControl` between chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Progress
from alignet_engine.views.browse import (
    FILTER_CHUNK,
    FilterResult,
    JudgmentTriplets,
    PoolTriplets,
    TripletFilter,
    TripletRows,
    TripletView,
    entropy_bits,
    odd_probabilities,
)

#: the six permutations of three positions; row r is shown in order PERMUTATIONS[h(r) % 6]
PERMUTATIONS = np.array(
    [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]], dtype=np.int64
)

SortKey = Literal["row", "teacher_p", "entropy", "verdict", "agreement", "kind"]
#: what each sort key sorts by (the table's column headers name them too)
SORT_KEYS: dict[str, str] = {
    "row": "row number",
    "teacher_p": "the teacher's probability of its odd one",
    "entropy": "entropy of the teacher's choice",
    "verdict": "agreement of teacher and human (disagreements first)",
    "agreement": "share of people choosing this odd one",
    "kind": "split / triplet type",
}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed uint64 hash of uint64 ``x`` (Steele et al. 2014), vectorised."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def display_permutation(rows: np.ndarray) -> np.ndarray:
    """(k, 3) int64: for source rows ``rows`` (k,), the stored positions shown as A, B, C."""
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    return PERMUTATIONS[(_splitmix64(r.astype(np.uint64)) % np.uint64(6)).astype(np.int64)]


def in_display_order(block: TripletRows) -> TripletRows:
    """``block`` with each row's items permuted into display order (positions follow)."""
    k = len(block)
    if k == 0:
        return block
    perm = display_permutation(block.rows)  # shown position j ← stored position perm[j]
    inverse = np.argsort(perm, axis=1)  # stored position p → shown position inverse[p]
    rows = np.arange(k)[:, None]

    def take(a: np.ndarray) -> np.ndarray:
        return a[rows, perm]

    def moved(pos: np.ndarray) -> np.ndarray:
        out = np.asarray(pos, dtype=np.int64).copy()
        ok = out >= 0
        out[ok] = inverse[np.flatnonzero(ok), out[ok]]
        return out

    return replace(
        block,
        items=take(block.items),
        odd_probs=take(block.odd_probs),
        teacher_odd=moved(block.teacher_odd),
        clusters=take(block.clusters),
        human_odd=moved(block.human_odd),
        human_probs=take(block.human_probs),
    )


# --------------------------------------------------------------------------------------------
# per-row keys, chunk by chunk
# --------------------------------------------------------------------------------------------
def _key_chunks(
    view: TripletView, key: str, idx: np.ndarray | None, chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(rows done, key values of the next chunk of rows) for rows ``idx`` (None: all)."""
    n = view.n if idx is None else idx.size
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = np.arange(start, stop) if idx is None else idx[start:stop]
        yield stop, _keys(view, key, rows)


def _keys(view: TripletView, key: str, rows: np.ndarray) -> np.ndarray:
    if key == "row":
        return rows.astype(np.float64)
    if isinstance(view, JudgmentTriplets):
        if key == "teacher_p":
            return view.odd_probs[rows].max(axis=1)
        if key == "entropy":
            return view.entropy[rows]
        if key == "verdict":
            return (view.teacher_odd[rows] == 2).astype(np.float64)
        if key == "agreement":
            return view.agreement[rows]
        if key == "kind":
            return np.asarray(view.types[rows], dtype=str)
    elif isinstance(view, PoolTriplets):
        if key in ("teacher_p", "entropy"):
            sims = view._read_arrays(np.asarray(rows, np.int64), ("sims",))["sims"]
            p = odd_probabilities(sims)
            return p.max(axis=1) if key == "teacher_p" else entropy_bits(p)
        if key == "kind" and view.is_split:
            return view._read_arrays(np.asarray(rows, np.int64), ("is_val",))["is_val"].astype(
                np.float64
            )
        if key in ("kind", "verdict", "agreement"):
            return np.zeros(rows.size)  # one value for every row: the order stays
    raise InputError(f"cannot sort by '{key}'", field="sort")


def sort_rows(
    view: TripletView,
    result: FilterResult | None,
    key: str,
    *,
    descending: bool = False,
    chunk: int = FILTER_CHUNK,
    control: JobControl | None = None,
) -> Job[FilterResult]:
    """The rows of ``result`` (None: all of ``view``) ordered by ``key`` (a stable sort: ties
    keep row order). Yields Progress per chunk; returns a FilterResult whose ``indices`` are in
    display order (no longer ascending). Memory: the key (8 bytes a row) and the indices.
    """
    control = control or JobControl()
    if key not in SORT_KEYS:
        raise InputError(f"unknown sort key '{key}' (one of {', '.join(SORT_KEYS)})", field="sort")
    idx = None if result is None or result.indices is None else np.asarray(result.indices)
    spec = result.filter if result is not None else None
    n = view.n if idx is None else idx.size
    parts = []
    for done, values in _key_chunks(view, key, idx, chunk):
        control.check()
        parts.append(values)
        yield Progress("browse", done, n, f"sorting by {SORT_KEYS[key]}: {done:,}/{n:,}")
    keys = np.concatenate(parts) if parts else np.zeros(0)
    if key == "kind" and keys.dtype.kind in "US":
        _, keys = np.unique(keys, return_inverse=True)
    order = np.argsort(-keys if descending and keys.dtype.kind in "fiu" else keys, kind="stable")
    if descending and keys.dtype.kind not in "fiu":
        order = order[::-1]
    rows = order.astype(np.int64) if idx is None else idx[order]
    return FilterResult(
        spec or TripletFilter(), rows, view.n, {"sorted_by": key, "descending": descending}
    )


# --------------------------------------------------------------------------------------------
# breakdown
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeRow:
    """One line of the breakdown: rows of a type among the kept rows.

    kind : the triplet type (judgments), split (pool) or "all". n : rows.
    disagreements : rows where the teacher's odd one is not the human's (None: no human data).
    mean_entropy : bits, mean entropy of the teacher's choices.
    """

    kind: str
    n: int
    disagreements: int | None
    mean_entropy: float

    @property
    def disagreement_rate(self) -> float | None:
        if self.disagreements is None or self.n == 0:
            return None
        return self.disagreements / self.n


def breakdown(
    view: TripletView,
    result: FilterResult | None = None,
    *,
    chunk: int = FILTER_CHUNK,
    control: JobControl | None = None,
) -> Job[list[TypeRow]]:
    """Per type (judgments) or split (pool): rows, disagreements and mean entropy of the rows
    ``result`` keeps (None: all); the first line is "all"."""
    control = control or JobControl()
    idx = None if result is None or result.indices is None else np.asarray(result.indices)
    n = view.n if idx is None else idx.size
    counts: dict[str, list[float]] = {}
    for start in range(0, n, chunk):
        control.check()
        stop = min(n, start + chunk)
        rows = np.arange(start, stop) if idx is None else np.sort(idx[start:stop])
        if isinstance(view, JudgmentTriplets):
            kinds = np.asarray(view.types[rows], dtype=str)
            dis = (view.teacher_odd[rows] != 2).astype(np.int64)
            ent = view.entropy[rows]
        else:
            assert isinstance(view, PoolTriplets)
            names = ("sims", "is_val") if view.is_split else ("sims",)
            a = view._read_arrays(rows.astype(np.int64), names)
            ent = entropy_bits(odd_probabilities(a["sims"]))
            if view.is_split:
                kinds = np.where(a["is_val"].astype(bool), "validation", "train")
            else:
                kinds = np.full(rows.size, view.strategy or "pool")
            dis = np.zeros(rows.size, dtype=np.int64)
        for kind in np.unique(kinds):
            sel = kinds == kind
            c = counts.setdefault(str(kind), [0, 0, 0.0])
            c[0] += int(sel.sum())
            c[1] += int(dis[sel].sum())
            c[2] += float(ent[sel].sum())
        yield Progress("browse", stop, n, f"breakdown: {stop:,}/{n:,}")
    human = view.has_human
    out = [
        TypeRow(
            "all",
            n,
            sum(int(c[1]) for c in counts.values()) if human else None,
            sum(c[2] for c in counts.values()) / n if n else float("nan"),
        )
    ]
    for kind in sorted(counts):
        c = counts[kind]
        label = kind or "(no type)"
        out.append(TypeRow(label, int(c[0]), int(c[1]) if human else None, c[2] / c[0]))
    if len(out) == 2 and out[1].n == out[0].n:
        out = out[:1]  # one type: the "all" line says it
    return out
