"""Triplet rows read from side files per step: same rows, same training, no whole load."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import distill
from alignet_engine.distill.batching import TripletSampler
from alignet_engine.distill.checkpoint import data_digest
from alignet_engine.distill.rows import StoredRows, unique_ids
from alignet_engine.errors import InputError
from alignet_engine.jobs import run_job
from alignet_engine.stages.distill import triplet_split
from alignet_engine.store import Project


def _triplet_run(p: Project, triplets: np.ndarray, sims: np.ndarray, is_val: np.ndarray) -> str:
    rid = p.begin_job("triplets", {})
    arrays = {"triplets": triplets, "sims": sims, "is_val": is_val}
    p.write_run("triplets", rid, slot="triplets", params={}, arrays=arrays)
    return f"triplets/{rid}"


def _data(m: int, n_images: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, n_images, (m, 3)).astype(np.int64),
        rng.normal(size=(m, 3)).astype(np.float32),
    )


def test_stored_rows_read_what_was_stored(tmp_path: Path) -> None:
    # 100k × 3 int64 = 2.4 MB: a side file, chunked by whole rows (~43 690 rows a chunk)
    triplets, sims = _data(100_000)
    is_val = np.zeros(len(triplets), dtype=bool)
    is_val[90_000:] = True
    with Project.create(tmp_path / "p.alignet") as p:
        ref = _triplet_run(p, triplets, sims, is_val)
        (train_t, train_s), val = triplet_split(p, ref)
    assert isinstance(train_t, StoredRows) and isinstance(train_s, StoredRows)
    assert train_t.shape == (90_000, 3) and len(train_s) == 90_000
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 90_000, 512)  # unsorted, repeated: as a step draws them
    np.testing.assert_array_equal(train_t[rows], triplets[rows])
    np.testing.assert_array_equal(train_s[rows], sims[rows])
    # blocks across chunk boundaries, and the validation range (rows 90 000 on)
    np.testing.assert_array_equal(train_t.block(43_000, 88_000), triplets[43_000:88_000])
    assert val is not None
    np.testing.assert_array_equal(val[0].block(0, 10_000), triplets[90_000:])
    np.testing.assert_array_equal(val[1][np.array([0, 9_999])], sims[[90_000, 99_999]])
    with pytest.raises(IndexError):
        train_t[np.array([90_000])]
    # the digest a checkpoint records does not depend on where the rows are
    assert data_digest(train_t, train_s) == data_digest(triplets[:90_000], sims[:90_000])
    np.testing.assert_array_equal(unique_ids(train_t), np.unique(triplets[:90_000]))


def test_unordered_or_small_triplet_runs_are_read_into_memory(tmp_path: Path) -> None:
    triplets, sims = _data(100_000)
    is_val = np.random.default_rng(2).uniform(size=len(triplets)) < 0.1  # not last
    small_t, small_s = _data(200)
    small_val = np.zeros(200, dtype=bool)
    with Project.create(tmp_path / "p.alignet") as p:
        ref = _triplet_run(p, triplets, sims, is_val)
        small = _triplet_run(p, small_t, small_s, small_val)
        (train_t, train_s), val = triplet_split(p, ref)
        (st, ss), no_val = triplet_split(p, small)  # inline in the index
        with pytest.raises(InputError, match="no training triplets"):
            triplet_split(p, _triplet_run(p, small_t, small_s, ~small_val))
    assert isinstance(train_t, np.ndarray)
    np.testing.assert_array_equal(train_t, triplets[~is_val])
    np.testing.assert_array_equal(train_s, sims[~is_val])
    assert val is not None
    np.testing.assert_array_equal(val[0], triplets[is_val])
    np.testing.assert_array_equal(st, small_t)
    np.testing.assert_array_equal(ss, small_s)
    assert no_val is None


def test_compressed_or_in_memory_datasets_are_not_read_with_pread(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("plain", data=np.zeros((10, 3)), chunks=(4, 3))
        f.create_dataset("gzip", data=np.zeros((10, 3)), chunks=(4, 3), compression="gzip")
        f.create_dataset("split", data=np.zeros((10, 3)), chunks=(4, 1))
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert StoredRows.readable(f["plain"])
        assert not StoredRows.readable(f["gzip"])
        assert not StoredRows.readable(f["split"])  # chunks of partial rows


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_training_on_stored_rows_equals_training_on_arrays(tmp_path: Path) -> None:
    """Bitwise the same curves and weights, validation and the preserve term included."""
    n_images = 40
    triplets, sims = _data(100_000, n_images)  # both over 1 MiB: side files
    is_val = np.zeros(len(triplets), dtype=bool)
    is_val[-300:] = True
    images = torch.randn(n_images, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    config = DistillConfig(
        steps=12,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        val_every=5,
        log_every_s=0.0,
        checkpoint_every=0,
        preserve_weight=0.5,
        augment=True,
    )
    with Project.create(tmp_path / "p.alignet") as p:
        (train_t, train_s), val = triplet_split(p, _triplet_run(p, triplets, sims, is_val))
    assert isinstance(train_t, StoredRows) and val is not None
    net = _net()
    ours = run_job(
        distill(copy.deepcopy(net), images, train_t, train_s, config, device="cpu", val=val)
    )
    arrays = run_job(
        distill(
            copy.deepcopy(net),
            images,
            triplets[~is_val],
            sims[~is_val],
            config,
            device="cpu",
            val=(triplets[is_val], sims[is_val]),
        )
    )
    assert ours.history.keys() == arrays.history.keys()
    for name, values in arrays.history.items():
        np.testing.assert_array_equal(ours.history[name], values, err_msg=name)
    for name, value in arrays.state_dict.items():
        torch.testing.assert_close(ours.state_dict[name], value, rtol=0, atol=0)


def test_a_sampler_copy_draws_the_same_rows_and_shares_the_epoch() -> None:
    """The trainer's look-ahead copy of the sampler must not double its memory (an epoch of
    10M rows is 80 MB) nor change what either draws."""
    sampler = TripletSampler(1000, 64, np.random.default_rng(0))
    fresh = TripletSampler(1000, 64, np.random.default_rng(0))
    first = next(sampler)
    twin = copy.deepcopy(sampler)
    assert np.shares_memory(twin.buffer, sampler.buffer)
    ahead = [next(twin) for _ in range(40)]  # 40 × 64 rows: across two epoch boundaries
    behind = [next(sampler) for _ in range(40)]
    expected = [next(fresh) for _ in range(41)]
    np.testing.assert_array_equal(first, expected[0])
    for a, b, e in zip(ahead, behind, expected[1:], strict=True):
        np.testing.assert_array_equal(a, e)
        np.testing.assert_array_equal(b, e)
    # each epoch is a permutation: the first 1000 draws hold every row once
    np.testing.assert_array_equal(np.sort(np.concatenate(expected)[:1000]), np.arange(1000))
