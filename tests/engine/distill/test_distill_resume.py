"""Distillation checkpoints: exact resume after a crash or a cancel, extension, refusals, faults.

One uninterrupted 30-step run (checkpoint every 10 steps) is the reference; interrupted runs
resumed from their checkpoints must reproduce its curves and weights **bitwise** on CPU. The
toy net has dropout and the runs augment, so the torch and flip RNG states are exercised too,
and a validation set, so the validation curve must resume as well.
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import DistillResult, distill
from alignet_engine.distill import checkpoint as checkpoint_module
from alignet_engine.distill.checkpoint import CheckpointWriteError, load_checkpoint
from alignet_engine.errors import AlignetError, InputError
from alignet_engine.jobs import Cancelled, Event, JobControl, LossBatch, Progress, run_job

STEPS = 30
EVERY = 10


class Student(nn.Module):
    """A tiny conv net with BatchNorm and dropout that can "crash" at a given training call."""

    def __init__(self, seed: int = 0, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
        )
        self.fail_at: int | None = None  # 1-based training forward that raises
        self.train_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.train_calls += 1
            if self.train_calls == self.fail_at:
                raise RuntimeError("simulated crash")
        return self.net(x)


@dataclass(frozen=True)
class Toy:
    images: torch.Tensor
    triplets: np.ndarray
    sims: np.ndarray
    val: tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def toy() -> Toy:
    rng = np.random.default_rng(0)
    n, m, size = 40, 160, 16
    images = rng.standard_normal((n, 3, size, size)).astype(np.float32)
    proj = rng.standard_normal((3 * size * size, 8)).astype(np.float32) / math.sqrt(3 * size**2)
    z = images.reshape(n, -1) @ proj
    triplets = np.stack([rng.choice(n, 3, replace=False) for _ in range(m)]).astype(np.int64)
    t = z[triplets]
    sims = np.stack(
        [(t[:, 0] * t[:, 1]).sum(-1), (t[:, 0] * t[:, 2]).sum(-1), (t[:, 1] * t[:, 2]).sum(-1)], 1
    ).astype(np.float32)
    return Toy(torch.from_numpy(images), triplets[:128], sims[:128], (triplets[128:], sims[128:]))


def config(**overrides: object) -> DistillConfig:
    base: dict[str, object] = {
        "steps": STEPS,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_steps": 3,
        "log_every_s": 0.0,
        "val_every": 5,
        "augment": True,
        "checkpoint_every": EVERY,
    }
    base.update(overrides)
    return DistillConfig(**base)  # type: ignore[arg-type]


def run(toy: Toy, net: nn.Module, cfg: DistillConfig, **kwargs: object) -> DistillResult:
    return run_job(distill(net, toy.images, toy.triplets, toy.sims, cfg, val=toy.val, **kwargs))  # type: ignore[arg-type]


def assert_same_run(got: DistillResult, expected: DistillResult) -> None:
    assert got.history.keys() == expected.history.keys()
    for key, curve in expected.history.items():
        np.testing.assert_array_equal(got.history[key], curve, err_msg=key)
    assert got.state_dict.keys() == expected.state_dict.keys()
    for key, value in expected.state_dict.items():
        assert torch.equal(got.state_dict[key], value), key


@pytest.fixture(scope="module")
def reference(toy: Toy, tmp_path_factory: pytest.TempPathFactory) -> tuple[DistillResult, Path]:
    """The uninterrupted run, and its final checkpoint (step 30)."""
    path = tmp_path_factory.mktemp("reference") / "run.ckpt.safetensors"
    result = run(toy, Student(), config(), checkpoint_path=path)
    return result, path


# ------------------------------------------------------------------------------------------
# exact resume


def test_checkpoint_holds_the_whole_state(reference: tuple[DistillResult, Path]) -> None:
    result, path = reference
    ckpt = load_checkpoint(path)
    assert ckpt.steps_done == STEPS
    assert ckpt.config == config().to_dict()
    assert ckpt.model.keys() == result.state_dict.keys()
    for key, value in result.state_dict.items():
        assert torch.equal(ckpt.model[key], value)
    trainable = {n for n, p in Student().named_parameters() if p.requires_grad}
    assert set(ckpt.init) == set(ckpt.optimizer) == trainable
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(next(iter(ckpt.optimizer.values())))
    assert float(next(iter(ckpt.optimizer.values()))["step"]) == STEPS
    for key, curve in result.history.items():
        np.testing.assert_array_equal(ckpt.history[key], curve)
    assert ckpt.sampler_state["bit_generator"] == "PCG64"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_resume_after_crash_is_bitwise(
    toy: Toy, reference: tuple[DistillResult, Path], tmp_path: Path
) -> None:
    expected, _ = reference
    path = tmp_path / "run.ckpt.safetensors"
    crashing = Student()
    crashing.fail_at = 18  # dies inside step 18: the file still holds step 10
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(toy, crashing, config(), checkpoint_path=path)
    assert load_checkpoint(path).steps_done == EVERY

    events: list[Event] = []
    # a differently initialised module: resume must take every weight from the checkpoint
    job = distill(
        Student(seed=7),
        toy.images,
        toy.triplets,
        toy.sims,
        config(),
        val=toy.val,
        checkpoint_path=path,
        resume_from=path,
    )
    resumed = run_job(job, events.append)
    assert_same_run(resumed, expected)
    # the restored points come first, then steps 11..30, each step in exactly one batch
    train = [e for e in events if isinstance(e, LossBatch) and "loss" in e.values]
    np.testing.assert_array_equal(train[0].steps, np.arange(1, EVERY + 1))
    np.testing.assert_array_equal(np.concatenate([e.steps for e in train]), np.arange(1, 31))
    progress = [e.done for e in events if isinstance(e, Progress)]
    assert progress[0] == EVERY and progress[-1] == STEPS
    assert load_checkpoint(path).steps_done == STEPS


def cancel_after(toy: Toy, path: Path, step: int) -> None:
    """Run a checkpointed job and cancel it once ``step`` has been reported."""
    control = JobControl()
    job = distill(
        Student(),
        toy.images,
        toy.triplets,
        toy.sims,
        config(),
        val=toy.val,
        control=control,
        checkpoint_path=path,
    )
    for event in job:
        if isinstance(event, Progress) and event.done == step:
            control.cancel()
            break
    with pytest.raises(Cancelled):
        next(job)


def test_cancel_leaves_a_resumable_checkpoint(
    toy: Toy, reference: tuple[DistillResult, Path], tmp_path: Path
) -> None:
    expected, _ = reference
    path = tmp_path / "run.ckpt.safetensors"
    cancel_after(toy, path, 17)
    # the cancel saved the completed step 17 over the periodic step-10 checkpoint
    assert load_checkpoint(path).steps_done == 17
    resumed = run(toy, Student(), config(), checkpoint_path=path, resume_from=path)
    assert_same_run(resumed, expected)


def test_cancel_during_a_validation_resumes_with_that_validation(
    toy: Toy, reference: tuple[DistillResult, Path], tmp_path: Path
) -> None:
    expected, _ = reference
    path = tmp_path / "run.ckpt.safetensors"
    # step 15 is done and reported; its validation (val_every=5) comes next
    cancel_after(toy, path, 15)
    ckpt = load_checkpoint(path)
    assert ckpt.steps_done == 15 and ckpt.history["val_step"][-1] == 10
    resumed = run(toy, Student(), config(), checkpoint_path=path, resume_from=path)
    assert_same_run(resumed, expected)


def test_extending_steps_follows_the_new_schedule(
    toy: Toy, reference: tuple[DistillResult, Path]
) -> None:
    expected, path = reference
    longer = config(steps=40)
    # no checkpoint_path: resuming must not touch the reference checkpoint
    extended = run(toy, Student(), longer, resume_from=path)
    h = extended.history
    np.testing.assert_array_equal(h["step"], np.arange(1, 41))
    for key in ("loss", "lr", "drift"):
        np.testing.assert_array_equal(h[key][:STEPS], expected.history[key])
    # from step 31 the cosine decays to 0 at the new end: not the 40-step run's curve
    np.testing.assert_array_equal(h["lr"][STEPS:], [longer.lr_at(s) for s in range(STEPS, 40)])
    assert h["lr"][STEPS - 1] != longer.lr_at(STEPS - 1)
    assert extended.steps_done == 40
    assert h["val_step"][-1] == 40

    # resuming a finished run with the same steps makes no step and changes nothing
    again = run(toy, Student(), config(), resume_from=path)
    assert_same_run(again, expected)


# ------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"lr": 1e-3, "seed": 3}, "lr, seed"),
        ({"loss": "jsd"}, "loss"),
        ({"batch_size": 4}, "batch_size"),
        ({"steps": 20, "warmup_steps": 3}, "steps"),
    ],
)
def test_config_mismatch_names_the_fields(
    toy: Toy, reference: tuple[DistillResult, Path], overrides: dict[str, object], fields: str
) -> None:
    _, path = reference
    with pytest.raises(InputError) as info:
        distill(
            Student(), toy.images, toy.triplets, toy.sims, config(**overrides), resume_from=path
        )
    assert info.value.field == fields
    for name in fields.split(", "):
        assert name in str(info.value)
    assert str(path) in str(info.value)


def test_settings_that_do_not_change_training_may_differ(
    toy: Toy, reference: tuple[DistillResult, Path]
) -> None:
    _, path = reference
    free = config(val_every=0, log_every_s=1.0, eval_batch_size=7, checkpoint_every=0)
    distill(Student(), toy.images, toy.triplets, toy.sims, free, resume_from=path)


def test_other_data_or_model_is_refused(
    toy: Toy, reference: tuple[DistillResult, Path], tmp_path: Path
) -> None:
    _, path = reference
    with pytest.raises(InputError, match="triplets") as info:
        distill(Student(), toy.images, toy.triplets[1:], toy.sims[1:], config(), resume_from=path)
    assert info.value.field == "triplets"
    with pytest.raises(InputError, match="architecture") as info:
        distill(Student(width=8), toy.images, toy.triplets, toy.sims, config(), resume_from=path)
    assert info.value.field == "feature_fn"
    with pytest.raises(InputError, match="does not exist"):
        distill(Student(), toy.images, toy.triplets, toy.sims, config(), resume_from="nope.st")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk"):
        load_checkpoint(junk)
    with pytest.raises(InputError, match="checkpoint_every") as info:
        config(checkpoint_every=-1)
    assert info.value.field == "checkpoint_every"


# ------------------------------------------------------------------------------------------
# faults


def test_full_disk_keeps_the_last_good_checkpoint(
    toy: Toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save

    real = checkpoint_module._save_file
    calls = 0

    def fill_the_disk(
        tensors: dict[str, torch.Tensor], filename: Path, metadata: dict[str, str]
    ) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            real(tensors, filename, metadata=metadata)
            return
        data = save(tensors, metadata=metadata)
        with open(filename, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(checkpoint_module, "_save_file", fill_the_disk)
    path = tmp_path / "run.ckpt.safetensors"
    with pytest.raises(CheckpointWriteError) as info:
        run(toy, Student(), config(), checkpoint_path=path)
    error = info.value
    assert isinstance(error, AlignetError)
    assert error.errno == errno.ENOSPC and error.path == str(path)
    message = str(error)
    assert "disk is full" in message and str(path) in message
    assert "step 20" in message and "last good checkpoint (step 10)" in message
    # the temp file is gone and the step-10 checkpoint is intact and resumable
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_checkpoint(path).steps_done == EVERY
    monkeypatch.setattr(checkpoint_module, "_save_file", real)
    resumed = run(toy, Student(), config(), resume_from=path)
    assert resumed.steps_done == STEPS
