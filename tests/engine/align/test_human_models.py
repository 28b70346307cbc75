"""Human models: VICE on a planted embedding, imported embeddings, random triplets, soft targets.

The THINGS test parses ``triplets_noiseceiling.tsv`` itself (no header; columns
``obj_1 obj_2 obj_3 choice participant``; 1-based ids; ``choice`` = position 1..3 of the odd one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from alignet_engine.align.human_models import (
    VICE,
    EmbeddingHumanModel,
    VICEEpoch,
    sample_random_triplets,
    soft_targets_from_model,
)
from alignet_engine.errors import AlignetError, InputError

REST = np.array([[1, 2], [0, 2], [0, 1]])


def odd_last(raw: np.ndarray, odd_pos: np.ndarray) -> np.ndarray:
    """Rows of ``raw`` with column ``odd_pos`` moved last (the others keep their order)."""
    r = np.arange(raw.shape[0])
    rest = REST[odd_pos]
    return np.stack([raw[r, rest[:, 0]], raw[r, rest[:, 1]], raw[r, odd_pos]], axis=1)


def simulate(model: EmbeddingHumanModel, raw: np.ndarray, seed: int) -> np.ndarray:
    """One sampled response per row from the model's softmax, odd one last."""
    p = model.predict_proba(raw)  # [p(odd=col2), p(odd=col1), p(odd=col0)]
    u = np.random.default_rng(seed).random(raw.shape[0])[:, None]
    pair = np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), 2)
    return odd_last(raw, 2 - pair)


def bayes_accuracy(p: np.ndarray) -> float:
    """Expected accuracy of the argmax of ``p`` on rows whose answer is column 0, with ties
    broken at random (a strict-argmax score would count the generating model's exact ties —
    common with a sparse embedding — as wrong)."""
    top = np.isclose(p, p.max(axis=1, keepdims=True), rtol=0, atol=1e-12)
    return float(np.mean(top[:, 0] / top.sum(axis=1)))


# --------------------------------------------------------------------------------------------
# planted embedding
# --------------------------------------------------------------------------------------------
N_ITEMS, TRUE_DIMS = 60, 4
# Fast but faithful: the reference settings (lr 1e-3, batch 128, burn-in 500, ws 200) are sized
# for 4 M THINGS triplets (32 k steps per epoch); on 20 k triplets they would need minutes. The
# algorithm is the same. (With lr 0.02 the fit also converges, but split copies of the true
# dimensions take longer than a ws of 20 epochs to be pruned: 7-8 dims.)
FAST = {"lr": 0.05, "batch_size": 256, "max_epochs": 150, "burnin": 40, "ws": 20}


@dataclass
class Planted:
    E: np.ndarray  # (n, 4) true sparse non-negative embedding
    model: EmbeddingHumanModel
    train: np.ndarray  # (20000, 3) one simulated response per row, odd last
    test: np.ndarray  # (10000, 3) held-out responses, odd last
    vice: VICE
    epochs: list[VICEEpoch]


@pytest.fixture(scope="module")
def planted() -> Planted:
    rng = np.random.default_rng(0)
    E = np.zeros((N_ITEMS, TRUE_DIMS))
    for i in range(N_ITEMS):
        E[i, i % TRUE_DIMS] = rng.uniform(1.5, 3.0)  # every dimension has 15 members
        if rng.random() < 0.4:
            E[i, rng.integers(TRUE_DIMS)] += rng.uniform(0.3, 1.0)
    model = EmbeddingHumanModel(E)
    train = simulate(model, sample_random_triplets(N_ITEMS, 20_000, 1), seed=2)
    test = simulate(model, sample_random_triplets(N_ITEMS, 10_000, 3), seed=4)
    vice = VICE(random_state=0, **FAST)
    epochs = list(vice.iter_fit(train, N_ITEMS))
    return Planted(E, model, train, test, vice, epochs)


def test_vice_recovers_planted_embedding(planted: Planted) -> None:
    vice = planted.vice
    # pruning: 100 initial dimensions -> about the true 4
    assert TRUE_DIMS <= vice.n_dims_ <= TRUE_DIMS + 2
    assert vice.converged_ and vice.n_epochs_ < FAST["max_epochs"]
    assert vice.history_["n_dims"][0] > 10 * TRUE_DIMS  # started with (nearly) all
    assert vice.loc_.shape == vice.scale_.shape == vice.embedding_.shape
    assert vice.embedding_.shape == (N_ITEMS, vice.n_dims_)
    assert (vice.embedding_ >= 0).all() and (vice.scale_ > 0).all()
    # the 4 strongest dimensions (loc_ is ordered by L1 norm) are the true ones, up to
    # permutation and scale
    top = vice.embedding_[:, :TRUE_DIMS]
    corr = np.corrcoef(planted.E.T, top.T)[:TRUE_DIMS, TRUE_DIMS:]
    assert sorted(np.argmax(corr, axis=1).tolist()) == list(range(TRUE_DIMS))
    assert corr.max(axis=1).min() > 0.95
    # held-out accuracy approaches the generating model's (Bayes-optimal) accuracy
    optimal = bayes_accuracy(planted.model.predict_proba(planted.test))
    acc = vice.score(planted.test)
    assert acc > optimal - 0.02, (acc, optimal)
    # and the predictive distribution is close to the true one
    p_true = planted.model.predict_proba(planted.test)
    p_vice = vice.predict_proba(planted.test)
    kl = np.sum(p_true * (np.log(p_true) - np.log(p_vice)), axis=1).mean()
    assert kl < 0.05


def test_vice_iter_fit_records(planted: Planted) -> None:
    epochs, vice = planted.epochs, planted.vice
    assert [e.epoch for e in epochs] == list(range(1, vice.n_epochs_ + 1))
    assert epochs[-1].converged and not any(e.converged for e in epochs[:-1])
    assert [e.n_dims for e in epochs] == vice.history_["n_dims"]
    assert len(set(vice.history_["n_dims"][-FAST["ws"] :])) == 1
    assert epochs[-1].n_dims == vice.n_dims_
    for e in epochs:
        assert e.loss == pytest.approx(e.nll + e.complexity, rel=1e-4)
    # it learned: the NLL fell well below chance (ln 3)
    assert epochs[-1].nll < 0.8 * math.log(3)


def _small_data() -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(5)
    E = rng.gamma(1.0, 1.0, size=(20, 3)) * (rng.random((20, 3)) < 0.5)
    return simulate(EmbeddingHumanModel(E), sample_random_triplets(20, 2000, 6), seed=7), 20


def test_vice_deterministic_with_random_state() -> None:
    trip, n = _small_data()
    params = {"n_dims": 10, "max_epochs": 3, "batch_size": 256, "lr": 0.02, "k": 0}
    a = VICE(random_state=3, **params).fit(trip, n)
    b = VICE(random_state=3, **params).fit(trip, n)
    c = VICE(random_state=4, **params).fit(trip, n)
    np.testing.assert_array_equal(a.loc_, b.loc_)
    np.testing.assert_array_equal(a.scale_, b.scale_)
    assert a.history_ == b.history_
    probe = sample_random_triplets(n, 50, 0)
    np.testing.assert_array_equal(a.predict_proba(probe), b.predict_proba(probe))
    # predict_proba is repeatable on one estimator, and fewer samples change it
    np.testing.assert_array_equal(a.predict_proba(probe), a.predict_proba(probe))
    assert not np.array_equal(a.predict_proba(probe, mc_samples=2), a.predict_proba(probe))
    assert a.history_ != c.history_


def test_vice_unfitted_and_bad_input() -> None:
    with pytest.raises(NotFittedError):
        VICE().predict_proba(np.array([[0, 1, 2]]))
    trip, n = _small_data()
    with pytest.raises(InputError, match="prior"):
        VICE(prior="cauchy").fit(trip, n)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="spike"):
        VICE(spike=2.0, slab=1.0).fit(trip, n)
    with pytest.raises(InputError, match="out of range"):
        VICE().fit(trip, n_items=5)
    with pytest.raises(AlignetError, match="learning rate"):
        VICE(n_dims=5, lr=1e8, max_epochs=2, random_state=0).fit(trip, n)
    # stopping the generator early leaves the estimator unfitted
    est = VICE(n_dims=5, max_epochs=5, random_state=0)
    it = est.iter_fit(trip, n)
    assert isinstance(next(it), VICEEpoch)
    it.close()
    assert not hasattr(est, "loc_")


@pytest.mark.parametrize("prior", ["spike_slab", "laplace", "gaussian"])
def test_vice_priors_run(prior: str) -> None:
    trip, n = _small_data()
    est = VICE(n_dims=8, prior=prior, max_epochs=2, k=0, random_state=0).fit(trip, n)  # type: ignore[arg-type]
    assert np.isfinite(est.history_["loss"]).all()
    p = est.predict_proba(trip[:20])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


# --------------------------------------------------------------------------------------------
# column order, by hand
# --------------------------------------------------------------------------------------------
E_TINY = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # items 0 and 1 alike, 2 the odd one


def test_embedding_model_order_by_hand() -> None:
    m = EmbeddingHumanModel(E_TINY)
    e = math.e
    # row (0, 1, 2): logits [S01, S02, S12] = [1, 0, 0] -> col 0 = p(odd = item 2)
    p = m.predict_proba(np.array([[0, 1, 2], [2, 0, 1]]))
    np.testing.assert_allclose(p[0], [e / (e + 2), 1 / (e + 2), 1 / (e + 2)])
    # row (2, 0, 1): logits [S20, S21, S01] = [0, 0, 1] -> col 2 = p(odd = col 0 = item 2)
    np.testing.assert_allclose(p[1], [1 / (e + 2), 1 / (e + 2), e / (e + 2)])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert m.score(np.array([[0, 1, 2]])) == 1.0 and m.score(np.array([[0, 2, 1]])) == 0.0
    # temperature scales the logits
    p2 = EmbeddingHumanModel(E_TINY, temperature=2.0).predict_proba(np.array([[0, 1, 2]]))
    np.testing.assert_allclose(p2[0, 0], e**2 / (e**2 + 2))
    with pytest.raises(InputError):
        EmbeddingHumanModel(E_TINY, temperature=0.0)
    with pytest.raises(InputError, match="out of range"):
        m.predict_proba(np.array([[0, 1, 3]]))


def test_vice_predict_proba_order_by_hand() -> None:
    # a near-point posterior at E_TINY behaves like the embedding itself
    vice = VICE.from_arrays(
        {"loc": E_TINY, "scale": np.full(E_TINY.shape, 1e-6)}, random_state=0, mc_samples=4
    )
    rows = np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0]])
    p = vice.predict_proba(rows)
    np.testing.assert_allclose(p, EmbeddingHumanModel(E_TINY).predict_proba(rows), atol=1e-5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # relu: a negative mean contributes nothing
    neg = VICE.from_arrays({"loc": -E_TINY, "scale": np.full(E_TINY.shape, 1e-6)})
    np.testing.assert_allclose(neg.predict_proba(rows), 1 / 3)
    arrays = vice.to_arrays()
    assert set(arrays) == {"loc", "scale"} and arrays["loc"].dtype == np.float32


def test_fitted_vice_rows_sum_to_one(planted: Planted) -> None:
    p = planted.vice.predict_proba(planted.test[:500], mc_samples=3)
    assert p.shape == (500, 3) and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


# --------------------------------------------------------------------------------------------
# random triplets
# --------------------------------------------------------------------------------------------
def test_sample_random_triplets() -> None:
    t = sample_random_triplets(10, 60_000, random_state=0)
    assert t.shape == (60_000, 3) and t.dtype == np.int64
    assert t.min() == 0 and t.max() == 9
    assert ((t[:, 0] != t[:, 1]) & (t[:, 0] != t[:, 2]) & (t[:, 1] != t[:, 2])).all()
    # every item is equally likely in every position (10 % each, ± a few binomial SDs)
    for col in range(3):
        freq = np.bincount(t[:, col], minlength=10) / t.shape[0]
        assert np.abs(freq - 0.1).max() < 0.006
    # all 120 unordered sets appear, about equally often
    _, counts = np.unique(np.sort(t, axis=1), axis=0, return_counts=True)
    assert counts.size == math.comb(10, 3) and counts.min() > 0.7 * counts.mean()
    np.testing.assert_array_equal(t, sample_random_triplets(10, 60_000, random_state=0))
    u = sample_random_triplets(10, 120, random_state=1, replace=False)
    assert np.unique(np.sort(u, axis=1), axis=0).shape[0] == 120
    with pytest.raises(InputError):
        sample_random_triplets(10, 121, random_state=1, replace=False)
    with pytest.raises(InputError):
        sample_random_triplets(2, 5)


# --------------------------------------------------------------------------------------------
# soft targets
# --------------------------------------------------------------------------------------------
def test_soft_targets_by_hand() -> None:
    m = EmbeddingHumanModel(E_TINY)
    trip, probs = soft_targets_from_model(m, np.array([[2, 0, 1], [0, 2, 1], [0, 1, 2]]))
    # item 2 is the most likely odd one: it goes last, the other two keep their order
    np.testing.assert_array_equal(trip, [[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    e = math.e
    np.testing.assert_allclose(probs, [[e / (e + 2), 1 / (e + 2), 1 / (e + 2)]] * 3)


def test_soft_targets_round_trip() -> None:
    rng = np.random.default_rng(0)
    E = rng.gamma(1.0, 1.0, size=(40, 5)) * (rng.random((40, 5)) < 0.4)
    m = EmbeddingHumanModel(E)
    raw = sample_random_triplets(40, 3000, random_state=1)
    trip, probs = soft_targets_from_model(m, raw)
    assert trip.shape == raw.shape and probs.shape == (3000, 3)
    np.testing.assert_array_equal(np.sort(trip, axis=1), np.sort(raw, axis=1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs[:, 0] >= probs.max(axis=1)).all()  # most likely odd one last
    # round trip: the model's probabilities of the reordered rows ARE the targets
    np.testing.assert_allclose(m.predict_proba(trip), probs, rtol=1e-12)
    # order of the input rows does not matter, only the item sets do
    perm = rng.permuted(raw, axis=1)
    trip2, probs2 = soft_targets_from_model(m, perm)
    strict = probs[:, 0] > probs[:, 1] + 1e-9  # ties may go either way
    np.testing.assert_array_equal(trip2[strict, 2], trip[strict, 2])
    np.testing.assert_allclose(probs2[strict, 0], probs[strict, 0])
    # columns 1, 2 follow the pair's order in the row: (i, j) swapped <-> columns swapped
    swapped = trip2[:, 0] != trip[:, 0]
    np.testing.assert_allclose(probs2[swapped][:, 1:], probs[swapped][:, :0:-1])
    np.testing.assert_allclose(probs2[~swapped], probs[~swapped])
    # the reordered rows are the model's argmax answers: a perfect score (ties aside)
    assert m.score(trip) == pytest.approx(strict.mean())
    # idempotent
    trip3, probs3 = soft_targets_from_model(m, trip)
    np.testing.assert_array_equal(trip3, trip)
    np.testing.assert_allclose(probs3, probs)


def test_soft_targets_feed_affine_transform() -> None:
    from alignet_engine.align.transform import AffineTransform

    rng = np.random.default_rng(1)
    E = rng.gamma(1.0, 1.0, size=(30, 4))
    X = E @ rng.normal(size=(4, 6))  # features that linearly contain the "human" space
    trip, probs = soft_targets_from_model(
        EmbeddingHumanModel(E), sample_random_triplets(30, 2000, random_state=2)
    )
    est = AffineTransform("soft", max_epochs=3, batch_size=512, random_state=0)
    est.fit(X, trip, targets=probs)
    assert est.predict_proba(X, trip).shape == (2000, 3)


def test_soft_targets_reject_bad_model() -> None:
    class Bad:
        def predict_proba(self, triplets: np.ndarray) -> np.ndarray:
            return np.ones((len(triplets), 3))

    with pytest.raises(InputError, match="summing to 1"):
        soft_targets_from_model(Bad(), np.array([[0, 1, 2]]))


# --------------------------------------------------------------------------------------------
# THINGS
# --------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_things_vice_embedding_accuracy(shared_data: Path) -> None:
    folder = shared_data / "things"
    raw = np.loadtxt(folder / "triplets_noiseceiling.tsv", dtype=np.int64, delimiter="\t")
    assert raw.shape == (20_000, 5)
    objects = raw[:, :3] - 1  # 1-based -> 0-based
    choice = raw[:, 3] - 1  # position of the odd one, 0..2
    trip = odd_last(objects, choice)
    assert (trip[np.arange(len(raw)), 2] == objects[np.arange(len(raw)), choice]).all()
    m = EmbeddingHumanModel.from_npy(folder / "vice_embedding_things.npy")
    assert m.n_items == 1854
    assert m.score(trip) == pytest.approx(0.6357, abs=0.002)  # PROVENANCE.md: 63.57 %
    # the argmax of the soft targets is the same answer set: reordered rows agree with the
    # human answer exactly where the model is right
    new, probs = soft_targets_from_model(m, objects)
    p = m.predict_proba(trip)
    right = (p[:, 0] > p[:, 1]) & (p[:, 0] > p[:, 2])
    np.testing.assert_array_equal(new[:, 2] == trip[:, 2], right)
    # VICE is uncertain on these triplets (method.md §1.1: mean entropy 0.794 nats on THINGS
    # test triplets); its probability of its own answer is far from 1
    assert 0.5 < probs[:, 0].mean() < 0.8
