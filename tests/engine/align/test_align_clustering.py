"""k-means back ends (scikit-learn and torch), choosing k, and per-cluster summaries."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from alignet_engine.align import clustering
from alignet_engine.align.clustering import (
    _kmeans_torch,
    cluster_summaries,
    kmeans,
    kmeans_diagnostics,
    resolve_device,
)
from alignet_engine.errors import InputError


def _blobs(n_per: int, k: int, d: int, seed: int, scale: float = 10.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(k, d))
    truth = np.repeat(np.arange(k), n_per)
    return (centres[truth] + rng.normal(size=(k * n_per, d))).astype(np.float32), truth


def _cuda() -> bool:
    torch = pytest.importorskip("torch")
    return bool(torch.cuda.is_available())


# ------------------------------------------------------------------ torch back end
def test_torch_kmeans_recovers_blobs_on_cpu() -> None:
    """The GPU implementation, run on the CPU: same answer as scikit-learn on easy blobs."""
    Z, truth = _blobs(40, 5, 6, seed=0)
    kw = {"random_state": 0, "n_init": 2, "max_iter": 100, "tol": 1e-4, "device": "cpu"}
    labels, centroids, inertia = _kmeans_torch(Z, 5, **kw)
    assert labels.shape == (200,) and labels.dtype == np.int64
    assert centroids.shape == (5, 6) and centroids.dtype == np.float32
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    # labels are the nearest centroid and the inertia is their squared distance
    d2 = ((Z[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d2.argmin(1))
    assert inertia == pytest.approx(float(d2.min(1).sum()), rel=1e-4)
    assert inertia == pytest.approx(kmeans(Z, 5, random_state=0, device="cpu")[2], rel=1e-4)
    again = _kmeans_torch(Z, 5, **kw)
    np.testing.assert_array_equal(labels, again[0])
    np.testing.assert_array_equal(centroids, again[1])


def test_torch_kmeans_few_distinct_rows() -> None:
    # 3 distinct rows, k = 3: every cluster must end up on one of them (no dead centre)
    Z = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), 10, axis=0)
    labels, _, inertia = _kmeans_torch(
        Z, 3, random_state=1, n_init=1, max_iter=50, tol=0.0, device="cpu"
    )
    assert np.unique(labels).size == 3
    assert inertia == pytest.approx(0.0, abs=1e-6)


def test_kmeans_dispatches_to_torch_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (pretend) GPU, kmeans uses the torch path; without room on it, scikit-learn."""
    torch = pytest.importorskip("torch")
    Z, truth = _blobs(30, 3, 4, seed=2)
    calls: list[str] = []
    real = clustering._kmeans_torch

    def spy(*args: object, **kwargs: object):
        calls.append(str(kwargs["device"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(clustering, "resolve_device", lambda device: torch.device("cpu"))
    monkeypatch.setattr(clustering, "_kmeans_torch", spy)
    monkeypatch.setattr(clustering, "fits_on_device", lambda nbytes, device: True)
    labels, _, _ = kmeans(Z, 3, random_state=0)
    assert calls == ["cpu"] and adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    monkeypatch.setattr(clustering, "fits_on_device", lambda nbytes, device: False)
    kmeans(Z, 3, random_state=0)
    assert calls == ["cpu"]  # fell back to scikit-learn


def test_kmeans_auto_is_sklearn_without_gpu() -> None:
    if _cuda():
        pytest.skip("this machine has CUDA")
    Z, _ = _blobs(30, 4, 5, seed=3)
    auto = kmeans(Z, 4, random_state=0)
    cpu = kmeans(Z, 4, random_state=0, device="cpu")
    np.testing.assert_array_equal(auto[0], cpu[0])
    assert resolve_device("auto") is None and resolve_device("cpu") is None


def test_device_errors() -> None:
    with pytest.raises(InputError, match="device must be"):
        kmeans(np.random.default_rng(0).normal(size=(10, 2)), 2, device="tpu")
    if not _cuda():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# ------------------------------------------------------------------ bad input
def test_kmeans_rejects_identical_rows() -> None:
    with pytest.raises(InputError, match="identical"):
        kmeans(np.full((20, 3), 0.5, dtype=np.float32), 2)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_kmeans_rejects_non_finite(bad: float) -> None:
    Z = np.random.default_rng(0).normal(size=(10, 2))
    Z[3, 0] = bad
    with pytest.raises(InputError, match="NaN or inf"):
        kmeans(Z, 2)


@pytest.mark.parametrize("k", [2.0, True, "3"])
def test_kmeans_rejects_non_integer_k(k: object) -> None:
    with pytest.raises(InputError, match="integer"):
        kmeans(np.random.default_rng(0).normal(size=(10, 2)), k)  # type: ignore[arg-type]


def test_kmeans_warns_on_too_few_distinct_rows(caplog: pytest.LogCaptureFixture) -> None:
    Z = np.repeat(np.array([[0.0, 0.0], [3.0, 3.0]]), 10, axis=0)
    with caplog.at_level(logging.WARNING), pytest.warns(Warning):  # scikit-learn warns too
        labels, _, _ = kmeans(Z, 3, random_state=0, device="cpu")
    assert np.unique(labels).size == 2
    assert "only 2 non-empty clusters" in caplog.text


def test_kmeans_rejects_bad_tol() -> None:
    with pytest.raises(InputError, match="tol"):
        kmeans(np.random.default_rng(0).normal(size=(10, 2)), 2, tol=-1.0)


# ------------------------------------------------------------------ choosing k
def test_diagnostics_silhouette_peaks_at_true_k() -> None:
    Z, _ = _blobs(60, 4, 8, seed=4, scale=8.0)
    out = kmeans_diagnostics(Z, [6, 2, 3, 4, 5, 6], random_state=0, silhouette_sample=150)
    assert out["k"] == [2, 3, 4, 5, 6]  # sorted, duplicates dropped
    assert len(out["inertia"]) == len(out["silhouette"]) == 5
    assert out["n"] == 240 and out["silhouette_sample"] == 150
    assert out["best_k"] == 4
    assert out["k"][int(np.argmax(out["silhouette"]))] == 4
    assert all(-1 <= s <= 1 for s in out["silhouette"])
    assert np.all(np.diff(out["inertia"]) < 0)  # more clusters, less within-cluster spread
    json.dumps(out, allow_nan=False)  # plain JSON, no numpy scalars, no NaN
    assert all(type(v) is float for v in out["inertia"])


def test_diagnostics_undefined_silhouette_is_none() -> None:
    Z = np.random.default_rng(0).normal(size=(6, 2))
    out = kmeans_diagnostics(Z, [6], random_state=0)
    assert out["silhouette"] == [None] and out["best_k"] is None
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize(
    ("ks", "sample", "msg"),
    [
        ([], 100, "at least one k"),
        ([2, 11], 100, "more than the 10 rows"),
        ([1], 100, "at least 2"),
        ([2], 1, "silhouette_sample"),
        (None, 100, "sequence"),
    ],
)
def test_diagnostics_errors(ks: object, sample: int, msg: str) -> None:
    Z = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(InputError, match=msg):
        kmeans_diagnostics(Z, ks, random_state=0, silhouette_sample=sample)  # type: ignore[arg-type]


# ------------------------------------------------------------------ summaries
def test_summaries_nearest_are_nearest() -> None:
    Z, _ = _blobs(25, 4, 5, seed=5)
    labels, centroids, _ = kmeans(Z, 4, random_state=0, device="cpu")
    out = cluster_summaries(Z, labels, centroids, n_nearest=6)
    assert [c["cluster"] for c in out] == [0, 1, 2, 3]
    assert sum(c["size"] for c in out) == 100
    json.dumps(out, allow_nan=False)
    for c in out:
        members = np.flatnonzero(labels == c["cluster"])
        dist = np.linalg.norm(Z[members].astype(np.float64) - centroids[c["cluster"]], axis=1)
        assert c["size"] == members.size
        assert c["nearest"] == members[np.argsort(dist, kind="stable")[:6]].tolist()
        assert c["mean_distance"] == pytest.approx(dist.mean())


def test_summaries_small_and_empty_clusters() -> None:
    Z = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 10.0]])
    centroids = np.array([[0.2, 0.0], [10.0, 10.0], [50.0, 50.0]])
    out = cluster_summaries(Z, np.array([0, 0, 1]), centroids, n_nearest=5)
    assert out[0]["nearest"] == [0, 1] and out[0]["mean_distance"] == pytest.approx(0.5)
    assert out[1] == {"cluster": 1, "size": 1, "nearest": [2], "mean_distance": 0.0}
    assert out[2] == {"cluster": 2, "size": 0, "nearest": [], "mean_distance": None}


@pytest.mark.parametrize(
    ("labels", "centroids", "msg"),
    [
        (np.array([0, 1, 2]), np.zeros((2, 2)), r"\[0, 2\)"),
        (np.array([0, 1]), np.zeros((2, 2)), "shape"),
        (np.array([0.0, 1.0, 1.0]), np.zeros((2, 2)), "integer"),
        (np.array([0, 1, 1]), np.zeros((2, 3)), "columns"),
    ],
)
def test_summaries_errors(labels: np.ndarray, centroids: np.ndarray, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        cluster_summaries(np.ones((3, 2)), labels, centroids)
