"""Long distillation runs: which checkpoints the keep policy leaves, resuming from them, the ETA.

A 12-step toy run checkpoints every 2 steps and validates every 2 steps; with
``keep_last=3, keep_best=True`` the newest three checkpoints and the best validation's must
remain, and a run resumed from any of them must reproduce the uninterrupted run bitwise.
The ETA is checked against a simulated run on a fake clock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import DistillResult, distill
from alignet_engine.distill.checkpoint import kept_path, kept_steps, load_checkpoint
from alignet_engine.jobs import run_job
from alignet_engine.views.summaries import RateMeter

N, M, SIZE = 32, 96, 12


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
    )


@pytest.fixture(scope="module")
def toy() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.standard_normal((N, 3, SIZE, SIZE)).astype(np.float32))
    triplets = np.stack([rng.choice(N, 3, replace=False) for _ in range(M)]).astype(np.int64)
    return images, triplets, rng.standard_normal((M, 3)).astype(np.float32)


def config(**overrides: object) -> DistillConfig:
    base: dict[str, object] = {
        "steps": 12,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 1,
        "log_every_s": 0.0,
        "val_every": 2,
        "augment": True,
        "checkpoint_every": 2,
    }
    base.update(overrides)
    return DistillConfig(**base)  # type: ignore[arg-type]


def run(toy: tuple, cfg: DistillConfig, **kwargs: object) -> DistillResult:
    images, triplets, sims = toy
    val = (triplets[64:], sims[64:])
    return run_job(distill(net(), images, triplets[:64], sims[:64], cfg, val=val, **kwargs))  # type: ignore[arg-type]


def assert_same(got: DistillResult, expected: DistillResult) -> None:
    for key, curve in expected.history.items():
        np.testing.assert_array_equal(got.history[key], curve, err_msg=key)
    for key, value in expected.state_dict.items():
        assert torch.equal(got.state_dict[key], value), key


def test_keep_policy_leaves_the_newest_and_the_best_and_each_resumes(
    toy: tuple, tmp_path: Path
) -> None:
    reference = run(toy, config())
    path = tmp_path / "run.ckpt.safetensors"
    kept = run(toy, config(keep_last=3, keep_best=True), checkpoint_path=path)
    assert_same(kept, reference)  # the policy does not touch the training

    # saves at steps 2, 4, 6, 8, 10 and at the end (12): the three newest remain
    copies = kept_steps(path)
    assert sorted(copies) == [8, 10, 12]
    for step, copy in copies.items():
        assert load_checkpoint(copy).steps_done == step
    assert load_checkpoint(path).steps_done == 12
    # the best validation of steps ≥ 1 (the first to reach the highest agreement)
    val_step, agreement = reference.history["val_step"], reference.history["val_agreement"]
    trained = val_step >= 1
    best_step = int(val_step[trained][np.argmax(agreement[trained])])
    best = kept_path(path, None)
    assert load_checkpoint(best).steps_done == best_step
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {path.name, best.name, *(c.name for c in copies.values())}

    for source in (copies[8], best):
        resumed = run(toy, config(), resume_from=source)
        assert_same(resumed, reference)


def test_keep_last_one_keeps_only_the_checkpoint(toy: tuple, tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt.safetensors"
    run(toy, config(steps=6), checkpoint_path=path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_eta_leaves_out_start_up_pauses_and_validation_spikes() -> None:
    """A simulated run: 30 s start-up, 0.1 s per step, a 5 s validation every 100 steps and a
    100 s pause; the training points arrive in batches every 0.2 s, as the page gets them."""
    now = [0.0]
    total = 1000
    meter = RateMeter(total=total, images_per_step=48, clock=lambda: now[0])
    now[0] += 30.0  # loading the model, the first validation
    step = 0
    etas = {}
    while step < 600:
        for _ in range(2):  # one batch of points = two steps = 0.2 s
            step += 1
            now[0] += 0.1
            if step % 100 == 0:
                now[0] += 5.0  # the validation after step 100, 200, ...
        meter.add(step)
        if step == 350:
            meter.pause()
            now[0] += 100.0
            meter.resume()
        etas[step] = meter.rate().eta_s
    # the truth: 400 steps at 0.1 s and 4 validations (700, 800, 900, 1000) of 5 s
    remaining = (total - 600) * 0.1 + 4 * 5.0
    assert etas[600] == pytest.approx(remaining, rel=0.05)
    # right after a validation spike the estimate does not jump
    assert etas[202] == pytest.approx((total - 202) * 0.15, rel=0.05)
    assert etas[352] == pytest.approx((total - 352) * 0.15, rel=0.05)  # after the pause
