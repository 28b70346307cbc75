"""The distill stage and CLI: checkpoints in the project, resume after a cancel, a full disk or
a SIGKILL, validation on human judgments, the triplet head through export, OOM advice.

A real EfficientNet-Lite0 student (packaged ImageNet weights) at 32 px on a pool of 18 small
generated images, a handful of steps: each run takes a few seconds on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alignet_engine.config.distill import DistillConfig, DistillStageConfig
from alignet_engine.distill import checkpoint as checkpoint_module
from alignet_engine.distill import load_student_head, load_student_state
from alignet_engine.distill.checkpoint import CheckpointWriteError, load_checkpoint
from alignet_engine.errors import InputError
from alignet_engine.jobs import Cancelled, Event, JobControl, Message, Progress, run_job
from alignet_engine.models import load_backbone, load_image, make_transform
from alignet_engine.stages.distill import (
    StudentFeatures,
    resumable_runs,
    resume_distill,
    run_distill,
    training_checkpoint_name,
)
from alignet_engine.store import Project
from tests.engine.stages.distill_project import SIZE, Reference, make_project, stored

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.usefixtures("one_thread")


def stage_config(**training: object) -> DistillStageConfig:
    base: dict[str, object] = {
        "steps": 6,
        "batch_size": 2,
        "lr": 1e-3,
        "warmup_steps": 1,
        "log_every_s": 0.0,
        "val_every": 3,
        "checkpoint_every": 3,
        "augment": True,
        "eval_batch_size": 32,
    }
    base.update(training)
    return DistillStageConfig(
        student="efficientnet_lite0",
        image_size=SIZE,
        device="cpu",
        training=DistillConfig(**base),  # type: ignore[arg-type]
        val_judgments="human",
    )


def assert_same_run(got: Reference, expected: Reference) -> None:
    assert got.arrays.keys() == expected.arrays.keys()
    for key, value in expected.arrays.items():
        np.testing.assert_array_equal(got.arrays[key], value, err_msg=key)
    assert got.weights.keys() == expected.weights.keys()
    for key, value in expected.weights.items():
        assert torch.equal(got.weights[key], value), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The uninterrupted stage run of ``stage_config()``."""
    path = make_project(tmp_path_factory.mktemp("reference"))
    with Project.open(path) as project:
        run_job(run_distill(project, stage_config()))
        ref = stored(project)
        # the training checkpoint was removed once the run was written
        assert not list(project.side_path("x").parent.glob("*.ckpt.safetensors"))
    return ref


# ------------------------------------------------------------------------------------------
# the uninterrupted run


def _base_accuracy(project: Project) -> float:
    """Odd-one-out accuracy of the pretrained student on the 'human' judgments, recomputed."""
    backbone = load_backbone("efficientnet_lite0")
    transform = make_transform(backbone.preprocess, SIZE)
    judgments, image_set = project.judgments("human")
    images = torch.stack([transform(load_image(p)) for p in project.imageset(image_set).paths])
    with torch.no_grad():
        z = backbone.features(images).double().numpy()
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    t = z[judgments.triplets]
    s01, s02, s12 = ((t[:, a] * t[:, b]).sum(-1) for a, b in ((0, 1), (0, 2), (1, 2)))
    return float(np.mean((s01 > s02) & (s01 > s12)))


def test_run_stores_every_curve_and_the_human_accuracy(
    reference: Reference, tmp_path: Path
) -> None:
    a = reference.arrays
    np.testing.assert_array_equal(a["history_step"], np.arange(1, 7))
    for name in ("loss", "triplet", "agreement", "lr", "grad_norm", "drift"):
        assert a[f"history_{name}"].shape == (6,) and np.isfinite(a[f"history_{name}"]).all()
    np.testing.assert_array_equal(a["history_val_step"], [0, 3, 6])
    for name in ("val_agreement", "val_loss", "val_human"):
        assert a[f"history_{name}"].shape == (3,)
    # the curve starts at the pretrained student's accuracy, computed here independently
    with Project.open(make_project(tmp_path)) as project:
        base = _base_accuracy(project)
    assert a["history_val_human"][0] == pytest.approx(base, abs=1e-12)
    assert reference.summary["val_human_before"] == a["history_val_human"][0]
    assert reference.summary["effective_batch_size"] == 2
    assert reference.summary["images_per_s"] > 0


# ------------------------------------------------------------------------------------------
# resume after a cancel and after a full disk


def test_cancelled_job_resumes_as_if_uninterrupted(reference: Reference, tmp_path: Path) -> None:
    with Project.open(make_project(tmp_path)) as project:
        control = JobControl()
        job = run_distill(project, stage_config(), control)
        for event in job:
            if isinstance(event, Progress) and event.done == 4 and not event.message:
                control.cancel()
                break
        with pytest.raises(Cancelled):
            next(job)
        (interrupted,) = resumable_runs(project)
        assert interrupted["status"] == "cancelled" and interrupted["steps_done"] == 4
        old_id = interrupted["run"].split("/")[1]
        assert interrupted["checkpoint"].name == training_checkpoint_name(old_id)
        assert project.current("distill") is None  # no run was written

        events: list[Event] = []
        new_id = run_job(resume_distill(project), events.append)
        assert new_id != old_id
        resumed = stored(project)
        assert resumed.summary["resumed_from"] == f"distill/{old_id}"
        assert_same_run(resumed, reference)
        assert any(isinstance(e, Message) and "resuming" in e.text for e in events)
        # the journal: the old job is closed as resumed, nothing is left interrupted
        ends = {r["run"]: r for r in project.journal() if r["event"] == "end"}
        assert ends[old_id]["status"] == "resumed" and new_id in ends[old_id]["message"]
        assert project.interrupted_jobs() == [] and resumable_runs(project) == []
        assert not interrupted["checkpoint"].exists()
        assert not project.side_path(training_checkpoint_name(new_id)).exists()


def test_full_disk_is_a_message_and_the_job_resumes(
    reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = checkpoint_module._save_file
    calls = 0

    def full_on_second_write(tensors, filename, metadata):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            real(tensors, filename, metadata=metadata)
            return
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(checkpoint_module, "_save_file", full_on_second_write)
    with Project.open(make_project(tmp_path)) as project:
        events: list[Event] = []
        # checkpoints at steps 2 (written) and 4 (the disk is full)
        config = stage_config(checkpoint_every=2)
        with pytest.raises(CheckpointWriteError):
            run_job(run_distill(project, config), events.append)
        errors = [e for e in events if isinstance(e, Message) and e.level == "ERROR"]
        assert len(errors) == 1
        assert "disk is full" in errors[0].text and "last good checkpoint (step 2)" in (
            errors[0].text
        )
        assert "--resume" in errors[0].text
        (failed,) = resumable_runs(project)
        assert failed["status"] == "failed" and "disk is full" in failed["message"]
        assert load_checkpoint(failed["checkpoint"]).steps_done == 2

        monkeypatch.setattr(checkpoint_module, "_save_file", real)
        run_job(resume_distill(project))
        # checkpoint_every does not change the trajectory: the same run as the reference
        assert_same_run(stored(project), reference)


def test_resume_refuses_changed_triplets_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    with Project.open(make_project(tmp_path)) as project:
        control = JobControl()
        job = run_distill(project, stage_config(), control)
        for event in job:
            if isinstance(event, Progress) and event.done == 3 and not event.message:
                control.cancel()
                break
        with pytest.raises(Cancelled):
            next(job)
        (before,) = resumable_runs(project)
        # new triplets in the slot: the checkpoint was trained on others
        old = project.run("triplets")
        run_id = project.begin_job("triplets", {})
        project.write_run(
            "triplets",
            run_id,
            slot="triplets",
            params=old.params,
            arrays={**old.arrays, "sims": old.arrays["sims"] * 2},
            summary=old.summary,
        )
        with pytest.raises(ValueError, match="triplets"):
            run_job(resume_distill(project))
        # nothing lost: the interrupted job is still resumable from its checkpoint
        (after,) = resumable_runs(project)
        assert after["run"] == before["run"] and after["checkpoint"].is_file()
        # another input size would change every feature: refused before anything starts
        other = dataclasses.replace(stage_config(), image_size=48)
        with pytest.raises(InputError, match="image_size 32") as info:
            run_job(run_distill(project, other, resume_from=before["run"]))
        assert info.value.field == "image_size"
        assert resumable_runs(project)[0]["run"] == before["run"]


# ------------------------------------------------------------------------------------------
# triplet head through the export


def test_head_is_saved_and_exported_as_the_embedding(tmp_path: Path) -> None:
    from alignet_engine.export_model import load_aligned_model
    from alignet_engine.stages.export import export_student

    config = DistillStageConfig(
        student="efficientnet_lite0",
        image_size=SIZE,
        device="cpu",
        training=DistillConfig(steps=2, batch_size=2, warmup_steps=0, head_dim=8, val_every=0),
    )
    with Project.open(make_project(tmp_path)) as project:
        run_job(run_distill(project, config))
        run = project.run("distill", arrays=False)
        assert run.summary["head_dim"] == 8
        student_file = project.side_path(run.summary["checkpoint"])
        head_state = load_student_head(student_file)
        assert head_state is not None and head_state["weight"].shape == (8, 1280)
        (tmp_path / "export").mkdir()
        files = export_student(project, tmp_path / "export")
    exported = json.loads(Path(files["config"]).read_text())
    assert exported["head_dim"] == 8 and exported["embedding"] == "triplet_head"

    model = load_aligned_model(tmp_path / "export")
    assert model.feature_dim == 8 and model.head is not None
    # independently: the backbone from the file's own tensors, then the head by hand
    backbone = load_backbone("efficientnet_lite0", pretrained=False)
    backbone.model.load_state_dict(load_student_state(student_file))
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = backbone.features(x) @ head_state["weight"].T + head_state["bias"]
        got = model(x)
    assert got.shape == (3, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# the CLI: flags, a real SIGKILL, out-of-memory advice

CLI_FLAGS = [
    "--student",
    "efficientnet_lite0",
    "--image-size",
    str(SIZE),
    "--device",
    "cpu",
    "--batch-size",
    "2",
    "--lr",
    "1e-3",
    "--warmup-steps",
    "1",
    "--val-every",
    "0",
    "--augment",
]


def test_sigkill_then_resume_completes_the_same_run(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    steps = "30"
    reference_project = make_project(tmp_path / "a")
    cli("distill", str(reference_project), *CLI_FLAGS, "--steps", steps)
    with Project.open(reference_project, readonly=True) as project:
        expected = stored(project)

    project_path = make_project(tmp_path / "b")
    files = project_path.with_name(project_path.name + ".files")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "alignet_engine.cli", "distill", str(project_path)]
    command += [*CLI_FLAGS, "--steps", steps, "--checkpoint-every", "4", "--quiet"]
    proc = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list(files.glob("*.ckpt.safetensors")):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    info = cli("info", str(project_path))
    (killed,) = [r for r in info["interrupted"] if r["stage"] == "distill"]
    with Project.open(project_path, readonly=True) as project:
        (resumable,) = resumable_runs(project)
    assert resumable["status"] is None and resumable["steps_done"] % 4 == 0
    assert resumable["steps_done"] < 30

    result = cli("distill", str(project_path), "--resume")
    assert result["resumed_from"] == f"distill/{killed['run']}" and result["steps"] == 30
    with Project.open(project_path, readonly=True) as project:
        assert_same_run(stored(project), expected)
        assert project.interrupted_jobs() == []
    assert not list(files.glob("*.ckpt.safetensors"))


def test_cli_resume_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alignet_engine.cli import main

    project = make_project(tmp_path)
    assert main(["distill", str(project), "--resume"]) == 2
    assert "no interrupted distill job" in capsys.readouterr().err
    assert main(["distill", str(project), "--resume", "--steps", "10", "--amp"]) == 2
    err = capsys.readouterr().err
    assert "--amp" in err and "--steps" in err and "--resume" in err


def test_cli_reports_out_of_memory_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from alignet_engine.cli import main

    real = StudentFeatures.forward

    def forward(self: StudentFeatures, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real(self, x)

    monkeypatch.setattr(StudentFeatures, "forward", forward)
    project = make_project(tmp_path)
    code = main(["distill", str(project), *CLI_FLAGS, "--steps", "3", "--batch-size", "4"])
    err = capsys.readouterr().err
    assert code == 2
    assert "ran out of memory during training step 1" in err
    assert "batch_size (now 4; e.g. 2 — accumulation_steps=2 keeps the effective batch" in err
    assert "image_size (images are 32×32 px)" in err
    assert "Traceback" not in err
    with Project.open(project, readonly=True) as p:
        (record,) = [r for r in p.journal() if r["event"] == "end" and r["stage"] == "distill"]
        assert record["status"] == "failed" and "DistillOutOfMemoryError" in record["message"]


def test_cli_flags_reach_the_config(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    project = make_project(tmp_path)
    cli(
        "distill",
        str(project),
        *CLI_FLAGS,
        "--steps",
        "2",
        "--head-dim",
        "4",
        "--preserve-weight",
        "0.5",
        "--accumulation-steps",
        "2",
        "--amp",
        "--checkpoint-every",
        "7",
        "--val-judgments",
        "human",
        "--val-set",
        "pool",
        "--loss",
        "jsd",
    )
    with Project.open(project, readonly=True) as p:
        run = p.run("distill")
    config = DistillStageConfig.from_dict(run.params)
    t = config.training
    assert (t.head_dim, t.preserve_weight, t.accumulation_steps, t.amp) == (4, 0.5, 2, True)
    assert (t.checkpoint_every, t.loss, t.augment, t.steps) == (7, "jsd", True, 2)
    assert config.val_judgments == "human" and config.val_set == "pool"
    assert run.arrays["history_preserve"].shape == (2,)
    assert run.arrays["history_val_human"].shape == (2,)
