"""k-means of pools that do not fit in memory: read in chunks, memory set by a budget."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from alignet_engine.align.chunked import check_row_array, map_rows
from alignet_engine.align.clustering import _kmeans_torch, kmeans, minibatch_kmeans
from alignet_engine.errors import InputError
from alignet_engine.store import Project


class RecordingRows:
    """An (n, d) array-like that records how many rows each read asked for.

    Only row slices and sorted index arrays are supported, as for an h5py dataset; anything
    that would load the whole array at once (``np.asarray(X)``) fails.
    """

    def __init__(self, X: np.ndarray) -> None:
        self._X = X
        self.shape, self.dtype = X.shape, X.dtype
        self.largest = 0

    def __getitem__(self, key: object) -> np.ndarray:
        out = self._X[key]
        self.largest = max(self.largest, out.shape[0])
        return out

    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the whole array was read at once")


def _blobs(n_per: int, k: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, d))
    truth = np.repeat(np.arange(k), n_per)  # class order, as an ImageNet folder
    return (centres[truth] + rng.normal(size=(k * n_per, d))).astype(np.float32), truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minibatch_matches_exact_kmeans_in_quality(seed: int) -> None:
    """Stated tolerance: inertia within 2 % of exact k-means (10 restarts) on class-ordered
    blobs, and the same partition up to a few rows (ARI >= 0.98)."""
    Z, _ = _blobs(600, 8, 16, seed)
    exact = KMeans(8, n_init=10, random_state=seed).fit(Z)
    labels, centroids, inertia = minibatch_kmeans(Z, 8, random_state=seed, batch_size=512)
    assert inertia <= 1.02 * exact.inertia_
    assert adjusted_rand_score(exact.labels_, labels) >= 0.98
    # labels, centroids and inertia agree: each row's nearest centroid, its squared distance
    d2 = ((Z[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d2.argmin(1))
    assert inertia == pytest.approx(float(d2.min(1).sum()), rel=1e-4)


def test_peak_read_is_set_by_the_budget_not_the_pool(tmp_path: Path) -> None:
    Z, _ = _blobs(1500, 6, 32, 0)  # 9000 × 32 float32
    rec = RecordingRows(Z)
    labels, _, inertia = kmeans(
        rec, 6, random_state=0, minibatch_above=1000, batch_size=256, memory_budget_mb=0.25
    )
    # one chunk of the budget: 0.25 MiB / (32 × 8 bytes per row) = 1024 rows, or the sample
    # (3 × 256 = 768 rows): never the 9000 rows of the pool
    assert 0 < rec.largest <= 1024
    # the same answer from an in-memory array, a memmap and an HDF5 dataset (same seed)
    mm = np.memmap(tmp_path / "z.f32", dtype=np.float32, mode="w+", shape=Z.shape)
    mm[:] = Z
    with h5py.File(tmp_path / "z.h5", "w") as f:
        f.create_dataset("z", data=Z, chunks=(500, 32))
    kw = {"random_state": 0, "minibatch_above": 1000, "batch_size": 256, "memory_budget_mb": 0.25}
    for source in (Z, mm):
        other = kmeans(source, 6, **kw)
        np.testing.assert_array_equal(other[0], labels)
        assert other[2] == pytest.approx(inertia, rel=1e-6)
    with h5py.File(tmp_path / "z.h5", "r") as f:
        np.testing.assert_array_equal(kmeans(f["z"], 6, **kw)[0], labels)


def test_small_lazy_pools_still_use_exact_kmeans(tmp_path: Path) -> None:
    Z, _ = _blobs(50, 4, 8, 1)
    with h5py.File(tmp_path / "z.h5", "w") as f:
        f.create_dataset("z", data=Z)
    with h5py.File(tmp_path / "z.h5", "r") as f:
        lazy = kmeans(f["z"], 4, random_state=0, device="cpu")
    eager = kmeans(Z, 4, random_state=0, device="cpu")
    np.testing.assert_array_equal(lazy[0], eager[0])
    assert lazy[2] == eager[2]


def test_torch_kmeans_from_chunks_equals_in_memory() -> None:
    """The GPU path copies a lazy pool to the device chunk by chunk; same result (on the CPU)."""
    Z, _ = _blobs(100, 5, 6, 2)
    kw = {"random_state": 0, "n_init": 2, "max_iter": 50, "tol": 1e-4, "device": "cpu"}
    rec = RecordingRows(Z)
    lazy = _kmeans_torch(rec, 5, budget_bytes=300 * 6 * 8, **kw)
    eager = _kmeans_torch(Z, 5, **kw)
    assert rec.largest == 300  # of 500 rows
    np.testing.assert_array_equal(lazy[0], eager[0])
    np.testing.assert_array_equal(lazy[1], eager[1])


def test_chunked_input_errors_name_the_row() -> None:
    Z, _ = _blobs(100, 3, 4, 0)
    Z[257, 2] = np.nan
    with pytest.raises(InputError, match=r"row 257, column 2"):
        kmeans(RecordingRows(Z), 3, minibatch_above=10, memory_budget_mb=0.01)
    same = RecordingRows(np.ones((300, 4), dtype=np.float32))
    with pytest.raises(InputError, match="all 300 rows are identical"):
        kmeans(same, 3, minibatch_above=10)
    assert check_row_array(np.zeros((3, 2)), 2)[:2] == (3, 2)


def test_map_rows_spills_to_a_memmap_above_its_limit() -> None:
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    small = map_rows(X, lambda b: b * 2, budget_bytes=1 << 20)
    assert not isinstance(small, np.memmap)
    big = map_rows(
        RecordingRows(X), lambda b: b[:, :2] + 1, budget_bytes=1 << 20, in_memory_max_bytes=8
    )
    assert isinstance(big, np.memmap) and not big.flags.writeable
    np.testing.assert_array_equal(small, X * 2)
    np.testing.assert_array_equal(big, X[:, :2] + 1)


def test_triplet_similarities_from_lazy_features_equal_in_memory(tmp_path: Path) -> None:
    from alignet_engine.align.triplet_sampling import sample_triplets, triplet_similarities

    Z, _ = _blobs(100, 4, 12, 3)
    trip = sample_triplets("random", 2000, n_items=400, random_state=0)
    mm = np.memmap(tmp_path / "z.f32", dtype=np.float32, mode="w+", shape=Z.shape)
    mm[:] = Z
    with h5py.File(tmp_path / "z.h5", "w") as f:
        f.create_dataset("z", data=Z, chunks=(64, 12))
    for metric in ("dot", "cosine", "euclidean"):
        eager = triplet_similarities(Z, trip, similarity=metric, device="cpu")
        np.testing.assert_array_equal(triplet_similarities(mm, trip, similarity=metric), eager)
        with h5py.File(tmp_path / "z.h5", "r") as f:
            lazy = triplet_similarities(f["z"], trip, similarity=metric, device="cpu")
        np.testing.assert_array_equal(lazy, eager)


def test_cluster_and_sample_stages_under_a_small_memory_budget(tmp_path: Path) -> None:
    """A pool larger than the budget goes through the chunked paths: the transformed pool is
    a temporary memmap, k-means is the mini-batch one, and the teacher's triplets equal those
    computed with the whole pool in memory."""
    from alignet_engine.config import ClusterConfig, SampleConfig, TransformConfig
    from alignet_engine.jobs import run_job
    from alignet_engine.stages.clusters import cluster, teacher_representation, teacher_view
    from alignet_engine.stages.imports import import_features
    from alignet_engine.stages.transform import fit_transform
    from alignet_engine.stages.triplets import sample

    Z, truth = _blobs(300, 4, 16, 4)  # 1200 × 16 float32 = 75 KiB
    np.save(tmp_path / "X.npy", Z)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "E.npy", (Z[:, :4] + 0.1 * rng.normal(size=(1200, 4))).astype(np.float32))
    small = 0.03  # MiB, below the pool's size
    with Project.create(tmp_path / "p.alignet") as project:
        import_features(project, tmp_path / "X.npy", image_set="s", label="model")
        import_features(project, tmp_path / "E.npy", image_set="s", label="human")
        cfg = TransformConfig(
            image_set="s",
            model="model",
            targets="embedding:human",
            n_model_triplets=2000,
            max_epochs=5,
        )
        run_job(fit_transform(project, cfg))
        lazy, _ = teacher_representation(project, "s", "model", "teacher", memory_budget_mb=small)
        eager, _ = teacher_representation(project, "s", "model", "teacher")
        assert isinstance(lazy, np.memmap) and not isinstance(eager, np.memmap)
        np.testing.assert_array_equal(lazy, eager)
        # the stages' view: features read lazily from the project, never whole
        with teacher_view(project, "s", "model", None, memory_budget_mb=small) as (raw, _):
            assert isinstance(raw, h5py.Dataset)
        with teacher_view(project, "s", "model", "teacher", memory_budget_mb=small) as (Zt, _):
            assert isinstance(Zt, np.memmap)
            np.testing.assert_array_equal(Zt, eager)
        run_job(
            cluster(
                project, ClusterConfig(image_set="s", model="model", k=4, memory_budget_mb=small)
            )
        )
        labels = project.run("clusters").arrays["labels"]
        assert adjusted_rand_score(truth, labels) > 0.9
        runs = []
        for budget in (small, 512):
            run_job(
                sample(project, SampleConfig(n_triplets=3000, n_val=100, memory_budget_mb=budget))
            )
            runs.append(project.run("triplets").arrays)
    np.testing.assert_array_equal(runs[0]["triplets"], runs[1]["triplets"])
    np.testing.assert_array_equal(runs[0]["sims"], runs[1]["sims"])


def _sq_distances(Z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n, k) float64 squared distances, computed directly (not by the expansion k-means uses)."""
    return ((Z[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(-1)


def test_minibatch_kmeans_leaves_no_cluster_empty() -> None:
    """k = 400 on 60 overlapping blobs: without relocation the final pass over all rows left
    1–3 centres with no member (as k = 500 did on the full ImageNet pool). Every centre now has
    one, and labels, centroids and inertia still agree (each row's nearest centre)."""
    rng = np.random.default_rng(0)
    Z = (rng.normal(size=(60, 16)) * 5)[rng.integers(0, 60, 3000)] + rng.normal(size=(3000, 16))
    Z = Z.astype(np.float32)
    labels, centroids, inertia = minibatch_kmeans(Z, 400, random_state=0, batch_size=256)
    assert np.bincount(labels, minlength=400).min() >= 1
    d2 = _sq_distances(Z, centroids)
    np.testing.assert_array_equal(labels, d2.argmin(1))
    assert inertia == pytest.approx(float(d2.min(1).sum()), rel=1e-4)


def test_minibatch_kmeans_fills_clusters_even_with_duplicated_rows() -> None:
    """300 distinct rows, each 10 times, k = 400: no partition into nearest centres has 400
    non-empty clusters, so the last clusters get rows assigned outright (copies of rows that
    keep a twin in their first cluster); the inertia is that of the labels returned."""
    rng = np.random.default_rng(1)
    Z = np.repeat(rng.normal(size=(300, 4)), 10, axis=0).astype(np.float32)
    labels, centroids, inertia = minibatch_kmeans(Z, 400, random_state=1, batch_size=256)
    assert np.bincount(labels, minlength=400).min() >= 1
    own = _sq_distances(Z, centroids)[np.arange(len(Z)), labels]
    # (float32 round-off of the distance expansion: ~1e-4 in all where the exact sum is 0)
    assert inertia == pytest.approx(float(own.sum()), rel=1e-4, abs=1e-2)
    # a row given outright to a cluster is that cluster's centre (distance 0)
    np.testing.assert_allclose(own.min(), 0.0, atol=1e-6)
