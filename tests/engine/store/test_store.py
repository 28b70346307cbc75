"""The project file: round trips, crash safety under SIGKILL, the write lock, schema checks."""

from __future__ import annotations

import json
import os
import random
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
from alignet_engine.errors import ProjectError, ProjectLockedError
from alignet_engine.store import SCHEMA_VERSION, Project
from alignet_engine.store import project as project_module


def _images(n: int = 5) -> ImageSet:
    return ImageSet(tuple(f"/img/{i}.png" for i in range(n)), tuple("ab"[i % 2] for i in range(n)))


def test_round_trip_of_data_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "study.alignet"
    with Project.create(path) as p:
        p.write_imageset("stimuli", _images(), {"source": "test"})
        j = Judgments(
            "twoafc",
            np.array([[0, 1, 2], [3, 4, 0]]),
            np.array([7, -1]),
            votes=np.array([[4, 1], [3, 2]]),
            meta={"note": "x"},
        )
        p.write_judgments("human", j, image_set="stimuli", params={"file": "a.json"})
        p.write_matrix("rsm", np.eye(5), image_set="stimuli", kind="similarity", params={})
        X = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
        run_id = p.begin_job("features", {"model": "m"})
        p.write_run(
            "features",
            run_id,
            slot="features:stimuli:m",
            params={"model": "m"},
            arrays={"X": X, "names": np.array(["a", "b"], dtype=object)},
            summary={"n": 5},
        )

    with Project.open(path, readonly=True) as p:
        assert p.imageset("stimuli") == _images()
        j2, set_name = p.judgments("human")
        assert set_name == "stimuli" and j2.kind == "twoafc"
        np.testing.assert_array_equal(j2.triplets, j.triplets)
        np.testing.assert_array_equal(j2.votes, j.votes)
        np.testing.assert_array_equal(j2.participant, j.participant)
        assert j2.meta == {"note": "x"}
        m, kind, s = p.matrix("rsm")
        assert kind == "similarity" and s == "stimuli" and np.array_equal(m, np.eye(5))
        run = p.run("features:stimuli:m")
        assert run.run_id == run_id and run.params == {"model": "m"} and run.summary == {"n": 5}
        np.testing.assert_array_equal(run.arrays["X"], X)
        assert list(run.arrays["names"]) == ["a", "b"]
        assert p.interrupted_jobs() == []
        events = [r["event"] for r in p.journal()]
        assert events.count("start") == 1 and events.count("end") == 1


def test_judgments_outside_the_image_set_are_refused(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p.alignet") as p:
        p.write_imageset("s", _images(3), {})
        bad = Judgments("oddone", np.array([[0, 1, 5]]), np.array([-1]))
        with pytest.raises(ProjectError, match=r"item 5.*3 images"):
            p.write_judgments("j", bad, image_set="s", params={})
        assert p.names("judgments") == []


def test_stale_runs_and_interrupted_jobs(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p.alignet") as p:
        a1 = p.begin_job("features", {})
        p.write_run("features", a1, slot="feat", params={}, arrays={})
        t1 = p.begin_job("transform", {})
        p.write_run(
            "transform",
            t1,
            slot="transform",
            params={},
            arrays={},
            inputs={"feat": f"features/{a1}"},
        )
        assert p.stale_reasons("transform") == []
        a2 = p.begin_job("features", {})
        p.write_run("features", a2, slot="feat", params={}, arrays={})
        reasons = p.stale_reasons("transform")
        assert len(reasons) == 1 and "feat changed" in reasons[0]
        orphan = p.begin_job("distill", {"steps": 3})  # never ended: the process "died"
        assert [r["run"] for r in p.interrupted_jobs()] == [orphan]
        p.end_job("distill", orphan, "cancelled")
        assert p.interrupted_jobs() == []


_HOLD_LOCK = (
    "import sys, time\nfrom alignet_engine.store import Project\n"
    "p = Project.open(sys.argv[1])\n"
    "with p.transaction():\n    print('holding', flush=True)\n    time.sleep(float(sys.argv[2]))\n"
)


def test_a_second_writer_waits_for_the_transaction_then_is_refused_clearly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.alignet"
    Project.create(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with Project.open(path) as p:  # opening takes no lock
            locked = pytest.raises(ProjectLockedError, match=f"process {holder.pid}")
            with locked as err, p.transaction(wait=0.3):
                pass
            assert "reading the project works meanwhile" in str(err.value)
            # Read-only access works while another process writes.
            assert p.slots() == {}
    finally:
        holder.kill()
        holder.wait()
    with Project.open(path) as p:  # the dead holder's lock is stale and taken over
        p.write_imageset("s", _images(), {})
        assert p.imageset("s") == _images()


def test_a_short_write_waits_for_another_process_transaction(tmp_path: Path) -> None:
    path = tmp_path / "p.alignet"
    Project.create(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path), "0.5"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    with Project.open(path) as p:
        p.write_imageset("s", _images(), {})  # waits the half second, then writes
        assert p.imageset("s") == _images()
    assert holder.wait() == 0


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "p.alignet"
    Project.create(path).close()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = path.with_name(path.name + ".lock")
    lock.write_text(
        json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "time": time.time()})
    )
    Project.open(path).close()
    # A lock from another host is never assumed stale.
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "time": time.time()}))
    with Project.open(path) as p, pytest.raises(ProjectLockedError, match=r"elsewhere\.example"):
        p.write_imageset("s", _images(), {})


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "\x00\x00"])
def test_an_empty_or_garbage_lock_file_is_stale_with_a_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "p.alignet"
    Project.create(path).close()
    lock = path.with_name(path.name + ".lock")
    lock.write_text(content)
    with caplog.at_level("WARNING"), Project.open(path) as p:
        p.write_imageset("s", _images(), {})
        assert p.imageset("s") == _images()
    assert any("stale" in r.getMessage() for r in caplog.records)
    assert not lock.exists()


def test_newer_schema_is_refused_and_not_a_project_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "p.alignet"
    Project.create(path).close()
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 100
    with pytest.raises(ProjectError, match="newer AligNet Studio"):
        Project.open(path)
    other = tmp_path / "x.h5"
    with h5py.File(other, "w") as f:
        f["a"] = 1
    with pytest.raises(ProjectError, match="not an AligNet Studio project"):
        Project.open(other)
    junk = tmp_path / "junk.alignet"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ProjectError, match="not a readable project"):
        Project.open(junk)


def test_older_schema_is_backed_up_then_migrated(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "p.alignet"
    Project.create(path).close()
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION - 1

    def add_marker(project: Project, f: h5py.File) -> None:
        f.attrs["migrated"] = True

    monkeypatch.setitem(project_module.MIGRATIONS, SCHEMA_VERSION - 1, (SCHEMA_VERSION, add_marker))
    Project.open(path).close()
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION and f.attrs["migrated"]
    backup = path.with_name(f"{path.name}.schema{SCHEMA_VERSION - 1}.bak")
    with h5py.File(backup, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION - 1


def test_save_as_copies_the_index_and_its_side_files(tmp_path: Path) -> None:
    p = Project.create(tmp_path / "a.alignet")
    p.write_imageset("s", _images(), {})
    X = np.arange(2 << 18, dtype=np.float32).reshape(-1, 64)  # 2 MiB: a side file
    rid = p.begin_job("features", {})
    p.write_run("features", rid, slot="feat", params={}, arrays={"X": X})
    q = p.save_as(tmp_path / "b.alignet")
    try:
        assert q.imageset("s") == _images()
        with pytest.raises(ProjectError, match="closed"):
            p.write_imageset("t", _images(), {})
        # The copy stands alone: deleting the original's folder does not touch it.
        import shutil

        shutil.rmtree(tmp_path / "a.alignet.files")
        np.testing.assert_array_equal(q.run("feat").arrays["X"], X)
        q.verify()
    finally:
        q.close()


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from alignet_engine.store import Project
    p = Project.open(sys.argv[1])
    print("ready", flush=True)
    i = p.run("feat").params["i"] + 1 if "feat" in p.slots() else 0
    while True:
        rid = p.begin_job("features", {"i": i})
        X = np.full((400, 256), float(i), dtype=np.float32)  # ~400 kB per run
        p.write_run("features", rid, slot="feat", params={"i": i}, arrays={"X": X},
                    summary={"i": i})
        i += 1
    """
)


def test_sigkill_mid_write_always_leaves_a_whole_project(tmp_path: Path) -> None:
    path = tmp_path / "p.alignet"
    with Project.create(path) as p:
        p.write_imageset("s", _images(), {})
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random(1234)
    last_i = -1
    for trial in range(24):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The file opens (taking over the dead writer's lock) and /current is intact.
        with Project.open(path) as p:
            assert p.imageset("s") == _images(), f"trial {trial}"
            slots = p.slots()
            if "feat" in slots:
                run = p.run("feat")
                i = run.params["i"]
                assert run.summary == {"i": i}
                np.testing.assert_array_equal(run.arrays["X"], np.full((400, 256), float(i)))
                assert i >= last_i
                last_i = i
            leftovers = list(tmp_path.glob(".p.alignet.*"))
            assert leftovers == [], leftovers
    assert last_i > 0, "the writer never committed a run; the kills were all too early"
