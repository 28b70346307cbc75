"""The AligNet authors' pool files: ``representations.npz`` (features + k-means ids) and
``imagenet2012_filenames.npy`` (TFDS index -> file name), mapped onto an imported ImageNet set.

The files are generated with the structure the authors' README describes (one row per
ImageNet-2012 train image in TFDS order; last-layer activations and a cluster id per row; a
1-D array of file names such as ``n01440764_10026.JPEG``). The README does not name the npz
members, so one test uses unusual member names: the reader recognises arrays by shape/dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet
from alignet_engine.cli import main
from alignet_engine.config import SampleConfig
from alignet_engine.errors import InputError
from alignet_engine.stages.clusters import SLOT as CLUSTER_SLOT
from alignet_engine.stages.imports import import_alignet_representations
from alignet_engine.stages.triplets import sample
from alignet_engine.store import Project

WNIDS = ("n01440764", "n01443537", "n02102040")


def _pool(seed: int = 0, n: int = 45, d: int = 6, k: int = 7):
    """A generated pool in a shuffled 'TFDS' order: names (n,), features (n, d), ids (n,)."""
    rng = np.random.default_rng(seed)
    names = np.array([f"{WNIDS[i % 3]}_{100 + i}.JPEG" for i in range(n)])
    order = rng.permutation(n)  # TFDS order is not sorted by name
    names = names[order]
    X = rng.normal(size=(n, d)).astype(np.float32)
    ids = (rng.integers(0, k, size=n) * 3 + 11).astype(np.int32)  # authors' ids: not 0..k-1
    return names, X, ids


def _imageset(project: Project, names: np.ndarray, pick: np.ndarray) -> ImageSet:
    """An imported ImageNet folder (nXXXXXXXX/ class folders) holding the images ``pick``."""
    chosen = sorted(str(names[i]) for i in pick)
    paths = tuple(f"/imagenet/train/{c.split('_')[0]}/{c}" for c in chosen)
    images = ImageSet(paths, tuple(c.split("_")[0] for c in chosen))
    project.write_imageset("pool", images, {})
    return images


def test_representations_with_tfds_filenames(tmp_path: Path) -> None:
    names, X, ids = _pool()
    np.savez(tmp_path / "representations.npz", siglip_so400m=X, kmeans500=ids)
    np.save(tmp_path / "imagenet2012_filenames.npy", names)
    pick = np.random.default_rng(1).choice(len(names), size=24, replace=False)
    with Project.create(tmp_path / "p.alignet") as project:
        images = _imageset(project, names, pick)
        r = import_alignet_representations(
            project,
            tmp_path / "representations.npz",
            image_set="pool",
            filenames=tmp_path / "imagenet2012_filenames.npy",
        )
        # expected, independently: the row of each image by its base name
        row_of = {str(nm): i for i, nm in enumerate(names)}
        rows = [row_of[Path(p).name] for p in images.paths]
        feats = project.run("features:pool:so400m-siglip-webli384")
        np.testing.assert_array_equal(feats.arrays["X"], X[rows])
        assert feats.params["imported"] and r.features_run == feats.run_id
        clusters = project.run(CLUSTER_SLOT)
        labels = clusters.arrays["labels"]
        source = np.asarray(clusters.summary["source_cluster_ids"])
        # the authors' clustering, renumbered: label -> the authors' id is exactly their id
        np.testing.assert_array_equal(source[labels], ids[rows])
        assert clusters.summary["k"] == r.k == len(set(ids[rows].tolist()))
        for c, authors_id in enumerate(source):
            members = [row for row, a in zip(rows, ids[rows], strict=True) if a == authors_id]
            np.testing.assert_allclose(
                clusters.arrays["centroids"][c], X[members].mean(axis=0), rtol=1e-5, atol=1e-6
            )
        assert clusters.params["transform"] is None and clusters.params["k"] == r.k
        slot = "features:pool:so400m-siglip-webli384"
        assert clusters.inputs == {slot: f"features/{r.features_run}"}
        # the imported clusters drive triplet sampling as a k-means run would
        config = SampleConfig(n_triplets=200, n_val=0, strategy="cluster_boundary")
        for _ in sample(project, config):
            pass
        t = project.run("triplets").arrays["triplets"]
        lab = labels[t]
        two_one = ((lab[:, 0] == lab[:, 1]) != (lab[:, 0] == lab[:, 2])) | (
            (lab[:, 1] == lab[:, 2]) & (lab[:, 0] != lab[:, 1])
        )
        assert two_one.all()  # two items of one cluster, one of another, in some order


def test_representations_that_name_their_rows(tmp_path: Path) -> None:
    names, X, ids = _pool(seed=3)
    # bytes names with the class folder, as a TFDS export may write them
    folder_names = np.char.encode(np.array([f"{n.split('_')[0]}/{n}" for n in names]))
    np.savez(tmp_path / "r.npz", representations=X, clusters=ids, filenames=folder_names)
    pick = np.arange(0, 45, 2)
    with Project.create(tmp_path / "p.alignet") as project:
        images = _imageset(project, names, pick)
        import_alignet_representations(project, tmp_path / "r.npz", image_set="pool", label="s")
        row_of = {str(nm): i for i, nm in enumerate(names)}
        np.testing.assert_array_equal(
            project.run("features:pool:s").arrays["X"],
            X[[row_of[Path(p).name] for p in images.paths]],
        )


def test_representation_errors(tmp_path: Path) -> None:
    names, X, ids = _pool()
    np.savez(tmp_path / "r.npz", representations=X, clusters=ids)
    np.save(tmp_path / "short.npy", names[:-1])
    with Project.create(tmp_path / "p.alignet") as project:
        _imageset(project, names, np.arange(10))
        with pytest.raises(InputError, match="imagenet2012_filenames"):
            import_alignet_representations(project, tmp_path / "r.npz", image_set="pool")
        with pytest.raises(InputError, match=r"44 images but r\.npz has 45 rows"):
            import_alignet_representations(
                project, tmp_path / "r.npz", image_set="pool", filenames=tmp_path / "short.npy"
            )
        # an image of the set that the pool file does not name: counted and named
        other = np.array([n if i else "n09999999_1.JPEG" for i, n in enumerate(names)])
        np.save(tmp_path / "other.npy", other)
        with pytest.raises(InputError) as err:
            import_alignet_representations(
                project, tmp_path / "r.npz", image_set="pool", filenames=tmp_path / "other.npy"
            )
        assert "1 of the set's 10 images" in str(err.value) and names[0] in str(err.value)
        # two candidate feature arrays and no key: refused naming both, then resolved by --key
        np.savez(tmp_path / "two.npz", a=X, b=X * 2, clusters=ids)
        np.save(tmp_path / "names.npy", names)
        with pytest.raises(InputError, match="several arrays that could be the features"):
            import_alignet_representations(
                project, tmp_path / "two.npz", image_set="pool", filenames=tmp_path / "names.npy"
            )
        import_alignet_representations(
            project,
            tmp_path / "two.npz",
            image_set="pool",
            filenames=tmp_path / "names.npy",
            features_key="b",
        )
        assert project.run("features:pool:so400m-siglip-webli384").params["key"] == "b"
        np.savez(tmp_path / "neg.npz", representations=X, clusters=ids - 100)
        with pytest.raises(InputError, match="cluster ids must be >= 0"):
            import_alignet_representations(
                project, tmp_path / "neg.npz", image_set="pool", filenames=tmp_path / "names.npy"
            )


def test_cli_import_alignet_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names, X, ids = _pool()
    np.savez(tmp_path / "r.npz", representations=X, clusters=ids)
    np.save(tmp_path / "f.npy", names)
    path = tmp_path / "p.alignet"
    with Project.create(path) as project:
        _imageset(project, names, np.arange(20))
    args = ["import-alignet-pool", str(path), str(tmp_path / "r.npz"), "--set", "pool"]
    before = path.read_bytes()
    assert main([*args, "--json"]) == 2  # no names: exit 2, project untouched
    assert "imagenet2012_filenames" in json.loads(capsys.readouterr().out)["error"]
    assert path.read_bytes() == before
    assert main([*args, "--filenames", str(tmp_path / "f.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["items"], out["dim"], out["file_rows"]) == (20, 6, 45)
    assert out["k"] == np.unique(ids[:20]).size  # the set is the file's first 20 rows
