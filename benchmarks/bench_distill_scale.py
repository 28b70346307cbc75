"""Benchmark: streaming distillation at pool scale — peak memory and throughput.

Workload: EfficientNet-Lite0 (packaged ImageNet weights) distilled on tiny real image files
on disk (``--size`` px JPEGs of random blobs, default 64 px, generated once and cached under
``--pool-dir``), read by :class:`alignet_engine.distill.StreamedImages` through the extraction
stage's image dataset (decode, resize, crop, normalise) with ``--workers`` DataLoader workers.
The triplets (``--triplets`` rows, random ids over the whole pool, random teacher
similarities) and the steps are the same whatever the pool size.

Three measurements, each in fresh child processes (so that one does not inherit the other's
memory), printed as ratios against a baseline measured in the same run:

* **memory** — peak RSS of a short distillation (``--rss-steps`` steps) with a pool of
  ``--big`` images against one of ``--small`` images: the training process's own peak and its
  largest DataLoader worker's (``getrusage``). Target: big / small ≤ 1.2. (Decoding the pool
  whole, as the stage did before streaming, would hold ``n × 3 × size² × 4`` bytes: 9.8 GB
  for 200k images at 64 px.)
* **triplet count** — peak RSS of the same short distillation (``--small``-image pool) on
  the training rows of a stored triplet run of ``--stored`` rows (default 200k and 10M,
  written once as the triplets stage writes them: side files, validation rows last) and read
  as the distill stage reads them, a step's rows at a time; and of the 10M rows loaded whole
  first (less than the stage held before, which also copied them to split off the validation
  rows). Target: 10M / 200k close to 1 (the triplet sampler's
  permutation, 8 bytes a row, is what remains).
* **throughput** — images/s of :func:`alignet_engine.distill.distill` against a bare loop:
  a plain ``DataLoader`` over the same dataset and the same batches (same workers) feeding the
  same model, KL loss on cosine similarities and an Adam step — no metrics, no validation, no
  checkpoints. Both are timed from the end of step ``--warmup`` to the last step, in the same
  child process, alternating ``--reps`` rounds. Target: ours / bare ≥ 0.9.

Run: ``.venv/bin/python benchmarks/bench_distill_scale.py`` (``--only rss|triplets|speed``
for one measurement, ``--quick`` for small sizes) (``--device cuda`` on a GPU
machine, which adds AMP and keeps channels-last). Creating the 200k-file pool takes a few
minutes the first time. The machines are shared and noisy: compare the ratios, not absolute
times. ``main()`` returns the figures (``benchmarks/bench_scale.py`` calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_POOL_DIR = Path("/tmp/alignet_bench_pool")
PER_FOLDER = 1000


# --------------------------------------------------------------------------------------------
# the pool on disk


def pool_paths(pool_dir: Path, n: int, size: int) -> list[str]:
    """The first ``n`` files of the cached pool, creating the missing ones (JPEG, ``size`` px).

    The files are copies of :data:`BANK` distinct images — a few random soft blobs on a random
    background with noise, so they decode like photos, not like a constant colour the codec
    makes trivial — written as bytes: 200k files take well under a minute, not an hour of
    encoding on a shared CPU. Decoding cost is per file, whatever its content repeats.
    """
    folder = pool_dir / f"{size}px"
    paths = [str(folder / f"{i // PER_FOLDER:04d}" / f"{i:07d}.jpg") for i in range(n)]
    done_marker = folder / f"complete-{n}"
    if done_marker.exists():
        return paths
    bank = _jpeg_bank(size)
    for i, path in enumerate(paths):
        if i % PER_FOLDER == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(bank[i % len(bank)])
    done_marker.touch()
    return paths


#: distinct images the pool's files are copies of
BANK = 500


def _jpeg_bank(size: int) -> list[bytes]:
    import io

    from PIL import Image

    rng = np.random.default_rng(12345)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(BANK):
        image = np.empty((size, size, 3), np.float32)
        image[:] = rng.uniform(0, 255, 3)
        for _ in range(3):
            cy, cx = rng.uniform(0, size, 2)
            radius = rng.uniform(size / 10, size / 3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))[..., None]
            image = image * (1 - blob) + rng.uniform(0, 255, 3) * blob
        image += rng.normal(0, 8, image.shape)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


# --------------------------------------------------------------------------------------------
# what runs in a child process


def _workload(args: argparse.Namespace, n_pool: int) -> dict[str, Any]:
    """The shared pieces: model, streamed pool, triplets, config."""
    import torch

    from alignet_engine.base.types import ImageSet
    from alignet_engine.config.distill import DistillConfig
    from alignet_engine.distill import StreamedImages
    from alignet_engine.models import load_backbone, make_transform
    from alignet_engine.models.extract import _ImageFiles
    from alignet_engine.stages.distill import StudentFeatures

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # the compact path column the project stores (not n Python strings)
    paths = ImageSet(pool_paths(args.pool_dir, n_pool, args.size), [""] * n_pool).paths
    backbone = load_backbone("efficientnet_lite0")
    transform = make_transform(backbone.preprocess, args.size)
    dataset = _ImageFiles(paths, range(n_pool), transform, args.size)
    rng = np.random.default_rng(0)
    triplets = rng.integers(0, n_pool, (args.triplets, 3)).astype(np.int64)
    sims = rng.normal(0, 1, (args.triplets, 3)).astype(np.float32)
    config = DistillConfig(
        steps=args.steps,
        batch_size=args.batch,
        lr=1e-4,
        warmup_steps=0,
        val_every=0,
        checkpoint_every=0,
        log_every_s=0.0,
        amp=device.type == "cuda",
    )
    return {
        "torch": torch,
        "device": device,
        "backbone": backbone,
        "student": StudentFeatures(backbone),
        "dataset": dataset,
        "streamed": lambda: StreamedImages(dataset, num_workers=args.workers),
        "triplets": triplets,
        "sims": sims,
        "config": config,
    }


def _time_ours(w: dict[str, Any], args: argparse.Namespace) -> float:
    """Images/s of ``distill`` from the end of step ``warmup`` to the last step."""
    import copy

    from alignet_engine.distill import distill
    from alignet_engine.jobs import Progress

    config = w["config"]
    job = distill(
        copy.deepcopy(w["student"]),
        w["streamed"](),
        w["triplets"],
        w["sims"],
        config,
        device=w["device"],
    )
    marks: dict[int, float] = {}
    try:
        while True:
            event = next(job)
            if isinstance(event, Progress) and event.message == "":
                _sync(w)
                marks[event.done] = time.perf_counter()
    except StopIteration:
        pass
    timed = config.steps - args.warmup
    return timed * 3 * config.batch_size / (marks[config.steps] - marks[args.warmup])


def _time_bare(w: dict[str, Any], args: argparse.Namespace) -> float:
    """Images/s of a plain DataLoader + forward/backward + Adam loop over the same batches."""
    import copy

    from torch import nn
    from torch.utils.data import DataLoader

    from alignet_engine.distill import kl_triplet_loss, stacked_pair_similarities
    from alignet_engine.distill.batching import TripletSampler

    torch, device, config = w["torch"], w["device"], w["config"]
    student = copy.deepcopy(w["student"]).to(device)
    student.to(memory_format=torch.channels_last)
    student.train()
    for module in student.modules():  # BatchNorm frozen, as distill's default
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, foreach=True)
    teacher = torch.tensor(w["sims"], device=device)
    sampler = TripletSampler(len(w["triplets"]), config.batch_size, np.random.default_rng(0))
    rows = [next(sampler) for _ in range(config.steps)]
    batches = [w["triplets"][r].reshape(-1).tolist() for r in rows]
    loader = DataLoader(
        w["dataset"],
        batch_sampler=batches,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if args.workers else None,
    )
    amp = device.type == "cuda"
    marks: dict[int, float] = {}
    for step, (x, _, _) in enumerate(loader, start=1):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            features = student(x)
        s = stacked_pair_similarities(features.float().reshape(config.batch_size, 3, -1), "cosine")
        loss = kl_triplet_loss(
            teacher[torch.from_numpy(rows[step - 1]).to(device)],
            s,
            teacher_temperature=config.teacher_temperature,
            student_temperature=config.student_temperature,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss)  # one sync per step, as distill's logged loss
        if step in (args.warmup, config.steps):
            _sync(w)
            marks[step] = time.perf_counter()
    timed = config.steps - args.warmup
    return timed * 3 * config.batch_size / (marks[config.steps] - marks[args.warmup])


def _sync(w: dict[str, Any]) -> None:
    if w["device"].type == "cuda":
        w["torch"].cuda.synchronize(w["device"])


def child_rss(args: argparse.Namespace) -> dict[str, Any]:
    """A short distillation on a pool of ``args.pool`` images; peak RSS of it and its workers."""
    from alignet_engine.distill import distill
    from alignet_engine.jobs import run_job

    w = _workload(args, args.pool)
    start = time.perf_counter()
    run_job(
        distill(
            w["student"], w["streamed"](), w["triplets"], w["sims"], w["config"], device=w["device"]
        )
    )
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB (Linux)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"pool": args.pool, "peak_rss_mib": own, "worker_peak_rss_mib": workers, "s": seconds}


def triplet_project(pool_dir: Path, m: int, n_pool: int) -> Path:
    """A project holding one triplet run (slot ``triplets``) of ``m`` random rows over
    ``n_pool`` images, the last 1000 for validation, as the triplets stage stores them
    (side files); written in blocks and cached under ``pool_dir``."""
    import shutil

    from alignet_engine.store import Project

    path = pool_dir / f"triplets-{m}-{n_pool}.alignet"
    done = path.with_name(path.name + ".complete")
    if done.exists():
        return path
    path.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".files"), ignore_errors=True)
    rng = np.random.default_rng(0)
    block = 1 << 20
    with Project.create(path) as p:
        rid = p.begin_job("triplets", {})
        with (
            p.new_side_array("triplets", (m, 3), np.int64) as t,
            p.new_side_array("sims", (m, 3), np.float32) as s,
            p.new_side_array("is_val", (m,), bool) as v,
        ):
            for lo in range(0, m, block):
                k = min(block, m - lo)
                t[lo : lo + k] = rng.integers(0, n_pool, (k, 3))
                s[lo : lo + k] = rng.normal(0, 1, (k, 3)).astype(np.float32)
                v[lo : lo + k] = np.arange(lo, lo + k) >= m - 1000
            arrays = {"triplets": t.finish(), "sims": s.finish(), "is_val": v.finish()}
        p.write_run("triplets", rid, slot="triplets", params={}, arrays=arrays)
    done.touch()
    return path


def child_rss_triplets(args: argparse.Namespace) -> dict[str, Any]:
    """A short distillation on the training rows of a stored triplet run of ``args.rows``
    rows (2k-image pool), read as the distill stage reads them (``--in-memory``: loaded
    whole first, as the stage did before); peak RSS."""
    from alignet_engine.distill import distill
    from alignet_engine.distill.rows import whole
    from alignet_engine.jobs import run_job
    from alignet_engine.stages.distill import triplet_split
    from alignet_engine.store import Project

    path = triplet_project(args.pool_dir, args.rows, args.pool)
    w = _workload(argparse.Namespace(**{**vars(args), "triplets": 1}), args.pool)
    start = time.perf_counter()
    with Project.open(path, readonly=True) as project:
        (triplets, sims), _ = triplet_split(project, "triplets")
    if args.in_memory:
        triplets, sims = whole(triplets), whole(sims)
    run_job(distill(w["student"], w["streamed"](), triplets, sims, w["config"], device=w["device"]))
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": args.rows, "in_memory": args.in_memory, "peak_rss_mib": own, "s": seconds}


def child_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Alternating rounds of ``distill`` and the bare loop on the small pool; images/s."""
    w = _workload(args, args.pool)
    _time_bare(w, args)  # warm the allocator, the page cache and the kernels
    ours, bare = [], []
    for _ in range(args.reps):
        ours.append(_time_ours(w, args))
        bare.append(_time_bare(w, args))
    return {"ours": ours, "bare": bare}


# --------------------------------------------------------------------------------------------
# the driver


def _child(
    args: argparse.Namespace, what: str, pool: int, steps: int, *extra: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--pool",
        str(pool),
        "--steps",
        str(steps),
        *[
            f"--{name.replace('_', '-')}={getattr(args, name)}"
            for name in ("device", "size", "batch", "workers", "triplets", "warmup", "reps")
        ],
        f"--pool-dir={args.pool_dir}",
        *extra,
    ]
    if args.threads:
        command.append(f"--threads={args.threads}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {what} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="image side, px")
    parser.add_argument("--batch", type=int, default=16, help="triplets per step")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--triplets", type=int, default=20000, help="triplet rows")
    parser.add_argument("--small", type=int, default=2000, help="small pool, images")
    parser.add_argument("--big", type=int, default=200000, help="big pool, images")
    parser.add_argument("--rss-steps", type=int, default=20, help="steps of the memory runs")
    parser.add_argument("--steps", type=int, default=25, help="steps per throughput round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per round")
    parser.add_argument("--reps", type=int, default=3, help="rounds of each variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--pool-dir", type=Path, default=DEFAULT_POOL_DIR)
    parser.add_argument(
        "--stored",
        default="200000,10000000",
        help="stored triplet rows of the triplet-count memory runs, small,large ('' skips)",
    )
    parser.add_argument("--only", choices=("rss", "speed", "triplets"), help="one measurement")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check it runs")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("--child", choices=("rss", "speed", "rss-triplets"), help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurements; print and return the figures (ratios in ``"ratios"``)."""
    args = _parser().parse_args(argv)
    if args.quick and not args.child:
        args.big, args.stored, args.rss_steps, args.steps, args.reps = (
            5000,
            "20000,200000",
            8,
            10,
            1,
        )
        args.warmup = 2
    if args.child:
        children = {"rss": child_rss, "speed": child_speed, "rss-triplets": child_rss_triplets}
        result = children[args.child](args)
        print(json.dumps(result))
        return result

    t0 = time.perf_counter()
    pool_paths(args.pool_dir, max(args.small, args.big), args.size)  # cached after the first run
    made = time.perf_counter() - t0
    figures: dict[str, Any] = {
        "device": args.device,
        "workload": {
            k: getattr(args, k)
            for k in ("size", "batch", "workers", "triplets", "small", "big", "rss_steps")
        },
        "pool_files_ready_s": round(made, 1),
        "ratios": {},
    }
    ratios = figures["ratios"]
    print(
        f"distillation at pool scale on {args.device} ({args.size} px, batch {args.batch}, "
        f"{args.workers} workers, {args.triplets} triplets)"
    )
    if args.only in (None, "rss"):
        small = _child(args, "rss", args.small, args.rss_steps)
        big = _child(args, "rss", args.big, args.rss_steps)
        figures.update(small=small, big=big)
        ratios["peak_rss_big_over_small"] = big["peak_rss_mib"] / small["peak_rss_mib"]
        ratios["worker_rss_big_over_small"] = (
            big["worker_peak_rss_mib"] / small["worker_peak_rss_mib"]
        )
        print(
            f"  peak RSS: {args.small} images {small['peak_rss_mib']:.0f} MiB "
            f"(worker {small['worker_peak_rss_mib']:.0f}), {args.big} images "
            f"{big['peak_rss_mib']:.0f} MiB (worker {big['worker_peak_rss_mib']:.0f})"
        )
        print(
            f"  peak RSS ratio big/small: {ratios['peak_rss_big_over_small']:.3f} "
            f"(target ≤ 1.2); workers {ratios['worker_rss_big_over_small']:.3f}"
        )
    if args.only in (None, "triplets") and args.stored:
        few, many = (int(x) for x in args.stored.split(","))
        for m in (few, many):
            triplet_project(args.pool_dir, m, args.small)  # cached after the first run
        stored = {
            m: _child(args, "rss-triplets", args.small, args.rss_steps, f"--rows={m}")
            for m in (few, many)
        }
        loaded = _child(
            args, "rss-triplets", args.small, args.rss_steps, f"--rows={many}", "--in-memory"
        )
        figures["stored_triplets"] = {"stored": list(stored.values()), "loaded": loaded}
        ratios["peak_rss_many_over_few_triplets"] = (
            stored[many]["peak_rss_mib"] / stored[few]["peak_rss_mib"]
        )
        ratios["peak_rss_loaded_over_stored_many_triplets"] = (
            loaded["peak_rss_mib"] / stored[many]["peak_rss_mib"]
        )
        print(
            f"  peak RSS, triplets read per step from the project ({args.small}-image pool): "
            f"{few} rows {stored[few]['peak_rss_mib']:.0f} MiB, {many} rows "
            f"{stored[many]['peak_rss_mib']:.0f} MiB: ratio "
            f"{ratios['peak_rss_many_over_few_triplets']:.3f}; {many} rows loaded whole "
            f"first (before) {loaded['peak_rss_mib']:.0f} MiB"
        )
    if args.only in (None, "speed"):
        speed = _child(args, "speed", args.small, args.steps)
        ours, bare = statistics.median(speed["ours"]), statistics.median(speed["bare"])
        figures["images_per_s"] = speed
        ratios["images_per_s_ours_over_bare"] = ours / bare
        ratios["images_per_s_best_ours_over_best_bare"] = max(speed["ours"]) / max(speed["bare"])
        print(
            f"  images/s: distill {ours:.1f}, bare loop {bare:.1f} (medians of {args.reps}); "
            f"ratio {ratios['images_per_s_ours_over_bare']:.3f} (target ≥ 0.9), best/best "
            f"{ratios['images_per_s_best_ours_over_best_bare']:.3f}"
        )
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
