"""Browsing engine (views/browse.py): lazy triplet views, filters, pool map — without Qt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignet_engine.align.triplet_sampling import teacher_probabilities
from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.errors import InputError
from alignet_engine.jobs import Cancelled, JobControl, Progress, run_job
from alignet_engine.store import Project
from alignet_engine.views import browse

N_ITEMS = 60
N_ROWS = 5000


def _write(p: Project, stage: str, slot: str, params: dict, arrays: dict, summary: dict) -> str:
    rid = p.begin_job(stage, params)
    p.write_run(stage, rid, slot=slot, params=params, arrays=arrays, summary=summary)
    return f"{stage}/{rid}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pool of 60 items in 4 clusters, 5000 pool triplets, features and judgments."""
    path = tmp_path_factory.mktemp("browse") / "b.alignet"
    rng = np.random.default_rng(0)
    with Project.create(path) as p:
        names = tuple(f"/img/{i}.png" for i in range(N_ITEMS))
        p.write_imageset("pool", ImageSet(names, tuple(f"c{i % 3}" for i in range(N_ITEMS))), {})
        X = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
        _write(p, "features", "features:pool:m", {}, {"X": X}, {"n": N_ITEMS})
        labels = np.arange(N_ITEMS) % 4
        _write(
            p,
            "clusters",
            "clusters",
            {"image_set": "pool", "model": "m", "transform": None, "k": 4},
            {"labels": labels, "centroids": np.zeros((4, 8), np.float32)},
            {
                "k": 4,
                "clusters": [{"cluster": c, "nearest": [c, c + 4], "size": 15} for c in range(4)],
                "diagnostics": {
                    "k": [2, 3, 4],
                    "inertia": [3.0, 2.0, 1.0],
                    "silhouette": [0.1, 0.3, 0.2],
                    "best_k": 3,
                },
            },
        )
        trip = np.stack([rng.choice(N_ITEMS, 3, replace=False) for _ in range(N_ROWS)])
        sims = np.sort(rng.normal(scale=2, size=(N_ROWS, 3)), axis=1)[:, ::-1].astype(np.float32)
        is_val = np.zeros(N_ROWS, bool)
        is_val[-500:] = True
        _write(
            p,
            "triplets",
            "triplets",
            {"strategy": "cluster_boundary", "n_triplets": N_ROWS - 500, "n_val": 500},
            {"triplets": trip, "sims": sims, "is_val": is_val},
            {"n_train": N_ROWS - 500, "n_val": 500, "image_set": "pool"},
        )
        # odd-one-out judgments with repeats: triplet (0, 1, 2) asked 4 times
        jt = np.array([[0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 1, 0], [3, 4, 5], [6, 7, 8]])
        p.write_judgments(
            "people",
            Judgments("oddone", jt, np.arange(6), types=np.array(list("aabbab"))),
            image_set="pool",
            params={},
        )
    return path


def test_sources_and_lazy_rows_match_stored_arrays(project: Path) -> None:
    with Project.open(project, readonly=True) as p:
        sources = browse.triplet_sources(p)
        assert [s.kind for s in sources] == ["pool", "judgments"]
        assert sources[0].n == N_ROWS and sources[1].n == 6
        run = p.run("triplets")
        view = browse.open_source(p, sources[0])
    try:
        rows = view.rows(4990, 5010)  # clipped at the end
        assert len(rows) == 10
        np.testing.assert_array_equal(rows.items, run.arrays["triplets"][4990:])
        p_teacher = teacher_probabilities(run.arrays["sims"][4990:].astype(np.float64))
        # item 2 is odd when pair (0, 1) is the most similar: p[:, 0]
        np.testing.assert_allclose(rows.odd_probs[:, 2], p_teacher[:, 0], rtol=1e-6)
        np.testing.assert_allclose(rows.odd_probs[:, 0], p_teacher[:, 2], rtol=1e-6)
        assert (rows.teacher_odd == 2).all()  # stored rows put the odd one last
        expected_h = -(p_teacher * np.log2(p_teacher)).sum(1)
        np.testing.assert_allclose(rows.entropy, expected_h, rtol=1e-6)
        assert rows.is_val.all()
        np.testing.assert_array_equal(rows.clusters, rows.items % 4)
        # scattered rows in any order, far apart and close together
        idx = np.array([4999, 0, 2500, 2501, 17])
        taken = view.take(idx)
        np.testing.assert_array_equal(taken.rows, idx)
        np.testing.assert_array_equal(taken.items, run.arrays["triplets"][idx])
        with pytest.raises(InputError):
            view.take([N_ROWS])
    finally:
        view.close()


def _expected_pool_mask(run, spec: browse.TripletFilter) -> np.ndarray:
    trip, sims, is_val = run.arrays["triplets"], run.arrays["sims"], run.arrays["is_val"]
    p = teacher_probabilities(sims.astype(np.float64))
    h = -(p * np.log2(p)).sum(1)
    keep = np.ones(len(trip), bool)
    if spec.entropy_min is not None:
        keep &= h >= spec.entropy_min
    if spec.entropy_max is not None:
        keep &= h <= spec.entropy_max
    if spec.cluster is not None:
        cl = trip % 4
        keep &= (
            (cl[:, 2] == spec.cluster) if spec.cluster_of == "odd" else (cl == spec.cluster).any(1)
        )
    if spec.split != "all":
        keep &= is_val if spec.split == "val" else ~is_val
    return keep


@pytest.mark.parametrize(
    "spec",
    [
        browse.TripletFilter(entropy_min=0.2, entropy_max=0.9),
        browse.TripletFilter(cluster=2),
        browse.TripletFilter(cluster=1, cluster_of="odd", split="train"),
        browse.TripletFilter(split="val", entropy_max=0.5),
    ],
)
def test_pool_filters_in_chunks_equal_a_direct_computation(
    project: Path, spec: browse.TripletFilter
) -> None:
    with Project.open(project, readonly=True) as p:
        run = p.run("triplets")
        view = browse.PoolTriplets(p)
    events: list[Progress] = []
    result = run_job(browse.filter_triplets(view, spec, chunk=700), events.append)
    expected = np.flatnonzero(_expected_pool_mask(run, spec))
    np.testing.assert_array_equal(result.indices, expected)
    assert result.count == expected.size and 0 < expected.size < N_ROWS
    assert len(events) == -(-N_ROWS // 700) and events[-1].done == N_ROWS
    view.close()


def test_filter_strategy_empty_and_bad_filters(project: Path) -> None:
    with Project.open(project, readonly=True) as p:
        view = browse.PoolTriplets(p)
    assert run_job(browse.filter_triplets(view, browse.TripletFilter())).indices is None
    same = run_job(browse.filter_triplets(view, browse.TripletFilter(kind="cluster_boundary")))
    assert same.count == N_ROWS
    other = run_job(browse.filter_triplets(view, browse.TripletFilter(kind="random")))
    assert other.count == 0
    with pytest.raises(InputError, match="human judgments"):
        run_job(browse.filter_triplets(view, browse.TripletFilter(disagreements=True)))
    with pytest.raises(InputError, match="empty"):
        run_job(browse.filter_triplets(view, browse.TripletFilter(entropy_min=1, entropy_max=0)))
    control = JobControl()
    control.cancel()
    with pytest.raises(Cancelled):
        run_job(browse.filter_triplets(view, browse.TripletFilter(cluster=0), control=control))
    view.close()


def test_judgments_view_human_vs_teacher(project: Path) -> None:
    with Project.open(project, readonly=True) as p:
        source = browse.triplet_sources(p)[1]
        view = run_job(browse.open_source_job(p, source))
        X = p.run("features:pool:m").arrays["X"].astype(np.float64)
    assert isinstance(view, browse.JudgmentTriplets) and view.has_human
    assert view.model == "m" and view.transform is None  # raw features: cosine
    rows = view.rows(0, 6)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for r, (a, b, c) in enumerate(rows.items):
        s = np.array([Xn[a] @ Xn[b], Xn[a] @ Xn[c], Xn[b] @ Xn[c]])
        # the teacher's odd one is the item outside the most similar pair
        assert rows.teacher_odd[r] == 2 - int(np.argmax(s))
    # (0,1,2) asked four times: odd 2, 2, 1, 0 -> the row choosing 2 has agreement 1/2
    assert rows.repeats.tolist() == [4, 4, 4, 4, 1, 1]
    np.testing.assert_allclose(rows.agreement[:4], [0.5, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(rows.human_probs[0], [0.25, 0.25, 0.5])  # items 0, 1, 2
    np.testing.assert_allclose(rows.human_probs[3], [0.5, 0.25, 0.25])  # items 2, 1, 0
    assert (rows.human_odd == 2).all()
    dis = run_job(browse.filter_triplets(view, browse.TripletFilter(disagreements=True)))
    np.testing.assert_array_equal(dis.indices, np.flatnonzero(view.teacher_odd != 2))
    typed = run_job(browse.filter_triplets(view, browse.TripletFilter(kind="b")))
    np.testing.assert_array_equal(typed.indices, [2, 3, 5])
    summary = browse.judgment_summary(view)
    assert summary["n_repeated_rows"] == 4
    assert summary["human_agreement"] == pytest.approx(0.375)


def test_human_choice_distributions_sum_to_one() -> None:
    t = np.array([[5, 6, 7], [7, 6, 5], [6, 5, 7], [1, 2, 3]])
    probs, reps = browse.human_choice_distributions(t)
    assert reps.tolist() == [3, 3, 3, 1]
    np.testing.assert_allclose(probs.sum(1), 1.0)
    np.testing.assert_allclose(probs[0], [1 / 3, 0, 2 / 3])  # 5 once, 7 twice


def test_cluster_overview_and_deterministic_pca(project: Path) -> None:
    with Project.open(project, readonly=True) as p:
        ov = browse.cluster_overview(p)
        m1 = run_job(browse.pool_map_job(p))
        m2 = browse.pool_map(p)
        X = p.run("features:pool:m").arrays["X"].astype(np.float64)
    assert ov.k == 4 and ov.sizes.tolist() == [15, 15, 15, 15]
    assert ov.nearest[1] == (1, 5) and ov.diagnostics["best_k"] == 3
    assert len(ov.paths) == N_ITEMS
    np.testing.assert_array_equal(m1.xy, m2.xy)
    assert m1.xy.shape == (N_ITEMS, 2) and m1.labels.tolist() == (np.arange(N_ITEMS) % 4).tolist()
    # same subspace and variance as an SVD, up to sign
    Xc = X - X.mean(0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    ref = U[:, :2] * S[:2]
    for c in range(2):
        assert (
            min(np.abs(m1.xy[:, c] - ref[:, c]).max(), np.abs(m1.xy[:, c] + ref[:, c]).max()) < 1e-3
        )
    np.testing.assert_allclose(m1.explained, S[:2] ** 2 / (S**2).sum(), rtol=1e-6)
    # the Gram path (n < d) gives the same picture as the covariance path
    xy_small, _ = browse.pca_2d(X[:5])
    xy_wide, _ = browse.pca_2d(np.hstack([X[:5], np.zeros((5, 20))]))
    np.testing.assert_allclose(xy_small, xy_wide, atol=1e-4)


def test_pool_map_of_a_large_pool_draws_a_labelled_sample(project: Path) -> None:
    with Project.open(project, readonly=True) as p:
        full = browse.pool_map(p)
        m = browse.pool_map(p, max_points=10)
        again = browse.pool_map(p, max_points=10)
        X = p.run("features:pool:m").arrays["X"].astype(np.float32)
    assert m.items.shape == (10,) and np.all(np.diff(m.items) > 0)
    np.testing.assert_array_equal(m.items, again.items)  # seeded: the same picture each time
    np.testing.assert_array_equal(m.labels, full.labels[m.items])
    np.testing.assert_array_equal(m.xy, browse.pca_2d(X[m.items])[0])
    assert m.position(int(m.items[3])) == 3
    missing = int(np.setdiff1d(np.arange(N_ITEMS), m.items)[0])
    assert m.position(missing) is None
    np.testing.assert_array_equal(full.items, np.arange(N_ITEMS))
