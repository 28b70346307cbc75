"""Peak memory of ``alignet-cli extract`` against the pool size, as a user runs it.

A feature extraction whose memory grows with the pool cannot run on ImageNet (1.28 M images
x 1280 float32 = 6.5 GB per layer for EfficientNet-Lite0, more for bigger models). This
benchmark makes ``--large`` tiny PNG files in a temporary folder, imports the first
``--small`` of them and all of them as two image sets of one project (``alignet-cli
import-images`` on a manifest), then runs ``alignet-cli extract`` (real Lite0 weights,
``--image-size`` px, decoding in the main process) on each set in a child process and reads
the child's peak RSS (``ru_maxrss`` from ``wait4``).

Printed: both peaks, their ratio (large / small: ~1 when the stage's memory is bounded by the
batch size, not by n), and the extra memory of the large run in units of the (n, d) float32
feature matrix it stores (~1 or more when the stage holds the whole matrix, ~0 when it
streams rows to disk). The temporary folder (images and project) is deleted at the end.

Run: ``.venv/bin/python benchmarks/bench_extract_memory.py`` (defaults: 2 000 vs 40 000
images at 32 px: ~4 minutes on 2 idle cores, Lite0 at ~5 ms per image, 20-30 minutes when
other jobs share them; the large run's (n, d) matrix is 186 MiB). ``--small 200 --large
4000`` is a quick check. Another checkout is measured with ``PYTHONPATH=<its root>``.

Measured on the shared 2-core CPU machine (Lite0, 32 px, batch 64, no decoding workers):
before streaming, 916 -> 1012 MiB (ratio 1.10; +96 MiB = 0.52 x the matrix: the small run's
peak is a ~90 MiB transient above its steady state, which hides part of the matrix); with
streaming, 904 -> 905 MiB (ratio 1.00; +1 MiB = 0.01 x the matrix).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DIM = 1280  # EfficientNet-Lite0's pre-logits width
# The code measured: this checkout, or the one PYTHONPATH names (e.g. another branch's
# worktree, for a before/after comparison). The children run in the temporary folder, so
# `python -m` does not pick up whatever checkout the caller's working directory is.
ENV = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO)}


def make_images(folder: Path, n: int, side: int = 8) -> list[str]:
    """``n`` random ``side`` x ``side`` RGB PNGs, 1000 per sub-folder; returns their paths."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sub = folder / f"c{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        p = sub / f"{i:07d}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "alignet_engine.cli", *args]


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL)


def run_measured(cmd: list[str], cwd: Path) -> tuple[int, float]:
    """Run ``cmd``; (its peak RSS in bytes, wall seconds). Exits if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return usage.ru_maxrss * 1024, seconds  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=40_000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--work", type=Path, default=None, help="parent of the temporary folder")
    args = parser.parse_args()
    if not 0 < args.small < args.large:
        sys.exit("need 0 < --small < --large")

    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_memory_", dir=args.work))
    try:
        t0 = time.perf_counter()
        paths = make_images(tmp / "img", args.large)
        print(f"made {args.large} PNGs in {time.perf_counter() - t0:.0f} s", flush=True)
        project = tmp / "p.alignet"
        run(cli("new", "-q", str(project)), tmp)
        for name, n in (("small", args.small), ("large", args.large)):
            manifest = tmp / f"{name}.csv"
            manifest.write_text("path\n" + "".join(f"{p}\n" for p in paths[:n]))
            run(cli("import-images", "-q", str(project), str(manifest), "--name", name), tmp)
        peaks = {}
        for name, n in (("small", args.small), ("large", args.large)):
            rss, seconds = run_measured(
                cli(
                    "extract", "-q", str(project), "--image-set", name,
                    "--model", "efficientnet_lite0", "--image-size", str(args.image_size),
                    "--batch-size", str(args.batch_size), "--device", "cpu",
                    "--num-workers", "0",
                ),
                tmp,
            )  # fmt: skip
            peaks[name] = rss
            print(f"extract {n:>8} images: peak RSS {rss / 2**20:8.0f} MiB ({seconds:.0f} s)")
        matrix = (args.large - args.small) * DIM * 4
        extra = peaks["large"] - peaks["small"]
        print(
            f"peak RSS ratio large/small: {peaks['large'] / peaks['small']:.2f} "
            f"(n ratio {args.large / args.small:.0f}x)"
        )
        print(
            f"extra peak RSS of the large run: {extra / 2**20:.0f} MiB = "
            f"{extra / matrix:.2f} x the extra (n, {DIM}) float32 matrix ({matrix / 2**20:.0f} MiB)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
