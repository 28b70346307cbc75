"""Metrics, noise ceilings and soft targets on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from alignet_engine.align.metrics import (
    accuracy_summary,
    bootstrap_ci,
    check_triplets,
    noise_ceiling_oddone,
    noise_ceiling_twoafc,
    oddone_correct,
    pair_similarities,
    rsa,
    twoafc_correct,
)
from alignet_engine.align.soft_targets import choice_distributions
from alignet_engine.base.types import Judgments
from alignet_engine.errors import InputError


def _oddone(rows: list[list[int]]) -> Judgments:
    trip = np.asarray(rows, dtype=np.int64)
    return Judgments("oddone", trip, -np.ones(len(trip), dtype=np.int64))


def _twoafc(rows: list[list[int]], votes: list[list[int]] | None = None) -> Judgments:
    trip = np.asarray(rows, dtype=np.int64)
    v = None if votes is None else np.asarray(votes, dtype=np.int64)
    return Judgments("twoafc", trip, -np.ones(len(trip), dtype=np.int64), votes=v)


# ------------------------------------------------------------------ similarities / accuracy
F = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])


def test_pair_similarities_hand_computed() -> None:
    trip = np.array([[0, 1, 2], [3, 0, 2]])
    dot = pair_similarities(F, trip, "dot")
    np.testing.assert_allclose(dot, [[2.0, 0.0, 0.0], [1.0, 3.0, 0.0]])
    cos = pair_similarities(F, trip, "cosine")
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(cos, [[1.0, 0.0, 0.0], [r, r, 0.0]])
    euc = pair_similarities(F, trip, "euclidean")
    np.testing.assert_allclose(
        euc, [[-1.0, -np.sqrt(10), -np.sqrt(13)], [-1.0, -np.sqrt(5), -np.sqrt(10)]]
    )
    assert dot.dtype == np.float64 and dot.shape == (2, 3)


def test_cosine_of_zero_vector_is_zero() -> None:
    feats = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(pair_similarities(feats, [[0, 1, 2]], "cosine"), [[0, 0, 0]])


def test_oddone_correct_and_ties() -> None:
    feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    trip = np.array(
        [
            [0, 1, 2],  # 0 and 1 most similar, odd = 2 -> correct
            [0, 2, 1],  # human says 1 is odd, model says 2 -> wrong
            [0, 3, 1],  # items 0 and 3 identical: s01 = 1 is the strict max -> correct
            [1, 2, 4],  # s01 = 0.09 ... check below
        ]
    )
    got = oddone_correct(feats, trip, "dot")
    s = pair_similarities(feats, trip, "dot")
    expected = (s[:, 0] > s[:, 1]) & (s[:, 0] > s[:, 2])
    np.testing.assert_array_equal(got, expected)
    assert got[:3].tolist() == [True, False, True]
    # a tie for the maximum is wrong, even when the human pair is among the tied
    tied = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert not oddone_correct(tied, [[0, 1, 2]], "dot")[0]
    two_tied = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0]])  # s01 = s02 = 1 > s12 = 0
    assert not oddone_correct(two_tied, [[0, 1, 2]], "dot")[0]


def test_twoafc_correct_strict() -> None:
    feats = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    got = twoafc_correct(feats, [[0, 1, 2], [0, 2, 1], [0, 1, 3]], "cosine")
    assert got.tolist() == [True, False, False]  # last row: a tie -> wrong


@pytest.mark.parametrize(
    ("feats", "trip", "msg"),
    [
        (np.array([[np.nan, 0.0], [1, 1], [2, 2]]), [[0, 1, 2]], "NaN"),
        (np.eye(3), [[0, 1, 3]], "out of range"),
        (np.eye(3), [[0, 1, 1]], "repeat an item"),
        (np.eye(3), [[0, 1]], "shape"),
        (np.eye(3), [[0, -1, 2]], "negative"),
        (np.eye(3), [[0, 1.5, 2]], "integer"),
        (np.ones(3), [[0, 1, 2]], "2-D"),
    ],
)
def test_bad_input_is_a_clear_error(feats: np.ndarray, trip: list, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        oddone_correct(feats, np.asarray(trip), "dot")


def test_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown similarity metric"):
        pair_similarities(np.eye(3), [[0, 1, 2]], "manhattan")  # type: ignore[arg-type]


def test_check_triplets_accepts_whole_floats() -> None:
    assert check_triplets(np.array([[0.0, 1.0, 2.0]]), 3).dtype == np.int64


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_brackets_mean_and_narrows() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 10_000):
        vals = rng.random(n) < 0.7
        lo, hi = bootstrap_ci(vals, n_boot=2000, random_state=0)
        assert lo <= vals.mean() <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 5  # width ~ 1/sqrt(n): 10x narrower expected
    # float input takes the resampling path and agrees with the binomial shortcut
    vals = (rng.random(400) < 0.6).astype(np.float64)
    lo_f, hi_f = bootstrap_ci(vals, n_boot=4000, random_state=0)
    lo_b, hi_b = bootstrap_ci(vals.astype(bool), n_boot=4000, random_state=0)
    assert abs(lo_f - lo_b) < 0.02 and abs(hi_f - hi_b) < 0.02
    assert bootstrap_ci(vals, random_state=3) == bootstrap_ci(vals, random_state=3)


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        bootstrap_ci(np.array([]))
    with pytest.raises(InputError):
        bootstrap_ci(np.array([1.0, np.nan]))
    with pytest.raises(InputError):
        bootstrap_ci(np.array([1.0, 0.0]), level=1.5)


def test_accuracy_summary() -> None:
    out = accuracy_summary(np.array([True, True, False, True]), random_state=0)
    assert set(out) == {"accuracy", "ci_low", "ci_high", "n"}
    assert out["accuracy"] == 0.75 and out["n"] == 4
    assert out["ci_low"] <= 0.75 <= out["ci_high"]


# ------------------------------------------------------------------ noise ceilings
def test_noise_ceiling_oddone_hand_case() -> None:
    j = _oddone(
        [
            # triplet {0,1,2}: odd one = 2, 2, 0, in different presentation orders
            [0, 1, 2],
            [1, 0, 2],
            [2, 1, 0],
            # triplet {3,4,5}: a single response -> not repeated, ignored
            [3, 4, 5],
            # triplet {6,7,8}: 6, 7 (tie)
            [7, 8, 6],
            [6, 8, 7],
        ]
    )
    out = noise_ceiling_oddone(j)
    assert out["n_triplets"] == 2 and out["n_responses"] == 5
    assert out["majority_agreement"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # {0,1,2}: the two "2" responses see others {2, 0} -> tie -> 1/2 each; the "0" sees {2, 2}
    # -> 0. {6,7,8}: each response sees the other's choice only -> 0.
    assert out["leave_one_out"] == pytest.approx((0.5 + 0.5 + 0 + 0 + 0) / 5)


def test_noise_ceiling_without_repeats_is_nan() -> None:
    out = noise_ceiling_oddone(_oddone([[0, 1, 2], [0, 1, 3]]))
    assert np.isnan(out["majority_agreement"]) and np.isnan(out["leave_one_out"])
    assert out["n_triplets"] == 0


def test_noise_ceiling_oddone_rejects_twoafc() -> None:
    with pytest.raises(InputError, match="odd-one-out"):
        noise_ceiling_oddone(_twoafc([[0, 1, 2]]))


def test_noise_ceiling_twoafc_votes_and_rows() -> None:
    # anchor 0, candidates {1, 2}: votes [3, 1] -> majority 3/4; LOO: the 3 see (2,1) -> 1,
    # the 1 sees (3,0) -> 0 => 3/4. Anchor 5 with candidates {6,7} split over two rows in
    # opposite order: 6 gets 1 + 1, 7 gets 1 + 1 -> tie 2:2.
    j = _twoafc([[0, 1, 2], [5, 6, 7], [5, 7, 6]], votes=[[3, 1], [1, 1], [1, 1]])
    out = noise_ceiling_twoafc(j)
    assert out["n_triplets"] == 2 and out["n_responses"] == 8
    assert out["majority_agreement"] == pytest.approx((0.75 + 0.5) / 2)
    # tie 2:2: a "6" response sees others (1, 2) -> 0 (each of the 4 responses), so
    assert out["leave_one_out"] == pytest.approx(3 / 8)
    # without votes each row is one response for its chosen item
    j2 = _twoafc([[0, 1, 2], [0, 1, 2], [0, 2, 1]])
    out2 = noise_ceiling_twoafc(j2)
    assert out2["majority_agreement"] == pytest.approx(2 / 3)
    assert out2["leave_one_out"] == pytest.approx((0.5 + 0.5 + 0) / 3)


def test_noise_ceiling_twoafc_bad_votes() -> None:
    with pytest.raises(InputError, match="votes"):
        noise_ceiling_twoafc(_twoafc([[0, 1, 2]], votes=[[1, 2], [3, 4]]))


# ------------------------------------------------------------------ RSA
def test_rsa_similarity_and_dissimilarity() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 5))
    norm = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    human = np.tanh(norm @ norm.T)  # monotone in the cosine -> rho = 1
    assert rsa(feats, human) == pytest.approx(1.0)
    assert rsa(feats, 1 - human, kind="dissimilarity") == pytest.approx(1.0)
    assert rsa(feats, 1 - human) == pytest.approx(-1.0)
    centred = feats - feats.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    assert rsa(feats, centred @ centred.T, metric="pearson") == pytest.approx(1.0)
    with pytest.raises(InputError, match="match"):
        rsa(feats, human[:5, :5])
    with pytest.raises(InputError, match="kind"):
        rsa(feats, human, kind="distance")  # type: ignore[arg-type]


# ------------------------------------------------------------------ soft targets
def test_choice_distributions_oddone_order() -> None:
    j = _oddone([[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 4, 5], [4, 5, 3], [5, 3, 4]])
    trip, probs = choice_distributions(j)
    assert trip.tolist() == [[0, 1, 2], [4, 5, 3]]
    # logit order [S01, S02, S12] <-> [p(odd = col 2), p(odd = col 1), p(odd = col 0)]
    np.testing.assert_allclose(probs[0], [2 / 3, 0.0, 1 / 3])
    # {3,4,5}: odd = 5, 3, 4 once each -> all tied -> odd = smallest id (3) last, uniform
    np.testing.assert_allclose(probs[1], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # the canonical row is a majority-consistent hard label: column 0 is the largest prob
    assert (probs[:, 0] >= probs.max(axis=1) - 1e-12).all()
    _, smooth = choice_distributions(j, smoothing=1.0)
    np.testing.assert_allclose(smooth[0], [3 / 6, 1 / 6, 2 / 6])


def test_choice_distributions_twoafc_votes() -> None:
    j = _twoafc(
        [[0, 1, 2], [0, 2, 1], [5, 7, 6], [8, 9, 3]], votes=[[1, 0], [3, 0], [2, 2], [0, 0]]
    )
    trip, probs = choice_distributions(j)
    assert trip.tolist() == [[0, 2, 1], [5, 6, 7], [8, 3, 9]]
    np.testing.assert_allclose(probs, [[0.75, 0.25], [0.5, 0.5], [0.5, 0.5]])


# ------------------------------------------------------------------ RSA noise ceiling
def _subject_matrices(seed: int, s: int = 4, n: int = 12) -> np.ndarray:
    """``s`` noisy, differently scaled copies of one symmetric (n, n) similarity matrix."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, n))
    mats = np.stack(
        [
            base * rng.uniform(0.2, 5.0) + rng.normal(0.0, rng.uniform(0.1, 1.0), (n, n))
            for _ in range(s)
        ]
    )
    return (mats + mats.transpose(0, 2, 1)) / 2


def test_matrix_noise_ceiling_averages_ranks_by_hand() -> None:
    """3 subjects, 4 items: the bounds from rank-averaged upper triangles, computed by hand."""
    from scipy.stats import spearmanr

    from alignet_engine.align.metrics import noise_ceiling_matrix

    # upper triangles (pairs 01, 02, 03, 12, 13, 23); subject 0's last pair is an outlier in
    # value but not in rank
    tri = np.array(
        [[1.0, 2.0, 3.0, 4.0, 5.0, 600.0], [6.0, 5.0, 4.0, 1.0, 3.0, 2.0], [2, 1, 4, 3, 6, 5]]
    )
    mats = np.zeros((3, 4, 4))
    iu = np.triu_indices(4, k=1)
    mats[:, iu[0], iu[1]] = tri
    ranks = np.array([[1, 2, 3, 4, 5, 6], [6, 5, 4, 1, 3, 2], [2, 1, 4, 3, 6, 5]], dtype=float)
    upper = np.mean([spearmanr(tri[i], ranks.mean(axis=0)).statistic for i in range(3)])
    lower = np.mean(
        [spearmanr(tri[i], np.delete(ranks, i, axis=0).mean(axis=0)).statistic for i in range(3)]
    )
    got = noise_ceiling_matrix(mats)
    assert got["n_subjects"] == 3
    assert got["upper"] == pytest.approx(upper, abs=1e-12)
    assert got["lower"] == pytest.approx(lower, abs=1e-12)
    # averaging raw values (the old bound) gives another answer: the outlier 600 dominates it
    raw_upper = np.mean([spearmanr(tri[i], tri.mean(axis=0)).statistic for i in range(3)])
    assert abs(raw_upper - upper) > 0.01


@pytest.mark.parametrize("seed", range(6))
def test_matrix_noise_ceiling_matches_rsatoolbox(seed: int) -> None:
    """Both bounds equal rsatoolbox's boot_noise_ceiling(method="spearman") on random cases."""
    rsatoolbox = pytest.importorskip("rsatoolbox")
    from rsatoolbox.inference.noise_ceiling import boot_noise_ceiling

    from alignet_engine.align.metrics import noise_ceiling_matrix

    s = 3 + seed % 4
    mats = _subject_matrices(seed, s=s, n=8 + seed)
    iu = np.triu_indices(mats.shape[1], k=1)
    # rsatoolbox takes dissimilarities; negated similarities have reversed ranks, same bounds
    lower, upper = boot_noise_ceiling(
        rsatoolbox.rdm.RDMs(-mats[:, iu[0], iu[1]]), method="spearman"
    )
    got = noise_ceiling_matrix(mats)
    assert got["upper"] == pytest.approx(upper, abs=1e-10)
    assert got["lower"] == pytest.approx(lower, abs=1e-10)
    assert noise_ceiling_matrix(-mats, kind="dissimilarity")["upper"] == pytest.approx(upper)
