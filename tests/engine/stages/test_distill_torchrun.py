"""``alignet-cli distill`` under ``torchrun``: two gloo processes through the real CLI.

Rank 0 alone writes the project; the run's loss curve matches a one-process run with the
same global batch; an error on one rank (a project locked by another writer, a SIGTERM in the
middle of training) stops every rank instead of leaving one waiting, and the job it leaves
resumes under torchrun.

Each launch starts two Python processes that import torch and timm: ~20 s on this 2-core
machine, so the runs are few and short (EfficientNet-Lite0 at 32 px, batch 2, a few steps).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from alignet_engine.distill.checkpoint import load_checkpoint
from alignet_engine.stages.distill import resumable_runs
from alignet_engine.store import Project
from tests.engine.stages.distill_project import SIZE, make_project, stored

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="no gloo in this torch"
)

REPO = Path(__file__).resolve().parents[3]
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

FLAGS = [
    "--student",
    "efficientnet_lite0",
    "--image-size",
    str(SIZE),
    "--device",
    "cpu",
    "--batch-size",
    "2",  # one triplet per process and micro-batch
    "--lr",
    "1e-3",
    "--warmup-steps",
    "1",
    "--augment",
]
#: curve values compared with the one-process run (float sums in another order only)
CURVES = ("loss", "triplet", "agreement", "grad_norm", "drift", "lr")


@pytest.fixture(autouse=True)
def one_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # the in-process reference runs must not believe they are part of a launch
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun_command(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "alignet_engine.cli",
        "distill",
        *args,
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _torchrun_command(*args),
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _assert_curves_match(
    got: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = 1e-6
) -> None:
    np.testing.assert_array_equal(got["history_step"], expected["history_step"])
    for name in CURVES:
        np.testing.assert_allclose(
            got[f"history_{name}"],
            expected[f"history_{name}"],
            rtol=2e-4,
            atol=atol,
            err_msg=name,
        )


def test_two_processes_write_one_run_that_matches_one_process(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    extra = ["--steps", "4", "--head-dim", "4", "--val-every", "2", "--val-judgments", "human"]
    single = make_project(tmp_path / "single")
    cli("distill", str(single), *FLAGS, *extra)
    with Project.open(single, readonly=True) as project:
        expected = stored(project)

    path = make_project(tmp_path / "ddp")
    with Project.open(path, readonly=True) as project:
        journal_before = len(project.journal())
    proc = torchrun(str(path), *FLAGS, *extra, "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 printed: one JSON object
    (line,) = proc.stdout.strip().splitlines()
    printed = json.loads(line)
    assert printed["processes"] == 2 and printed["steps"] == 4

    with Project.open(path, readonly=True) as project:
        (run,) = project.runs("distill")
        assert printed["run"] == f"distill/{run.run_id}"
        got = stored(project)
        journal = project.journal()[journal_before:]
        assert project.interrupted_jobs() == [] and resumable_runs(project) == []
    # one job: one start, one end (done) — no record from the other rank
    assert [(r["event"], r.get("status")) for r in journal] == [("start", None), ("end", "done")]
    _assert_curves_match(got.arrays, expected.arrays)
    # the validation curves (evaluated on every rank on the whole set) and the weights too
    for name in ("val_step", "val_agreement", "val_loss", "val_human"):
        np.testing.assert_allclose(
            got.arrays[f"history_{name}"], expected.arrays[f"history_{name}"], rtol=2e-4
        )
    # Adam divides by √v: a weight whose gradients are near zero turns rounding-level gradient
    # differences into visible update differences; 1e-4 is 2.5 % of the largest possible
    # change in 4 steps at lr 1e-3, far below what a wrong batch split would give
    for key, value in expected.weights.items():
        torch.testing.assert_close(got.weights[key], value, rtol=1e-4, atol=1e-4)
    # the files: the student of that run, no training checkpoint left, nothing else
    files = sorted(p.name for p in path.with_name(path.name + ".files").iterdir())
    assert files == [got.summary["checkpoint"]]


def test_a_locked_project_stops_every_process(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    # another writer holds the write lock longer than a writer waits for it (30 s)
    with Project.open(path) as holder, holder.transaction():
        journal_before = holder.journal()
        started = time.monotonic()
        proc = torchrun(str(path), *FLAGS, "--steps", "2", timeout=180)
        elapsed = time.monotonic() - started
    assert proc.returncode != 0
    # both ranks end with an error, the waiting one names rank 0's: nobody waits forever
    assert "error:" in proc.stderr and "being written by" in proc.stderr
    assert "[rank 1] error: process 0 of 2 failed while starting the distill job" in proc.stderr
    assert elapsed < 150
    with Project.open(path, readonly=True) as project:
        assert project.journal() == journal_before


def _worker_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the launcher's worker processes (read from /proc)."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != launcher:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = int(entry.name)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find workers")
def test_an_error_on_rank_0_stops_the_job_and_it_resumes_under_torchrun(
    tmp_path: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    steps = ["--steps", "10", "--val-every", "0"]
    single = make_project(tmp_path / "single")
    cli("distill", str(single), *FLAGS, *steps)
    with Project.open(single, readonly=True) as project:
        expected = stored(project)

    path = make_project(tmp_path / "ddp")
    files = path.with_name(path.name + ".files")
    command = _torchrun_command(str(path), *FLAGS, *steps, "--checkpoint-every", "2", "--quiet")
    launcher = subprocess.Popen(
        command, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while not list(files.glob("*.ckpt.safetensors")):
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        workers = _worker_pids(launcher.pid)
        assert sorted(workers) == [0, 1]
        # an exception in rank 0 in the middle of training: the CLI turns SIGTERM into one
        os.kill(workers[0], signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode != 0
    assert "stopped by the launcher (SIGTERM)" in stderr
    for pid in workers.values():  # no worker is left behind, waiting
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()

    with Project.open(path, readonly=True) as project:
        # rank 0 recorded the failure: nothing is left "interrupted", the job is resumable
        assert project.interrupted_jobs() == []
        (failed,) = resumable_runs(project)
        assert failed["status"] == "failed" and "LauncherStoppedError" in failed["message"]
        done = load_checkpoint(failed["checkpoint"]).steps_done
        assert done % 2 == 0 and 2 <= done < 10

    proc = torchrun(str(path), "--resume", "--device", "cpu", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["resumed_from"] == failed["run"]
    with Project.open(path, readonly=True) as project:
        got = stored(project)
        assert project.interrupted_jobs() == [] and resumable_runs(project) == []
    # as the loss nears 0 (0.13 → ~1e-3) the rounding differences of the summation order
    # grow relative to it: an absolute tolerance of 4e-4 of the first loss for the late steps
    _assert_curves_match(got.arrays, expected.arrays, atol=5e-5)
    assert not list(files.glob("*.ckpt.safetensors"))
