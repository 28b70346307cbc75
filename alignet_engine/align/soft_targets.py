"""Human choice distributions per unique triplet: soft targets for uncertainty distillation.

The probabilities come out in the SAME column order as the logits of
:class:`~alignet_engine.align.transform.AffineTransform` for the returned rows, so they can be
passed straight to ``AffineTransform(objective="soft").fit(X, rows, targets=probs)``:

* odd-one-out, row ``(i, j, k)``: logits ``[S_ij, S_ik, S_jk]``; the softmax component of a
  pair is the probability that the item OUTSIDE the pair is the odd one, so the targets are
  ``[p(odd = k), p(odd = j), p(odd = i)]``.
* two-alternative, row ``(a, c, o)``: logits ``[S_ac, S_ao]``; targets ``[p(c), p(o)]``.
"""

from __future__ import annotations

import numpy as np

from alignet_engine.align.metrics import oddone_choice_counts, twoafc_choice_counts
from alignet_engine.base.types import Judgments
from alignet_engine.errors import InputError


def _normalise(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """Row-normalise ``counts + smoothing``; an all-zero row becomes uniform."""
    c = counts.astype(np.float64) + smoothing
    tot = c.sum(axis=1, keepdims=True)
    k = c.shape[1]
    return np.where(tot > 0, c / np.where(tot > 0, tot, 1.0), 1.0 / k)


def choice_distributions(
    judgments: Judgments, *, smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical human choice distribution of every unique triplet.

    Parameters
    ----------
    judgments : odd-one-out or two-alternative judgments (repeated rows and, for twoafc,
        ``votes`` are aggregated).
    smoothing : additive (Laplace) pseudo-count per option, >= 0. The default 0 keeps the raw
        proportions (zeros are fine for the KL objective: 0·log 0 = 0).

    Returns
    -------
    triplets : (u, 3) int64 unique triplets in canonical order.
        * oddone — grouped by UNORDERED triplet; the majority's odd one is LAST (so the row is a
          valid hard label: the majority answer), the other two ascending by id.
        * twoafc — grouped by (anchor, unordered candidate pair); rows
          ``(anchor, majority choice, other)``.
        A tied majority is broken toward the smallest item id (deterministic); such a row's hard
        label is then arbitrary, which is why the soft targets carry the tie.
    probabilities : float64, rows sum to 1, columns in the model's logit order for these rows:
        * oddone (u, 3) — ``[p(odd = col 2), p(odd = col 1), p(odd = col 0)]``, i.e. the
          probability of the pair ``(0, 1)``, ``(0, 2)``, ``(1, 2)`` being the most similar;
        * twoafc (u, 2) — ``[p(chosen = col 1), p(chosen = col 2)]``.
        Fully tied responses give a uniform row; a twoafc row with zero votes in total (no
        information) is also uniform.
    """
    if smoothing < 0 or not np.isfinite(smoothing):
        raise InputError(f"smoothing must be a finite number >= 0, got {smoothing}")
    if judgments.kind == "oddone":
        keys, counts = oddone_choice_counts(judgments)
        # argmax takes the first maximum = the smallest id, since keys are sorted ascending.
        odd_pos = np.argmax(counts, axis=1)
        # the two non-odd positions, ascending: for odd at p the others are [[1,2],[0,2],[0,1]][p]
        rest = np.array([[1, 2], [0, 2], [0, 1]], dtype=np.int64)[odd_pos]
        order = np.column_stack([rest, odd_pos])  # (u, 3) column positions into keys
        triplets = np.take_along_axis(keys, order, axis=1)
        reordered = np.take_along_axis(counts, order, axis=1)  # counts of col0, col1, col2 odd
        # logit order [S01, S02, S12] <-> odd = col2, col1, col0
        probs = _normalise(reordered[:, ::-1], smoothing)
        return triplets, probs
    if judgments.kind == "twoafc":
        keys, counts = twoafc_choice_counts(judgments)
        swap = counts[:, 1] > counts[:, 0]  # ties keep the smaller id as 'chosen'
        triplets = keys.copy()
        triplets[swap, 1], triplets[swap, 2] = keys[swap, 2], keys[swap, 1]
        c = counts.copy()
        c[swap] = counts[swap][:, ::-1]
        return triplets, _normalise(c, smoothing)
    raise InputError(f"unknown judgment kind {judgments.kind!r}")
