"""Benchmark: seconds per distillation training step, ``distill()`` against a bare loop.

Workload: EfficientNet-Lite0 (packaged ImageNet weights) as the student, a pool of 64
pre-decoded random images at ``--size`` px (default 112), 2,048 random triplets with random
teacher similarities, ``--batch`` triplets per step (default 8, i.e. 24 images).

Variants, in the same process, alternating (``--reps`` rounds of each) so that both see the
same machine load:

* ``ours`` — :func:`alignet_engine.distill.distill` with its defaults (KL loss, cosine
  similarity, gradient clipping at 1.0, decay-to-init λ = 1, channels-last, BatchNorm frozen,
  events throttled to 0.2 s), no validation and no checkpoints.
* ``bare`` — what one would write by hand: the same model, layout and batches (the same
  sampler rows, the same image tensor), ``kl_triplet_loss`` on cosine similarities and a plain
  ``torch.optim.AdamW`` step (weight decay 0), no events, no validation, no checkpoints, no
  clipping, no pull toward θ₀, no per-step metrics.

Each round times ``--steps`` steps after ``--warmup`` untimed ones (for ``ours`` the warm-up is
a separate short job); a round's per-step time is its total divided by ``--steps``. The
printed ratios are median(ours) / median(bare) and min(ours) / min(bare) (the least
disturbed rounds); the target is ≤ 1.05.

Run: ``.venv/bin/python benchmarks/bench_train_step.py`` (``--device cuda`` on a GPU machine;
``--threads N`` to pin the CPU thread count). The machines are shared and noisy: compare the
ratio, not absolute times.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignet_engine.config.distill import DistillConfig  # noqa: E402
from alignet_engine.distill import distill, kl_triplet_loss, stacked_pair_similarities  # noqa: E402
from alignet_engine.distill.batching import TripletSampler  # noqa: E402
from alignet_engine.jobs import run_job  # noqa: E402
from alignet_engine.models import load_backbone  # noqa: E402


class Student(nn.Module):
    """Images (b, 3, H, W) → pooled pre-logits features (b, 1280)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        return model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _job_seconds(
    base: nn.Module,
    images: torch.Tensor,
    triplets: np.ndarray,
    sims: np.ndarray,
    config: DistillConfig,
    device: torch.device,
) -> float:
    student = copy.deepcopy(base)
    sync(device)
    start = time.perf_counter()
    run_job(distill(student, images, triplets, sims, config, device=device))
    sync(device)
    return time.perf_counter() - start


def time_ours(
    base: nn.Module,
    images: torch.Tensor,
    triplets: np.ndarray,
    sims: np.ndarray,
    config: DistillConfig,
    device: torch.device,
    warmup: int,
) -> tuple[float, float]:
    """Seconds per step of ``distill``: (steady state, including the job's setup).

    The bare loop is timed after ``warmup`` untimed steps on a model that already exists. The
    like-for-like number for ``distill`` is therefore the *marginal* cost of a step: a job of
    ``warmup + steps`` steps minus a job of ``warmup`` steps, over ``steps``. That removes what
    a job pays once (copying θ₀, building the optimiser, the first steps' allocations) and is
    not a training step. The second number divides the whole job by its steps, for reference.
    """
    short = DistillConfig.from_dict({**config.to_dict(), "steps": warmup})
    long = DistillConfig.from_dict({**config.to_dict(), "steps": warmup + config.steps})
    _job_seconds(base, images, triplets, sims, short, device)  # warm the allocator and caches
    t_short = _job_seconds(base, images, triplets, sims, short, device)
    t_long = _job_seconds(base, images, triplets, sims, long, device)
    return (t_long - t_short) / config.steps, t_long / (warmup + config.steps)


def time_bare(
    base: nn.Module,
    images: torch.Tensor,
    triplets: np.ndarray,
    sims: np.ndarray,
    config: DistillConfig,
    device: torch.device,
    warmup: int,
) -> float:
    """Seconds per step of the hand-written loop over ``config.steps`` steps."""
    student = copy.deepcopy(base).to(device)
    if config.channels_last:
        student.to(memory_format=torch.channels_last)
    student.train()
    for module in student.modules():  # BatchNorm frozen, as distill's default
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    teacher = torch.tensor(sims, device=device)
    # the rows distill draws: its sampler, seeded the same way
    sampler = TripletSampler(len(triplets), config.batch_size, np.random.default_rng(config.seed))

    def step() -> None:
        rows = next(sampler)
        x = images.index_select(0, torch.from_numpy(triplets[rows].reshape(-1))).to(device)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        s = stacked_pair_similarities(student(x).reshape(len(rows), 3, -1), "cosine")
        loss = kl_triplet_loss(
            teacher[torch.from_numpy(rows).to(device)],
            s,
            teacher_temperature=config.teacher_temperature,
            student_temperature=config.student_temperature,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(config.steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / config.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=112, help="image size, px")
    parser.add_argument("--batch", type=int, default=8, help="triplets per step")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per round")
    parser.add_argument("--reps", type=int, default=3, help="rounds of each variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    n, m = 64, 2048
    images = torch.from_numpy(rng.standard_normal((n, 3, args.size, args.size)).astype(np.float32))
    if device.type == "cuda":
        images = images.to(device)
    triplets = np.stack([rng.choice(n, 3, replace=False) for _ in range(m)]).astype(np.int64)
    sims = rng.normal(0, 1, (m, 3)).astype(np.float32)
    base = Student(load_backbone("efficientnet_lite0").model).to(device)
    config = DistillConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=1e-4,
        warmup_steps=0,
        val_every=0,
        checkpoint_every=0,
    )

    ours: list[float] = []
    ours_whole: list[float] = []
    bare: list[float] = []
    for _ in range(args.reps):
        steady, whole = time_ours(base, images, triplets, sims, config, device, args.warmup)
        ours.append(steady)
        ours_whole.append(whole)
        bare.append(time_bare(base, images, triplets, sims, config, device, args.warmup))
    o, b = statistics.median(ours), statistics.median(bare)
    per_step = 3 * args.batch
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads), efficientnet_lite0 at "
        f"{args.size} px, batch {args.batch} triplets ({per_step} images), {args.steps} timed "
        f"steps × {args.reps} rounds"
    )
    for name, times, med in (("ours", ours, o), ("bare", bare, b)):
        rounds = ", ".join(f"{t * 1000:.0f}" for t in times)
        print(
            f"  {name}: {med * 1000:7.1f} ms/step (rounds: {rounds} ms) → {1 / med:6.2f} "
            f"steps/s, {per_step / med:7.1f} images/s"
        )
    print(
        f"  ours including the job's setup: {statistics.median(ours_whole) * 1000:7.1f} ms/step "
        f"(ratio {statistics.median(ours_whole) / b:.3f})"
    )
    # the minimum is the round least disturbed by other processes on a shared machine
    print(
        f"ratio ours / bare: {o / b:.3f} of medians, {min(ours) / min(bare):.3f} of minima "
        "(target ≤ 1.05)"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "device": str(device),
                    "ours_s_per_step": o,
                    "bare_s_per_step": b,
                    "ratio": o / b,
                    "ratio_of_minima": min(ours) / min(bare),
                    "ours_s_per_step_with_setup": statistics.median(ours_whole),
                    "ours_rounds": ours,
                    "bare_rounds": bare,
                }
            )
        )


if __name__ == "__main__":
    main()
