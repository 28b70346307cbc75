"""Triplet sampling strategies, teacher labels and probabilities, the AligNet npz layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from alignet_engine.align import triplet_sampling
from alignet_engine.align.clustering import kmeans
from alignet_engine.align.metrics import pair_similarities
from alignet_engine.align.triplet_sampling import (
    STRATEGIES,
    load_alignet_npz,
    sample_triplets,
    save_alignet_npz,
    teacher_odd_one_out,
    teacher_probabilities,
    triplet_similarities,
)
from alignet_engine.base.similarity import gathered_pairs_numpy, gathered_pairs_torch
from alignet_engine.errors import InputError


def _strategy(name: str):
    """``f(groups, n_triplets, **kw)``: :func:`sample_triplets` with one strategy."""
    key = "classes" if "class" in name else "labels"
    return lambda groups, n, **kw: sample_triplets(name, n, **{key: groups}, **kw)


sample_cluster_boundary = _strategy("cluster_boundary")
sample_within_cluster = _strategy("within_cluster")
sample_between_clusters = _strategy("between_clusters")
sample_class_boundary = _strategy("class_boundary")
sample_within_class = _strategy("within_class")
sample_between_classes = _strategy("between_classes")


def sample_random(n_items, n, **kw):
    return sample_triplets("random", n, n_items=n_items, **kw)


def _blobs(n_per: int, k: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, d))
    truth = np.repeat(np.arange(k), n_per)
    return (centres[truth] + rng.normal(size=(k * n_per, d))).astype(np.float32), truth


# ------------------------------------------------------------------ k-means
def test_kmeans_recovers_blobs() -> None:
    Z, truth = _blobs(40, 5, 6, seed=0)
    labels, centroids, inertia = kmeans(Z, 5, random_state=0)
    assert labels.shape == (200,) and labels.dtype == np.int64
    assert centroids.shape == (5, 6) and centroids.dtype == np.float32
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    assert inertia == pytest.approx(float(((Z - centroids[labels]) ** 2).sum()), rel=1e-3)
    again = kmeans(Z, 5, random_state=0)
    np.testing.assert_array_equal(labels, again[0])


def test_kmeans_minibatch_path() -> None:
    Z, truth = _blobs(100, 4, 5, seed=1)
    labels, centroids, _ = kmeans(Z, 4, random_state=0, minibatch_above=100, batch_size=256)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert centroids.shape == (4, 5)


@pytest.mark.parametrize(("k", "msg"), [(1, "at least 2"), (11, "more than the 10 rows")])
def test_kmeans_bad_k(k: int, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        kmeans(np.random.default_rng(0).normal(size=(10, 2)), k)


def test_kmeans_rejects_nan() -> None:
    Z = np.ones((10, 2))
    Z[4, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        kmeans(Z, 2)


# ------------------------------------------------------------------ sampling
def test_cluster_boundary_properties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, size=500) * 7 - 3  # arbitrary (negative, sparse) label values
    labels[:3] = [1000, 2000, 3000]  # three singleton clusters
    trip = sample_cluster_boundary(labels, 50_000, random_state=1)
    assert trip.shape == (50_000, 3) and trip.dtype == np.int64
    assert ((trip >= 0) & (trip < 500)).all()
    lab = labels[trip]
    assert (trip[:, 0] != trip[:, 1]).all()
    assert (lab[:, 0] == lab[:, 1]).all()
    assert (lab[:, 2] != lab[:, 0]).all()
    # singletons never supply the pair, but can be the outsider
    assert not np.isin(lab[:, 0], [1000, 2000, 3000]).any()
    assert np.isin(lab[:, 2], [1000, 2000, 3000]).any()
    # roughly uniform over the eligible first clusters (20 of them)
    counts = np.unique(lab[:, 0], return_counts=True)[1]
    assert counts.size == 20 and counts.min() > 0.8 * 50_000 / 20
    np.testing.assert_array_equal(trip, sample_cluster_boundary(labels, 50_000, random_state=1))
    assert not np.array_equal(trip, sample_cluster_boundary(labels, 50_000, random_state=2))


def test_cluster_boundary_scales_vectorised() -> None:
    labels = np.random.default_rng(0).integers(0, 500, size=100_000)
    trip = sample_cluster_boundary(labels, 1_000_000, random_state=0)
    assert trip.shape == (1_000_000, 3)
    lab = labels[trip]
    assert (lab[:, 0] == lab[:, 1]).all() and (lab[:, 0] != lab[:, 2]).all()


@pytest.mark.parametrize(
    ("labels", "msg"),
    [
        (np.zeros(10, dtype=int), "two clusters"),
        (np.arange(10), "no cluster has two items"),
        (np.array([0.5, 1.5, 0.5]), "integer"),
    ],
)
def test_cluster_boundary_errors(labels: np.ndarray, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        sample_cluster_boundary(labels, 5, random_state=0)


# ------------------------------------------------------------------ teacher labels
def test_teacher_odd_one_out_hand_case() -> None:
    Z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.6, 0.8]])
    # dots: (0,1) 0, (0,2) .9, (1,2) .1  -> pair (0,2), odd 1; 1 is closer to 2 (.1) than 0
    trip, sims = teacher_odd_one_out(Z, np.array([[0, 1, 2]]))
    assert trip.tolist() == [[2, 0, 1]]
    np.testing.assert_allclose(sims, [[0.9, 0.1, 0.0]], atol=1e-7)
    assert sims.dtype == np.float32


def test_teacher_ordering_invariants() -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(100, 8))
    raw = sample_cluster_boundary(rng.integers(0, 5, size=100), 5000, random_state=0)
    trip, sims = teacher_odd_one_out(Z, raw)
    # each row is a permutation of its input row
    np.testing.assert_array_equal(np.sort(trip, axis=1), np.sort(raw, axis=1))
    # sims are the real similarities of the reordered rows, sorted s01 >= s02 >= s12
    np.testing.assert_allclose(sims, pair_similarities(Z, trip, "dot"), rtol=1e-5, atol=1e-5)
    assert (sims[:, 0] >= sims[:, 1]).all() and (sims[:, 1] >= sims[:, 2]).all()
    # method.md §1.2: s12 < s01 and s12 < s02 -> item 2 is the teacher's odd one
    assert (sims[:, 2] <= sims[:, 0]).all() and (sims[:, 2] <= sims[:, 1]).all()
    # invariant to the presentation order of the input row
    shuffled = np.take_along_axis(raw, rng.permuted(np.tile([0, 1, 2], (len(raw), 1)), axis=1), 1)
    trip2, sims2 = teacher_odd_one_out(Z, shuffled)
    np.testing.assert_array_equal(trip2, trip)
    np.testing.assert_array_equal(sims2, sims)
    # idempotent
    trip3, _ = teacher_odd_one_out(Z, trip)
    np.testing.assert_array_equal(trip3, trip)


def test_teacher_ties_keep_input_order() -> None:
    Z = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    trip, sims = teacher_odd_one_out(Z, np.array([[2, 0, 1]]))
    assert trip.tolist() == [[2, 0, 1]]
    np.testing.assert_allclose(sims, [[1, 1, 1]])


def test_teacher_cosine() -> None:
    Z = np.array([[10.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    trip, _ = teacher_odd_one_out(Z, np.array([[0, 1, 2]]), similarity="cosine")
    assert set(trip[0, :2].tolist()) == {0, 2} and trip[0, 2] == 1


# ------------------------------------------------------------------ npz layout
def test_alignet_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(30, 4))
    names = [f"n0144076{i % 10}/ILSVRC2012_val_{i:08d}.JPEG" for i in range(29)] + ["é.png"]
    trip, sims = teacher_odd_one_out(
        Z, sample_cluster_boundary(np.arange(30) % 3, 200, random_state=0)
    )
    path = tmp_path / "train_cluster_border_3.npz"
    save_alignet_npz(path, trip, sims, names)
    with np.load(path, allow_pickle=False) as data:  # no pickled objects in the file
        assert set(data.files) == {"filenames", "similarities", "indices"}
        assert data["filenames"].dtype.kind == "U"
    filenames, similarities, indices = load_alignet_npz(path)
    np.testing.assert_array_equal(indices, trip)
    np.testing.assert_array_equal(similarities, sims)
    assert filenames.shape == (200, 3)
    assert filenames.tolist() == np.asarray(names)[trip].tolist()
    assert similarities.dtype == np.float32 and indices.dtype == np.int64
    # names may also be given per row, already indexed
    save_alignet_npz(path, trip, sims, np.asarray(names, dtype=object)[trip])
    assert load_alignet_npz(path)[0].tolist() == filenames.tolist()


def test_alignet_npz_rejects_unsorted_and_missing(tmp_path: Path) -> None:
    trip = np.array([[0, 1, 2]])
    with pytest.raises(InputError, match="AligNet order"):
        save_alignet_npz(tmp_path / "x.npz", trip, np.array([[0.1, 0.5, 0.2]]), ["a", "b", "c"])
    with pytest.raises(InputError, match="file name"):
        save_alignet_npz(tmp_path / "x.npz", trip, np.array([[0.5, 0.2, 0.1]]), ["a", "b"])
    with pytest.raises(InputError, match="names per row"):
        save_alignet_npz(tmp_path / "x.npz", trip, np.array([[0.5, 0.2, 0.1]]), [["a", "b"]])
    np.savez(tmp_path / "bad.npz", indices=trip)
    with pytest.raises(InputError, match="missing key"):
        load_alignet_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"not an \.npz archive") as err:
        load_alignet_npz(tmp_path / "junk.npz")
    assert err.value.source == str(tmp_path / "junk.npz")


# ------------------------------------------------------------------ all strategies
def _pool_labels(seed: int = 0) -> np.ndarray:
    """Sparse, negative label values; 20 big groups, plus groups of sizes 1, 1, 2 and 2."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 20, size=600) * 7 - 3
    labels[:6] = [1000, 2000, 3000, 3000, 4000, 4000]
    return labels


def _check_rule(strategy: str, trip: np.ndarray, groups: np.ndarray) -> None:
    """Membership rule of ``strategy`` on (m, 3) rows, given each item's group."""
    g = groups[trip]
    size = dict(zip(*np.unique(groups, return_counts=True)))
    sizes = np.vectorize(size.__getitem__)(g[:, 0]) if g.dtype.kind in "US" else None
    kind = strategy.split("_")[0]
    if strategy.endswith("boundary"):
        assert (g[:, 0] == g[:, 1]).all() and (g[:, 2] != g[:, 0]).all()
        if sizes is None:
            sizes = np.array([size[v] for v in np.unique(g[:, 0])])
        assert (sizes >= 2).all()
    elif kind == "within":
        assert (g[:, 0] == g[:, 1]).all() and (g[:, 0] == g[:, 2]).all()
        assert all(size[v] >= 3 for v in np.unique(g[:, 0]))
    elif kind == "between":
        assert (g[:, 0] != g[:, 1]).all() and (g[:, 0] != g[:, 2]).all()
        assert (g[:, 1] != g[:, 2]).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_properties(strategy: str) -> None:
    labels = _pool_labels()
    classes = np.char.add("class_", labels.astype(str))  # category NAMES for class_*
    kw = {"labels": labels, "classes": classes}
    trip = sample_triplets(strategy, 30_000, random_state=1, **kw)
    assert trip.shape == (30_000, 3) and trip.dtype == np.int64
    assert ((trip >= 0) & (trip < 600)).all()
    # never an item twice in a row
    assert (trip[:, 0] != trip[:, 1]).all() and (trip[:, 0] != trip[:, 2]).all()
    assert (trip[:, 1] != trip[:, 2]).all()
    _check_rule(strategy, trip, classes if "class" in strategy else labels)
    # deterministic with a seed (int or Generator), different for another seed
    np.testing.assert_array_equal(trip, sample_triplets(strategy, 30_000, random_state=1, **kw))
    gen = sample_triplets(strategy, 30_000, random_state=np.random.default_rng(1), **kw)
    np.testing.assert_array_equal(trip, gen)
    assert not np.array_equal(trip, sample_triplets(strategy, 30_000, random_state=2, **kw))
    # every item can be drawn, except where the strategy excludes it
    used = np.unique(trip)
    if strategy in ("random", "between_clusters", "between_classes"):
        assert used.size == 600
    elif strategy.startswith("within"):
        assert not np.isin([0, 1, 2, 3, 4, 5], used).any()  # groups of 1 and 2 never used
        assert used.size == 594
    else:  # singletons only as the outsider, in column 2
        assert not np.isin([0, 1], trip[:, :2]).any() and np.isin([0, 1], trip[:, 2]).all()


@pytest.mark.parametrize(
    ("func", "other"),
    [
        (sample_cluster_boundary, sample_class_boundary),
        (sample_within_cluster, sample_within_class),
        (sample_between_clusters, sample_between_classes),
    ],
)
def test_class_versions_match_cluster_versions(func, other) -> None:
    # the class samplers are the cluster samplers over given categories: with the same
    # grouping (ints vs names in the same sort order) they draw the same rows
    labels = _pool_labels() + 10  # all positive: same order as zero-padded names
    names = np.char.zfill(labels.astype(str), 5)
    np.testing.assert_array_equal(
        func(labels, 1000, random_state=3), other(names, 1000, random_state=3)
    )
    np.testing.assert_array_equal(
        func(labels, 1000, random_state=3), other(labels.tolist(), 1000, random_state=3)
    )


def test_dispatcher_matches_functions() -> None:
    labels = _pool_labels()
    direct = {
        "cluster_boundary": sample_cluster_boundary(labels, 500, random_state=4),
        "within_cluster": sample_within_cluster(labels, 500, random_state=4),
        "between_clusters": sample_between_clusters(labels, 500, random_state=4),
        "class_boundary": sample_class_boundary(labels, 500, random_state=4),
        "within_class": sample_within_class(labels, 500, random_state=4),
        "between_classes": sample_between_classes(labels, 500, random_state=4),
        "random": sample_random(600, 500, random_state=4),
    }
    assert set(direct) == set(STRATEGIES)
    for name, expected in direct.items():
        got = sample_triplets(name, 500, labels=labels, classes=labels, random_state=4)
        np.testing.assert_array_equal(got, expected)
    # random takes the pool size from n_items, or from the labels
    np.testing.assert_array_equal(
        sample_triplets("random", 500, n_items=600, random_state=4), direct["random"]
    )


def test_within_and_random_are_uniform() -> None:
    # one group of 4 (and one of 2, never used): each of the 4 members equally likely in
    # every column, so each ordered triple of distinct members appears ~ m / 24 times
    labels = np.array([5, 5, 5, 5, 9, 9])
    trip = sample_within_cluster(labels, 48_000, random_state=0)
    assert set(np.unique(trip).tolist()) == {0, 1, 2, 3}
    keys, counts = np.unique(trip, axis=0, return_counts=True)
    assert len(keys) == 24 and counts.min() > 1600 and counts.max() < 2400
    trip = sample_random(3, 30_000, random_state=0)
    keys, counts = np.unique(trip, axis=0, return_counts=True)
    assert len(keys) == 6 and counts.min() > 4500 and counts.max() < 5500


def test_sampling_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are drawn block by block; the rules hold across block edges and the seed decides."""
    monkeypatch.setattr(triplet_sampling, "_SAMPLE_BLOCK", 1000)
    labels = _pool_labels()
    for strategy in STRATEGIES:
        trip = sample_triplets(strategy, 4_321, labels=labels, classes=labels, random_state=5)
        assert trip.shape == (4_321, 3)
        assert (trip[:, 0] != trip[:, 1]).all() and (trip[:, 1] != trip[:, 2]).all()
        assert (trip[:, 0] != trip[:, 2]).all()
        _check_rule(strategy, trip, labels)
        again = sample_triplets(strategy, 4_321, labels=labels, classes=labels, random_state=5)
        np.testing.assert_array_equal(trip, again)
    # the first block is what an unblocked draw of the same size gives
    np.testing.assert_array_equal(
        sample_cluster_boundary(labels, 4_321, random_state=5)[:1000],
        sample_cluster_boundary(labels, 1000, random_state=5),
    )


def test_boundary_fallback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="alignet_engine.align.triplet_sampling"):
        sample_cluster_boundary(np.array([0, 0, 1, 2]), 10, random_state=0)
    assert "2 singleton cluster(s) can only supply the third item" in caplog.text


@pytest.mark.parametrize(
    ("call", "msg"),
    [
        (lambda: sample_within_cluster(np.array([0, 0, 1, 1, 2]), 5), "no cluster has three"),
        (lambda: sample_within_class(np.array(["a", "a", "b"]), 5), "no class has three"),
        (lambda: sample_between_clusters(np.array([0, 0, 1, 1]), 5), "at least three clusters"),
        (lambda: sample_between_classes(np.array(["a", "b"]), 5), "at least three classes"),
        (lambda: sample_class_boundary(np.array(["a", "a"]), 5), "at least two classes"),
        (lambda: sample_class_boundary(np.array([1.5, 2.5, 1.5]), 5), "names"),
        (lambda: sample_within_cluster(np.array(["a", "a", "a"]), 5), "integer cluster ids"),
        (lambda: sample_within_cluster(np.zeros((3, 2), dtype=int), 5), "1-D"),
        (lambda: sample_random(2, 5), "at least 3 items"),
        (lambda: sample_random(3.0, 5), "integer"),
        (lambda: sample_random(10, 0), "n_triplets"),
        (lambda: sample_random(10, 2.5), "n_triplets"),
        (lambda: sample_random(10, True), "n_triplets"),
        (lambda: sample_cluster_boundary(np.arange(4) % 2, None), "n_triplets"),
    ],
)
def test_sampling_errors(call, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        call()


@pytest.mark.parametrize(
    ("strategy", "kwargs", "msg"),
    [
        ("cluster_border", {"labels": np.arange(9) % 3}, "unknown sampling strategy"),
        ("within_cluster", {"classes": np.arange(9) % 3}, "needs labels="),
        ("class_boundary", {"labels": np.arange(9) % 3}, "needs classes="),
        ("random", {}, "needs n_items="),
    ],
)
def test_dispatcher_errors(strategy: str, kwargs: dict, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        sample_triplets(strategy, 5, random_state=0, **kwargs)


# ------------------------------------------------------------------ teacher similarities
@pytest.mark.parametrize("metric", ["dot", "cosine", "euclidean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_similarities_equal_unchunked(metric: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(300, 16)).astype(dtype)
    Z[7] = 0.0  # a zero row: cosine similarity 0
    trip = sample_random(300, 2_000, random_state=0)
    trip[0] = [7, 1, 2]
    whole = triplet_similarities(Z, trip, similarity=metric, chunk_size=10**6, device="cpu")
    assert whole.dtype == dtype and whole.shape == (2_000, 3)
    for chunk in (1, 7, 64, None):
        got = triplet_similarities(Z, trip, similarity=metric, chunk_size=chunk, device="cpu")
        np.testing.assert_array_equal(got, whole)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(whole, pair_similarities(Z, trip, metric), rtol=tol, atol=tol)
    if metric == "cosine":
        assert whole[0, 0] == 0 and whole[0, 1] == 0
    # the torch path (used on a GPU) gives the same numbers, here on the CPU
    pytest.importorskip("torch")
    np.testing.assert_allclose(
        gathered_pairs_torch(Z, trip, metric, 100, "cpu"), whole, rtol=tol * 10, atol=tol * 10
    )


def test_teacher_chunking_and_blocks_do_not_change_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(500, 12)).astype(np.float32)
    raw = sample_cluster_boundary(rng.integers(0, 9, size=500), 5_000, random_state=0)
    trip, sims = teacher_odd_one_out(Z, raw, device="cpu")
    assert sims.dtype == np.float32 and trip.dtype == np.int64
    monkeypatch.setattr(triplet_sampling, "_ORDER_BLOCK", 333)
    for chunk in (1, 50, 10_000):
        t2, s2 = teacher_odd_one_out(Z, raw, chunk_size=chunk, device="cpu")
        np.testing.assert_array_equal(t2, trip)
        np.testing.assert_array_equal(s2, sims)
    np.testing.assert_array_equal(sims, gathered_pairs_numpy(Z, trip, "dot", 64))


def test_teacher_uses_torch_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(100, 8))
    raw = sample_random(100, 1_000, random_state=0)
    expected = teacher_odd_one_out(Z, raw, device="cpu")
    calls: list[int] = []
    real = triplet_sampling.gathered_pairs_torch

    def spy(feats, trip, metric, chunk, device):
        calls.append(chunk)
        return real(feats, trip, metric, chunk, device)

    monkeypatch.setattr(triplet_sampling, "resolve_device", lambda d: torch.device("cpu"))
    monkeypatch.setattr(triplet_sampling, "fits_on_device", lambda nbytes, d: True)
    monkeypatch.setattr(triplet_sampling, "gathered_pairs_torch", spy)
    got = teacher_odd_one_out(Z, raw, chunk_size=128)
    assert calls == [128]
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"device": "tpu"}, "device"),
        ({"similarity": "manhattan"}, "manhattan"),
    ],
)
def test_teacher_bad_arguments(kwargs: dict, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        teacher_odd_one_out(np.eye(4), np.array([[0, 1, 2]]), **kwargs)


def test_teacher_probabilities() -> None:
    from scipy.special import softmax

    rng = np.random.default_rng(0)
    sims = rng.normal(scale=3.0, size=(1000, 3))
    p = teacher_probabilities(sims, 0.5)
    assert p.shape == (1000, 3) and p.dtype == np.float64
    np.testing.assert_allclose(p, softmax(sims / 0.5, axis=1), rtol=1e-12)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert teacher_probabilities(sims.astype(np.float32)).dtype == np.float32
    # the order [s01 >= s02 >= s12] makes column 0 the most likely
    _, sorted_sims = teacher_odd_one_out(rng.normal(size=(50, 4)), sample_random(50, 100))
    q = teacher_probabilities(sorted_sims)
    assert (q[:, 0] >= q[:, 1]).all() and (q[:, 1] >= q[:, 2]).all()
    # temperature: hot -> uniform, cold -> one-hot; huge logits do not overflow
    np.testing.assert_allclose(teacher_probabilities(sims, 1e6), 1 / 3, atol=1e-5)
    cold = teacher_probabilities(np.array([[3.0, 1.0, 0.0]]), 1e-3)
    np.testing.assert_allclose(cold, [[1.0, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(teacher_probabilities(np.array([[1e4, 1e4, 0.0]])), [[0.5, 0.5, 0]])


@pytest.mark.parametrize(
    ("sims", "temperature", "msg"),
    [
        (np.ones((2, 3)), 0.0, "temperature"),
        (np.ones((2, 3)), -1.0, "temperature"),
        (np.ones((2, 3)), np.inf, "temperature"),
        (np.ones((2, 2)), 1.0, r"\(m, 3\)"),
        (np.array([[1.0, np.nan, 0.0]]), 1.0, "NaN"),
    ],
)
def test_teacher_probabilities_errors(sims: np.ndarray, temperature: float, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        teacher_probabilities(sims, temperature)


# ------------------------------------------------------------------ npz, large-file paths
def test_alignet_npz_streamed_write_and_mmap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(triplet_sampling, "_WRITE_BLOCK", 37)  # several blocks, a ragged end
    rng = np.random.default_rng(0)
    names = np.array([f"n{i:08d}/img_{i}.JPEG" for i in range(40)])
    trip, sims = teacher_odd_one_out(rng.normal(size=(40, 5)), sample_random(40, 500))
    path = tmp_path / "t.npz"
    save_alignet_npz(path, trip, sims, names)
    with np.load(path, allow_pickle=False) as data:  # a plain np.savez-style archive
        np.testing.assert_array_equal(data["filenames"], names[trip])
        np.testing.assert_array_equal(data["indices"], trip)
        assert data["filenames"].dtype == names.dtype
    full = load_alignet_npz(path)
    mapped = load_alignet_npz(path, mmap=True)
    assert isinstance(mapped[0], np.memmap) and isinstance(mapped[2], np.memmap)
    for a, b in zip(full, mapped):
        np.testing.assert_array_equal(a, b)
    # per-row names, already a unicode array: written as given
    save_alignet_npz(path, trip, sims, names[trip])
    np.testing.assert_array_equal(load_alignet_npz(path)[0], names[trip])


def test_load_alignet_npz_bytes_and_compressed(tmp_path: Path) -> None:
    trip = np.array([[0, 1, 2], [2, 1, 0]])
    sims = np.array([[0.9, 0.5, 0.1], [0.8, 0.3, 0.3]], dtype=np.float64)
    names = np.array([["a.jpg", "b.jpg", "c.jpg"], ["c.jpg", "b.jpg", "é.jpg"]])
    path = tmp_path / "published.npz"
    # published-style: bytes names, float64 sims, int32 ids, compressed (mmap falls back)
    np.savez_compressed(
        path,
        filenames=np.char.encode(names, "utf-8"),
        similarities=sims,
        indices=trip.astype(np.int32),
    )
    for mmap in (False, True):
        f, s, i = load_alignet_npz(path, mmap=mmap)
        assert f.tolist() == names.tolist()
        assert s.dtype == np.float32 and i.dtype == np.int64
        np.testing.assert_array_equal(i, trip)
