"""Object-disjoint folds and the cross-validated transform search."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from alignet_engine.align.metrics import pair_similarities
from alignet_engine.align.model_selection import (
    SearchStep,
    TransformSearch,
    object_disjoint_folds,
)
from alignet_engine.align.transform import AffineTransform
from alignet_engine.errors import InputError

N_ITEMS, DIM = 120, 6
FAST = {"max_epochs": 12, "batch_size": 1024, "lr": 0.03, "patience": 4}


@dataclass
class Data:
    X: np.ndarray  # (n, d) model features
    hard: np.ndarray  # (t, 3) one Luce-sampled answer per row, odd one last
    raw: np.ndarray  # (t, 3) the same triplets in random order
    probs: np.ndarray  # (t, 3) true choice probabilities of ``raw`` in logit order


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> Data:
    """Humans judge in H = X @ A (a hidden linear map) with Luce choice."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_ITEMS, DIM))
    A = rng.normal(size=(DIM, DIM)) @ np.diag(np.linspace(0.2, 1.6, DIM))
    a = rng.integers(0, N_ITEMS, size=(12_000, 3))
    raw = a[(a[:, 0] != a[:, 1]) & (a[:, 0] != a[:, 2]) & (a[:, 1] != a[:, 2])][:9000]
    probs = _softmax(pair_similarities(X @ A, raw, "dot"))
    pair = (rng.random(len(raw))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, 2)
    odd = 2 - pair
    rest = np.array([[1, 2], [0, 2], [0, 1]])[odd]
    r = np.arange(len(raw))
    hard = np.stack([raw[r, rest[:, 0]], raw[r, rest[:, 1]], raw[r, odd]], axis=1)
    return Data(X, hard, raw, probs)


# --------------------------------------------------------------------------------------------
# folds
# --------------------------------------------------------------------------------------------
def test_object_disjoint_folds(data: Data) -> None:
    folds = object_disjoint_folds(data.hard, N_ITEMS, n_splits=3, random_state=0)
    assert len(folds) == 3
    seen_test = np.zeros(len(data.hard), dtype=int)
    for train, test in folds:
        assert train.dtype == np.int64 and np.all(np.diff(train) > 0)
        train_objects = np.unique(data.hard[train])
        test_objects = np.unique(data.hard[test])
        assert np.intersect1d(train_objects, test_objects).size == 0  # object-disjoint
        # a third of the objects per fold -> (1/3)^3 test and (2/3)^3 train rows, in expectation
        assert 0.02 < test.size / len(data.hard) < 0.06
        assert 0.24 < train.size / len(data.hard) < 0.35
        seen_test[test] += 1
    assert seen_test.max() == 1  # each row is a test row in at most one fold
    # together the test sets use every object exactly once
    all_test_objects = np.concatenate([np.unique(data.hard[t]) for _, t in folds])
    assert np.unique(all_test_objects).size == all_test_objects.size
    # reproducible, and the seed matters
    again = object_disjoint_folds(data.hard, N_ITEMS, n_splits=3, random_state=0)
    other = object_disjoint_folds(data.hard, N_ITEMS, n_splits=3, random_state=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_folds_reject_bad_input(data: Data) -> None:
    with pytest.raises(InputError, match="n_splits"):
        object_disjoint_folds(data.hard, N_ITEMS, n_splits=1)
    with pytest.raises(InputError, match="objects"):
        object_disjoint_folds(np.array([[0, 1, 2], [2, 3, 4]]), 10, n_splits=6)
    with pytest.raises(InputError, match="fewer folds or more triplets"):
        # three objects, one per group: no triplet lies inside a group
        object_disjoint_folds(np.array([[0, 1, 2], [2, 1, 0]]), 3, n_splits=3)
    with pytest.raises(InputError, match="out of range"):
        object_disjoint_folds(data.hard, 50)


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def search(data: Data) -> TransformSearch:
    grid = {"lam": [0.0, 1000.0], "lr": [0.01, 0.03]}
    return TransformSearch(grid, n_splits=3, base_params=FAST, random_state=0).fit(
        data.X, data.hard
    )


def test_search_results_layout(search: TransformSearch, data: Data) -> None:
    res = search.cv_results_
    json.dumps(res)  # JSON-able, to be stored with a run
    n = 4
    # ParameterGrid order: keys sorted, the last one varying fastest
    assert res["params"] == [
        {"lam": 0.0, "lr": 0.01},
        {"lam": 0.0, "lr": 0.03},
        {"lam": 1000.0, "lr": 0.01},
        {"lam": 1000.0, "lr": 0.03},
    ]
    assert res["param_lam"] == [0.0, 0.0, 1000.0, 1000.0]
    for key in ("mean_test_accuracy", "std_test_accuracy", "mean_test_loss", "std_test_loss"):
        assert len(res[key]) == n and np.isfinite(res[key]).all()
    for f in range(3):
        for key in ("test_accuracy", "test_loss", "n_epochs", "fit_time"):
            assert len(res[f"split{f}_{key}"]) == n
    acc = np.array([res[f"split{f}_test_accuracy"] for f in range(3)])
    np.testing.assert_allclose(acc.mean(axis=0), res["mean_test_accuracy"])
    assert all(t > 0 for t in res["mean_fit_time"])
    assert sorted(res["rank_test_score"]) == [1, 2, 3, 4]
    assert res["rank_test_score"][search.best_index_] == 1
    assert search.best_score_ == pytest.approx(max(res["mean_test_accuracy"]))
    assert len(search.folds_) == 3 and search.n_splits_ == 3
    for fold in search.folds_:
        assert fold["n_train"] + fold["n_test"] + fold["n_dropped"] == len(data.hard)


def test_search_picks_the_fitting_setting(search: TransformSearch, data: Data) -> None:
    # λ = 1000 pins W to a scaled identity (zero-shot accuracy); λ = 0 learns the hidden map
    assert search.best_params_["lam"] == 0.0
    res = search.cv_results_
    free = max(res["mean_test_accuracy"][:2])
    tied = max(res["mean_test_accuracy"][2:])
    assert free > tied + 0.1
    assert min(res["mean_test_loss"][:2]) < min(res["mean_test_loss"][2:])
    # the refit uses every triplet with the best setting
    best = search.best_estimator_
    assert isinstance(best, AffineTransform)
    assert best.lam == 0.0 and best.lr == search.best_params_["lr"]
    assert best.val_mask_.shape == (len(data.hard),)
    assert best.random_state == 0 and best.max_epochs == FAST["max_epochs"]


def test_heldout_scores_match_a_manual_fit(search: TransformSearch, data: Data) -> None:
    """split0 of setting 1 = the same estimator fitted on fold 0's training rows by hand."""
    train, test = object_disjoint_folds(data.hard, N_ITEMS, 3, random_state=0)[0]
    est = AffineTransform(lam=0.0, random_state=0, **{**FAST, "lr": 0.03})
    est.fit(data.X, data.hard[train])
    res = search.cv_results_
    assert res["split0_test_accuracy"][1] == pytest.approx(est.score(data.X, data.hard[test]))
    q = est.predict_proba(data.X, data.hard[test])
    assert res["split0_test_loss"][1] == pytest.approx(-np.log(q[:, 0]).mean())


def test_soft_targets_follow_their_rows(data: Data) -> None:
    base = {**FAST, "objective": "soft"}
    s = TransformSearch({"lam": [0.0]}, n_splits=3, base_params=base, random_state=2)
    s.fit(data.X, data.raw, targets=data.probs, n_items=N_ITEMS)
    train, test = object_disjoint_folds(data.raw, N_ITEMS, 3, random_state=2)[1]
    est = AffineTransform(lam=0.0, random_state=2, **base)
    est.fit(data.X, data.raw[train], targets=data.probs[train])
    p = data.probs[test]
    kl = (p * (np.log(p) - est.predict_log_proba(data.X, data.raw[test]))).sum(axis=1).mean()
    assert s.cv_results_["split1_test_loss"][0] == pytest.approx(kl)
    assert s.best_estimator_.objective == "soft"
    with pytest.raises(InputError, match="one row per triplet"):
        s.fit(data.X, data.raw, targets=data.probs[:-1])


def test_scoring_loss(data: Data) -> None:
    s = TransformSearch(
        {"lam": [0.0, 1000.0]}, base_params=FAST, scoring="loss", random_state=0
    ).fit(data.X, data.hard)
    assert s.best_params_ == {"lam": 0.0}
    assert s.best_score_ == pytest.approx(min(s.cv_results_["mean_test_loss"]))


def test_iter_fit_progress_and_cancel(data: Data) -> None:
    grid = {"lam": [0.0, 0.1]}
    s = TransformSearch(grid, n_splits=3, base_params={**FAST, "max_epochs": 3}, random_state=0)
    steps = list(s.iter_fit(data.X, data.hard))
    assert all(isinstance(st, SearchStep) for st in steps)
    done = [st for st in steps if st.fold_done]
    assert [(st.setting, st.fold) for st in done] == [(i, f) for i in (1, 2) for f in (1, 2, 3)]
    assert all(np.isfinite(st.test_accuracy) and np.isfinite(st.test_loss) for st in done)
    assert [st.done_fits for st in done] == list(range(1, 7))
    assert all(st.n_fits == 7 and st.n_settings == 2 and st.n_splits == 3 for st in steps)
    epochs = [st for st in steps if not st.fold_done and not st.refit]
    assert {st.epoch for st in epochs} == {1, 2, 3}
    refit = [st for st in steps if st.refit]
    assert refit and all(st.params == s.best_params_ for st in refit)
    # stopping early (a cancelled job) leaves the search unfitted
    s2 = TransformSearch(grid, base_params={**FAST, "max_epochs": 3}, random_state=0)
    gen = s2.iter_fit(data.X, data.hard)
    next(gen)
    gen.close()
    assert not hasattr(s2, "cv_results_")


@pytest.mark.parametrize(
    ("grid", "kwargs", "msg"),
    [
        ({"gamma": [1.0]}, {}, "not an AffineTransform parameter"),
        ({"lam": []}, {}, "no values"),
        ({"lam": 0.1}, {}, "list of values"),
        ({}, {}, "non-empty"),
        ({"lam": [0.1]}, {"scoring": "auc"}, "scoring"),
        ({"lam": [0.1]}, {"base_params": {"epochs": 3}}, "base_params"),
    ],
)
def test_search_rejects_bad_input(data: Data, grid: dict, kwargs: dict, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        TransformSearch(grid, **kwargs).fit(data.X, data.hard)
