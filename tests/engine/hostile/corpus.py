"""The hostile-file corpus of issue 13: every case builds its own files in a folder.

Nothing here is third-party data: each case writes the crafted file it needs (a truncated
npz, an npy header declaring a TiB, a symlink planted where export writes a temporary...)
into ``work`` and returns the ``alignet-cli`` command to run on it and a check of the result.

A case is run twice by ``make_corpus.py`` (against any checkout, in fresh interpreters: the
before/after table of the issue) and in-process by ``test_corpus.py``. The shared starting
point is :func:`build_base`: a project ``base.alignet`` with the image set ``s`` (6 images in
two categories), features ``m`` (6 x 4) and judgments ``j``; each case gets its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: the base image set: two categories, the same base names in both (item 1's trap)
BASE_IMAGES = ("a/img1.png", "a/img2.png", "a/img3.png", "b/img1.png", "b/img2.png", "b/img4.png")
N = len(BASE_IMAGES)


@dataclass
class Result:
    """What one command did: exit status, output, and the project's digest before/after."""

    rc: int
    stdout: str
    stderr: str
    before: str
    after: str

    @property
    def unchanged(self) -> bool:
        return self.before == self.after


@dataclass
class Case:
    """``argv`` (with ``{project}`` for the case's project copy); ``check(result, work)``
    returns None when the behaviour is right, else what is wrong."""

    item: int
    name: str
    argv: list[str]
    check: Callable[[Result, Path], str | None]
    #: run before ``argv`` on the same project (each must exit 0), e.g. to set up a transform
    setup: list[list[str]] = field(default_factory=list)
    #: replaces the project copy: builds a crafted project at the given path
    craft: Callable[[Path], None] | None = None


def digest(path: Path) -> str:
    if not path.exists():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ checks
def refused(*words: str, unchanged: bool = True) -> Callable[[Result, Path], str | None]:
    """Exit 2, project unchanged (unless a job may record its failure in the journal:
    ``unchanged=False``), the message names each of ``words`` (file, row, field)."""

    def check(r: Result, work: Path) -> str | None:
        if r.rc != 2:
            tail = (r.stderr.strip().splitlines() or [""])[-1][:160]
            return f"exit {r.rc} (expected 2): {tail}"
        if "Traceback" in r.stderr:
            return "traceback"
        if unchanged and not r.unchanged:
            return "project changed"
        missing = [w for w in words if w.lower() not in r.stderr.lower()]
        return f"message lacks {missing}: {r.stderr.strip()[-200:]}" if missing else None

    return check


def ok(extra: Callable[[Result, Path], str | None] | None = None):
    def check(r: Result, work: Path) -> str | None:
        if r.rc != 0:
            tail = (r.stderr.strip().splitlines() or [""])[-1][:160]
            return f"exit {r.rc} (expected 0): {tail}"
        return extra(r, work) if extra else None

    return check


def _strict_json(text: str) -> object:
    def bad(name: str) -> object:
        raise ValueError(f"bare {name} is not JSON")

    return json.loads(text, parse_constant=bad)


# ------------------------------------------------------------------------------ files
def _png(path: Path, seed: int) -> None:
    """A small valid PNG (a 2x2 grey image whose value depends on ``seed``)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([seed * 30 % 256] * 2) for _ in range(2))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def build_base(work: Path, run: Callable[[list[str]], int]) -> Path:
    """Write the base images, features and judgments under ``work`` and the project
    ``work/base.alignet`` through the CLI ``run(argv) -> exit status``."""
    images = work / "images"
    for i, rel in enumerate(BASE_IMAGES):
        _png(images / rel, i)
    rng = np.random.default_rng(0)
    np.save(work / "features.npy", rng.standard_normal((N, 4)).astype(np.float32))
    (work / "judgments.csv").write_text(
        "item_1,item_2,item_3,odd_position\n0,1,3,3\n1,2,4,3\n0,2,5,3\n3,4,0,3\n"
    )
    project = work / "base.alignet"
    for argv in (
        ["new", str(project)],
        ["import-images", str(project), str(images), "--name", "s"],
        ["import-features", str(project), str(work / "features.npy"), "--set", "s", "--name", "m"],
        [
            "import-judgments",
            str(project),
            str(work / "judgments.csv"),
            "--format",
            "oddone-csv",
            "--set",
            "s",
            "--name",
            "j",
        ],
    ):
        if run(argv) != 0:
            raise RuntimeError(f"building the base project failed at {argv}")
    return project


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """An .npy v1 header declaring ``shape`` (no data follows: a shape bomb)."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")


def _transform_npz(path: Path, d: int = 4, **override: object) -> Path:
    arrays: dict[str, object] = {
        "weights": np.eye(d, dtype=np.float32),
        "bias": np.zeros(d, dtype=np.float32),
        "mean": np.float32(0.0),
        "std": np.float32(1.0),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def _alignet_npz(path: Path, filenames: list[list[str]], indices: list[list[int]]) -> Path:
    m = len(filenames)
    # s12 smallest: image 2 is the odd one (the AligNet ordering rule)
    sims = np.tile(np.array([0.9, 0.8, 0.1], dtype=np.float32), (m, 1))
    np.savez(
        path,
        filenames=np.array(filenames, dtype=str),
        similarities=sims,
        indices=np.array(indices, dtype=np.int64),
    )
    return path


# ------------------------------------------------------------------------------ cases
def cases(work: Path) -> list[Case]:
    """Every case; files are written under ``work`` (shared by the cases, distinct names)."""
    w = work
    out: list[Case] = []
    add = out.append
    P = "{project}"
    imp_j = ["import-judgments", P, "--set", "s", "--name"]

    def judged(stored: list[list[int]]) -> Callable[[Result, Path], str | None]:
        def check(r: Result, work: Path) -> str | None:
            from alignet_engine.store import Project

            with Project.open(work / "case.alignet", readonly=True) as p:
                j, _ = p.judgments("npz")
            got = sorted(map(sorted, j.triplets.tolist()))
            want = sorted(map(sorted, stored))
            return None if got == want else f"stored triplets {got}, expected {want}"

        return ok(check)

    # -- item 1: alignet-npz names matched by longest unambiguous suffix ----------------------
    f = _alignet_npz(
        w / "npz_paths.npz",
        [["a/img1.png", "b/img1.png", "a/img2.png"], ["b/img2.png", "a/img3.png", "b/img4.png"]],
        [[5, 4, 3], [2, 1, 0]],  # indices of another set: the file names must win
    )
    add(
        Case(
            1,
            "npz paths with shared base names map by path",
            [*imp_j, "npz", str(f), "--format", "alignet-npz"],
            judged([[0, 3, 1], [4, 2, 5]]),
        )
    )
    f = _alignet_npz(
        w / "npz_ambiguous.npz",
        [["img1.png", "img3.png", "img4.png"]],
        [[7, 8, 9]],  # indices inconsistent with the names: cannot decide
    )
    add(
        Case(
            1,
            "npz ambiguous base name refused with candidates",
            [*imp_j, "npz", str(f), "--format", "alignet-npz"],
            refused("img1.png", "a/img1.png", "b/img1.png"),
        )
    )
    f = _alignet_npz(w / "npz_consistent.npz", [["img1.png", "img3.png", "img4.png"]], [[3, 2, 5]])
    add(
        Case(
            1,
            "npz ambiguous names resolved by the file's consistent indices",
            [*imp_j, "npz", str(f), "--format", "alignet-npz"],
            judged([[3, 2, 5]]),
        )
    )
    f = _alignet_npz(
        w / "npz_imagenet.npz",
        [["n01/x_1.JPEG", "n01/x_2.JPEG", "n02/x_3.JPEG"]],
        [[0, 1, 2]],
    )
    add(
        Case(
            1,
            "npz names of another image set: its own indices",
            [*imp_j, "npz", str(f), "--format", "alignet-npz"],
            judged([[0, 1, 2]]),
        )
    )

    # -- item 2: replacing an image set others depend on --------------------------------------
    _png(w / "six" / "x.png", 1)
    add(
        Case(
            2,
            "re-import an image set with judgments and features refused",
            ["import-images", P, str(w / "six"), "--name", "s"],
            refused("'s'", "judgments", "--replace"),
        )
    )

    def stale_after(r: Result, work: Path) -> str | None:
        from alignet_engine.store import Project

        with Project.open(work / "case.alignet", readonly=True) as p:
            info = p.info()
        stale = [run for run in info["runs"] if run["stale"]]
        if not stale:
            return f"nothing stale after replacing the set: {info['runs']}"
        text = json.dumps(info)
        return None if "image set 's'" in text else "stale reason does not name the set"

    add(
        Case(
            2,
            "forced re-import makes dependants stale",
            ["import-images", P, str(w / "six"), "--name", "s", "--replace"],
            ok(stale_after),
        )
    )
    add(
        Case(
            2,
            "evaluate on judgments of a replaced set refused",
            ["evaluate", P, "--set", "s", "--model", "m", "--judgments", "j"],
            refused("image set 's'", "replaced", unchanged=False),
            setup=[["import-images", P, str(w / "six"), "--name", "s", "--replace"]],
        )
    )

    # -- item 3: export ---------------------------------------------------------------------
    tr = _transform_npz(w / "transform_ok.npz")
    setup_tr = [["import-transform", P, str(tr), "--set", "s", "--model", "m"]]
    outside = w / "outside.txt"
    outside.write_text("do not touch\n")

    def planted(r: Result, work: Path) -> str | None:
        if outside.read_text() != "do not touch\n":
            return "wrote through a planted symlink"
        target = work / "out_planted" / "transform.npz"
        if target.is_symlink():
            return "transform.npz is a symlink"
        return None if r.rc == 0 else f"exit {r.rc}: {r.stderr.strip()[-160:]}"

    d = w / "out_planted"
    d.mkdir(exist_ok=True)
    for name in (".transform.npz.tmp", ".transform.npz.tmp.npz", "transform.npz.tmp"):
        if not (d / name).is_symlink():
            os.symlink(outside, d / name)
    add(
        Case(
            3,
            "export does not write through planted temp symlinks",
            ["export", P, "--out", str(d), "--what", "transform"],
            planted,
            setup=setup_tr,
        )
    )
    d = w / "out_existing"
    d.mkdir(exist_ok=True)
    (d / "transform.npz").write_bytes(b"mine")

    def kept(r: Result, work: Path) -> str | None:
        if (w / "out_existing" / "transform.npz").read_bytes() != b"mine":
            return "overwrote an existing output"
        return refused("transform.npz", "--overwrite")(r, work)

    add(
        Case(
            3,
            "export refuses to overwrite without --overwrite",
            ["export", P, "--out", str(d), "--what", "transform"],
            kept,
            setup=setup_tr,
        )
    )
    d2 = w / "out_overwrite"
    d2.mkdir(exist_ok=True)
    (d2 / "transform.npz").write_bytes(b"mine")
    add(
        Case(
            3,
            "export --overwrite replaces an existing output",
            ["export", P, "--out", str(d2), "--what", "transform", "--overwrite"],
            ok(
                lambda r, work: (
                    None if (d2 / "transform.npz").read_bytes()[:2] == b"PK" else "not replaced"
                )
            ),
            setup=setup_tr,
        )
    )
    (w / "a_file").write_text("x")
    add(
        Case(
            7,
            "export --out at an existing file",
            ["export", P, "--out", str(w / "a_file"), "--what", "transform"],
            refused("a_file"),
            setup=setup_tr,
        )
    )

    # -- item 7: transforms -----------------------------------------------------------------
    imp_t = ["import-transform", P, "--set", "s", "--model", "m"]
    np.save(w / "t_npy.npy", np.eye(4))
    os.replace(w / "t_npy.npy", w / "t_npy.npz")
    add(
        Case(
            7,
            "transform: .npy renamed .npz",
            [*imp_t[:2], str(w / "t_npy.npz"), *imp_t[2:]],
            refused("t_npy.npz"),
        )
    )
    data = tr.read_bytes()
    (w / "t_trunc.npz").write_bytes(data[: len(data) // 2])
    add(
        Case(
            7,
            "transform: truncated npz",
            [*imp_t[:2], str(w / "t_trunc.npz"), *imp_t[2:]],
            refused("t_trunc.npz"),
        )
    )
    (w / "t_empty.npz").write_bytes(b"")
    add(
        Case(
            7,
            "transform: 0-byte file",
            [*imp_t[:2], str(w / "t_empty.npz"), *imp_t[2:]],
            refused("t_empty.npz"),
        )
    )
    f = _transform_npz(w / "t_strmean.npz", mean=np.array("zero"))
    add(
        Case(
            7,
            "transform: string mean",
            [*imp_t[:2], str(f), *imp_t[2:]],
            refused("t_strmean.npz", "mean"),
        )
    )
    f = _transform_npz(w / "t_strweights.npz", weights=np.array([["1", "0"], ["0", "1"]]))
    add(
        Case(
            8,
            "transform: weights stored as strings",
            [*imp_t[:2], str(f), *imp_t[2:]],
            refused("t_strweights.npz", "weights"),
        )
    )

    # -- item 7: shape bombs ------------------------------------------------------------------
    bomb = _npy_header((1 << 20, 1 << 20))  # 8 TiB of float64
    (w / "bomb.npy").write_bytes(bomb)
    add(
        Case(
            7,
            "features: npy header declaring 8 TiB",
            ["import-features", P, str(w / "bomb.npy"), "--set", "s", "--name", "bomb"],
            refused("bomb.npy"),
        )
    )
    with zipfile.ZipFile(w / "bomb.npz", "w") as z:
        z.writestr("X.npy", bomb)
    add(
        Case(
            7,
            "features: npz member declaring 8 TiB",
            ["import-features", P, str(w / "bomb.npz"), "--set", "s", "--name", "bomb"],
            refused("bomb.npz"),
        )
    )
    add(
        Case(
            7,
            "judgments: npy header declaring 8 TiB",
            [*imp_j, "bomb", str(w / "bomb.npy"), "--format", "oddone-npy"],
            refused("bomb.npy"),
        )
    )
    with zipfile.ZipFile(w / "t_bomb.npz", "w") as z:
        z.writestr("weights.npy", bomb)
        z.writestr("bias.npy", _npy_header((1 << 20,)))
    add(
        Case(
            7,
            "transform: npz declaring 8 TiB weights",
            [*imp_t[:2], str(w / "t_bomb.npz"), *imp_t[2:]],
            refused("t_bomb.npz"),
        )
    )

    def h5_bomb(path: Path) -> None:
        import h5py

        with h5py.File(path, "w") as h:
            h.create_dataset("X", shape=(1 << 24, 1 << 16), dtype="f8", chunks=(64, 64))

    h5_bomb(w / "bomb.h5")
    add(
        Case(
            7,
            "features: h5 dataset declaring 8 TiB",
            ["import-features", P, str(w / "bomb.h5"), "--set", "s", "--name", "bomb"],
            refused("bomb.h5"),
        )
    )
    add(
        Case(
            7,
            "matrix: npy header declaring 8 TiB",
            ["import-matrix", P, str(w / "bomb.npy"), "--set", "s", "--name", "bomb"],
            refused("bomb.npy"),
        )
    )

    # -- item 7: materials-json, oddone-csv, names -----------------------------------------
    (w / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    add(
        Case(
            7,
            "materials-json nested 200k deep",
            [*imp_j, "mj", str(w / "deep.json"), "--format", "materials-json"],
            refused("deep.json"),
        )
    )
    (w / "bigint.json").write_text(
        json.dumps({"triplets": [[0, 1, 2]], "votes": [[1, 1]]})[:-1] + ', "x": ' + "9" * 5000 + "}"
    )
    add(
        Case(
            7,
            "materials-json with a 5000-digit integer",
            [*imp_j, "mj", str(w / "bigint.json"), "--format", "materials-json"],
            refused("bigint.json"),
        )
    )
    (w / "bom.csv").write_bytes(
        "\ufefftype,item_1,item_2,item_3,odd_position\nx,0,1,3,3\ny,1,2,4,3\n".encode()
    )
    add(
        Case(
            7,
            "oddone-csv with a BOM before a type first column",
            [*imp_j, "bom", str(w / "bom.csv"), "--format", "oddone-csv"],
            ok(),
        )
    )
    add(
        Case(
            7,
            "--name . refused",
            [*imp_j, ".", str(w / "judgments.csv"), "--format", "oddone-csv"],
            refused("name"),
        )
    )
    add(
        Case(
            7,
            "--name .. refused for an image set",
            ["import-images", P, str(w / "six"), "--name", ".."],
            refused("name"),
        )
    )

    # -- item 7: corrupt projects ---------------------------------------------------------------
    def crafted(change: Callable[[object], None]) -> Callable[[Path], None]:
        def craft(path: Path) -> None:
            import h5py

            with h5py.File(path, "r+") as h:
                change(h)

        return craft

    def schema_text(h: object) -> None:
        h.attrs["schema_version"] = "one hundred"  # type: ignore[attr-defined]

    def journal_garbage(h: object) -> None:
        ds = h["journal"]  # type: ignore[index]
        ds.resize((ds.shape[0] + 1,))
        ds[-1] = "{not json"

    def params_garbage(h: object) -> None:
        for stage in ("features",):
            for run in h[stage]:  # type: ignore[index]
                h[stage][run].attrs["params"] = "{not json"  # type: ignore[index]

    def current_missing(h: object) -> None:
        h["current"].attrs["transform"] = "transform/20990101T000000-abcdef"  # type: ignore[index]

    def journal_huge(h: object) -> None:
        import h5py

        del h["journal"]  # type: ignore[attr-defined]
        h.create_dataset(  # type: ignore[attr-defined]
            "journal",
            shape=(10**12,),
            maxshape=(None,),
            dtype=h5py.string_dtype(),
            chunks=(1024,),
        )

    for name, change in (
        ("non-integer schema version", schema_text),
        ("non-JSON journal record", journal_garbage),
        ("non-JSON run params", params_garbage),
        ("journal declaring 10^12 entries", journal_huge),
    ):
        add(
            Case(
                7,
                f"corrupt project: {name}: info",
                ["info", P],
                refused("case.alignet"),
                craft=crafted(change),
            )
        )
    add(
        Case(
            7,
            "corrupt project: non-integer schema version: import",
            [*imp_j, "k", str(w / "judgments.csv"), "--format", "oddone-csv"],
            refused("case.alignet"),
            craft=crafted(schema_text),
        )
    )

    add(
        Case(
            7,
            "corrupt project: /current naming a missing run: export",
            ["export", P, "--out", str(w / "out_missing"), "--what", "transform"],
            refused("case.alignet", "transform"),
            craft=crafted(current_missing),
        )
    )

    def no_traceback(r: Result, work: Path) -> str | None:
        if "Traceback" in r.stderr or r.rc not in (0, 2):
            return f"exit {r.rc}: {(r.stderr.strip().splitlines() or [''])[-1][:160]}"
        return None

    add(
        Case(
            7,
            "corrupt project: /current naming a missing run: info",
            ["info", P],
            no_traceback,
            craft=crafted(current_missing),
        )
    )

    # -- item 8: accepted but should not be ---------------------------------------------------
    for label, cell in (
        ("1_0", "1_0"),
        ("Arabic-Indic digit", "\u0661"),
        ("full-width digit", "\uff11"),
    ):
        path = w / f"id_{label.replace(' ', '_')}.csv"
        path.write_text(f"item_1,item_2,item_3,odd_position\n0,{cell},3,3\n", encoding="utf-8")
        add(
            Case(
                8,
                f"oddone-csv id {label}",
                [*imp_j, "k", str(path), "--format", "oddone-csv"],
                refused(path.name, "row 2", "item_2"),
            )
        )
    (w / "votes_big.csv").write_text(
        f"anchor,chosen,other,votes_chosen,votes_other\n0,1,2,{2**63 - 1},1\n"
    )
    add(
        Case(
            8,
            "twoafc-csv vote count 2^63-1",
            [*imp_j, "k", str(w / "votes_big.csv"), "--format", "twoafc-csv"],
            refused("votes_big.csv", "row 2"),
        )
    )
    dang = w / "dangling"
    for i in range(3):
        _png(dang / f"im{i}.png", i)
    os.symlink(w / "nowhere.png", dang / "im1b.png")
    add(
        Case(
            8,
            "dangling symlink in an image folder",
            ["import-images", P, str(dang), "--name", "d"],
            refused("im1b.png"),
        )
    )
    alias = w / "alias"
    for i in range(3):
        _png(alias / f"im{i}.png", i)
    os.symlink(alias / "im0.png", alias / "im9.png")
    add(
        Case(
            8,
            "one image twice through a symlink alias",
            ["import-images", P, str(alias), "--name", "d"],
            refused("im9.png", "im0.png"),
        )
    )

    def nan_summary(h: object) -> None:
        for run in h["features"]:  # type: ignore[index]
            h["features"][run].attrs["summary"] = '{"n": 6, "dim": 4, "x": NaN}'  # type: ignore[index]

    add(
        Case(
            8,
            "NaN printed as null in --json",
            ["info", P, "--json"],
            ok(lambda r, work: _json_problem(r.stdout)),
            craft=crafted(nan_summary),
        )
    )

    # -- item 9: sharp edges --------------------------------------------------------------------
    add(
        Case(
            9,
            "fit-transform without --judgments",
            ["fit-transform", P, "--set", "s", "--model", "m"],
            refused("judgments"),
        )
    )
    (w / "one_based.csv").write_text("item_1,item_2,item_3,odd_position\n1,2,6,3\n")

    def advice(r: Result, work: Path) -> str | None:
        problem = refused("one_based.csv")(r, work)
        if problem:
            return problem
        return (
            "advises --id-base but import-judgments lacks it"
            if ("id_base" in r.stderr or "id-base" in r.stderr) and not _has_id_base()
            else None
        )

    add(
        Case(
            9,
            "1-based ids: the advice names a real option",
            [*imp_j, "k", str(w / "one_based.csv"), "--format", "oddone-csv"],
            advice,
        )
    )
    add(
        Case(
            9,
            "1-based ids import with --id-base 1",
            [*imp_j, "k", str(w / "one_based.csv"), "--format", "oddone-csv", "--id-base", "1"],
            ok(),
        )
    )
    np.save(w / "matrix.npy", np.eye(N))

    def metric_used(r: Result, work: Path) -> str | None:
        if r.rc == 2:
            return None if "metric" in r.stderr else "refused without naming --metric"
        if r.rc != 0:
            return f"exit {r.rc}"
        problem = _json_problem(r.stdout)
        if problem:
            return problem
        got = _strict_json(r.stdout).get("metric")  # type: ignore[union-attr]
        return None if got == "euclidean" else f"asked for euclidean, got {got!r}"

    add(
        Case(
            9,
            "evaluate --metric euclidean on a matrix is honoured or refused",
            [
                "evaluate",
                P,
                "--set",
                "s",
                "--model",
                "m",
                "--matrix",
                "mx",
                "--metric",
                "euclidean",
                "--json",
                "--n-boot",
                "10",
            ],
            metric_used,
            setup=[["import-matrix", P, str(w / "matrix.npy"), "--set", "s", "--name", "mx"]],
        )
    )

    def hint(r: Result, work: Path) -> str | None:
        problem = refused("--model", unchanged=False)(r, work)
        if problem:
            return problem
        return None if "'m'" in r.stderr or " m" in r.stderr else "does not list the set's model m"

    add(
        Case(
            9,
            "fit-transform without --model hints at --model",
            ["fit-transform", P, "--set", "s", "--judgments", "j"],
            hint,
        )
    )
    return out


def _json_problem(text: str) -> str | None:
    try:
        _strict_json(text)
    except ValueError as exc:
        return str(exc)
    return None


def _has_id_base() -> bool:
    from alignet_engine.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return "--id-base" in sub.choices["import-judgments"].format_help()  # type: ignore[attr-defined]
