"""A learnable toy distillation problem the trainer's tests share (no test in this module).

Noise images, a "teacher" that is a fixed random projection, and a tiny CNN student: runs of
a few dozen steps take well under a second on one CPU thread.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from alignet_engine.config.distill import DistillConfig


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def pair_sims(z: np.ndarray) -> np.ndarray:
    """(m, 3, d) → (m, 3) [s01, s02, s12] dot products."""
    return np.stack(
        [(z[:, 0] * z[:, 1]).sum(-1), (z[:, 0] * z[:, 2]).sum(-1), (z[:, 1] * z[:, 2]).sum(-1)], 1
    )


def toy_problem(
    n: int = 48, m: int = 256, size: int = 16, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Noise images; teacher = dot products of a fixed random projection, odd one out last."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 3, size, size)).astype(np.float32)
    proj = rng.standard_normal((3 * size * size, 8)).astype(np.float32) / math.sqrt(3 * size**2)
    z = images.reshape(n, -1) @ proj
    triplets = np.stack([rng.choice(n, 3, replace=False) for _ in range(m)])
    # reorder each triplet so the teacher's most similar pair is (0, 1)
    order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[pair_sims(z[triplets]).argmax(1)]
    triplets = np.take_along_axis(triplets, order, 1).astype(np.int64)
    sims = pair_sims(z[triplets]).astype(np.float32)
    assert (sims.argmax(1) == 0).all()
    return torch.from_numpy(images), triplets, sims


Toy = tuple[torch.Tensor, np.ndarray, np.ndarray]


def quick(**overrides: object) -> DistillConfig:
    # short, unthrottled (one event per step) runs without validation unless asked
    base: dict[str, object] = {
        "steps": 20,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_steps": 2,
        "log_every_s": 0.0,
        "val_every": 0,
    }
    base.update(overrides)
    return DistillConfig(**base)  # type: ignore[arg-type]
