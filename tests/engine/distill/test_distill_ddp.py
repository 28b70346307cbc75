"""Distillation in two processes (``torch.distributed``, gloo, CPU) equals one process.

Each of two spawned ranks runs :func:`distill` with the same arguments and takes half of
every micro-batch; DistributedDataParallel averages the gradients. The losses, agreement and
weights must match a single-process run with the same global batch up to float rounding, and
only rank 0 may write the checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import distill
from alignet_engine.distill.checkpoint import load_checkpoint
from alignet_engine.errors import InputError
from alignet_engine.jobs import run_job
from tests.engine.distill.toys import tiny_net, toy_problem

WORLD = 2


def _config() -> DistillConfig:
    return DistillConfig(
        steps=6,
        batch_size=4,
        accumulation_steps=2,
        lr=3e-3,
        warmup_steps=1,
        log_every_s=0.0,
        val_every=0,
        augment=True,
        head_dim=6,
        checkpoint_every=3,
    )


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD
    )
    try:
        images, triplets, sims = toy_problem()
        path = Path(folder) / f"rank{rank}.ckpt"
        result = run_job(
            distill(tiny_net(), images, triplets, sims, _config(), checkpoint_path=path)
        )
        assert result.head_state is not None
        try:
            odd = DistillConfig(steps=2, batch_size=3, warmup_steps=0)
            distill(tiny_net(), images, triplets, sims, odd)
            refused = None
        except InputError as exc:
            refused = exc.field
        torch.save(
            {
                "history": result.history,
                "state": result.state_dict,
                "head": result.head_state,
                "refused": refused,
            },
            Path(folder) / f"result{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_match_one(tmp_path: Path) -> None:
    images, triplets, sims = toy_problem()
    torch.set_num_threads(1)
    single = run_job(distill(tiny_net(), images, triplets, sims, _config()))

    os.environ.pop("MASTER_ADDR", None)
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"result{r}.pt", weights_only=False) for r in range(WORLD)]
    for got in results:
        for key in ("loss", "triplet", "agreement", "grad_norm", "drift"):
            np.testing.assert_allclose(
                got["history"][key], single.history[key], rtol=2e-4, atol=1e-6, err_msg=key
            )
        np.testing.assert_array_equal(got["history"]["agreement"], single.history["agreement"])
        for key, value in single.state_dict.items():
            torch.testing.assert_close(got["state"][key], value, rtol=1e-4, atol=1e-5)
        assert single.head_state is not None
        for key, value in single.head_state.items():
            torch.testing.assert_close(got["head"][key], value, rtol=1e-4, atol=1e-5)
    # the ranks stay in lockstep: the same weights on both
    for key, value in results[0]["state"].items():
        assert torch.equal(results[1]["state"][key], value), key
    # one writer: rank 0's checkpoint exists, rank 1's does not
    assert load_checkpoint(tmp_path / "rank0.ckpt").steps_done == 6
    assert not (tmp_path / "rank1.ckpt").exists()
    # a batch that does not split evenly over the ranks is refused, naming the field
    assert all(got["refused"] == "batch_size" for got in results)
