"""The project store against hostile files, permissions, a full disk and a second process
(issue 13 items 4, 5, 6, 8 and 10)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from alignet_engine.base.types import ImageSet
from alignet_engine.errors import ProjectError, ProjectLockedError
from alignet_engine.stages._tracking import tracked
from alignet_engine.store import DiskFullError, Project
from alignet_engine.store import checks as checks_module
from alignet_engine.store import project as project_module


def _images(n: int = 4) -> ImageSet:
    return ImageSet(tuple(f"/img/{i}.png" for i in range(n)), ("",) * n)


def _project(tmp_path: Path) -> Path:
    path = tmp_path / "p.alignet"
    with Project.create(path) as p:
        p.write_imageset("s", _images(), {})
    return path


# ------------------------------------------------------------------------- links (item 4)
def test_external_links_soft_links_and_virtual_datasets_are_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.h5"
    with h5py.File(victim, "w") as f:
        f["x"] = np.arange(4)

    def crafted(name: str, plant) -> Path:
        path = _project(tmp_path / name)
        with h5py.File(path, "r+") as f:
            plant(f)
        return path

    ext = crafted("ext", lambda f: f["data"].__setitem__("evil", h5py.ExternalLink(victim, "/x")))
    with pytest.raises(ProjectError, match=r"external link at /data/evil.*victim\.h5"):
        Project.open(ext)
    with pytest.raises(ProjectError, match="external link"):
        Project.open(ext, readonly=True)  # reads would follow it too

    soft = crafted("soft", lambda f: f["data/imagesets"].__setitem__("s2", h5py.SoftLink("/x")))
    with pytest.raises(ProjectError, match=r"soft link at /data/imagesets/s2"):
        Project.open(soft)

    def vds(f: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.int64)
        layout[:] = h5py.VirtualSource(str(victim), "x", shape=(4,))
        f["data"].create_virtual_dataset("v", layout)

    with pytest.raises(ProjectError, match=r"virtual dataset at /data/v"):
        Project.open(crafted("vds", vds))
    assert np.array_equal(h5py.File(victim, "r")["x"][()], np.arange(4))  # untouched


# ------------------------------------------------------------------- permissions (item 5)
def test_a_save_keeps_the_mode_of_the_project(tmp_path: Path) -> None:
    path = _project(tmp_path)
    os.chmod(path, 0o600)
    with Project.open(path) as p:
        p.write_imageset("t", _images(), {})
        X = np.zeros((600_000,), np.float32)  # a side file too
        rid = p.begin_job("features", {})
        p.write_run("features", rid, slot="f", params={}, arrays={"X": X})
        side = Path(p.array_info("f")["X"]["file"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(side.stat().st_mode) == 0o600
    os.chmod(path, 0o640)
    with Project.open(path) as p:
        p.write_imageset("u", _images(), {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_read_only_project_opens_read_only_with_the_reason(tmp_path: Path) -> None:
    path = _project(tmp_path)
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with Project.open(path) as p:
        assert p.readonly and "0444" in p.readonly_reason
        assert p.info()["readonly"] == p.readonly_reason
    with Project.open(path, readonly=True) as p:  # what `alignet-cli info` shows
        assert "0444" in p.info()["unwritable"]
    with Project.open(path) as p:
        assert p.imageset("s") == _images()  # reading works
        with pytest.raises(ProjectError, match=r"read-only.*0444"):
            p.write_imageset("t", _images(), {})
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444


# ---------------------------------------------------------------------- full disk (item 6)
def test_a_failing_copy_rolls_back_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = _project(tmp_path)
    before = path.read_bytes()

    def full(src, dst, **kw):
        Path(dst).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with Project.open(path) as p:
        monkeypatch.setattr(project_module.shutil, "copyfile", full)
        with pytest.raises(DiskFullError, match=r"disk full: .* MB needed, .* MB free at"):
            p.write_imageset("t", _images(), {})
    assert path.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.alignet"]


def test_a_large_write_is_refused_before_it_starts_and_the_job_fails(
    tmp_path: Path, monkeypatch
) -> None:
    path = _project(tmp_path)
    monkeypatch.setattr(checks_module, "free_bytes", lambda _p: 3_000_000)
    X = np.ones((1_000_000, 4), np.float32)  # 16 MB

    def body(run_id: str):
        yield None
        p.write_run("features", run_id, slot="f", params={}, arrays={"X": X})

    with Project.open(path) as p:
        with pytest.raises(DiskFullError) as err:
            list(tracked(p, "features", {}, body))
        assert "disk full: 17 MB needed, 3 MB free at" in str(err.value)
        last = p.journal()[-1]
        assert last["status"] == "failed" and "disk full: 17 MB needed" in last["message"]
        assert p.slots() == {} and p.interrupted_jobs() == []
        assert not list(p.arrays_dir.glob("*")), "no side file or temporary left"


_FILL = textwrap.dedent(
    """
    import sys, numpy as np
    from alignet_engine.store import DiskFullError, Project
    p = Project.open(sys.argv[1])
    w = p.new_side_array("grow", (None, 256), np.float32)
    try:
        for _ in range(1000):  # 1000 x 256 kB: far more than the 2 MB disk
            w.append(np.ones((256, 256), np.float32))
            w.flush()
        w.finish()
    except DiskFullError as exc:
        print("DiskFullError", exc)
        w.abort()
    """
)


def test_on_a_real_full_filesystem(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode == 0
    )
    if not mounted:
        pytest.skip("needs root and mount to make a 2 MB tmpfs")
    try:
        path = _project(mnt)
        out = subprocess.run(
            [sys.executable, "-c", _FILL, str(path)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert "DiskFullError disk full:" in out.stdout and f"free at {mnt}" in out.stdout
        np.save(tmp_path / "big.npy", np.ones((4, 1 << 18), np.float32))  # 4 MB, one row per image
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "alignet_engine.cli",
                "import-features",
                str(path),
                str(tmp_path / "big.npy"),
                "--set",
                "s",
                "--name",
                "m",
            ],
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 2 and "disk full" in cli.stderr, cli.stderr
        with Project.open(path) as p:
            assert p.imageset("s") == _images() and p.slots() == {}
            assert p.journal()[-1]["status"] == "failed"
            assert not list(p.arrays_dir.iterdir()), "no partial side file left"
        assert sorted(x.name for x in mnt.iterdir()) == ["p.alignet", "p.alignet.files"]
    finally:
        subprocess.run(["umount", str(mnt)])


# --------------------------------------------------------- a long job in another process (10)
_LONG_JOB = textwrap.dedent(
    """
    import sys, time, numpy as np
    from alignet_engine.store import Project
    p = Project.open(sys.argv[1])
    rid = p.begin_job("distill", {"steps": 100000})
    print(rid, flush=True)
    step = 0
    while True:  # the job's own short writes: a checkpoint record every few ms
        with p.transaction() as f:
            f.attrs["step"] = step
        step += 1
        time.sleep(0.005)
    """
)


def test_reads_and_short_writes_work_while_a_long_job_runs(tmp_path: Path) -> None:
    path = _project(tmp_path)
    job = subprocess.Popen(
        [sys.executable, "-c", _LONG_JOB, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert job.stdout is not None
        rid = job.stdout.readline().strip()
        with Project.open(path, readonly=True) as ro:  # info: no lock, no wait
            info = ro.info()
            assert [r["run"] for r in info["running"]] == [rid] and info["interrupted"] == []
        with Project.open(path) as p:
            for i in range(5):  # imports between the job's own transactions
                p.write_imageset(f"extra{i}", _images(3), {})
            ev = p.begin_job("evaluate", {})
            p.write_run("evaluate", ev, slot="evaluate", params={}, arrays={"acc": np.ones(3)})
            with pytest.raises(ProjectLockedError, match=f"distill job \\(run {rid}\\) is running"):
                p.begin_job("distill", {})
            assert p.names("imagesets") == ["extra0", "extra1", "extra2", "extra3", "extra4", "s"]
    finally:
        job.kill()
        job.wait()
    with Project.open(path) as p:  # the job's process died: interrupted, not running
        assert [r["run"] for r in p.interrupted_jobs()] == [rid] and p.running_jobs() == []
        assert p.imageset("s") == _images() and len(p.names("imagesets")) == 6
        p.end_job("distill", rid, "failed", "killed")
        p.begin_job("distill", {})  # a new one may start now


def test_two_threads_writing_through_one_project_lose_nothing(tmp_path: Path) -> None:
    path = _project(tmp_path)
    with Project.open(path) as p:

        def writer(prefix: str) -> None:
            for i in range(10):
                p.write_imageset(f"{prefix}{i}", _images(2), {})

        threads = [threading.Thread(target=writer, args=(c,)) for c in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(p.names("imagesets")) == 21


def test_a_damaged_journal_is_a_project_error_naming_the_record(tmp_path: Path) -> None:
    path = _project(tmp_path)
    with h5py.File(path, "r+") as f:
        ds = f["journal"]
        ds.resize((ds.shape[0] + 1,))
        ds[-1] = "{not json"
        n = ds.shape[0]
    damaged = pytest.raises(ProjectError, match=f"journal record {n} is not a JSON record")
    with Project.open(path, readonly=True) as p, damaged:
        p.info()
    with h5py.File(path, "r+") as f:
        del f["journal"]
        f.create_dataset(
            "journal", shape=(10**12,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,)
        )
    with Project.open(path, readonly=True) as p, pytest.raises(ProjectError, match="damaged"):
        p.journal()


def test_end_records_a_new_status_once(tmp_path: Path) -> None:
    with Project.open(_project(tmp_path)) as p:
        rid = p.begin_job("distill", {})
        p.end_job("distill", rid, "failed", "disk full: 3 MB needed")
        p.end_job("distill", rid, "failed", "DiskFullError: disk full: 3 MB needed")  # again
        p.end_job("distill", rid, "resumed", "continued as distill/x")
        ends = [(r["status"], r["message"]) for r in p.journal() if r["event"] == "end"]
        assert ends == [("failed", "disk full: 3 MB needed"), ("resumed", "continued as distill/x")]


def test_a_migration_backup_is_as_private_as_the_project_and_never_half_written(
    tmp_path: Path, monkeypatch
) -> None:
    path = _project(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = project_module.SCHEMA_VERSION - 1
    os.chmod(path, 0o600)
    monkeypatch.setitem(
        project_module.MIGRATIONS,
        project_module.SCHEMA_VERSION - 1,
        (project_module.SCHEMA_VERSION, lambda project, f: None),
    )
    real_copy = project_module.shutil.copyfile

    def full(src, dst, **kw):
        Path(dst).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project_module.shutil, "copyfile", full)
    with pytest.raises(DiskFullError):
        Project.open(path)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.alignet"]  # no half backup
    monkeypatch.setattr(project_module.shutil, "copyfile", real_copy)
    Project.open(path).close()
    backup = path.with_name(f"{path.name}.schema{project_module.SCHEMA_VERSION - 1}.bak")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
