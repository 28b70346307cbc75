"""Peak memory of ``alignet-cli fit-transform`` with gLocal's local term on a large pool.

The local term (``--alpha > 0 --pool SET``) trains on random batches of pool rows. Reading the
pool's features whole, the fit held them several times over (float64 check, standardised and
unit-norm float32 copies): 1.28 M × 1280 would be ~20 GB. With ``--pool-max-rows`` (default
100 000) the stage draws that many rows at random in one pass of row blocks.

This benchmark writes a project with a small judged set (``--n`` items, random triplets) and a
pool of ``--pool`` random rows × ``--dim`` float32 (a side array), then runs
``alignet-cli fit-transform --objective hard --alpha 0.5 --pool pool --max-epochs 1`` twice as
child processes: with ``--pool-max-rows`` = the pool size (the old behaviour: the whole pool)
and with the default. Printed: each child's peak RSS (``ru_maxrss`` from ``wait4``), their
ratio, and the pool matrix's size. The temporary folder is deleted at the end.

Run: ``.venv/bin/python benchmarks/bench_local_term_pool.py`` (defaults: 400 000 × 256, a
391 MiB pool; under a minute on 2 cores).

Measured on the shared 2-core CPU machine: 2406 MiB peak with the whole pool, 1311 MiB with
100 000 rows drawn (ratio 0.54; 2.8 × the pool matrix saved). About 950 MiB of both is the
CLI's imports (torch).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_extract_memory import run_measured  # this folder is on sys.path when run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="judged items")
    ap.add_argument("--pool", type=int, default=400_000, help="pool rows")
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args()

    from alignet_engine.base.types import Judgments
    from alignet_engine.stages.imports import import_features
    from alignet_engine.store import Project

    root = Path(tempfile.mkdtemp(prefix="bench_local_term_"))
    try:
        rng = np.random.default_rng(0)
        path = root / "p.alignet"
        np.save(root / "X.npy", rng.normal(size=(args.n, args.dim)).astype(np.float32))
        pool = np.lib.format.open_memmap(
            root / "P.npy", mode="w+", dtype=np.float32, shape=(args.pool, args.dim)
        )
        for lo in range(0, args.pool, 50_000):
            hi = min(lo + 50_000, args.pool)
            pool[lo:hi] = rng.normal(size=(hi - lo, args.dim))
        pool.flush()
        del pool
        trip = np.array([rng.choice(args.n, 3, replace=False) for _ in range(2000)])
        with Project.create(path) as project:
            import_features(project, root / "X.npy", image_set="s", label="m")
            import_features(project, root / "P.npy", image_set="pool", label="m")
            project.write_judgments(
                "j",
                Judgments("oddone", trip, -np.ones(len(trip), np.int64)),
                image_set="s",
                params={},
            )
        (root / "P.npy").unlink()
        cli = [sys.executable, "-m", "alignet_engine.cli", "fit-transform", str(path)]
        common = ["-q", "--set", "s", "--model", "m", "--judgments", "j", "--objective", "hard"]
        common += ["--alpha", "0.5", "--pool", "pool", "--max-epochs", "1", "--lam", "0.01"]
        whole, t_whole = run_measured([*cli, *common, "--pool-max-rows", str(args.pool)], root)
        drawn, t_drawn = run_measured([*cli, *common], root)
        whole, drawn = whole / 2**20, drawn / 2**20
        mib = args.pool * args.dim * 4 / 2**20
        print(f"pool {args.pool} x {args.dim} float32 = {mib:.0f} MiB")
        print(
            f"whole pool (--pool-max-rows {args.pool}): peak RSS {whole:.0f} MiB, {t_whole:.1f} s"
        )
        print(f"default (100 000 rows drawn): {drawn:.0f} MiB peak, {t_drawn:.1f} s")
        print(
            f"ratio drawn / whole: {drawn / whole:.2f}; "
            f"saved {(whole - drawn) / mib:.2f} x the pool matrix"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
