"""The AligNet pool import streams the features (the authors' file is 1.28 M × 1152 float32,
6 GB): block by block it must store exactly what the whole-array computation gives, check
every row, and leave nothing behind when it fails.

Expected values are computed here with plain numpy from the generated file: the pool's rows
picked by file name, the authors' ids renumbered in sorted order, each centroid the float64
sum of its members added one at a time in image-set order, divided by the count (so the
centroids do not depend on the block size), the inertia a float64 sum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignet_engine.align.clustering import cluster_summaries
from alignet_engine.base.types import ImageSet
from alignet_engine.data import arrays_io
from alignet_engine.errors import InputError
from alignet_engine.stages import imports
from alignet_engine.stages.clusters import SLOT as CLUSTER_SLOT
from alignet_engine.stages.imports import import_alignet_representations
from alignet_engine.store import Project

SLOT = "features:pool:so400m-siglip-webli384"
N, D = 300, 9


def _set_paths(names: np.ndarray) -> list[str]:
    """The pool image set: 200 of the N images, sorted by path (not the file's order)."""
    pick = np.random.default_rng(3).choice(N, size=200, replace=False)
    return sorted(f"/imagenet/train/{n.split('_')[0]}/{n}" for n in names[pick])


def _files(tmp: Path, *, compressed: bool, fortran: bool = False) -> tuple[np.ndarray, ...]:
    """A representations.npz of N rows in a shuffled 'TFDS' order and its filenames.npy.

    Column 0 of each cluster's members in the set alternates +2**25 and -2**25 (in image-set
    order) on top of values ~1e-3: the float64 sum then loses different bits depending on
    the order of its additions, and the float32 centroid shows it."""
    rng = np.random.default_rng(7)
    names = np.array([f"n0{1000000 + i % 5}_{i}.JPEG" for i in range(N)])[rng.permutation(N)]
    X = (rng.normal(size=(N, D)) * 1e-3).astype(np.float32)
    ids = (rng.integers(0, 6, size=N) * 7 + 3).astype(np.int32)
    row_of = {str(nm): i for i, nm in enumerate(names)}
    rows = np.array([row_of[Path(p).name] for p in _set_paths(names)])
    for a in np.unique(ids):
        members = rows[ids[rows] == a]
        members = members[: members.size // 2 * 2]
        X[members, 0] += np.float32(2**25) * np.resize([1, -1], members.size)
    save = np.savez_compressed if compressed else np.savez
    save(tmp / "representations.npz", feats=np.asfortranarray(X) if fortran else X, ids=ids)
    np.save(tmp / "filenames.npy", names)
    return names, X, ids


def _pool_set(project: Project, names: np.ndarray) -> ImageSet:
    paths = tuple(_set_paths(names))
    images = ImageSet(paths, tuple(p.split("/")[-2] for p in paths))
    project.write_imageset("pool", images, {})
    return images


def _import(project: Project, tmp: Path, **kw: object) -> imports.PoolImport:
    return import_alignet_representations(
        project,
        tmp / "representations.npz",
        image_set="pool",
        filenames=tmp / "filenames.npy",
        **kw,  # type: ignore[arg-type]
    )


def _leftovers(project: Project) -> list[str]:
    """Files in the project's folder other than its leases (side files, temporaries)."""
    if not project.files_dir.exists():
        return []
    return sorted(
        str(f.relative_to(project.files_dir))
        for f in project.files_dir.rglob("*")
        if f.is_file() and "leases" not in f.parts
    )


@pytest.mark.parametrize(
    ("compressed", "fortran"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_streamed_import_equals_the_whole_array_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressed: bool, fortran: bool
) -> None:
    monkeypatch.setattr(arrays_io, "_MAP_ROWS", 5)  # each block gathered in several mappings
    names, Xfile, ids = _files(tmp_path, compressed=compressed, fortran=fortran)
    with Project.create(tmp_path / "p.alignet") as project:
        images = _pool_set(project, names)
        r = _import(project, tmp_path, block_rows=17)  # 12 blocks, the last one short
        # expected, independently
        row_of = {str(nm): i for i, nm in enumerate(names)}
        rows = np.array([row_of[Path(p).name] for p in images.paths])
        X = Xfile[rows]
        source_ids = sorted(set(ids[rows].tolist()))
        labels = np.array([source_ids.index(a) for a in ids[rows]])
        k = len(source_ids)
        centroids = np.empty((k, D), dtype=np.float32)
        for c in range(k):
            total = np.zeros(D)
            for i in np.flatnonzero(labels == c):
                total = total + X[i].astype(np.float64)
            centroids[c] = (total / np.count_nonzero(labels == c)).astype(np.float32)
        diff = X.astype(np.float64) - centroids[labels].astype(np.float64)
        inertia = float((diff**2).sum())

        feats = project.run(SLOT)
        np.testing.assert_array_equal(feats.arrays["X"], X)
        assert feats.arrays["X"].dtype == np.float32 and feats.summary == {"n": 200, "dim": D}
        assert project.array_info(SLOT)["X"]["file"]  # a side file, streamed
        clusters = project.run(CLUSTER_SLOT)
        np.testing.assert_array_equal(clusters.arrays["labels"], labels)
        np.testing.assert_array_equal(clusters.arrays["centroids"], centroids)  # bit for bit
        # the whole-array formula of the former import (numpy's pairwise reduceat): the
        # same where nothing cancels, to float32 rounding in column 0 (±2**25 cancelling)
        order = np.argsort(labels, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(labels))[:-1]]
        pairwise = np.add.reduceat(X[order].astype(np.float64), starts, axis=0)
        pairwise = (pairwise / np.bincount(labels)[:, None]).astype(np.float32)
        np.testing.assert_array_equal(clusters.arrays["centroids"][:, 1:], pairwise[:, 1:])
        np.testing.assert_allclose(clusters.arrays["centroids"], pairwise, rtol=1e-5, atol=0)
        s = clusters.summary
        assert s["source_cluster_ids"] == source_ids and r.k == k == s["k"]
        assert s["sizes"] == np.bincount(labels).tolist()
        assert s["inertia"] == pytest.approx(inertia, rel=1e-12)
        # the in-memory computation of the summaries gives the same, exactly
        assert s["clusters"] == cluster_summaries(X, labels, centroids, n_nearest=8)
        dist = np.sqrt((diff**2).sum(axis=1))
        for c, summary in enumerate(s["clusters"]):
            members = np.flatnonzero(labels == c)
            nearest = sorted(members.tolist(), key=lambda i: (dist[i], i))[:8]
            assert summary["nearest"] == nearest and summary["size"] == members.size
            assert summary["mean_distance"] == pytest.approx(dist[members].mean(), rel=1e-12)
        # one block or one row at a time: the same numbers
        _import(project, tmp_path, label="one-block")
        _import(project, tmp_path, label="row-by-row", block_rows=1)
        for label in ("one-block", "row-by-row"):
            np.testing.assert_array_equal(project.run(f"features:pool:{label}").arrays["X"], X)
            run = project.run(CLUSTER_SLOT)  # the latest import's clusters
            np.testing.assert_array_equal(run.arrays["centroids"], centroids)
            assert run.summary["inertia"] == pytest.approx(inertia, rel=1e-12)
        # the deflated member's temporary copy is gone; only the runs' side files remain
        assert len(_leftovers(project)) == 3
        assert all(f.startswith("arrays/") and f.endswith(".h5") for f in _leftovers(project))


@pytest.mark.parametrize(("compressed", "fortran"), [(False, False), (True, False), (True, True)])
def test_non_finite_rows_are_found_in_every_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressed: bool, fortran: bool
) -> None:
    monkeypatch.setattr(arrays_io, "_STREAM_BYTES", 40)  # 10 values a block: 270 blocks
    names, X, ids = _files(tmp_path, compressed=compressed)
    X[5, 2] = np.nan
    X[[140, 141, 299], [0, 8, 3]] = np.inf
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "representations.npz", feats=np.asfortranarray(X) if fortran else X, ids=ids)
    with Project.create(tmp_path / "p.alignet") as project:
        _pool_set(project, names)
        before = project.path.read_bytes()
        with pytest.raises(InputError) as err:
            _import(project, tmp_path)
        assert "row 6 ([5]) is not finite (NaN/inf). Rows affected: 6, 141, 142, 300." in str(
            err.value
        )
        assert err.value.row == 6 and err.value.field == "feats"
        assert project.path.read_bytes() == before and _leftovers(project) == []


@pytest.mark.parametrize("compressed", [False, True])
def test_failure_part_way_leaves_no_side_file_and_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressed: bool
) -> None:
    names, _, _ = _files(tmp_path, compressed=compressed)
    rows = arrays_io.PoolFeatures.rows
    calls = []

    def fail_on_third_block(self: arrays_io.PoolFeatures, index: np.ndarray) -> np.ndarray:
        calls.append(len(index))
        if len(calls) == 3:
            raise OSError("the disk went away")
        return rows(self, index)

    with Project.create(tmp_path / "p.alignet") as project:
        _pool_set(project, names)
        with monkeypatch.context() as m:
            m.setattr(arrays_io.PoolFeatures, "rows", fail_on_third_block)
            with pytest.raises(OSError, match="went away"):
                _import(project, tmp_path, block_rows=50)
        assert calls == [50, 50, 50]  # it failed while writing, two blocks in
        assert _leftovers(project) == [] and project.runs() == []

        # after the side file is finished, before any run is written
        def broken(*_a: object, **_k: object) -> object:
            raise RuntimeError("summaries failed")

        with monkeypatch.context() as m:
            m.setattr(imports, "cluster_summaries", broken)
            with pytest.raises(RuntimeError, match="summaries failed"):
                _import(project, tmp_path, block_rows=50)
        assert _leftovers(project) == [] and project.runs() == []
        _import(project, tmp_path, block_rows=50)  # and then it works
        assert len(project.runs()) == 2 and len(_leftovers(project)) == 1
