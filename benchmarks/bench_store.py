"""A small write on a project holding >= 6 GB of features vs the same write on an empty one.

Issue 9's figure: "a small write (one judgments import, one journal record) on a project
holding >= 6 GB of features costs <= 2x the same write on an empty project".

Two projects in a scratch folder: one empty (an image set of 100 images only), one that also
holds 1.28 M x 1280 float32 features (6.55 GB; streamed into a side file in 40 MB blocks, so
the benchmark needs no 6 GB of memory). The small writes, interleaved between the two
projects so drift of this shared machine hits both alike, each repeated ``--repeats`` times:

- one journal record (``begin_job``),
- one judgments import (1000 odd-one-out triplets of the 100 images).

Prints the medians and the ratio big/empty of each; the scratch folder is deleted at the end.

    .venv/bin/python benchmarks/bench_store.py [--quick] [--repeats N] [--work DIR]

``--quick``: 20 k x 1280 features (100 MB), to check that it runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.store import Project

FULL_ROWS, QUICK_ROWS, DIM = 1_281_167, 20_000, 1280
_BLOCK_ROWS = 8192  # 40 MB of float32 per block


def _make(path: Path, n_rows: int) -> Project:
    p = Project.create(path)
    p.write_imageset("stimuli", ImageSet(tuple(f"/s/{i}.png" for i in range(100)), ("",) * 100), {})
    if n_rows:
        rid = p.begin_job("features", {"model": "synthetic"})
        block = np.random.default_rng(0).normal(size=(_BLOCK_ROWS, DIM)).astype(np.float32)
        with p.new_side_array("X", (n_rows, DIM), np.float32) as w:
            for lo in range(0, n_rows, _BLOCK_ROWS):
                hi = min(n_rows, lo + _BLOCK_ROWS)
                w[lo:hi] = block[: hi - lo] + np.float32(lo)  # distinct rows, cheaply
            X = w.finish()
        p.write_run(
            "features",
            rid,
            slot="features:pool:synthetic",
            params={"model": "synthetic"},
            arrays={"X": X},
            summary={"n": n_rows, "dim": DIM},
        )
    return p


def _judgments(i: int) -> Judgments:
    rng = np.random.default_rng(i)
    triplets = np.stack([rng.permutation(100)[:3] for _ in range(1000)])
    return Judgments("oddone", triplets, np.full(1000, -1))


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(n_rows: int, repeats: int, work: Path) -> dict[str, float]:
    """Median seconds of each small write on both projects, their ratios, and the sizes."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    big = _make(work / "big.alignet", n_rows)
    build_s = time.perf_counter() - t0
    empty = _make(work / "empty.alignet", 0)
    times: dict[str, list[float]] = {k: [] for k in ("journal_empty", "journal_big")}
    times.update({"import_empty": [], "import_big": []})
    try:
        for i in range(repeats):
            j = _judgments(i)
            for label, p in (("empty", empty), ("big", big)):
                times[f"journal_{label}"].append(_timed(lambda p=p: p.begin_job("evaluate", {})))
                times[f"import_{label}"].append(
                    _timed(
                        lambda p=p, i=i, j=j: p.write_judgments(
                            f"j{i}", j, image_set="stimuli", params={}
                        )
                    )
                )
        side_bytes = sum(f.stat().st_size for f in big.arrays_dir.glob("*.h5"))
        out = {k: statistics.median(v) for k, v in times.items()}
        out.update(
            journal_ratio=out["journal_big"] / out["journal_empty"],
            import_ratio=out["import_big"] / out["import_empty"],
            features_gb=side_bytes / 1e9,
            index_mb_big=big.path.stat().st_size / 1e6,
            index_mb_empty=empty.path.stat().st_size / 1e6,
            build_seconds=build_s,
        )
        return out
    finally:
        big.close()
        empty.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 k rows (100 MB) instead of 6.55 GB")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--work", help="scratch folder (default: a temporary one); deleted after")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="alignet-bench-store-")) / "bench_store"
    rows = QUICK_ROWS if args.quick else FULL_ROWS
    try:
        r = measure(rows, args.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"store: {r['features_gb']:.2f} GB of features ({rows} x {DIM} float32, written as a "
        f"side file in {r['build_seconds']:.0f} s); index {r['index_mb_big']:.2f} MB vs "
        f"{r['index_mb_empty']:.2f} MB empty; medians of {args.repeats}"
    )
    for what in ("journal", "import"):
        label = "one journal record " if what == "journal" else "one judgments import"
        print(
            f"  {label}: {r[f'{what}_big'] * 1e3:7.1f} ms on the big project, "
            f"{r[f'{what}_empty'] * 1e3:7.1f} ms on the empty one: ratio "
            f"{r[f'{what}_ratio']:.2f} (target <= 2)"
        )


if __name__ == "__main__":
    main()
