"""VICE/SPoSE text triplets and thingsvision feature files (.txt, .mat, splits, file_names.txt)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from alignet_engine.data.features_io import read_features
from alignet_engine.data.judgments_io import read_oddone_txt
from alignet_engine.errors import InputError
from alignet_engine.store import Project


def test_vice_txt_triplets(tmp_path: Path) -> None:
    rows = np.array([[0, 1, 2], [3, 4, 0], [5, 2, 1]])
    f = tmp_path / "train_90.txt"
    f.write_text("0 1 2\n3 4 0\n\n5 2 1\n")
    j = read_oddone_txt(f, 6)
    np.testing.assert_array_equal(j.triplets, rows)  # odd one last, kept as is
    assert j.kind == "oddone" and (j.participant == -1).all()
    f.write_text("0 1 2\n3 4 9\n")
    with pytest.raises(InputError) as err:
        read_oddone_txt(f, 6)
    assert err.value.row == 2 and "odd one" in (err.value.field or "")
    f.write_text("0 1 2\n3 4 0 1\n")
    with pytest.raises(InputError) as err:
        read_oddone_txt(f, 6)
    assert err.value.row == 2 and err.value.source == str(f)
    f.write_text("i j k\n0 1 2\n")
    with pytest.raises(InputError, match="header"):
        read_oddone_txt(f, 6)


def test_txt_and_mat_features(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(5, 4))
    np.savetxt(tmp_path / "features.txt", X)
    np.testing.assert_allclose(read_features(tmp_path / "features.txt", 5), X, rtol=1e-6)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 x 6\n")
    with pytest.raises(InputError) as err:
        read_features(bad)
    assert (err.value.row, err.value.field) == (2, "column 2")
    bad.write_text("1 2 3\n4 5\n")
    with pytest.raises(InputError) as err:
        read_features(bad)
    assert err.value.row == 2

    scipy.io.savemat(tmp_path / "f.mat", {"features": X})
    np.testing.assert_allclose(read_features(tmp_path / "f.mat", 5), X, rtol=1e-6)
    # thingsvision with file_names.txt: one variable per image (suffix removed), in that order
    per = tmp_path / "per"
    per.mkdir()
    names = ["b/x2.jpg", "a/x1.png", "c/x0.jpg", "a/x3.jpg", "b/x4.tiff"]
    (per / "file_names.txt").write_text("\n".join(names) + "\n")
    scipy.io.savemat(per / "features.mat", {n.rsplit(".", 1)[0]: X[i] for i, n in enumerate(names)})
    np.testing.assert_allclose(read_features(per / "features.mat"), X, rtol=1e-6)
    (per / "file_names.txt").unlink()
    with pytest.raises(InputError, match=r"file_names\.txt"):
        read_features(per / "features.mat")


def test_split_files_are_stacked_in_number_order(tmp_path: Path) -> None:
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    out = tmp_path / "tv"
    out.mkdir()
    for i, (s, e) in enumerate([(0, 3), (3, 7), (7, 10)], start=1):
        np.save(out / f"features_{i:02d}.npy", X[s:e])
    (out / "file_names.txt").write_text("ignored without an image set\n")
    np.testing.assert_array_equal(read_features(out, 10), X)
    (out / "features_02.npy").unlink()
    with pytest.raises(InputError, match="missing"):
        read_features(out)
    with h5py.File(tmp_path / "features.hdf5", "w") as f:
        f["features_02"] = X[5:]
        f["features_01"] = X[:5]
    np.testing.assert_array_equal(read_features(tmp_path / "features.hdf5"), X)


def test_file_names_txt_reorders_rows_to_the_image_set(tmp_path: Path, cli) -> None:
    from PIL import Image

    root = tmp_path / "images"
    paths = []
    for cat in ("cat", "dog"):
        (root / cat).mkdir(parents=True)
        for k in range(2):
            p = root / cat / f"{cat}{k}.png"
            Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(p)
            paths.append(p)
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    cli("import-images", project, str(root), "--name", "s")
    with Project.open(project, readonly=True) as pr:
        order = [Path(p).relative_to(root).as_posix() for p in pr.imageset("s").paths]
    # thingsvision extracted in another order; row r of its file belongs to listing[r]
    listing = [order[i] for i in (2, 0, 3, 1)]
    X = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    out = tmp_path / "tv"
    out.mkdir()
    np.savetxt(out / "features.txt", X)
    (out / "file_names.txt").write_text("\n".join(listing) + "\n")
    cli("import-features", project, str(out), "--set", "s", "--name", "m")
    with Project.open(project, readonly=True) as pr:
        run = pr.run("features:s:m")
    expected = np.stack([X[listing.index(name)] for name in order])
    np.testing.assert_allclose(run.arrays["X"], expected, rtol=1e-6)
    assert run.params["row_order"].endswith("file_names.txt")
    # a listing that names an image not in the set: exit 2, nothing imported
    (out / "file_names.txt").write_text("\n".join([*listing[:3], "cat/other.png"]) + "\n")
    from alignet_engine.cli import main

    assert (
        main(["import-features", project, str(out), "--set", "s", "--name", "m2", "--quiet"]) == 2
    )
