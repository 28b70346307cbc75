"""Calibration of model triplet probabilities against human choice distributions.

Inputs are per-triplet probability rows over the same k options, in the SAME column order for
the model and the humans: e.g. :meth:`AffineTransform.predict_proba
<alignet_engine.align.transform.AffineTransform.predict_proba>` and
:func:`~alignet_engine.align.soft_targets.choice_distributions` both use the logit order
``[pair (0,1), pair (0,2), pair (1,2)]`` = ``[p(odd = col 2), p(odd = col 1), p(odd = col 0)]``
for odd-one-out rows and ``[p(col 1), p(col 2)]`` for two-alternative rows. The functions do not
care which order is used as long as both sides share it.

Definitions (t triplets, k options, model q, humans p, all entropies in nats)
----------------------------------------------------------------------------
* The model's choice is ``c_t = argmax_c q_tc`` and its confidence ``conf_t = max_c q_tc``.
* Its "accuracy" on a triplet is the expected agreement with one random human response,
  ``agree_t = p_t[c_t]`` (with tied maxima the model is taken to pick uniformly among them:
  the mean of p over the tied options). Against the human distribution this is the natural
  accuracy: a calibrated model has, among triplets where it is 70 % confident, 70 % of human
  responses agreeing with its choice. (Scoring against the majority answer instead would call
  a model that says 0.6 where 60 % of people agree "over-confident" whenever the majority is
  60 %: 100 % "accuracy".)
* ECE = Σ_b (n_b / t) · |mean agree_t − mean conf_t| over equal-width confidence bins
  ``[0, 1/B), …, [(B−1)/B, 1]`` (Guo et al. 2017); MCE = the largest bin gap. With k options
  the confidence is at least 1/k, so the low bins are empty.
* Entropy H(r) = −Σ_c r_c log r_c (0·log 0 = 0), at most log k (ln 3 ≈ 1.0986).
* KL(p ‖ q) = Σ_c p_c (log p_c − log q_c); infinite where q_c = 0 < p_c.
"""

from __future__ import annotations

import logging

import numpy as np

from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)


def _check_probs(probs: np.ndarray, name: str) -> np.ndarray:
    """(t, k) float64 probability rows (k >= 2), renormalised; raises InputError."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
        raise InputError(
            f"must be a (t, k) array of probabilities with t >= 1, k >= 2, got {arr.shape}",
            field=name,
        )
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InputError("must be finite, non-negative probabilities", field=name)
    sums = arr.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        row = int(np.argmax(np.abs(sums - 1.0)))
        raise InputError(
            f"rows must sum to 1, 0-based row {row} sums to {sums[row]:.4f}", field=name
        )
    return arr / sums[:, None]


def _check_pair(model_probs: np.ndarray, human_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = _check_probs(model_probs, "model_probs")
    p = _check_probs(human_probs, "human_probs")
    if q.shape != p.shape:
        raise InputError(
            f"model_probs {q.shape} and human_probs {p.shape} must have the same shape "
            "(one row per triplet, the same option columns)"
        )
    return q, p


def entropy(probs: np.ndarray) -> np.ndarray:
    """Per-row Shannon entropy in nats.

    Parameters
    ----------
    probs : (t, k) probability rows.

    Returns
    -------
    (t,) float64, 0·log 0 taken as 0.
    """
    r = _check_probs(probs, "probs")
    return -np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0)), 0.0).sum(axis=1)


def expected_calibration_error(
    model_probs: np.ndarray, human_probs: np.ndarray, n_bins: int = 10
) -> dict[str, float | int | list[float] | list[int]]:
    """Expected calibration error of model triplet probabilities against human choices.

    Parameters
    ----------
    model_probs : (t, k) model probabilities per triplet.
    human_probs : (t, k) human choice distribution per triplet, same columns.
    n_bins : number of equal-width confidence bins on [0, 1], >= 1.

    Returns
    -------
    dict (JSON-able) with
      * ``"ece"``, ``"mce"`` — expected / maximum calibration error (module docstring);
      * ``"mean_confidence"`` — mean model confidence; ``"mean_agreement"`` — mean expected
        agreement of the model's choice with a random human (its "accuracy");
      * ``"n"`` — t;
      * ``"bin_edges"`` (n_bins + 1), and per bin ``"bin_confidence"``, ``"bin_accuracy"``
        (mean agreement; NaN for an empty bin) and ``"bin_count"`` — a reliability diagram.
    """
    q, p = _check_pair(model_probs, human_probs)
    if int(n_bins) != n_bins or n_bins < 1:
        raise InputError(f"n_bins must be an integer >= 1, got {n_bins!r}", field="n_bins")
    n_bins = int(n_bins)
    conf = q.max(axis=1)
    tied = q == conf[:, None]  # the model's choice; several columns on an exact tie
    agree = (p * tied).sum(axis=1) / tied.sum(axis=1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds [b/B, (b+1)/B); confidence 1.0 goes to the last bin
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        bin_acc = np.bincount(idx, weights=agree, minlength=n_bins) / count
    filled = count > 0
    gaps = np.abs(bin_acc[filled] - bin_conf[filled])
    t = q.shape[0]
    return {
        "ece": float(np.sum(count[filled] / t * gaps)),
        "mce": float(gaps.max()),
        "mean_confidence": float(conf.mean()),
        "mean_agreement": float(agree.mean()),
        "n": int(t),
        "bin_edges": edges.tolist(),
        "bin_confidence": bin_conf.tolist(),
        "bin_accuracy": bin_acc.tolist(),
        "bin_count": count.astype(int).tolist(),
    }


def entropy_correlation(model_probs: np.ndarray, human_probs: np.ndarray) -> dict[str, float | int]:
    """How well the model's per-triplet uncertainty tracks the humans' (AligNet's uncertainty
    alignment).

    Parameters
    ----------
    model_probs, human_probs : (t, k) probability rows, same columns.

    Returns
    -------
    ``{"spearman", "pearson", "mean_model_entropy", "mean_human_entropy", "n"}`` — correlations
    across triplets of the per-triplet entropies (NaN when either side is constant, e.g. one
    triplet) and the mean entropies in nats.
    """
    q, p = _check_pair(model_probs, human_probs)
    hq, hp = entropy(q), entropy(p)
    if q.shape[0] < 2 or np.ptp(hq) == 0 or np.ptp(hp) == 0:
        logger.warning("entropy correlation undefined: an entropy vector is constant")
        spear = pear = float("nan")
    else:
        from scipy.stats import pearsonr, spearmanr  # deferred: scipy.stats is slow to import

        spear = float(spearmanr(hq, hp).statistic)
        pear = float(pearsonr(hq, hp).statistic)
    return {
        "spearman": spear,
        "pearson": pear,
        "mean_model_entropy": float(hq.mean()),
        "mean_human_entropy": float(hp.mean()),
        "n": int(q.shape[0]),
    }


def kl_to_humans(model_probs: np.ndarray, human_probs: np.ndarray) -> float:
    """Mean over triplets of KL(human ‖ model) in nats.

    Parameters
    ----------
    model_probs, human_probs : (t, k) probability rows, same columns.

    Returns
    -------
    float >= 0; ``inf`` when the model gives probability 0 to an option some human chose.
    """
    q, p = _check_pair(model_probs, human_probs)
    pos = p > 0
    terms = np.zeros_like(p)
    with np.errstate(divide="ignore"):  # q = 0 < p: an infinite term, on purpose
        terms[pos] = p[pos] * (np.log(p[pos]) - np.log(q[pos]))
    return float(terms.sum(axis=1).mean())
