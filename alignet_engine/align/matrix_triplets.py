"""Odd-one-out judgments derived from per-subject similarity matrices.

Labs more often have (dis)similarity matrices — pairwise ratings, multi-arrangement — than
odd-one-out triplets. A subject's matrix S answers any triplet (i, j, k): the most similar
pair under S stays together and the remaining item is the odd one out,

    odd(i, j, k) = the item not in argmax {S_ij, S_ik, S_jk}

(a dissimilarity matrix D is read as S = −D). Every subject answers every sampled triplet, so
the rows of one triplet are repeated responses; :func:`~alignet_engine.align.soft_targets.
choice_distributions` turns them into the choice distribution of the soft objective, exactly
as for repeated human triplets.

A subject gives no answer to a triplet when two or more of its three pair values tie for the
maximum (integer Likert ratings tie often: the subject did not distinguish them) or when one
is missing (NaN: the pair was not rated); such responses are skipped and counted.

Object-disjoint split: :func:`split_items` assigns every item to ``"fit"`` or ``"test"``
from a seed; triplets are sampled within one side only, so a transform fitted on the fit
items can be evaluated on the test items (RSA on the test rows/columns of the matrix, or
odd-one-out on the test-side triplets) without having seen any of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from alignet_engine.base.types import Judgments
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

Split = Literal["fit", "test", "all"]


def split_items(
    n_items: int, *, test_fraction: float = 0.5, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Object-disjoint split of ``n_items`` items: (fit ids, test ids), each sorted int64.

    ``round(test_fraction · n)`` random items are test items, the rest fit items; the same
    seed always gives the same split, so ``split="fit"`` and ``"test"`` calls are complementary.
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"must be in (0, 1), got {test_fraction}", field="test_fraction")
    n_test = round(test_fraction * n_items)
    if n_test < 3 or n_items - n_test < 3:
        raise InputError(
            f"a {test_fraction:g} split of {n_items} items leaves fewer than 3 items on a side",
            field="test_fraction",
        )
    perm = np.random.default_rng(random_state).permutation(n_items)
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)


@dataclass(frozen=True)
class MatrixTriplets:
    """Result of :func:`triplets_from_matrices`.

    judgments : odd-one-out :class:`Judgments`, one row per (triplet, answering subject),
        odd one LAST, ``participant`` = the subject's 0-based index in the matrix stack.
    items : (m,) int64 item ids the triplets were sampled from (the split's items).
    n_triplets : distinct triplets sampled; n_skipped : (subject, triplet) pairs without an
        answer (tie for the most similar pair, or a missing value); n_unanswered : triplets no
        subject answered (dropped).
    """

    judgments: Judgments
    items: np.ndarray
    n_triplets: int
    n_skipped: int
    n_unanswered: int


def _check_matrices(matrices: np.ndarray, field: str = "matrix") -> np.ndarray:
    m = np.asarray(matrices, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1] != m.shape[2]:
        raise InputError(
            f"must be (n, n) or (subjects, n, n), got shape {np.shape(matrices)}", field=field
        )
    if np.isinf(m).any():
        raise InputError("contains inf", field=field)
    return m


# Triplets per chunk: bounds the (subjects, chunk, 3) pair-value arrays (16 subjects: 25 MiB).
_CHUNK = 65_536


def _answers(sim: np.ndarray, trip: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every subject's answer to the (t, 3) ``trip`` rows under the (s, n, n) similarities.

    Returns (rows (r, 3) odd one last, participant (r,), answered by anyone (t,) bool); the
    rows are triplet-major (a triplet's responses adjacent), subjects in index order.
    """
    s = sim.shape[0]
    a, b, c = trip.T
    # (s, t, 3) pair values in the logit order [S_ab, S_ac, S_bc]; pair p leaves item 2 − p out
    pairs = np.stack([sim[:, a, b], sim[:, a, c], sim[:, b, c]], axis=2)
    missing = np.isnan(pairs)
    best = np.where(missing, -np.inf, pairs).max(axis=2, keepdims=True)
    is_max = pairs == best
    answered = (is_max.sum(axis=2) == 1) & ~missing.any(axis=2)  # (s, t)
    odd_col = 2 - is_max.argmax(axis=2)  # (s, t)
    rest = np.array([[1, 2], [0, 2], [0, 1]], dtype=np.int64)[odd_col]  # (s, t, 2)
    order = np.concatenate([rest, odd_col[..., None]], axis=2)  # new col c <- old order[..., c]
    rows = np.take_along_axis(np.broadcast_to(trip, (s, *trip.shape)), order, axis=2)
    subj = np.broadcast_to(np.arange(s, dtype=np.int64)[:, None], answered.shape)
    keep = answered.T.reshape(-1)
    return (
        rows.transpose(1, 0, 2).reshape(-1, 3)[keep],
        subj.T.reshape(-1)[keep],
        answered.any(axis=0),
    )


def triplets_from_matrices(
    matrices: np.ndarray,
    n_triplets: int,
    *,
    kind: Literal["similarity", "dissimilarity"] = "similarity",
    items: np.ndarray | None = None,
    random_state: int | None = 0,
) -> MatrixTriplets:
    """Sample triplets over ``items`` and let every subject's matrix pick the odd one out.

    Parameters
    ----------
    matrices : (s, n, n) or (n, n) float, one (dis)similarity matrix per subject over the
        image set's items (row = item id). Symmetry is not required: pair (a, b) reads
        ``(M[a, b] + M[b, a]) / 2``. NaN marks a missing value.
    n_triplets : distinct unordered triplets to sample (at most C(m, 3)).
    kind : ``"similarity"`` (larger = more similar) or ``"dissimilarity"``.
    items : (m,) int item ids to sample from (default: all n); m >= 3.
    random_state : seed of the triplet sample.

    Returns
    -------
    :class:`MatrixTriplets`.
    """
    from alignet_engine.align.human_models import sample_random_triplets

    if kind not in ("similarity", "dissimilarity"):
        raise InputError(f"must be 'similarity' or 'dissimilarity', got {kind!r}", field="kind")
    m = _check_matrices(matrices)
    s, n, _ = m.shape
    ids = np.arange(n, dtype=np.int64) if items is None else np.asarray(items, dtype=np.int64)
    if ids.ndim != 1 or ids.size < 3 or ids.min() < 0 or ids.max() >= n:
        raise InputError(f"must be >= 3 item ids in [0, {n}), got {ids.size}", field="items")
    sim = (m + m.transpose(0, 2, 1)) / 2
    if kind == "dissimilarity":
        sim = -sim
    local = sample_random_triplets(
        ids.size, int(n_triplets), random_state=random_state, replace=False
    )
    trip = ids[local]  # (t, 3) item ids
    parts = [_answers(sim, trip[i : i + _CHUNK]) for i in range(0, trip.shape[0], _CHUNK)]
    out = np.concatenate([p[0] for p in parts])
    participant = np.concatenate([p[1] for p in parts])
    answered_any = np.concatenate([p[2] for p in parts])
    n_unanswered = int((~answered_any).sum())
    n_skipped = int(s * trip.shape[0] - out.shape[0])
    if out.shape[0] == 0:
        raise InputError(
            "no subject answered any sampled triplet (every pair value ties or is missing)",
            field="matrix",
        )
    logger.info(
        "%d triplets over %d items, %d subjects: %d responses, %d skipped (ties or missing), "
        "%d triplets unanswered",
        trip.shape[0],
        ids.size,
        s,
        out.shape[0],
        n_skipped,
        n_unanswered,
    )
    judgments = Judgments(
        kind="oddone",
        triplets=np.ascontiguousarray(out, dtype=np.int64),
        participant=np.ascontiguousarray(participant, dtype=np.int64),
        meta={"format": "matrix-triplets"},
    )
    return MatrixTriplets(judgments, ids, int(trip.shape[0]), n_skipped, n_unanswered)
