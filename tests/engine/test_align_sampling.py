"""k-means, cluster-boundary triplet sampling, teacher labels and the AligNet npz layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from alignet_engine.align.clustering import kmeans
from alignet_engine.align.metrics import pair_similarities
from alignet_engine.align.triplet_sampling import (
    load_alignet_npz,
    sample_cluster_boundary,
    save_alignet_npz,
    teacher_odd_one_out,
)
from alignet_engine.errors import InputError


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
    with pytest.raises(InputError, match="not a readable"):
        load_alignet_npz(tmp_path / "junk.npz")
