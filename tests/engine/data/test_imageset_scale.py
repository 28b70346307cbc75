"""Image sets of real size: the compact form, its storage, and imports without per-file stat."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet
from alignet_engine.data import images as images_module
from alignet_engine.data.images import read_image_folder, read_image_manifest
from alignet_engine.errors import InputError
from alignet_engine.store import Project
from alignet_engine.store.project import _STR
from alignet_engine.views.preview import category_counts, group_by_category


def test_compact_form_keeps_every_path_and_category() -> None:
    paths = ("/data/img/b/2.png", "/data/img/a/1.png", "", "/data/img//c.png", "/data/ü/x.jpg")
    cats = ("b", "a", "", "a", "ü")
    s = ImageSet(paths, cats)
    assert s.root == "/data/"
    assert len(s) == 5 and s.paths == paths and s.categories == cats
    assert list(s.paths) == list(paths) and s.paths[-1] == paths[-1] and s.paths[1:3] == paths[1:3]
    assert s.category_names == ("", "a", "b", "ü")
    assert s.category_array().tolist() == list(cats)
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(IndexError):
        s.paths[5]
    with pytest.raises(AttributeError):
        s.root = "/"  # type: ignore[misc]
    # no common folder: the paths are kept as they are
    rel = ImageSet(("a.png", "b.png"), ("", ""))
    assert rel.root == "" and rel.paths == ("a.png", "b.png")


def test_store_round_trip_and_the_earlier_layout(tmp_path: Path) -> None:
    s = ImageSet(
        tuple(f"/img/c{i % 3}/{i}.png" for i in range(50)), tuple(f"c{i % 3}" for i in range(50))
    )
    with Project.create(tmp_path / "p.alignet") as p:
        p.write_imageset("pool", s, {"source": "x"})
        # a project written before the compact form: string arrays of paths and categories
        with p.transaction() as f:
            g = f["data"].require_group("imagesets").create_group("old")
            g.create_dataset(
                "paths", data=np.array(["/o/a.png", "/o/b.png"], dtype=object), dtype=_STR
            )
            g.create_dataset("categories", data=np.array(["x", ""], dtype=object), dtype=_STR)
    with Project.open(tmp_path / "p.alignet", readonly=True) as p:
        back = p.imageset("pool")
        assert back == s and back.root == "/img/"
        assert back.path_bytes.dtype == np.uint8 and back.category_codes.dtype == np.int32
        old = p.imageset("old")
        assert old.paths == ("/o/a.png", "/o/b.png") and old.categories == ("x", "")


def test_category_views_are_vectorised_and_unchanged() -> None:
    s = ImageSet(("a", "b", "c", "d", "e"), ("y", "x", "", "y", "x"))
    assert category_counts(s) == [("y", 2), ("x", 2), ("", 1)]  # order of first appearance
    assert [(c, g.tolist()) for c, g in group_by_category(s)] == [
        ("x", [1, 4]),
        ("y", [0, 3]),
        ("", [2]),
    ]


def _imagenet_like(root: Path, n_classes: int, per_class: int) -> list[str]:
    made = []
    for c in range(n_classes):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"n{c:08d}_{i}.JPEG").write_bytes(b"x")
            made.append(str(d / f"n{c:08d}_{i}.JPEG"))
    return made


def test_folder_import_of_synset_layout(tmp_path: Path) -> None:
    made = _imagenet_like(tmp_path / "train", 4, 3)
    (tmp_path / "train" / "n00000001" / "notes.txt").write_text("not an image")
    s = read_image_folder(tmp_path / "train")
    assert s.paths == tuple(sorted(made))  # (category, file name) order
    assert s.categories == tuple(Path(p).parent.name for p in sorted(made))
    assert s.root == str(tmp_path / "train") + os.sep
    # an image two levels deep is still refused
    deep = tmp_path / "train" / "n00000002" / "sub"
    deep.mkdir()
    (deep / "z.png").write_bytes(b"x")
    with pytest.raises(InputError, match="more than one folder level deep"):
        read_image_folder(tmp_path / "train")


def test_manifest_existence_check_lists_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _imagenet_like(tmp_path / "train", 3, 4)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,category\n" + "".join(f"{p},{Path(p).parent.name}\n" for p in made))
    stats: list[str] = []
    real_isfile = os.path.isfile
    monkeypatch.setattr(
        images_module.os.path, "isfile", lambda q: stats.append(q) or real_isfile(q)
    )
    s = read_image_manifest(manifest)
    assert s.paths == tuple(made) and s.categories == tuple(Path(p).parent.name for p in made)
    assert stats == []  # every file was found in its folder's listing: no stat per file
    # missing files and a folder listed as a file are found, with their lines
    (tmp_path / "train" / "adir").mkdir()
    manifest.write_text(
        "path\n"
        + made[0]
        + "\n"
        + str(tmp_path / "train" / "gone.png")
        + "\n"
        + str(tmp_path / "train" / "adir")
        + "\n"
        + str(tmp_path / "nofolder" / "x.png")
        + "\n"
    )
    with pytest.raises(InputError) as err:
        read_image_manifest(manifest)
    text = str(err.value)
    assert "3 listed image file(s) do not exist" in text
    assert "line 3" in text and "line 4" in text and "(a folder)" in text and "line 5" in text


@pytest.mark.parametrize(
    "value",
    [
        "a/b.png",
        "./a.png",
        "../x/a.png",
        "a//b.png",
        "~/x.png",
        "/abs/x.png",
        "a/./b.png",
        ".hidden.png",
        "a/b/",
        "a/../b.png",
        "a/.x/b.png",
    ],
)
def test_fast_manifest_paths_equal_abspath(value: str, tmp_path: Path) -> None:
    base = str(tmp_path)
    expected = os.path.abspath(os.path.join(base, os.path.expanduser(value)))
    assert images_module._absolute(os.path.join(base, ""), value) == expected
