"""Side files of the project store: large arrays outside the index, lazy and streamed access,
gc, pack, Save As, the schema-100 migration, and damaged or missing files."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.errors import ProjectError
from alignet_engine.store import SCHEMA_VERSION, Project, SideArray
from alignet_engine.store import sidefiles as sf

_MIB = 1 << 20


def _features(n: int = 4096, d: int = 128, seed: int = 0) -> np.ndarray:
    """(n, d) float32, 2 MiB by default: above the 1 MiB side-file threshold."""
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _files(p: Project) -> list[Path]:
    return sorted(p.arrays_dir.glob("*.h5")) if p.arrays_dir.is_dir() else []


def test_large_arrays_live_in_side_files_and_round_trip(tmp_path: Path) -> None:
    X = _features()
    with Project.create(tmp_path / "p.alignet") as p:
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={}, arrays={"X": X, "ids": np.arange(7)})
        (side_file,) = _files(p)
        # The index holds a reference, not the 2 MiB, and stays small.
        assert p.path.stat().st_size < 200_000
        with h5py.File(side_file, "r") as f:
            ds = f["data"]
            assert ds.shape == X.shape and ds.dtype == np.float32
            assert ds.compression is None and ds.chunks is not None  # portable, chunked
        info = p.array_info("feat")
        assert info["X"]["file"] == str(side_file) and info["ids"]["file"] == "inline"
        assert info["X"]["sha256"] == hashlib.sha256(side_file.read_bytes()).hexdigest()
        run = p.run("feat")
        np.testing.assert_array_equal(run.arrays["X"], X)
        np.testing.assert_array_equal(run.arrays["ids"], np.arange(7))
        assert p.array_shape("feat", "X") == X.shape


def test_open_array_reads_rows_lazily_wherever_the_array_lives(tmp_path: Path) -> None:
    X = _features()
    paths = np.array([f"/pool/{i:07d}.jpg" for i in range(100_000)], dtype=object)  # 1.7 MB
    with Project.create(tmp_path / "p.alignet") as p:
        p.write_imageset("pool", ImageSet(tuple(paths), ("",) * len(paths)), {})
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={}, arrays={"X": X, "y": X[:3, :3]})
        with p.open_array("feat", "X") as ds:
            assert isinstance(ds, h5py.Dataset) and ds.shape == X.shape
            np.testing.assert_array_equal(ds[100:164], X[100:164])
            with pytest.raises((OSError, ValueError, TypeError)):
                ds[0] = 1.0  # read-only
        with p.open_array(f"features/{rid}", "y") as ds:
            np.testing.assert_array_equal(ds[()], X[:3, :3])
        with p.open_array("data/imagesets/pool", "path_bytes") as ds:  # UTF-8 path blob
            assert ds.shape[0] > sf.SIDE_ARRAY_MIN_BYTES
            assert p.array_info("data/imagesets/pool")["path_bytes"]["file"] != "inline"
        assert p.imageset("pool").paths[12_345] == "/pool/0012345.jpg"
        assert p.info()["imagesets"] == {"pool": 100_000}
        with pytest.raises(ProjectError, match="no array 'Z'"), p.open_array("feat", "Z"):
            pass


def test_a_streamed_array_is_referenced_by_a_run(tmp_path: Path) -> None:
    X = _features(5000, 64)
    with Project.create(tmp_path / "p.alignet") as p:
        rid = p.begin_job("features", {})
        with p.new_side_array("X", (5000, 64), np.float32) as w:
            for lo in range(0, 5000, 999):
                w[lo : lo + 999] = X[lo : lo + 999]
            X_side = w.finish()
        with p.new_side_array("loss", (None,), np.float64) as curve:
            for step in range(0, 100_000, 500):  # a 100k-step curve, appended per batch
                curve.append(np.arange(step, step + 500, dtype=np.float64))
            curve_side = curve.finish()
        assert isinstance(X_side, SideArray) and X_side.shape == (5000, 64)
        assert curve_side.shape == (100_000,) and curve_side.dtype == "<f8"
        p.write_run(
            "features",
            rid,
            slot="feat",
            params={},
            arrays={"X": X_side, "history_loss": curve_side},
        )
        run = p.run("feat")
        np.testing.assert_array_equal(run.arrays["X"], X)
        np.testing.assert_array_equal(run.arrays["history_loss"], np.arange(100_000.0))
        # An abandoned writer leaves no file behind.
        with pytest.raises(RuntimeError), p.new_side_array("junk", (None, 3), np.int64) as w:
            w.append(np.zeros((10, 3)))
            raise RuntimeError("the job failed")
        assert not list(p.arrays_dir.glob("*junk*"))
        p.verify()


def test_a_foreign_or_unfinished_side_array_is_refused(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p.alignet") as p:
        rid = p.begin_job("features", {})
        fake = SideArray("abc-X-12345678.h5", "0" * 64, (3,), "<f4", 100)
        with pytest.raises(ProjectError, match="does not exist"):
            p.write_run("features", rid, slot="f", params={}, arrays={"X": fake})
        assert p.slots() == {}


def _side_of(p: Project, ref: str, name: str) -> Path:
    return Path(p.array_info(ref)[name]["file"])


def test_a_missing_or_damaged_side_file_is_named_in_a_project_error(tmp_path: Path) -> None:
    X = _features()
    with Project.create(tmp_path / "p.alignet") as p:
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={}, arrays={"X": X})
        path = _side_of(p, "feat", "X")
        original = path.read_bytes()

        # The same size, one byte changed in the data: cheap checks pass, verify() does not.
        flipped = bytearray(original)
        flipped[-100] ^= 0xFF
        path.write_bytes(bytes(flipped))
        with pytest.raises(ProjectError, match=f"{path.name}.*sha256"):
            p.verify()
        report = p.collect_garbage(verify=True)
        assert len(report.damaged) == 1 and path.name in report.damaged[0]

        path.write_bytes(original[: len(original) // 2])  # truncated
        with pytest.raises(ProjectError, match=f"{path.name}.*damaged"):
            p.run("feat")
        path.unlink()
        with pytest.raises(ProjectError, match=f"{path.name}.*missing"):
            p.run("feat")
        with pytest.raises(ProjectError, match="missing"), p.open_array("feat", "X"):
            pass
        assert p.collect_garbage().missing


def test_a_reference_that_points_outside_the_arrays_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.h5"
    with h5py.File(outside, "w") as f:
        f["data"] = np.arange(3)
    with Project.create(tmp_path / "p.alignet") as p:
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={}, arrays={"X": _features()})
        with p.transaction() as f:
            f[f"features/{rid}/X"].attrs["file"] = "../../secret.h5"
        with pytest.raises(ProjectError, match="refusing to open"):
            p.run("feat")


def test_gc_sweeps_only_unreferenced_files_of_dead_writers(tmp_path: Path) -> None:
    path = tmp_path / "p.alignet"
    with Project.create(path) as p:
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={}, arrays={"X": _features()})
        kept = _side_of(p, "feat", "X")
        # Replacing an image set leaves its old paths file unreferenced.
        big = tuple(f"/a/{i:07d}.png" for i in range(100_000))
        p.write_imageset("s", ImageSet(big, ("",) * len(big)), {})
        old = _side_of(p, "data/imagesets/s", "path_bytes")
        p.write_imageset("s", ImageSet(big[::-1], ("",) * len(big)), {}, replace=True)
        # This process's own not-yet-referenced array is protected by its live lease.
        mine = p.new_side_array("pending", (600_000,), np.float32)
        mine[:] = np.ones(600_000, np.float32)
        pending = mine.finish()
        assert str(p.arrays_dir / pending.file) in p.collect_garbage().in_use
    pending_path = str(p.arrays_dir / pending.file)  # closed: the lease is gone

    # A live process that wrote a side array and has not referenced it yet.
    code = textwrap.dedent(
        """
        import sys, numpy as np
        from alignet_engine.store import Project
        p = Project.open(sys.argv[1])
        side = p.new_side_array("other", (None,), np.float64)
        side.append(np.zeros(200_000))
        print(side.finish().file, flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        other = p.arrays_dir / proc.stdout.readline().strip()
        with Project.open(path) as q:
            dry = q.collect_garbage()
            assert dry.dry_run and set(dry.unreferenced) == {str(old), pending_path}
            assert str(other) in dry.in_use and old.exists()
            report = q.collect_garbage(dry_run=False)
            assert not old.exists() and other.exists() and kept.exists()
            assert report.freed_bytes > 0
            np.testing.assert_array_equal(q.run("feat").arrays["X"], _features())
            assert len(q.imageset("s")) == 100_000
    finally:
        proc.kill()
        proc.wait()
    with Project.open(path) as q:
        report = q.collect_garbage(dry_run=False)  # the writer died: its file is garbage
        assert str(other) in report.unreferenced and not other.exists()
        assert set(_files(q)) == {kept, _side_of(q, "data/imagesets/s", "path_bytes")}
        q.verify()


def test_pack_writes_one_self_contained_file_that_opens(tmp_path: Path) -> None:
    X = _features()
    path = tmp_path / "p.alignet"
    with Project.create(path) as p:
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={"m": 1}, arrays={"X": X})
        j = Judgments("oddone", np.tile([[0, 1, 2]], (90_000, 1)), np.full(90_000, -1))
        p.write_imageset("s", ImageSet(("a", "b", "c"), ("", "", "")), {})
        p.write_judgments("human", j, image_set="s", params={})
        p.side_path("distill-r.safetensors").write_bytes(b"student weights")
        out = p.pack(tmp_path / "send" / "packed.alignet")
        with pytest.raises(ProjectError, match="already exists"):
            p.pack(out)
    shutil.rmtree(tmp_path / "p.alignet.files")  # nothing outside the packed file is needed
    assert not (tmp_path / "send" / "packed.alignet.files").exists()
    with h5py.File(out, "r") as f:
        assert isinstance(f[f"features/{rid}/X"], h5py.Dataset)
        assert f[f"features/{rid}/X"].compression is None
    with Project.open(out, readonly=True) as q:  # read as it is
        np.testing.assert_array_equal(q.run("feat").arrays["X"], X)
        with q.open_array("feat", "X") as ds:
            np.testing.assert_array_equal(ds[5:9], X[5:9])
    packed_size = out.stat().st_size
    with Project.open(out) as q:  # the first writable open unpacks it: writes stay cheap
        assert out.stat().st_size < packed_size / 4 and len(_files(q)) == 2
        np.testing.assert_array_equal(q.run("feat").arrays["X"], X)
        np.testing.assert_array_equal(q.judgments("human")[0].triplets, j.triplets)
        assert (q.files_dir / "distill-r.safetensors").read_bytes() == b"student weights"
        assert [r.stage for r in q.runs()] == ["features"]
        q.write_imageset("t", ImageSet(("x",), ("",)), {})
        q.verify()


def _write_schema100_project(path: Path, X: np.ndarray) -> None:
    """A project as release 0.x (schema 100) wrote it: every array inline in one file,
    arrays over 1 MiB chunked and lzf-compressed (its ``_write_array``)."""
    str_dt = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format="alignet-project",
            schema_version=100,
            created_with="0.1.0",
            last_written_with="0.1.0",
            uuid="0" * 32,
            created=time.time(),
        )
        journal = [
            {"time": 1.0, "event": "import", "kind": "imagesets", "name": "s"},
            {"time": 2.0, "event": "start", "stage": "features", "run": "r1", "params": {}},
            {"time": 3.0, "event": "end", "stage": "features", "run": "r1", "status": "done"},
        ]
        f.create_dataset(
            "journal", data=[json.dumps(r) for r in journal], maxshape=(None,), dtype=str_dt
        )
        s = f.create_group("data/imagesets/s")
        s.create_dataset("paths", data=np.array(["a.png", "b.png"], dtype=object), dtype=str_dt)
        s.create_dataset("categories", data=np.array(["", ""], dtype=object), dtype=str_dt)
        s.attrs["params"] = "{}"
        s.attrs["n"] = "2"
        g = f.create_group("features/r1")
        g.create_dataset("X", data=X, chunks=(2048, X.shape[1]), compression="lzf")
        # 1.5 MiB that lzf packs into a few kB: large by content, not by storage
        g.create_dataset("zeros", data=np.zeros(3 << 16), chunks=(1 << 17,), compression="lzf")
        g.create_dataset("small", data=np.arange(1000), chunks=(100,), compression="lzf")
        g.create_dataset("names", data=np.array(["u", "v"], dtype=object), dtype=str_dt)
        g.attrs.update(slot="feat", params='{"m": 1}', inputs="{}", summary="{}", created=4.0)
        f.create_group("current").attrs["feat"] = "features/r1"


def test_a_schema_100_project_is_backed_up_and_migrated_to_side_files(tmp_path: Path) -> None:
    X = _features(8192, 128)  # 4 MiB, lzf-compressed inline in the old file
    path = tmp_path / "old.alignet"
    _write_schema100_project(path, X)
    old_size = path.stat().st_size
    with Project.open(path, readonly=True) as ro:  # reading needs no migration
        np.testing.assert_array_equal(ro.run("feat").arrays["X"], X)
    with Project.open(path) as p:
        assert p.path.stat().st_size < old_size / 4  # the features left the index
        assert len(_files(p)) == 2
        for side in _files(p):
            with h5py.File(side, "r") as f:
                assert f["data"].compression is None  # readable without h5py's lzf plugin
        run = p.run("feat")
        np.testing.assert_array_equal(run.arrays["X"], X)
        np.testing.assert_array_equal(run.arrays["zeros"], np.zeros(3 << 16))
        assert list(run.arrays["names"]) == ["u", "v"] and run.params == {"m": 1}
        assert p.imageset("s").paths == ("a.png", "b.png")
        assert [r["event"] for r in p.journal()] == ["import", "start", "end"]
        p.verify()
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        np.testing.assert_array_equal(f["features/r1/small"][()], np.arange(1000))
        lzf: list[str] = []
        f.visititems(lambda n, o: lzf.append(n) if getattr(o, "compression", 0) == "lzf" else None)
        assert lzf == []  # the index, too, is readable without h5py's lzf plugin
    backup = path.with_name("old.alignet.schema100.bak")
    with h5py.File(backup, "r") as f:
        assert f.attrs["schema_version"] == 100
        np.testing.assert_array_equal(f["features/r1/X"][()], X)


def test_save_as_hard_links_immutable_side_files(tmp_path: Path) -> None:
    with Project.create(tmp_path / "a.alignet") as p:
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={}, arrays={"X": _features()})
        (p.side_path("distill-x.safetensors")).write_bytes(b"weights")  # a checkpoint
        src = _side_of(p, "feat", "X")
        q = p.save_as(tmp_path / "b.alignet")
    with q:
        dst = _side_of(q, "feat", "X")
        assert dst.parent == tmp_path / "b.alignet.files" / "arrays"
        assert os.path.samefile(src, dst) or dst.read_bytes() == src.read_bytes()
        assert (tmp_path / "b.alignet.files" / "distill-x.safetensors").read_bytes() == b"weights"


def test_side_threshold_is_one_mib() -> None:
    assert sf.SIDE_ARRAY_MIN_BYTES == _MIB


_SIDE_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from alignet_engine.store import Project
    p = Project.open(sys.argv[1])
    print("ready", flush=True)
    i = p.run("feat").params["i"] + 1 if "feat" in p.slots() else 0
    while True:
        rid = p.begin_job("features", {"i": i})
        X = np.full((2048, 160), float(i), dtype=np.float32)  # 1.3 MB: written as a side file
        with p.new_side_array("curve", (None,), np.float64) as w:  # streamed, appended
            for step in range(0, 200_000, 20_000):
                w.append(np.arange(step, step + 20_000, dtype=np.float64) + i)
                w.flush()
            curve = w.finish()
        p.write_run("features", rid, slot="feat", params={"i": i},
                    arrays={"X": X, "curve": curve}, summary={"i": i})
        i += 1
    """
)


def test_sigkill_during_side_file_writes_leaves_a_consistent_project(tmp_path: Path) -> None:
    path = tmp_path / "p.alignet"
    Project.create(path).close()
    script = tmp_path / "writer.py"
    script.write_text(_SIDE_WRITER)
    rng = random.Random(99)
    last_i = -1
    for trial in range(14):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Project.open(path) as p:
            if "feat" in p.slots():
                run = p.run("feat")
                i = run.params["i"]
                assert run.summary == {"i": i}, f"trial {trial}"
                np.testing.assert_array_equal(run.arrays["X"], np.full((2048, 160), float(i)))
                np.testing.assert_array_equal(run.arrays["curve"], np.arange(200_000.0) + i)
                assert i >= last_i
                last_i = i
            p.verify()  # every referenced side file is whole (sha256)
            assert list(tmp_path.glob(".p.alignet.*")) == []
    assert last_i > 0, "the writer never committed a run; the kills were all too early"
    with Project.open(path) as p:
        p.collect_garbage(dry_run=False)  # the killed writers' leftovers: all dead leases
        referenced = {
            Path(a["file"]).name
            for r in p.runs()
            for a in p.array_info(f"{r.stage}/{r.run_id}").values()
            if a["file"] != "inline"
        }
        assert {f.name for f in p.arrays_dir.iterdir()} == referenced
        assert not list((p.files_dir / "leases").glob("*"))
        p.verify()


def test_cli_gc_lists_by_default_deletes_on_request_and_pack_writes_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alignet_engine.cli import main

    path = tmp_path / "p.alignet"
    with Project.create(path) as p:
        old = p.begin_job("features", {})
        p.write_run("features", old, slot="feat", params={}, arrays={"X": _features()})
        first = _side_of(p, "feat", "X")
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="feat", params={}, arrays={"X": _features(seed=1)})
        p.delete_run(f"features/{old}")  # its side file is left to gc
    assert main(["gc", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["dry_run"] and listed["unreferenced"] == [str(first)] and first.exists()
    assert main(["gc", str(path), "--delete", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unreferenced"] == [str(first)]
    assert not first.exists()

    out = tmp_path / "send.alignet"
    assert main(["pack", str(path), str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["packed"] == str(out)
    with Project.open(out, readonly=True) as q:
        np.testing.assert_array_equal(q.run("feat").arrays["X"], _features(seed=1))

    _side_of(Project.open(path, readonly=True), "feat", "X").unlink()
    assert main(["gc", str(path), "--verify"]) == 2  # a missing file is an error
    assert "missing" in capsys.readouterr().err


def test_a_refused_write_leaves_no_side_file_behind(tmp_path: Path) -> None:
    big = tuple(f"/a/{i:07d}.png" for i in range(100_000))  # paths blob > 1 MiB
    with Project.create(tmp_path / "p.alignet") as p:
        p.write_imageset("s", ImageSet(big, ("",) * len(big)), {})
        p.write_judgments(
            "j",
            Judgments("oddone", np.array([[0, 1, 2]]), np.array([-1])),
            image_set="s",
            params={},
        )
        before = _files(p)
        with pytest.raises(ProjectError, match="is used by"):
            p.write_imageset("s", ImageSet(big[::-1], ("",) * len(big)), {})
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="f", params={}, arrays={"X": _features()})
        with pytest.raises(ProjectError, match="already exists"):
            p.write_run("features", rid, slot="f", params={}, arrays={"X": _features(seed=3)})
        assert len(_files(p)) == len(before) + 1


def test_the_gc_job_reports_progress_and_damage(tmp_path: Path) -> None:
    from alignet_engine.jobs import Progress, run_job
    from alignet_engine.stages.housekeeping import collect_garbage_job

    with Project.create(tmp_path / "p.alignet") as p:
        for seed in range(2):
            rid = p.begin_job("features", {})
            p.write_run(
                "features", rid, slot=f"f{seed}", params={}, arrays={"X": _features(seed=seed)}
            )
        bad = _side_of(p, "f1", "X")
        data = bytearray(bad.read_bytes())
        data[-10] ^= 1
        bad.write_bytes(bytes(data))
        events: list[object] = []
        report = run_job(collect_garbage_job(p, verify=True), events.append)
        checks = [e for e in events if isinstance(e, Progress) and e.message.startswith("checking")]
        assert len(checks) == 2
        assert len(report.damaged) == 1 and bad.name in report.damaged[0]
        assert report.dry_run and report.unreferenced == ()
