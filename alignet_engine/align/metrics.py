"""Alignment metrics: triplet accuracy, bootstrap CIs, human noise ceilings and RSA.

Every function is pure (no state, no I/O) and validates its input: NaN/inf, item ids out of
range, an item repeated inside a triplet or a shape mismatch raise
:class:`~alignet_engine.errors.InputError` (a ``ValueError``) with a message that says which.

Conventions (method.md §1, §6)
------------------------------
* Pair similarities of a triplet row ``(i, j, k)`` are always returned in the order
  ``[s01, s02, s12] = [sim(i, j), sim(i, k), sim(j, k)]``. This is also the logit order of the
  triplet softmax of :class:`~alignet_engine.align.transform.AffineTransform`.
* Odd-one-out rows carry the human odd one LAST, so the human's most-similar pair is ``(0, 1)``
  and a model is correct iff ``s01`` is strictly the largest of the three.
* Two-alternative rows are ``(anchor, chosen, other)``; a model is correct iff
  ``sim(anchor, chosen) > sim(anchor, other)`` strictly.
* Any tie that leaves the model's answer undetermined counts as WRONG (method.md §6: "if all
  three distances are equal the trial counts as wrong"; we extend it to any tie for the top).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, TypedDict

import numpy as np

from alignet_engine.base.similarity import SimilarityMetric, check_metric, gathered_pairs_numpy
from alignet_engine.base.types import Judgments
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

# Rows of F[triplets] gathered per chunk in pair_similarities: bounds the temporary (chunk, 3, d)
# float64 array to about 64 MiB, so 10 M teacher triplets of 1152-d features stay in memory.
_CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------
# validation helpers (public: the transform and sampling modules use the same checks)
# --------------------------------------------------------------------------------------------
def check_features(features: np.ndarray, *, name: str = "features") -> np.ndarray:
    """Return ``features`` as a finite 2-D float array, or raise :class:`InputError`.

    Parameters
    ----------
    features : (n, d) array-like of real numbers.
    name : what to call the array in the error message.

    Returns
    -------
    (n, d) float32 or float64 ndarray (float32 input keeps its dtype, everything else becomes
    float64).
    """
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise InputError(f"must be a 2-D (n, d) array, got shape {arr.shape}", field=name)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"is empty (shape {arr.shape})", field=name)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"must be numeric, got dtype {arr.dtype}", field=name)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(
            f"contains NaN or inf (first at row {bad[0]}, column {bad[1]}, 0-based)", field=name
        )
    return arr


def check_triplets(
    triplets: np.ndarray, n_items: int | None = None, *, name: str = "triplets"
) -> np.ndarray:
    """Return ``triplets`` as a (t, 3) int64 array of valid, distinct item ids.

    Parameters
    ----------
    triplets : (t, 3) integer array-like (floats holding whole numbers are accepted).
    n_items : ids must lie in ``[0, n_items)``; ``None`` only checks they are >= 0.
    name : what to call the array in the error message.

    Raises
    ------
    InputError
        wrong shape, non-integer values, an id out of range, or an item repeated in a row.
    """
    arr = np.asarray(triplets)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"must be a (t, 3) array, got shape {arr.shape}", field=name)
    if arr.shape[0] == 0:
        raise InputError("contains no triplets", field=name)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
            raise InputError(f"must hold integer item ids, got dtype {arr.dtype}", field=name)
        if not np.all(arr == np.round(arr)):
            raise InputError("must hold integer item ids, found fractional values", field=name)
    arr = arr.astype(np.int64, copy=False)
    lo = arr.min()
    if lo < 0:
        row = int(np.argwhere(arr < 0)[0, 0])
        raise InputError(f"item id {lo} is negative (0-based row {row})", field=name)
    if n_items is not None:
        hi = arr.max()
        if hi >= n_items:
            row = int(np.argwhere(arr >= n_items)[0, 0])
            raise InputError(
                f"item id {hi} is out of range for {n_items} items (0-based row {row}); "
                "ids are 0-based row indices into the feature matrix",
                field=name,
            )
    dup = (arr[:, 0] == arr[:, 1]) | (arr[:, 0] == arr[:, 2]) | (arr[:, 1] == arr[:, 2])
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise InputError(
            f"{int(dup.sum())} row(s) repeat an item inside a triplet, first 0-based row {row}: "
            f"{arr[row].tolist()}",
            field=name,
        )
    return arr


# --------------------------------------------------------------------------------------------
# triplet similarities and accuracies
# --------------------------------------------------------------------------------------------
def pair_similarities(
    features: np.ndarray, triplets: np.ndarray, metric: SimilarityMetric = "cosine"
) -> np.ndarray:
    """Pairwise similarities inside each triplet, checked and in float64 (evaluation's entry
    to :mod:`alignet_engine.base.similarity`).

    Parameters
    ----------
    features : (n, d) float, one row per item.
    triplets : (t, 3) int, 0-based item ids, three distinct items per row.
    metric : ``"cosine"`` (rows L2-normalised first; an all-zero row has similarity 0 to
        everything), ``"dot"`` (plain dot product) or ``"euclidean"`` (similarity = minus the
        Euclidean distance).

    Returns
    -------
    (t, 3) float64 — ``[s01, s02, s12]`` = ``[sim(i, j), sim(i, k), sim(j, k)]`` per row.
    Computed in float64 so that a tie is a real tie, not float32 round-off.
    """
    check_metric(metric)
    feats = check_features(features)
    trip = check_triplets(triplets, feats.shape[0])
    feats = feats.astype(np.float64, copy=False)
    if metric == "cosine":
        # Normalised rows first (not the kernel's scaled dot products): the float64 numbers
        # evaluation has always reported. A zero vector has no direction; dividing by 1
        # instead of 0 makes its similarity 0.
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        feats = feats / np.where(norms > 0, norms, 1.0)
        metric = "dot"
    chunk = max(1, _CHUNK_BYTES // (3 * 8 * feats.shape[1]))
    return gathered_pairs_numpy(feats, trip, metric, chunk)


def oddone_correct(
    features: np.ndarray, triplets: np.ndarray, metric: SimilarityMetric = "cosine"
) -> np.ndarray:
    """Per-triplet correctness of a model's odd-one-out choice.

    The model's odd one out is the item outside its most similar pair. Rows carry the human odd
    one LAST, so the model is correct iff ``s01 > s02`` and ``s01 > s12`` strictly; any tie for
    the maximum counts as wrong (method.md §6).

    ``features`` (n, d) float and ``metric`` are :func:`pair_similarities`'; ``triplets``
    (t, 3) int are rows ``(i, j, odd)``. Returns (t,) bool.
    """
    s = pair_similarities(features, triplets, metric)
    return (s[:, 0] > s[:, 1]) & (s[:, 0] > s[:, 2])


def twoafc_correct(
    features: np.ndarray, triplets: np.ndarray, metric: SimilarityMetric = "cosine"
) -> np.ndarray:
    """Per-row correctness of two-alternative choices: ``sim(a, c) > sim(a, o)`` strictly.

    ``features`` (n, d) float and ``metric`` are :func:`pair_similarities`'; ``triplets``
    (t, 3) int are rows ``(anchor, chosen, other)``. Returns (t,) bool; a tie counts as wrong.
    """
    s = pair_similarities(features, triplets, metric)
    return s[:, 0] > s[:, 1]


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------
def bootstrap_ci(
    values: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Parameters
    ----------
    values : (t,) float or bool, one value per trial (e.g. per-triplet correctness).
    n_boot : number of bootstrap resamples.
    level : coverage of the interval, in (0, 1).
    random_state : seed or Generator; the default 0 makes reports reproducible.

    Returns
    -------
    (lo, hi) floats with ``lo <= mean <= hi`` up to resampling noise.

    Notes
    -----
    For boolean input the mean of a resample is exactly ``Binomial(t, mean) / t``, so we draw
    that directly (O(n_boot) instead of O(n_boot * t)). Float input is resampled with index
    matrices in chunks of bounded size.
    """
    vals = np.asarray(values)
    if vals.ndim != 1 or vals.size == 0:
        raise InputError(f"must be a non-empty 1-D array, got shape {vals.shape}", field="values")
    if not (0.0 < level < 1.0):
        raise InputError(f"level must lie in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    n_boot = int(n_boot)
    rng = np.random.default_rng(random_state)
    t = vals.size
    if vals.dtype == bool:
        means = rng.binomial(t, vals.mean(), size=n_boot) / t
    else:
        vals = vals.astype(np.float64)
        if not np.isfinite(vals).all():
            raise InputError("contains NaN or inf", field="values")
        means = np.empty(n_boot, dtype=np.float64)
        chunk = max(1, 4_000_000 // t)
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            idx = rng.integers(0, t, size=(stop - start, t))
            means[start:stop] = vals[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def accuracy_summary(
    correct: np.ndarray,
    random_state: int | np.random.Generator | None = 0,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[str, float | int]:
    """Accuracy with a percentile-bootstrap CI.

    Parameters
    ----------
    correct : (t,) bool (or 0/1 float) per-trial correctness.
    random_state : seed of the bootstrap.
    n_boot, level : see :func:`bootstrap_ci`.

    Returns
    -------
    ``{"accuracy": float, "ci_low": float, "ci_high": float, "n": int}``.
    """
    arr = np.asarray(correct)
    lo, hi = bootstrap_ci(arr, n_boot=n_boot, level=level, random_state=random_state)
    return {
        "accuracy": float(arr.astype(np.float64).mean()),
        "ci_low": lo,
        "ci_high": hi,
        "n": int(arr.size),
    }


# --------------------------------------------------------------------------------------------
# noise ceilings
# --------------------------------------------------------------------------------------------
def _ceiling_from_counts(counts: np.ndarray) -> dict[str, float | int]:
    """Majority agreement and leave-one-out ceiling from per-triplet choice counts.

    counts : (u, k) int, responses per option for each unique triplet (k = 3 or 2).
    Only triplets with at least two responses count (a single response agrees with itself).
    """
    totals = counts.sum(axis=1)
    keep = totals >= 2
    n_trip = int(keep.sum())
    if n_trip == 0:
        return {
            "majority_agreement": float("nan"),
            "leave_one_out": float("nan"),
            "n_triplets": 0,
            "n_responses": 0,
        }
    c = counts[keep].astype(np.float64)
    tot = totals[keep].astype(np.float64)
    majority = float(np.mean(c.max(axis=1) / tot))
    # Leave-one-out: a response for option p is predicted by the majority of the others, whose
    # counts are c - e_p. Score 1/|tied majority set| if p is in it, else 0. Every response for
    # the same option of a triplet gets the same score, so weight the score by c_p.
    k = c.shape[1]
    loo_sum = 0.0
    for p in range(k):
        others = c.copy()
        others[:, p] -= 1.0
        top = others.max(axis=1, keepdims=True)
        is_top = others == top
        score = is_top[:, p] / is_top.sum(axis=1)
        loo_sum += float(np.sum(c[:, p] * score))
    return {
        "majority_agreement": majority,
        "leave_one_out": loo_sum / float(tot.sum()),
        "n_triplets": n_trip,
        "n_responses": int(tot.sum()),
    }


def oddone_choice_counts(judgments: Judgments) -> tuple[np.ndarray, np.ndarray]:
    """Group odd-one-out responses by UNORDERED triplet.

    Returns
    -------
    keys : (u, 3) int64, each unique triplet with its ids sorted ascending.
    counts : (u, 3) int64, ``counts[g, p]`` = responses that chose ``keys[g, p]`` as the odd one.
    """
    if judgments.kind != "oddone":
        raise InputError(f"needs odd-one-out judgments, got kind {judgments.kind!r}")
    if judgments.votes is not None:
        raise InputError(
            "odd-one-out judgments must not carry votes (every row is one response)",
            field="votes",
        )
    trip = check_triplets(judgments.triplets)
    keys_all = np.sort(trip, axis=1)
    keys, inv = np.unique(keys_all, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    # position of the chosen odd item (column 2 of the row) inside the sorted key
    pos = np.argmax(keys_all == trip[:, 2:3], axis=1)
    counts = np.bincount(inv * 3 + pos, minlength=3 * keys.shape[0]).reshape(-1, 3)
    return keys, counts.astype(np.int64)


def twoafc_choice_counts(judgments: Judgments) -> tuple[np.ndarray, np.ndarray]:
    """Group two-alternative responses by (anchor, unordered pair of candidates).

    Returns
    -------
    keys : (u, 3) int64, ``(anchor, smaller candidate id, larger candidate id)``.
    counts : (u, 2) int64, responses for ``keys[:, 1]`` and for ``keys[:, 2]``. With
        ``judgments.votes`` each row adds its ``[votes chosen, votes other]``; without, each row
        is one response for its chosen item.
    """
    if judgments.kind != "twoafc":
        raise InputError(f"needs two-alternative judgments, got kind {judgments.kind!r}")
    trip = check_triplets(judgments.triplets)
    if judgments.votes is None:
        votes = np.zeros((trip.shape[0], 2), dtype=np.int64)
        votes[:, 0] = 1
    else:
        votes = np.asarray(judgments.votes)
        if votes.shape != (trip.shape[0], 2):
            raise InputError(
                f"must have shape ({trip.shape[0]}, 2) to match the triplets, got {votes.shape}",
                field="votes",
            )
        if not np.isfinite(votes).all() or (votes < 0).any():
            raise InputError("must be finite and non-negative", field="votes")
        votes = votes.astype(np.int64)
    swap = trip[:, 1] > trip[:, 2]
    keys_all = trip.copy()
    keys_all[swap, 1], keys_all[swap, 2] = trip[swap, 2], trip[swap, 1]
    v = votes.copy()
    v[swap] = votes[swap][:, ::-1]
    keys, inv = np.unique(keys_all, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    counts = np.zeros((keys.shape[0], 2), dtype=np.int64)
    np.add.at(counts, inv, v)
    return keys, counts


def noise_ceiling_oddone(judgments: Judgments) -> dict[str, float | int]:
    """Human noise ceiling of odd-one-out data from repeated triplets.

    Responses are grouped by unordered triplet (presentation order does not matter); only
    triplets answered at least twice count.

    Returns
    -------
    dict with
      * ``"majority_agreement"`` — mean over triplets of (responses for the majority choice /
        responses). This is the published THINGS ceiling (0.6722 on triplets_noiseceiling).
      * ``"leave_one_out"`` — mean over responses of [response equals the majority of the OTHER
        responses to the same triplet]; a tied majority among the others scores
        1 / (number of tied options) if the response is among them.
      * ``"n_triplets"``, ``"n_responses"`` — repeated triplets and their responses.
    Both ceilings are NaN (and the counts 0) when no triplet is repeated.
    """
    _, counts = oddone_choice_counts(judgments)
    return _ceiling_from_counts(counts)


def noise_ceiling_twoafc(judgments: Judgments) -> dict[str, float | int]:
    """Human noise ceiling of two-alternative data (votes or repeated rows).

    Same definitions as :func:`noise_ceiling_oddone` with two options per triplet; rows are
    grouped by (anchor, unordered candidate pair) and a row's ``votes`` count as that many
    responses.
    """
    _, counts = twoafc_choice_counts(judgments)
    return _ceiling_from_counts(counts)


# --------------------------------------------------------------------------------------------
# RSA
# --------------------------------------------------------------------------------------------
def model_rsm(features: np.ndarray, metric: Literal["cosine", "pearson"] = "cosine") -> np.ndarray:
    """Representational similarity matrix of ``features``.

    Parameters
    ----------
    features : (n, d) float.
    metric : ``"cosine"`` (cosine similarity) or ``"pearson"`` (correlation across dimensions,
        i.e. cosine of row-centred features).

    Returns
    -------
    (n, n) float64.
    """
    if metric not in ("cosine", "pearson"):
        raise InputError(f"unknown RSA metric {metric!r}; use 'cosine' or 'pearson'")
    f = check_features(features).astype(np.float64)
    if metric == "pearson":
        f = f - f.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.where(norms > 0, norms, 1.0)
    return f @ f.T


def rsa(
    features: np.ndarray,
    matrix: np.ndarray,
    *,
    metric: Literal["cosine", "pearson"] = "cosine",
    kind: Literal["similarity", "dissimilarity"] = "similarity",
) -> float:
    """Spearman ρ between a model RSM and a human (dis)similarity matrix.

    Parameters
    ----------
    features : (n, d) float, rows in the same item order as ``matrix``.
    matrix : (n, n) float human similarity (``kind="similarity"``) or dissimilarity/distance
        (``kind="dissimilarity"``, negated before the comparison so a positive ρ always means
        agreement). Only the strict upper triangle is read.
    metric : model similarity, see :func:`model_rsm`.

    Returns
    -------
    float Spearman ρ of the strict upper triangles (NaN if either side is constant).
    """
    if kind not in ("similarity", "dissimilarity"):
        raise InputError(f"kind must be 'similarity' or 'dissimilarity', got {kind!r}")
    feats = check_features(features)
    mat = np.asarray(matrix, dtype=np.float64)
    n = feats.shape[0]
    if mat.shape != (n, n):
        raise InputError(
            f"must be ({n}, {n}) to match the {n} feature rows, got {mat.shape}", field="matrix"
        )
    if n < 3:
        raise InputError(f"RSA needs at least 3 items, got {n}")
    iu = np.triu_indices(n, k=1)
    human = mat[iu]
    if not np.isfinite(human).all():
        raise InputError("upper triangle contains NaN or inf", field="matrix")
    if kind == "dissimilarity":
        human = -human
    model = model_rsm(feats, metric)[iu]
    if np.ptp(human) == 0 or np.ptp(model) == 0:
        logger.warning("RSA undefined: a similarity matrix is constant")
        return float("nan")
    from scipy.stats import spearmanr  # deferred: scipy.stats is slow to import

    return float(spearmanr(model, human).statistic)


def rsa_bootstrap_ci(
    features: np.ndarray,
    matrix: np.ndarray,
    *,
    metric: Literal["cosine", "pearson"] = "cosine",
    kind: Literal["similarity", "dissimilarity"] = "similarity",
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | None = 0,
) -> tuple[float, float]:
    """Percentile CI of the RSA Spearman ρ, resampling *items* (stimuli) with replacement.

    Pairs of a resampled item with its own copy are dropped (they would compare an item with
    itself). Items, not pairs, are the independent unit: every pair shares items with others.

    Returns
    -------
    (lo, hi) floats.
    """
    from scipy.stats import rankdata

    model = model_rsm(check_features(features), metric)
    human = np.asarray(matrix, dtype=np.float64)
    if kind == "dissimilarity":
        human = -human
    n: int = model.shape[0]
    rng = np.random.default_rng(random_state)
    iu = np.triu_indices(n, k=1)
    rhos = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        keep = idx[iu[0]] != idx[iu[1]]
        m = model[idx[iu[0]], idx[iu[1]]][keep]
        h = human[idx[iu[0]], idx[iu[1]]][keep]
        rm, rh = rankdata(m), rankdata(h)
        rhos[b] = np.corrcoef(rm, rh)[0, 1]
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(rhos, [alpha, 1 - alpha])
    return float(lo), float(hi)


def noise_ceiling_matrix(
    matrices: np.ndarray, *, kind: Literal["similarity", "dissimilarity"] = "similarity"
) -> dict[str, float | int]:
    """Noise ceiling of Spearman RSA from per-subject matrices (Nili et al. 2014).

    Parameters
    ----------
    matrices : (s, n, n) float, one matrix per subject (s ≥ 2); only strict upper triangles
        are read.
    kind : ``"dissimilarity"`` matrices are negated first (ranks reversed), so the bounds are
        those of the same positive-ρ convention as :func:`rsa`.

    Returns
    -------
    ``{"upper", "lower", "n_subjects"}``:
      * upper — mean over subjects of Spearman ρ(subject, mean of ALL subjects' RANK-transformed
        upper triangles). For Spearman the best-possible model RDM is the average of the ranks,
        not of the raw values (rsatoolbox ``pool_rdm(method="spearman")``), so averaging raw
        values would understate (or misstate) the bound.
      * lower — the same with the subject left out of the rank average.
    NaN bounds when ``s < 2``. Ties inside a subject's matrix get average ranks.
    """
    from scipy.stats import rankdata

    m = np.asarray(matrices, dtype=np.float64)
    if m.ndim != 3 or m.shape[1] != m.shape[2]:
        raise InputError(f"must be (subjects, n, n), got {m.shape}", field="matrix")
    s = m.shape[0]
    if s < 2:
        return {"upper": float("nan"), "lower": float("nan"), "n_subjects": s}
    iu = np.triu_indices(m.shape[1], k=1)
    vec = m[:, iu[0], iu[1]]  # (s, pairs)
    if not np.isfinite(vec).all():
        raise InputError("upper triangle contains NaN or inf", field="matrix")
    if kind == "dissimilarity":
        vec = -vec
    ranks = rankdata(vec, axis=1)  # (s, pairs), average ranks for ties
    total = ranks.sum(axis=0)

    def spearman(a: np.ndarray, b: np.ndarray) -> float:
        # ρ of a with b = Pearson of their ranks; `ranks` are already a's ranks
        rb = rankdata(b)
        if np.ptp(a) == 0 or np.ptp(rb) == 0:
            return float("nan")
        return float(np.corrcoef(a, rb)[0, 1])

    upper = [spearman(ranks[i], total / s) for i in range(s)]
    lower = [spearman(ranks[i], (total - ranks[i]) / (s - 1)) for i in range(s)]
    return {"upper": float(np.mean(upper)), "lower": float(np.mean(lower)), "n_subjects": s}


# --------------------------------------------------------------------------------------------
# the Levels protocol (Muttenthaler et al. 2025): majority of sampled responses per triplet
# --------------------------------------------------------------------------------------------
def sample_choice_counts(
    judgments: Judgments,
    n_sample: int = 4,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw up to ``n_sample`` responses per unordered triplet, without replacement.

    Returns
    -------
    keys : (u, 3) int64, unique triplets with ascending ids (as :func:`oddone_choice_counts`).
    counts : (u, 3) int64, sampled responses choosing ``keys[:, p]`` as the odd one; a
        triplet with fewer than ``n_sample`` responses keeps all of them.
    first_row : (u,) int64, a row of ``judgments`` holding the triplet (to read its type).
    """
    if int(n_sample) < 1:
        raise InputError(f"n_sample must be >= 1, got {n_sample}")
    if judgments.kind != "oddone":
        raise InputError(f"needs odd-one-out judgments, got kind {judgments.kind!r}")
    trip = check_triplets(judgments.triplets)
    keys_all = np.sort(trip, axis=1)
    keys, first_row, inv = np.unique(keys_all, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    pos = np.argmax(keys_all == trip[:, 2:3], axis=1)
    rng = np.random.default_rng(random_state)
    # a random order inside each triplet's group; keep the first n_sample of each group
    order = np.lexsort((rng.random(inv.size), inv))
    g = inv[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    rank = np.arange(g.size) - np.repeat(starts, np.diff(np.r_[starts, g.size]))
    take = order[rank < int(n_sample)]
    counts = np.bincount(inv[take] * 3 + pos[take], minlength=3 * keys.shape[0])
    return keys, counts.reshape(-1, 3).astype(np.int64), first_row.astype(np.int64)


def majority_choice(counts: np.ndarray) -> np.ndarray:
    """(u,) int: the option with strictly the most responses, or -1 where the top is tied."""
    c = np.asarray(counts)
    top = c.max(axis=1, keepdims=True)
    n_top = (c == top).sum(axis=1)
    return np.where(n_top == 1, np.argmax(c, axis=1), -1)


def loo_ceiling(counts: np.ndarray, tie_credit: float = 0.5) -> tuple[float, int]:
    """Leave-one-out agreement of each response with the majority of the others.

    counts : (u, k) int responses per option. A held-out response scores 1 if it is the
    others' strict majority, ``tie_credit`` if it is one of several tied top options (the
    Levels authors give 0.5), else 0. Triplets with a single response are skipped.

    Returns
    -------
    (mean score over responses, number of responses scored) — (NaN, 0) if none.
    """
    c = np.asarray(counts, dtype=np.float64)
    c = c[c.sum(axis=1) >= 2]
    if c.size == 0:
        return float("nan"), 0
    total = 0.0
    for p in range(c.shape[1]):
        others = c.copy()
        others[:, p] -= 1.0
        top = others.max(axis=1, keepdims=True)
        is_top = others == top
        n_top = is_top.sum(axis=1)
        score = np.where(is_top[:, p], np.where(n_top == 1, 1.0, tie_credit), 0.0)
        total += float(np.sum(c[:, p] * score))
    n = int(c.sum())
    return total / n, n


def model_odd_position(
    features: np.ndarray, keys: np.ndarray, metric: SimilarityMetric = "cosine"
) -> np.ndarray:
    """(u,) int: the position (0, 1, 2) in each row of ``keys`` of the model's odd one out.

    The odd one is the item outside the most similar pair; -1 where the top pair is tied (an
    undetermined answer, which never matches a human choice).
    """
    s = pair_similarities(features, keys, metric)  # [s01, s02, s12]
    best = np.argmax(s, axis=1)
    tied = (s == s.max(axis=1, keepdims=True)).sum(axis=1) > 1
    odd = np.array([2, 1, 0])[best]  # pair 01 → odd 2, pair 02 → odd 1, pair 12 → odd 0
    return np.where(tied, -1, odd)


def levels_scores(
    features: np.ndarray,
    judgments: Judgments,
    *,
    metric: SimilarityMetric = "cosine",
    n_sample: int = 4,
    tie_credit: float = 0.5,
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | None = 0,
    unit: Literal["triplets", "items"] = "triplets",
    features_b: np.ndarray | None = None,
    metric_b: SimilarityMetric | None = None,
) -> dict[str, Any]:
    """Score a representation with the Levels authors' protocol, overall and per level.

    Per unordered triplet, ``n_sample`` responses are drawn (seeded) and their strict majority
    is the human answer; triplets whose sampled responses tie are *flagged* and left out of
    the accuracy (reported apart: how many, and how often the model picked one of the tied
    options). The model's accuracy is its agreement with the majority over the untied
    triplets, with a percentile-bootstrap CI over triplets (the unit after the majority).
    Ceilings on the same sampled responses: leave-one-out (:func:`loo_ceiling`, 0.5 credit
    in a tie) and majority agreement (responses for the majority / responses, per triplet).

    Parameters
    ----------
    features : (n, d) float.
    judgments : odd-one-out judgments; ``types`` (the level per row) give the breakdown.
    unit : what the CI resamples: ``"triplets"`` or ``"items"`` (see :func:`_resampled_totals`).
    features_b, metric_b : a second representation of the same items: adds a paired
        ``"comparison"`` (:func:`paired_accuracy_test`, A − B) to every score.

    Returns
    -------
    ``{"overall": {...}, "by_level": {level: {...}}, "n_sample", "tie_credit", "unit"}``
    where each ``{...}`` holds ``accuracy, ci_low, ci_high, n`` (untied triplets),
    ``ci_unit``, ``n_tied``, ``tied_model_in_top``, ``ceiling_leave_one_out``,
    ``ceiling_majority``, ``n_triplets``, ``n_responses``.
    """
    keys, counts, first = sample_choice_counts(judgments, n_sample, random_state)
    model = model_odd_position(features, keys, metric)
    model_b = (
        None if features_b is None else model_odd_position(features_b, keys, metric_b or metric)
    )
    human = majority_choice(counts)
    types = (
        np.asarray(judgments.types)[first]
        if judgments.types is not None
        else np.full(keys.shape[0], "all")
    )

    def score(sel: np.ndarray) -> dict[str, Any]:
        c, h, m = counts[sel], human[sel], model[sel]
        untied = h >= 0
        out: dict[str, Any] = {}
        boot: _Resampling = {
            "unit": unit,
            "n_boot": n_boot,
            "level": level,
            "random_state": random_state,
        }
        if untied.any():
            out.update(
                clustered_accuracy_summary(m[untied] == h[untied], keys[sel][untied], **boot)
            )
            if model_b is not None:
                mb = model_b[sel][untied]
                out["comparison"] = paired_accuracy_test(
                    m[untied] == h[untied], mb == h[untied], keys[sel][untied], **boot
                )
        else:
            nan = float("nan")
            out.update(accuracy=nan, ci_low=nan, ci_high=nan, n=0, ci_unit=unit)
        tied = ~untied
        in_top = [
            bool(mi >= 0 and ci[mi] == ci.max()) for ci, mi in zip(c[tied], m[tied], strict=True)
        ]
        loo, n_resp = loo_ceiling(c, tie_credit)
        tot = c.sum(axis=1)
        out.update(
            {
                "n_tied": int(tied.sum()),
                "tied_model_in_top": float(np.mean(in_top)) if in_top else float("nan"),
                "ceiling_leave_one_out": loo,
                "ceiling_majority": float(np.mean(c.max(axis=1) / tot)) if len(c) else float("nan"),
                "n_triplets": int(sel.sum()),
                "n_responses": int(tot.sum()),
                "n_loo_responses": n_resp,
            }
        )
        return out

    return {
        "protocol": "levels",
        "n_sample": int(n_sample),
        "tie_credit": float(tie_credit),
        "unit": f"{unit} (each triplet scored against the majority of its sampled responses)",
        "overall": score(np.ones(keys.shape[0], dtype=bool)),
        "by_level": {str(t): score(types == t) for t in sorted(set(types.tolist()))},
    }


# --------------------------------------------------------------------------------------------
# cluster bootstrap and paired comparisons
# --------------------------------------------------------------------------------------------
CiUnit = Literal["triplets", "items", "responses"]
CI_UNITS: tuple[str, ...] = ("triplets", "items", "responses")


class _Resampling(TypedDict):
    """How the CIs and paired tests of one scoring resample (their shared keywords)."""

    unit: CiUnit
    n_boot: int
    level: float
    random_state: int | None


# Elements of one (chunk, groups) weight matrix: bounds a bootstrap chunk to ~32 MiB.
_BOOT_ELEMS = 4_000_000


def _group_by_triplet(triplets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys (g, 3) sorted unique triplets, inverse (t,) row → group)."""
    keys, inv = np.unique(np.sort(triplets, axis=1), axis=0, return_inverse=True)
    return keys, inv.reshape(-1)


def _draw_counts(rng: np.random.Generator, size: int, g: int) -> np.ndarray:
    """(size, g) float64: how often each of g units is drawn in each of ``size`` resamples of
    g draws with replacement (one bincount over offset draws instead of a Python loop)."""
    draws = rng.integers(0, g, size=(size, g)) + (np.arange(size) * g)[:, None]
    return np.bincount(draws.ravel(), minlength=size * g).reshape(size, g).astype(np.float64)


def _resampled_totals(
    unit: str, keys: np.ndarray, columns: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Column totals over ``n_boot`` bootstrap resamples of the g groups ``keys``.

    keys : (g, 3) unique triplets (the groups); columns : (g, m) per-group values to total.

    * ``triplets`` / ``responses`` — groups drawn with replacement. Only a group's values
      matter, so the groups are pooled into their K distinct value rows and each resample is
      one multinomial draw of how many of its g draws land in each kind: exact, and O(K) per
      resample instead of O(g) (K is small for 0/1 correctness: counts × right answers).
    * ``items`` — items drawn with replacement: a triplet counts once per combination of the
      drawn copies of its three items, ``m_i · m_j · m_k`` (the triplet analogue of the item
      bootstrap of RSA, where a pair counts ``m_i · m_j`` times).

    Returns
    -------
    (n_boot, m) float64.
    """
    g = keys.shape[0]
    if unit != "items":
        kinds, n_kind = np.unique(columns, axis=0, return_counts=True)
        draws = rng.multinomial(g, n_kind / g, size=n_boot).astype(np.float64)
        return draws @ kinds
    items, local = np.unique(keys, return_inverse=True)
    local = local.reshape(keys.shape)
    n = items.size
    chunk = max(1, _BOOT_ELEMS // max(g, n))
    out = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        m = _draw_counts(rng, size, n)
        out.append((m[:, local[:, 0]] * m[:, local[:, 1]] * m[:, local[:, 2]]) @ columns)
    return np.concatenate(out)


def _grouped(
    values: list[np.ndarray], triplets: np.ndarray, unit: str
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Per-group sums of each value array and per-group row counts (groups = the unit)."""
    trip = check_triplets(triplets)
    if unit not in CI_UNITS:
        raise InputError(f"unknown bootstrap unit {unit!r}; use one of {CI_UNITS}")
    if unit == "responses":
        keys = np.sort(trip, axis=1)
        inv = np.arange(trip.shape[0])
    else:
        keys, inv = _group_by_triplet(trip)
    counts = np.bincount(inv, minlength=keys.shape[0]).astype(np.float64)
    sums = [
        np.bincount(inv, weights=np.asarray(v, np.float64), minlength=keys.shape[0]) for v in values
    ]
    return keys, sums, counts


def clustered_accuracy_summary(
    correct: np.ndarray,
    triplets: np.ndarray,
    *,
    unit: CiUnit = "triplets",
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Accuracy with a bootstrap CI that resamples triplets (or items, or responses).

    Responses to one triplet are not independent of each other, nor are triplets sharing an
    item: resampling responses (a binomial CI) understates the uncertainty of repeated data.

    Parameters
    ----------
    correct : (t,) bool per response row.
    triplets : (t, 3) int, the row's items (grouped as UNORDERED triplets).
    unit : ``"triplets"`` (cluster bootstrap over unique triplets; the default), ``"items"``
        (see :func:`_resampled_totals`) or ``"responses"`` (rows independent).

    Returns
    -------
    ``{"accuracy", "ci_low", "ci_high", "n", "n_units", "ci_unit"}``.
    """
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or c.size != np.asarray(triplets).shape[0]:
        raise InputError(f"needs one value per triplet row, got {c.shape}", field="correct")
    keys, (sums,), counts = _grouped([c], triplets, unit)
    rng = np.random.default_rng(random_state)
    tot = _resampled_totals(unit, keys, np.column_stack([sums, counts]), n_boot, rng)
    means = tot[:, 0] / np.maximum(tot[:, 1], 1e-300)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    n_units = keys.shape[0] if unit != "items" else int(np.unique(keys).size)
    return {
        "accuracy": float(c.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n": int(c.size),
        "n_units": int(n_units),
        "ci_unit": unit,
    }


def _paired_result(diff: float, boots: np.ndarray, level: float, unit: str) -> dict[str, Any]:
    """Difference, percentile CI and two-sided bootstrap p-value of H0: no difference.

    p = 2 · min(share of resampled differences ≤ 0, share ≥ 0), each share counted as
    (k + 1) / (B + 1) so that p is never exactly 0 (its resolution is 1 / (B + 1)).
    """
    boots = boots[np.isfinite(boots)]
    b = boots.size
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha]) if b else (float("nan"),) * 2
    p = min(
        1.0,
        2.0 * min((np.sum(boots <= 0) + 1) / (b + 1), (np.sum(boots >= 0) + 1) / (b + 1)),
    )
    return {
        "difference": float(diff),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": float(p),
        "n_boot": int(b),
        "unit": unit,
        "level": float(level),
    }


def paired_accuracy_test(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    triplets: np.ndarray,
    *,
    unit: CiUnit = "triplets",
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Paired bootstrap of accuracy(A) − accuracy(B) on the same triplet rows.

    Each resample draws triplets (or items, see :func:`_resampled_totals`) once and scores both
    representations on it, so what the two share cancels out of the difference.

    Parameters
    ----------
    correct_a, correct_b : (t,) bool per response row, for representations A and B.
    triplets : (t, 3) int, the rows' items.

    Returns
    -------
    ``{"difference", "ci_low", "ci_high", "p_value", "n_boot", "unit", "level",
    "accuracy_a", "accuracy_b", "n"}``.
    """
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size != np.asarray(triplets).shape[0]:
        raise InputError(
            f"needs one value per triplet row for both, got {a.shape} and {b.shape}",
            field="correct",
        )
    keys, (sa, sb), counts = _grouped([a, b], triplets, unit)
    rng = np.random.default_rng(random_state)
    tot = _resampled_totals(unit, keys, np.column_stack([sa - sb, counts]), n_boot, rng)
    diffs = tot[:, 0] / np.maximum(tot[:, 1], 1e-300)
    out = _paired_result(a.mean() - b.mean(), diffs, level, unit)
    out.update(accuracy_a=float(a.mean()), accuracy_b=float(b.mean()), n=int(a.size))
    return out


def paired_rsa_test(
    features_a: np.ndarray,
    features_b: np.ndarray,
    matrix: np.ndarray,
    *,
    metric_a: Literal["cosine", "pearson"] = "cosine",
    metric_b: Literal["cosine", "pearson"] = "cosine",
    kind: Literal["similarity", "dissimilarity"] = "similarity",
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Paired bootstrap over items of ρ(A) − ρ(B), the Spearman RSA of two representations.

    Each resample draws the items once and computes both ρ on it (pairs of an item with its
    own copy dropped, as in :func:`rsa_bootstrap_ci`).

    Returns
    -------
    ``{"difference", "ci_low", "ci_high", "p_value", "n_boot", "unit": "items", "level",
    "spearman_a", "spearman_b", "n"}``.
    """
    from scipy.stats import rankdata

    rho_a = rsa(features_a, matrix, metric=metric_a, kind=kind)
    rho_b = rsa(features_b, matrix, metric=metric_b, kind=kind)
    ma = model_rsm(check_features(features_a), metric_a)
    mb = model_rsm(check_features(features_b), metric_b)
    human = np.asarray(matrix, dtype=np.float64)
    if kind == "dissimilarity":
        human = -human
    n: int = ma.shape[0]
    if mb.shape[0] != n:
        raise InputError(
            f"A has {n} items but B has {mb.shape[0]}; a paired test needs the same items",
            field="features",
        )
    rng = np.random.default_rng(random_state)
    iu = np.triu_indices(n, k=1)
    diffs = np.empty(int(n_boot))
    for k in range(int(n_boot)):
        idx = rng.integers(0, n, size=n)
        r, c = idx[iu[0]], idx[iu[1]]
        keep = r != c
        rh = rankdata(human[r, c][keep])
        ra = rankdata(ma[r, c][keep])
        rb = rankdata(mb[r, c][keep])
        with np.errstate(invalid="ignore", divide="ignore"):
            diffs[k] = np.corrcoef(ra, rh)[0, 1] - np.corrcoef(rb, rh)[0, 1]
    out = _paired_result(rho_a - rho_b, diffs, level, "items")
    out.update(spearman_a=float(rho_a), spearman_b=float(rho_b), n=int(n))
    return out
