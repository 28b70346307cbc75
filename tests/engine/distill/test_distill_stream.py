"""Streaming distillation: the pool read from a dataset by DataLoader workers, batch by batch.

The reference is the same run with the pool as one pre-decoded tensor: a streamed run, with or
without worker processes, must give bitwise the same curves and weights on the CPU (the same
images in the same order), also when resumed from a checkpoint, and must only ever read the
images of the batches it trains and validates on. Unreadable images stop the job with an error
naming the file, or are skipped and recorded when asked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import DistillResult, StreamedImages, distill
from alignet_engine.distill.checkpoint import load_checkpoint
from alignet_engine.errors import InputError
from alignet_engine.jobs import Event, Message, run_job

N, M, SIZE = 48, 160, 16


class Pool:
    """A map-style pool over a tensor: item i → (image i, reason, i); ``bad`` ids unreadable.

    Records which ids it was asked for (in this process: with workers=0 only).
    """

    def __init__(self, images: torch.Tensor, bad: frozenset[int] = frozenset()) -> None:
        self.images = images
        self.bad = bad
        self.paths = [f"/pool/img{i:03d}.png" for i in range(len(images))]
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        self.read.append(i)
        if i in self.bad:
            return torch.zeros_like(self.images[i]), "truncated file", i
        return self.images[i].clone(), "", i


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
    )


@pytest.fixture(scope="module")
def toy() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.standard_normal((N, 3, SIZE, SIZE)).astype(np.float32))
    triplets = np.stack([rng.choice(N, 3, replace=False) for _ in range(M)]).astype(np.int64)
    sims = rng.standard_normal((M, 3)).astype(np.float32)
    return images, triplets, sims


def config(**overrides: object) -> DistillConfig:
    base: dict[str, object] = {
        "steps": 12,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 2,
        "log_every_s": 0.0,
        "val_every": 4,
        "augment": True,
        "accumulation_steps": 2,
        "preserve_weight": 0.5,
        "checkpoint_every": 5,
        "eval_batch_size": 8,
    }
    base.update(overrides)
    return DistillConfig(**base)  # type: ignore[arg-type]


def run(toy: tuple, images: object, cfg: DistillConfig, **kwargs: object) -> DistillResult:
    _, triplets, sims = toy
    job = distill(
        net(), images, triplets[:128], sims[:128], cfg, val=(triplets[128:], sims[128:]), **kwargs
    )  # type: ignore[arg-type]
    return run_job(job)


def assert_same(got: DistillResult, expected: DistillResult) -> None:
    assert got.history.keys() == expected.history.keys()
    for key, curve in expected.history.items():
        np.testing.assert_array_equal(got.history[key], curve, err_msg=key)
    for key, value in expected.state_dict.items():
        assert torch.equal(got.state_dict[key], value), key


@pytest.fixture(scope="module")
def reference(toy: tuple) -> DistillResult:
    return run(toy, toy[0], config())


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_run_is_bitwise_the_in_memory_run(
    toy: tuple, reference: DistillResult, workers: int
) -> None:
    pool = Pool(toy[0])
    got = run(toy, StreamedImages(pool, num_workers=workers, prefetch_factor=3), config())
    assert_same(got, reference)
    assert got.skipped == {}


def test_only_the_batches_images_are_read(toy: tuple) -> None:
    images, triplets, _ = toy
    big = torch.cat([images, torch.zeros(2000, 3, SIZE, SIZE)])  # ids ≥ N are never used
    pool = Pool(big)
    run(toy, StreamedImages(pool), config(steps=3, val_every=0, preserve_weight=0.0))
    read = set(pool.read)
    assert read <= set(np.unique(triplets).tolist())
    # 3 steps × 8 triplets × 3 images (+ the validation set's images, before and after)
    val_ids = set(np.unique(triplets[128:]).tolist())
    assert len(read - val_ids) <= 3 * 8 * 3
    assert len(pool.read) < len(big) / 10


def test_resumed_streamed_run_is_bitwise(toy: tuple, tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt.safetensors"
    run(toy, toy[0], config(steps=7), checkpoint_path=path)
    assert load_checkpoint(path).steps_done == 7
    # extended to 12 steps: the sampler, flips and Adam state continue from the checkpoint
    streamed = run(toy, StreamedImages(Pool(toy[0]), num_workers=2), config(), resume_from=path)
    in_memory = run(toy, toy[0], config(), resume_from=path)
    assert_same(streamed, in_memory)


def test_an_unreadable_image_names_its_file(toy: tuple) -> None:
    _, triplets, _ = toy
    bad = int(triplets[0, 1])
    with pytest.raises(InputError) as info:
        run(toy, StreamedImages(Pool(toy[0], frozenset({bad}))), config(val_every=0))
    assert info.value.source == f"/pool/img{bad:03d}.png"
    assert "truncated file" in str(info.value) and "skip_corrupt" in str(info.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_corrupt_leaves_out_the_triplets_and_records_the_file(
    toy: tuple, workers: int
) -> None:
    images, triplets, sims = toy
    bad = int(triplets[0, 1])
    pool = Pool(images, frozenset({bad}))
    events: list[Event] = []
    job = distill(
        net(),
        StreamedImages(pool, num_workers=workers, skip_corrupt=True),
        triplets[:128],
        sims[:128],
        config(),
        val=(triplets[128:], sims[128:]),
    )
    result = run_job(job, events.append)
    path = f"/pool/img{bad:03d}.png"
    assert result.skipped == {bad: (path, "truncated file")}
    warnings = [e for e in events if isinstance(e, Message) and e.level == "WARNING"]
    assert len(warnings) == 1 and path in warnings[0].text
    for key, curve in result.history.items():
        assert np.all(np.isfinite(curve)), key


def test_each_rank_reads_only_its_share_of_every_micro_batch(toy: tuple) -> None:
    """Under torchrun rank r of W trains rows [r·b/W, (r+1)·b/W) of each micro-batch of b
    triplets: its plan (what its loader reads) holds exactly those images."""
    from alignet_engine.distill import TrainingRun
    from alignet_engine.distill.batching import TripletSampler, image_source
    from alignet_engine.jobs import JobControl

    images, triplets, sims = toy
    cfg = config(steps=3)  # batch 4 × 2 micro-batches
    plans = []
    for rank in range(2):
        run = TrainingRun(
            net(), image_source(images, torch.device("cpu")), triplets, sims, cfg,
            torch.device("cpu"), JobControl(), None,
        )  # fmt: skip
        run.world, run.rank = 2, rank
        run.batches = TripletSampler(
            len(triplets), cfg.effective_batch_size, np.random.default_rng(0)
        )
        plans.append(list(run._plan()))
    sampler = TripletSampler(len(triplets), cfg.effective_batch_size, np.random.default_rng(0))
    for step in range(3):
        ids = triplets[next(sampler)].reshape(-1)  # (3 · 8,) this step's images
        for part in range(2):
            whole = ids[12 * part : 12 * (part + 1)]  # one micro-batch: 4 triplets
            for rank in range(2):
                got = plans[rank][2 * step + part]
                np.testing.assert_array_equal(got, whole[6 * rank : 6 * (rank + 1)])
