"""Importers: real files from ../shared/data, round-trips, and one error case per check.

Every error test asserts that the message names the file and the row and/or field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from alignet_engine.data.importers import (
    AlignetTriplets,
    read_alignet_npz,
    read_features,
    read_image_folder,
    read_image_manifest,
    read_materials_json,
    read_matrix,
    read_oddone_csv,
    read_oddone_npy,
    read_things_tsv,
    read_twoafc_csv,
)
from alignet_engine.errors import InputError


def raises_input(
    fn: Callable[..., Any],
    *args: Any,
    file: Path,
    row: int | None = None,
    field: str | None = None,
    match: str | None = None,
    **kwargs: Any,
) -> InputError:
    """Call ``fn``, expect an InputError naming ``file`` (and ``row``/``field`` when given)."""
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    err = info.value
    msg = str(err)
    assert file.name in msg, msg
    if row is not None:
        assert err.row == row, msg
        assert f"row {row}" in msg, msg
    if field is not None:
        assert err.field == field, msg
        assert f"'{field}'" in msg, msg
    if match is not None:
        assert re.search(match, msg), msg
    return err


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ================================================================== real data


@pytest.mark.realdata
def test_things_tsv_real(shared_data: Path) -> None:
    path = shared_data / "things" / "triplets_noiseceiling.tsv"
    j = read_things_tsv(path, 1854)
    assert j.kind == "oddone" and j.votes is None
    assert j.triplets.shape == (20000, 3) and j.triplets.dtype == np.int64
    assert j.participant.dtype == np.int64
    assert len(np.unique(j.participant)) == 325
    assert j.triplets.min() >= 0 and j.triplets.max() <= 1853
    # 1,000 unique triplets as unordered sets.
    assert len(np.unique(np.sort(j.triplets, axis=1), axis=0)) == 1000
    # By hand from the raw text (1-based ids, choice = position of the odd one):
    # line 1 "128 1107 734 1 272": odd = 128 -> (1106, 733, 127)
    # line 3 "584 948 757 3 272": odd = 757 -> (583, 947, 756)
    # line 5 "296 1193 321 2 272": odd = 1193 -> (295, 320, 1192)
    # line 20000 "967 544 1114 3 199": odd = 1114 -> (966, 543, 1113)
    assert j.triplets[0].tolist() == [1106, 733, 127]
    assert j.triplets[2].tolist() == [583, 947, 756]
    assert j.triplets[4].tolist() == [295, 320, 1192]
    assert j.triplets[-1].tolist() == [966, 543, 1113]
    assert j.participant[0] == 272 and j.participant[-1] == 199
    # Whole file against an independent parse.
    raw = np.loadtxt(path, dtype=np.int64)
    odd = raw[np.arange(len(raw)), raw[:, 3] - 1] - 1
    assert np.array_equal(j.triplets[:, 2], odd)
    assert np.array_equal(np.sort(j.triplets, axis=1), np.sort(raw[:, :3] - 1, axis=1))


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("split", "n", "responses", "n_strict", "first", "first_votes"),
    [
        ("train", 22801, 92892, 21406, [84, 7, 81], [3, 1]),
        ("test", 3000, 11800, 2738, [84, 94, 12], [3, 0]),
    ],
)
def test_materials_json_real(
    shared_data: Path,
    split: str,
    n: int,
    responses: int,
    n_strict: int,
    first: list[int],
    first_votes: list[int],
) -> None:
    path = shared_data / "material_similarity" / f"answers_processed_{split}.json"
    j = read_materials_json(path)
    assert j.kind == "twoafc"
    assert len(j) == n and j.n_responses == responses
    assert j.votes is not None and j.votes.shape == (n, 2) and j.votes.dtype == np.int64
    assert j.triplets[0].tolist() == first and j.votes[0].tolist() == first_votes
    assert (j.participant == -1).all()
    strict = read_materials_json(path, subset="strict_majority")
    ties = read_materials_json(path, subset="ties")
    assert len(strict) == n_strict
    assert len(strict) + len(ties) == n
    assert strict.n_responses + ties.n_responses == responses


@pytest.mark.realdata
def test_material_image_folder_order(shared_data: Path) -> None:
    folder = shared_data / "material_similarity" / "havran1_ennis_298x298_LDR"
    images = read_image_folder(folder)
    assert len(images) == 100
    assert set(images.categories) == {""}
    names = [Path(p).stem for p in images.paths]
    assert names[0] == "alum-bronze"
    assert names[17] == "chrome-steel"
    assert names[18] == "chrome"
    assert names[99] == "yellow-plastic"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in images.paths)
    # Same stems, same order under the other light probe.
    other = read_image_folder(shared_data / "material_similarity" / "havran1_stpeters_256x256_LDR")
    assert [Path(p).stem for p in other.paths] == names


@pytest.mark.realdata
def test_caltech_folder_categories(shared_data: Path) -> None:
    images = read_image_folder(shared_data / "caltech101_mini")  # PROVENANCE.md is ignored
    assert len(images) == 25
    cats = list(images.categories)
    assert cats == sorted(cats) and len(set(cats)) == 5
    assert images.paths[0].endswith("airplanes/image_0001.jpg")


@pytest.mark.realdata
def test_vice_embedding_as_features(shared_data: Path) -> None:
    x = read_features(shared_data / "things" / "vice_embedding_things.npy", n_items=1854)
    assert x.shape == (1854, 42) and x.dtype == np.float32 and x.flags.c_contiguous


# ================================================================== image folder / manifest


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_image_folder_flat_and_categories(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    for name in ["chrome.jpg", "chrome-steel.JPG", "b.png", ".hidden.png", "notes.txt"]:
        _touch(flat / name)
    images = read_image_folder(flat)
    assert [Path(p).name for p in images.paths] == ["b.png", "chrome-steel.JPG", "chrome.jpg"]
    assert images.categories == ("", "", "")

    cats = tmp_path / "cats"
    for rel in ["a-b/y.png", "a/x.png", "a/w.png", "empty_dir/readme.md"]:
        _touch(cats / rel)
    images = read_image_folder(cats)
    # (category, name) order, as torchvision ImageFolder: "a" before "a-b".
    assert images.categories == ("a", "a", "a-b")
    assert [Path(p).name for p in images.paths] == ["w.png", "x.png", "y.png"]
    assert images.paths[0] == str(cats / "a" / "w.png")


def test_image_folder_errors(tmp_path: Path) -> None:
    raises_input(read_image_folder, tmp_path / "nope", file=tmp_path / "nope", match="not found")
    f = _touch(tmp_path / "file.png")
    raises_input(read_image_folder, f, file=f, match="not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_input(read_image_folder, empty, file=empty, match="no images")
    mixed = tmp_path / "mixed"
    _touch(mixed / "top.png")
    _touch(mixed / "cat" / "x.png")
    raises_input(read_image_folder, mixed, file=mixed, match=r"top level.*top\.png")
    deep = tmp_path / "deep"
    _touch(deep / "cat" / "sub" / "x.png")
    raises_input(read_image_folder, deep, file=deep, field="cat", match="one folder level")
    zero = tmp_path / "zero"
    _touch(zero / "ok.png")
    _touch(zero / "bad.png", b"")
    raises_input(read_image_folder, zero, file=zero, match=r"empty.*bad\.png")


def test_image_manifest_roundtrip(tmp_path: Path) -> None:
    a = _touch(tmp_path / "imgs" / "a.png")
    b = _touch(tmp_path / "elsewhere" / "b.jpg")
    m = write(tmp_path / "m.csv", f"path,category,notes\nimgs/a.png,dog,x\n{b},,y\n")
    images = read_image_manifest(m)
    assert images.paths == (str(a), str(b))
    assert images.categories == ("dog", "")
    m2 = write(tmp_path / "m2.csv", "Path\n\nimgs/a.png\n")  # case-insensitive, blank line
    assert read_image_manifest(m2).paths == (str(a),)


def test_image_manifest_errors(tmp_path: Path) -> None:
    _touch(tmp_path / "a.png")
    m = write(tmp_path / "missing.csv", "path\na.png\nno1.png\na.png_\nno3.png\n")
    err = raises_input(read_image_manifest, m, file=m, row=3, field="path")
    # All missing files are listed with their lines.
    assert "3 listed image file(s)" in str(err)
    for text in ["line 3: no1.png", "line 4: a.png_", "line 5: no3.png"]:
        assert text in str(err)
    many = write(tmp_path / "many.csv", "path\n" + "".join(f"m{i}.png\n" for i in range(30)))
    raises_input(read_image_manifest, many, file=many, row=2, match=r"30 in all")
    nocol = write(tmp_path / "nocol.csv", "file,category\na.png,x\n")
    raises_input(read_image_manifest, nocol, file=nocol, row=1, field="path")
    typo = write(tmp_path / "typo.csv", "pth\na.png\n")
    raises_input(read_image_manifest, typo, file=typo, row=1, field="pth", match="did you mean")
    blank = write(tmp_path / "blank.csv", "path,category\na.png,x\n ,y\n")
    raises_input(read_image_manifest, blank, file=blank, row=3, field="path")
    ragged = write(tmp_path / "ragged.csv", "path,category\na.png,x,extra\n")
    raises_input(read_image_manifest, ragged, file=ragged, row=2, match="3 columns")
    dup = write(tmp_path / "dup.csv", "path\na.png\n./a.png\n")
    raises_input(read_image_manifest, dup, file=dup, row=3, field="path", match="repeats line 2")
    empty = write(tmp_path / "empty.csv", "")
    raises_input(read_image_manifest, empty, file=empty, match="empty")
    header_only = write(tmp_path / "header.csv", "path,category\n")
    raises_input(read_image_manifest, header_only, file=header_only, row=1, match="no data rows")
    raises_input(read_image_manifest, tmp_path / "gone.csv", file=tmp_path / "gone.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path\na.png\nb\xe9.png\n".encode("latin-1"))
    raises_input(read_image_manifest, latin, file=latin, row=3, match="UTF-8")


# ================================================================== THINGS tsv


def test_things_tsv_small(tmp_path: Path) -> None:
    p = write(tmp_path / "t.tsv", "1\t2\t3\t2\t7\n\n4\t5\t6\t3\t8\r\n")
    j = read_things_tsv(p, 6)
    assert j.triplets.tolist() == [[0, 2, 1], [3, 4, 5]]
    assert j.participant.tolist() == [7, 8]
    p4 = write(tmp_path / "t4.tsv", "1 2 3 1\n")
    j4 = read_things_tsv(p4, 3)
    assert j4.triplets.tolist() == [[1, 2, 0]] and j4.participant.tolist() == [-1]


@pytest.mark.parametrize(
    ("text", "row", "field", "match"),
    [
        ("1\t2\t3\t1\t1\n1\t2\t3\t4\t1\n", 2, "choice", "must be 1, 2 or 3"),
        ("1\t2\t3\t1\t1\n\n0\t2\t3\t1\t1\n", 3, "obj_1", "out of range"),
        ("1\t2\t3\t1\t1\n1\t2\t11\t1\t1\n", 2, "obj_3", r"1\.\.10"),
        ("1\t2\t3.5\t1\t1\n", 1, "obj_3", "not an integer"),
        ("1\t2\t2\t1\t1\n", 1, "obj_3", "same item twice"),
        ("1\t2\t3\t1\t-4\n", 1, "participant", "negative"),
        ("1\t2\t3\n", 1, None, "found 3"),
        ("1\t2\t3\t1\t1\n1\t2\t3\t1\n", 2, None, "same number of columns"),
        ("obj_1\tobj_2\tobj_3\tchoice\tparticipant\n1\t2\t3\t1\t1\n", 1, None, "no header"),
        ("1,2,3,1,1\n", 1, None, "separated by tabs"),
    ],
)
def test_things_tsv_errors(
    tmp_path: Path, text: str, row: int, field: str | None, match: str
) -> None:
    p = write(tmp_path / "bad.tsv", text)
    raises_input(read_things_tsv, p, 10, file=p, row=row, field=field, match=match)


def test_things_tsv_file_errors(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.tsv", "\n\n")
    raises_input(read_things_tsv, empty, 10, file=empty, match="empty")
    raises_input(read_things_tsv, tmp_path / "x.tsv", 10, file=tmp_path / "x.tsv")
    npy = tmp_path / "t.tsv"
    np.save(tmp_path / "t.npy", np.zeros((2, 3), dtype=np.int64))
    (tmp_path / "t.npy").rename(npy)
    raises_input(read_things_tsv, npy, 10, file=npy, match="npy")


# ================================================================== odd-one-out npy / csv


def test_oddone_npy_roundtrip(tmp_path: Path) -> None:
    arr = np.array([[0, 1, 2], [5, 3, 4]], dtype=np.int32)
    p = tmp_path / "train_90.npy"
    np.save(p, arr)
    j = read_oddone_npy(p, 6)
    assert j.kind == "oddone" and j.triplets.dtype == np.int64
    assert np.array_equal(j.triplets, arr) and (j.participant == -1).all()


def test_oddone_npy_errors(tmp_path: Path) -> None:
    def npy(name: str, arr: np.ndarray) -> Path:
        p = tmp_path / name
        np.save(p, arr, allow_pickle=True)
        return p

    p = npy("f.npy", np.zeros((2, 3)))
    raises_input(read_oddone_npy, p, 5, file=p, match="dtype float64")
    p = npy("s.npy", np.zeros((2, 4), dtype=int))
    raises_input(read_oddone_npy, p, 5, file=p, match=r"\(N, 3\)")
    p = npy("e.npy", np.zeros((0, 3), dtype=int))
    raises_input(read_oddone_npy, p, 5, file=p, match="no triplets")
    p = npy("r.npy", np.array([[0, 1, 2], [0, 1, 2], [0, 7, 2]]))
    raises_input(read_oddone_npy, p, 5, file=p, row=3, field="column 2 (j)", match="out of range")
    p = npy("neg.npy", np.array([[0, 1, -1]]))
    raises_input(read_oddone_npy, p, 5, file=p, row=1, field="column 3 (odd one)")
    p = npy("d.npy", np.array([[0, 1, 2], [3, 3, 2]]))
    raises_input(read_oddone_npy, p, 5, file=p, row=2, match="same item twice")
    p = npy("o.npy", np.array([[0, 1, 2]], dtype=object))
    raises_input(read_oddone_npy, p, 5, file=p, match="pickled")
    t = write(tmp_path / "t.npy", "0 1 2\n")
    raises_input(read_oddone_npy, t, 5, file=t, match="not a NumPy")
    z = tmp_path / "z.npy"
    np.savez(tmp_path / "z.npz", a=np.zeros((1, 3), dtype=int))
    (tmp_path / "z.npz").rename(z)
    raises_input(read_oddone_npy, z, 5, file=z, match="npz")


def test_oddone_csv_roundtrip(tmp_path: Path) -> None:
    p = write(
        tmp_path / "o.csv",
        "Item_1, item_2 ,item_3,odd_position,participant,rt\n"
        "0,1,2,1,5,0.4\n"
        "3,4,5,2,,0.5\n"
        "6,7,8,3,-1,0.6\n",
    )
    j = read_oddone_csv(p, 9)
    assert j.triplets.tolist() == [[1, 2, 0], [3, 5, 4], [6, 7, 8]]
    assert j.participant.tolist() == [5, -1, -1]
    assert j.meta["ignored_columns"] == "rt"
    p1 = write(tmp_path / "o1.tsv", "item_1\titem_2\titem_3\todd_position\n1\t2\t3\t3\n")
    assert read_oddone_csv(p1, 3, id_base=1).triplets.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize(
    ("text", "row", "field", "match"),
    [
        ("item_1,item_2,item_3,odd_position\n0,1,2,0\n", 2, "odd_position", "1, 2 or 3"),
        ("item_1,item_2,item_3\n0,1,2\n", 1, "odd_position", "no column"),
        ("item_1,item_2,item_3,odd_position\n0,1,x,1\n", 2, "item_3", "not an integer"),
        ("item_1,item_2,item_3,odd_position\n0,1,,1\n", 2, "item_3", "empty"),
        ("item_1,item_2,item_3,odd_position\n1,2,3,1\n4,5,10,1\n", 3, "item_3", "1-based"),
        ("item_1,item_2,item_3,odd_position\n0,1,1,1\n", 2, "item_3", "same item twice"),
        ("item_1,item_2,item_3,odd_position\n0,1,2\n", 2, None, "has 3 columns"),
        ("item_1,item_2,item_3,odd_position,particpant\n0,1,2,1,4\n", 1, "particpant", "did"),
        ("item_1,item_2,item_3,odd_position,item_1\n0,1,2,1,4\n", 1, "item_1", "twice"),
        ("0,1,2,1\n", 1, None, "header row"),
        ("item_1,item_2,item_3,odd_position,participant\n0,1,2,1,-3\n", 2, "participant", "neg"),
    ],
)
def test_oddone_csv_errors(
    tmp_path: Path, text: str, row: int, field: str | None, match: str
) -> None:
    p = write(tmp_path / "bad.csv", text)
    raises_input(read_oddone_csv, p, 10, file=p, row=row, field=field, match=match)


def test_csv_fast_and_exact_paths_agree(tmp_path: Path) -> None:
    # A plain file takes numpy's C parser; quotes force the line-by-line csv path.
    rng = np.random.default_rng(0)
    ids = np.stack([rng.permutation(50)[:3] for _ in range(300)])
    pos = rng.integers(1, 4, 300)
    rows = [f"{a},{b},{c},{o},{k % 7}" for k, ((a, b, c), o) in enumerate(zip(ids, pos))]
    header = "item_1,item_2,item_3,odd_position,participant\n"
    plain = write(tmp_path / "plain.csv", header + "\n".join(rows) + "\n")
    quoted = write(
        tmp_path / "quoted.csv",
        header + "\n".join(f'"{r}"'.replace(",", '","') for r in rows) + "\n",
    )
    a, b = read_oddone_csv(plain, 50), read_oddone_csv(quoted, 50)
    assert np.array_equal(a.triplets, b.triplets) and np.array_equal(a.participant, b.participant)
    odd = ids[np.arange(300), pos - 1]
    assert np.array_equal(a.triplets[:, 2], odd)
    # Blank lines in a file the fast path parses: errors still name the editor line.
    p = write(tmp_path / "blank.csv", "item_1,item_2,item_3,odd_position\n\n0,1,2,1\n\n0,1,2,9\n")
    raises_input(read_oddone_csv, p, 5, file=p, row=5, field="odd_position")
    # An extra trailing value is a ragged row, even though the known columns parse.
    p = write(tmp_path / "extra.csv", "item_1,item_2,item_3,odd_position\n0,1,2,1\n0,1,2,1,5\n")
    raises_input(read_oddone_csv, p, 5, file=p, row=3, match="has 5 columns")


def test_oddone_csv_id_base_hint(tmp_path: Path) -> None:
    p = write(tmp_path / "b.csv", "item_1,item_2,item_3,odd_position\n1,2,0,1\n")
    raises_input(read_oddone_csv, p, 3, id_base=1, file=p, row=2, field="item_3", match="0-based")
    with pytest.raises(ValueError, match="id_base"):
        read_oddone_csv(p, 3, id_base=2)


# ================================================================== 2AFC csv


def test_twoafc_csv_roundtrip(tmp_path: Path) -> None:
    p = write(
        tmp_path / "t.csv",
        "anchor,chosen,other,votes_chosen,votes_other,participant\n0,1,2,4,1,\n2,0,1,0,3,9\n",
    )
    j = read_twoafc_csv(p, 3)
    assert j.kind == "twoafc"
    assert j.triplets.tolist() == [[0, 1, 2], [2, 0, 1]]
    assert j.votes is not None and j.votes.tolist() == [[4, 1], [0, 3]]
    assert j.n_responses == 8 and j.participant.tolist() == [-1, 9]
    p2 = write(tmp_path / "t2.csv", "other;chosen;anchor\n3;2;1\n")
    j2 = read_twoafc_csv(p2, 3, id_base=1)
    assert j2.triplets.tolist() == [[0, 1, 2]] and j2.votes is None and j2.n_responses == 1


@pytest.mark.parametrize(
    ("text", "row", "field", "match"),
    [
        ("anchor,chosen,other,votes_chosen,votes_other\n0,1,2,-1,2\n", 2, "votes_chosen", "neg"),
        ("anchor,chosen,other,votes_chosen,votes_other\n0,1,2,1,1\n0,1,2,0,0\n", 3, None, "0"),
        ("anchor,chosen,other,votes_chosen\n0,1,2,1\n", 1, "votes_other", "both"),
        ("anchor,chosen,other,votes_chosen,votes_other\n0,1,2,1,\n", 2, "votes_other", "empty"),
        ("anchor,chosen,other\n0,0,2\n", 2, "chosen", "same item twice"),
        ("anchor,chosen,other\n0,1,2\n0,1,5\n", 3, "other", "out of range"),
        ("anchor,chosen,other\n0,1\n", 2, None, "2 columns"),
        ("anchor,chosen\n0,1\n", 1, "other", "no column"),
    ],
)
def test_twoafc_csv_errors(
    tmp_path: Path, text: str, row: int, field: str | None, match: str
) -> None:
    p = write(tmp_path / "bad.csv", text)
    raises_input(read_twoafc_csv, p, 5, file=p, row=row, field=field, match=match)


# ================================================================== materials JSON


def _materials(tmp_path: Path, **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "answers": [[0, 1, 2], [3, 4, 5]],
        "agreement": [[3, 1], [2, 2]],
        "answers_diff": [[0, 1, 2]],
        "agreement_diff": [[3, 1]],
        "answers_equal": [[3, 4, 5]],
        "agreement_equal": [[2, 2]],
    }
    data.update(overrides)
    p = tmp_path / "answers.json"
    p.write_text(json.dumps(data, indent=2))
    return p


def test_materials_json_small(tmp_path: Path) -> None:
    p = _materials(tmp_path)
    j = read_materials_json(p, 6)
    assert j.triplets.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert j.votes is not None and j.votes.tolist() == [[3, 1], [2, 2]]
    assert j.meta["subset"] == "all"
    assert read_materials_json(p, 6, subset="ties").triplets.tolist() == [[3, 4, 5]]


@pytest.mark.parametrize(
    ("overrides", "row", "field", "match"),
    [
        ({"answers": [[0, 1, 2], [3, 4]]}, 2, "answers", "list of 3 integers"),
        ({"answers": [[0, 1, 2], [3, 4, 5.0]]}, 2, "answers", "integers"),
        ({"answers": [[0, 1, 2], [3, True, 5]]}, 2, "answers", "integers"),
        ({"agreement": [[3, 1]]}, None, "agreement", "aligned"),
        ({"answers": [[0, 1, 2], [3, 4, 100]]}, 2, "answers[*][2] (other)", "out of range"),
        ({"answers": [[0, 1, 2], [3, 3, 5]]}, 2, "answers[*][1] (chosen)", "twice"),
        ({"agreement": [[3, -1], [2, 2]]}, 1, "agreement[*][1]", "negative"),
        ({"agreement": [[3, 1], [0, 0]]}, 2, "agreement[*][0]", "no response"),
        ({"agreement": [[3, 1], [1, 2]]}, 2, "agreement", "swapped"),
        ({"answers": []}, None, "answers", "empty list"),
        ({"answers": {"0": [0, 1, 2]}}, None, "answers", "list of lists"),
    ],
)
def test_materials_json_errors(
    tmp_path: Path, overrides: dict[str, Any], row: int | None, field: str, match: str
) -> None:
    p = _materials(tmp_path, **overrides)
    raises_input(read_materials_json, p, file=p, row=row, field=field, match=match)


def test_materials_json_file_errors(tmp_path: Path) -> None:
    p = _materials(tmp_path)
    data = json.loads(p.read_text())
    del data["agreement"]
    p.write_text(json.dumps(data))
    raises_input(read_materials_json, p, file=p, field="agreement", match="no key")
    bad = write(tmp_path / "broken.json", '{\n  "answers": [\n    [0, 1, 2],\n  ]\n}\n')
    raises_input(read_materials_json, bad, file=bad, row=4, match="not valid JSON")
    top = write(tmp_path / "list.json", "[[0, 1, 2]]")
    raises_input(read_materials_json, top, file=top, match="top level")
    ties = _materials(tmp_path, agreement_equal=[[3, 1]])
    raises_input(
        read_materials_json, ties, subset="ties", file=ties, row=1, field="agreement_equal"
    )


# ================================================================== AligNet npz


def _alignet(tmp_path: Path, name: str = "a.npz", **arrays: Any) -> Path:
    base: dict[str, Any] = {
        "filenames": np.array([["a.jpg", "b.jpg", "c.jpg"], ["b.jpg", "d.jpg", "a.jpg"]]),
        "similarities": np.array([[0.9, 0.5, 0.1], [0.4, 0.6, 0.2]]),
        "indices": np.array([[10, 11, 12], [11, 13, 10]]),
    }
    base.update(arrays)
    p = tmp_path / name
    np.savez(p, **{k: v for k, v in base.items() if v is not None})
    return p


def test_alignet_npz_roundtrip(tmp_path: Path) -> None:
    p = _alignet(tmp_path)
    t = read_alignet_npz(p, n_items=20)
    assert isinstance(t, AlignetTriplets) and len(t) == 2
    assert t.filenames.dtype.kind == "U" and t.filenames[1, 2] == "a.jpg"
    assert t.similarities.dtype == np.float32 and t.indices.dtype == np.int64
    assert t.indices.tolist() == [[10, 11, 12], [11, 13, 10]]
    ids = {"a.jpg": 0, "b.jpg": 1, "c.jpg": 2, "d.jpg": 3}
    p2 = _alignet(
        tmp_path,
        "b.npz",
        indices=None,
        filenames=np.char.encode(
            np.array([["a.jpg", "b.jpg", "c.jpg"], ["b.jpg", "d.jpg", "a.jpg"]])
        ),
    )
    t2 = read_alignet_npz(p2, n_items=4, filenames_to_ids=ids)
    assert t2.indices.tolist() == [[0, 1, 2], [1, 3, 0]]


def test_alignet_npz_errors(tmp_path: Path) -> None:
    sims = np.array([[0.9, 0.5, 0.1], [0.4, 0.6, 0.2], [0.1, 0.5, 0.3], [0.5, 0.5, 0.5]])
    four = {
        "filenames": np.array([["a", "b", "c"]] * 4),
        "indices": np.array([[0, 1, 2]] * 4),
    }
    p = _alignet(tmp_path, "order.npz", similarities=sims, **four)
    err = raises_input(
        read_alignet_npz, p, file=p, row=3, field="similarities", match="s12 must be the smallest"
    )
    assert "Rows affected: 3, 4." in str(err)
    p = _alignet(tmp_path, "nan.npz", similarities=np.array([[0.9, 0.5, 0.1], [np.nan, 1, 0]]))
    raises_input(read_alignet_npz, p, file=p, row=2, field="similarities", match="finite")
    p = _alignet(tmp_path, "rows.npz", indices=np.array([[0, 1, 2]]))
    raises_input(read_alignet_npz, p, file=p, field="indices", match="1 rows")
    p = _alignet(tmp_path, "shape.npz", indices=np.array([[0, 1], [2, 3]]))
    raises_input(read_alignet_npz, p, file=p, field="indices", match=r"\(m, 3\)")
    p = _alignet(tmp_path, "nokey.npz", indices=None)
    raises_input(read_alignet_npz, p, file=p, field="indices", match="no array")
    p = _alignet(tmp_path, "fidx.npz", indices=np.array([[0.0, 1, 2], [1, 2, 3]]))
    raises_input(read_alignet_npz, p, file=p, field="indices", match="integers")
    p = _alignet(tmp_path, "range.npz")
    raises_input(read_alignet_npz, p, n_items=12, file=p, row=1, field="indices", match="0..11")
    p = _alignet(tmp_path, "dup.npz", indices=np.array([[0, 1, 2], [4, 4, 3]]))
    raises_input(read_alignet_npz, p, file=p, row=2, field="indices", match="twice")
    p = _alignet(tmp_path, "map.npz")
    err = raises_input(
        read_alignet_npz,
        p,
        filenames_to_ids={"a.jpg": 0, "b.jpg": 1},
        file=p,
        row=1,
        field="filenames",
        match="not in the image set",
    )
    assert "c.jpg" in str(err) and "d.jpg" in str(err)
    p = _alignet(
        tmp_path, "obj.npz", filenames=np.array([["a", "b", "c"], ["b", "d", "a"]], dtype=object)
    )
    raises_input(read_alignet_npz, p, file=p, field="filenames", match="pickled")
    p = _alignet(tmp_path, "emptyname.npz", filenames=np.array([["a", "b", "c"], ["b", "", "a"]]))
    raises_input(read_alignet_npz, p, file=p, row=2, field="filenames", match="empty")
    t = write(tmp_path / "t.npz", "not a zip")
    raises_input(read_alignet_npz, t, file=t, match="not an .npz")


# ================================================================== matrices


def _sym(n: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a + a.T


def test_matrix_roundtrips(tmp_path: Path) -> None:
    m = _sym(4)
    np.save(tmp_path / "m.npy", m.astype(np.float32))
    got = read_matrix(tmp_path / "m.npy", 4)
    assert got.dtype == np.float64 and np.allclose(got, m, atol=1e-6)
    stack = np.stack([_sym(4, 1), _sym(4, 2)])
    np.save(tmp_path / "s.npy", stack)
    assert np.array_equal(read_matrix(tmp_path / "s.npy", 4), stack)
    np.savetxt(tmp_path / "m.csv", m, delimiter=",", fmt="%.17g")
    assert np.array_equal(read_matrix(tmp_path / "m.csv", 4), m)
    np.savetxt(tmp_path / "m.txt", m, fmt="%.17g")  # whitespace-separated
    assert np.array_equal(read_matrix(tmp_path / "m.txt", 4), m)
    near = m.copy()
    near[0, 1] += 1e-9  # within tolerance
    np.save(tmp_path / "near.npy", near)
    assert read_matrix(tmp_path / "near.npy", 4)[0, 1] == near[0, 1]


def test_matrix_errors(tmp_path: Path) -> None:
    m = _sym(4)
    m[2, 3] += 0.5
    m[0, 1] += 0.1
    np.save(tmp_path / "asym.npy", m)
    p = tmp_path / "asym.npy"
    err = raises_input(read_matrix, p, 4, file=p, match="not symmetric")
    # The worst cell, [2, 3] or its mirror [3, 2], is named (1-based row, column).
    assert (err.row, err.field) in {(3, "column 4"), (4, "column 3")}
    assert "2 pair(s)" in str(err)
    stack = np.stack([_sym(4), m])
    np.save(tmp_path / "asym3.npy", stack)
    p = tmp_path / "asym3.npy"
    err = raises_input(read_matrix, p, 4, file=p, match="not symmetric")
    assert err.field is not None and err.field.startswith("subject 2")

    good = _sym(3)
    lines = [",".join(f"{x:.17g}" for x in r) for r in good]
    p = write(
        tmp_path / "nan.csv",
        "\n".join([lines[0], lines[1].replace(lines[1].split(",")[2], "nan"), lines[2]]),
    )
    raises_input(read_matrix, p, 3, file=p, row=2, field="column 3", match="finite")
    p = write(tmp_path / "head.csv", "a,b,c\n" + "\n".join(lines))
    raises_input(read_matrix, p, 3, file=p, row=1, match="no header")
    p = write(tmp_path / "text.csv", "\n".join([lines[0], "1,x,2", lines[2]]))
    raises_input(read_matrix, p, 3, file=p, row=2, field="column 2", match="not a number")
    p = write(tmp_path / "hole.csv", "\n".join([lines[0], "1,,2", lines[2]]))
    raises_input(read_matrix, p, 3, file=p, row=2, field="column 2", match="empty")
    p = write(tmp_path / "ragged.csv", "\n".join([lines[0], "1,2", lines[2]]))
    raises_input(read_matrix, p, 3, file=p, row=2, match="same number")
    p = write(tmp_path / "size.csv", "\n".join(lines))
    raises_input(read_matrix, p, 4, file=p, match="4 images")
    p = write(tmp_path / "rect.csv", "1,2,3\n2,1,3\n")
    raises_input(read_matrix, p, 3, file=p, match="not square")
    np.save(tmp_path / "v.npy", np.zeros(3))
    raises_input(read_matrix, tmp_path / "v.npy", 3, file=tmp_path / "v.npy", match="shape")
    np.save(tmp_path / "b.npy", np.eye(3, dtype=bool))
    raises_input(read_matrix, tmp_path / "b.npy", 3, file=tmp_path / "b.npy", match="dtype")
    p = write(tmp_path / "m.json", "[]")
    raises_input(read_matrix, p, 3, file=p, match="extension")


# ================================================================== features


def test_features_roundtrips(tmp_path: Path) -> None:
    import torch

    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", x.astype(np.float64))
    np.savez(tmp_path / "one.npz", feats=x)
    np.savez(tmp_path / "two.npz", a=x, b=x[:, :2])
    with h5py.File(tmp_path / "tv.h5", "w") as fh:  # thingsvision layout + an extra dataset
        fh["features"] = x
        fh["labels"] = np.arange(5)
    with h5py.File(tmp_path / "g.hdf5", "w") as fh:
        fh.create_group("g")["emb"] = x
    torch.save(torch.from_numpy(x), tmp_path / "t.pt")
    torch.save({"emb": torch.from_numpy(x), "step": 3}, tmp_path / "d.pt")
    torch.save({"a": torch.from_numpy(x), "b": torch.zeros(5, 2)}, tmp_path / "k.pth")
    torch.save(torch.from_numpy(x).to(torch.bfloat16), tmp_path / "bf.pt")
    cases = [
        ("f.npy", None),
        ("one.npz", None),
        ("two.npz", "a"),
        ("tv.h5", None),
        ("g.hdf5", None),
        ("g.hdf5", "/g/emb"),
        ("t.pt", None),
        ("d.pt", None),
        ("k.pth", "a"),
    ]
    for name, key in cases:
        got = read_features(tmp_path / name, n_items=5, key=key)
        assert got.dtype == np.float32 and got.flags.c_contiguous, name
        assert np.array_equal(got, x), name
    bf = read_features(tmp_path / "bf.pt")
    assert bf.shape == (5, 3) and np.allclose(bf, x, rtol=1e-2, atol=1e-2)


class _NotATensor:
    pass


def test_features_errors(tmp_path: Path) -> None:
    import torch

    x = np.ones((4, 3), dtype=np.float32)
    p = tmp_path / "three.npy"
    np.save(p, np.ones((4, 3, 2)))
    raises_input(read_features, p, file=p, field="features", match="2-D")
    bad = x.copy()
    bad[2, 1] = np.nan
    p = tmp_path / "nan.npy"
    np.save(p, bad)
    raises_input(read_features, p, file=p, row=3, field="features", match="column 2")
    p = tmp_path / "big.npy"
    np.save(p, np.full((2, 2), 1e300))
    raises_input(read_features, p, file=p, row=1, match="overflows float32")
    p = tmp_path / "n.npy"
    np.save(p, x)
    raises_input(read_features, p, n_items=5, file=p, match="4 rows but the image set has 5")
    raises_input(read_features, p, key="x", file=p, field="x")
    p = tmp_path / "e.npy"
    np.save(p, np.ones((0, 3)))
    raises_input(read_features, p, file=p, match="empty")
    p = tmp_path / "bool.npy"
    np.save(p, np.ones((2, 2), dtype=bool))
    raises_input(read_features, p, file=p, match="dtype bool")
    p = tmp_path / "two.npz"
    np.savez(p, a=x, b=x)
    raises_input(read_features, p, file=p, match=r"2 arrays \(a, b\).*key")
    raises_input(read_features, p, key="c", file=p, field="c", match="a, b")
    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as fh:
        fh["a"] = x
        fh["b"] = x
    raises_input(read_features, p, file=p, match=r"2 datasets")
    p = tmp_path / "obj.pt"
    torch.save({"x": _NotATensor()}, p)
    raises_input(read_features, p, file=p, match="weights_only=True")
    p = tmp_path / "list.pt"
    torch.save([torch.zeros(2, 2)], p)
    raises_input(read_features, p, file=p, match="holds a list")
    p = tmp_path / "cplx.pt"
    torch.save(torch.zeros(2, 2, dtype=torch.complex64), p)
    raises_input(read_features, p, file=p, match="real numbers")
    p = write(tmp_path / "f.csv", "1,2\n")
    raises_input(read_features, p, file=p, match="unsupported extension")
    p = write(tmp_path / "fake.h5", "text")
    raises_input(read_features, p, file=p, match="HDF5")
    raises_input(
        read_features, tmp_path / "gone.npy", file=tmp_path / "gone.npy", match="not found"
    )
    p = tmp_path / "zero.npy"
    p.write_bytes(b"")
    raises_input(read_features, p, file=p, match="0 bytes")
    p = tmp_path / "cut.npy"
    np.save(p, np.ones((50, 4)))
    p.write_bytes(p.read_bytes()[:300])
    raises_input(read_features, p, file=p, match="truncated")


def test_oddone_csv_type_column_is_kept_per_row(tmp_path: Path, caplog) -> None:
    """Levels-style data carry a triplet type per row; evaluation breaks accuracy down by it."""
    p = tmp_path / "levels.csv"
    p.write_text("item_1,item_2,item_3,odd_position,type\n0,1,2,3,global\n3,1,2,1,local\n")
    with caplog.at_level("WARNING"):
        j = read_oddone_csv(p, 5)
    assert "ignoring" not in caplog.text  # the type column is read, so no warning says otherwise
    assert j.types is not None and j.types.tolist() == ["global", "local"]
    np.testing.assert_array_equal(j.triplets, [[0, 1, 2], [1, 2, 3]])
    assert read_oddone_csv(tmp_path / "levels.csv", 5).meta.get("ignored_columns") is None
