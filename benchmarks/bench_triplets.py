"""Benchmark: 10 M AligNet cluster-boundary triplets with teacher similarities.

Workload (method.md §4): a pool of 100,000 × 1,280 float32 "teacher" features with cluster
structure (500 Gaussian cluster centres plus noise). The generating labels stand in for the
k-means labels: this benchmark measures triplet sampling and teacher labelling (three dot
products per triplet, ordering so the odd one is last), not clustering.

Variants, each in its own subprocess so that each gets its own peak RSS (``ru_maxrss``; the
pool itself, 0.5 GB, is part of every peak and is built before the clock starts):

* ``ours``      — :func:`sample_triplets` (cluster_boundary) + :func:`teacher_odd_one_out`
  (CPU), 10 M.
* ``reference`` — what a researcher would typically write: a loop over batches of 10 k
  triplets, drawing each triplet with ``rng.choice`` (a cluster pair, then two members of the
  first and one of the second) and computing the three dot products per batch. Too slow for
  10 M, so it runs on 1 M rows and its time is extrapolated linearly (stated in the output).
* ``npz``       — :func:`save_alignet_npz` of the 10 M labelled triplets with ImageNet-style
  file names (fixed-width unicode, built per block from the per-item names) and
  :func:`load_alignet_npz` back, with ``mmap=True`` and fully read.

Run: ``.venv/bin/python benchmarks/bench_triplets.py`` (``--quick`` for a 1/10-size smoke run).
The machines are shared and noisy: compare the ratio, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignet_engine.align.triplet_sampling import (  # noqa: E402
    load_alignet_npz,
    sample_triplets,
    save_alignet_npz,
    teacher_odd_one_out,
)

GIB = 2**30


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_pool(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 features around k Gaussian centres, and the (n,) generating labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d), dtype=np.float32) * np.float32(2.0 / np.sqrt(d))
    labels = rng.integers(0, k, size=n)
    Z = rng.standard_normal((n, d), dtype=np.float32)
    Z *= np.float32(1.0 / np.sqrt(d))
    for s in range(0, n, 10_000):  # in blocks: no second (n, d) temporary
        Z[s : s + 10_000] += centres[labels[s : s + 10_000]]
    return Z, labels


def reference(Z: np.ndarray, labels: np.ndarray, m: int, batch: int = 10_000, seed: int = 0):
    """A plain per-batch implementation, as a typical research script would do it.

    Returns (triplets, sims, seconds spent sampling, seconds spent on the similarities).
    """
    rng = np.random.default_rng(seed)
    k = int(labels.max()) + 1
    members = [np.flatnonzero(labels == c) for c in range(k)]
    # pair p = (0,1), (0,2), (1,2) -> column order that puts that pair first, odd one last
    perms = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])
    all_t, all_s = [], []
    t_sample = t_sims = 0.0
    for start in range(0, m, batch):
        t0 = time.perf_counter()
        b = min(batch, m - start)
        t = np.empty((b, 3), dtype=np.int64)
        for r in range(b):
            while True:  # a cluster pair whose first cluster can supply two items
                c1, c2 = rng.choice(k, size=2, replace=False)
                if len(members[c1]) >= 2:
                    break
            a, bb = rng.choice(members[c1], 2, replace=False)
            o = rng.choice(members[c2])
            t[r] = (a, bb, o)
        t1 = time.perf_counter()
        A, B, C = Z[t[:, 0]], Z[t[:, 1]], Z[t[:, 2]]
        s = np.stack([(A * B).sum(1), (A * C).sum(1), (B * C).sum(1)], axis=1)
        p = s.argmax(axis=1)
        t = np.take_along_axis(t, perms[p], axis=1)
        s = -np.sort(-s, axis=1)
        all_t.append(t)
        all_s.append(s.astype(np.float32))
        t_sample += t1 - t0
        t_sims += time.perf_counter() - t1
    return np.concatenate(all_t), np.concatenate(all_s), t_sample, t_sims


def run_variant(args: argparse.Namespace) -> dict:
    Z, labels = make_pool(args.n_items, args.dim, args.clusters)
    base = rss_bytes()
    out: dict = {"variant": args.variant, "rss_after_pool_gib": base / GIB}
    if args.variant == "ours":
        t0 = time.perf_counter()
        raw = sample_triplets("cluster_boundary", args.n_triplets, labels=labels, random_state=0)
        t1 = time.perf_counter()
        trip, sims = teacher_odd_one_out(Z, raw, similarity="dot", device="cpu")
        t2 = time.perf_counter()
        del raw
        lab = labels[trip]  # the teacher may move the outsider, but each row keeps 2 + 1
        same = (
            (lab[:, 0] == lab[:, 1]).astype(int)
            + (lab[:, 0] == lab[:, 2])
            + (lab[:, 1] == lab[:, 2])
        )
        assert (same == 1).all()
        assert (sims[:, 0] >= sims[:, 1]).all() and (sims[:, 1] >= sims[:, 2]).all()
        out.update(m=args.n_triplets, seconds=t2 - t0, sample_s=t1 - t0, teacher_s=t2 - t1)
    elif args.variant == "reference":
        t0 = time.perf_counter()
        trip, sims, t_sample, t_sims = reference(Z, labels, args.ref_triplets)
        out.update(
            m=args.ref_triplets,
            seconds=time.perf_counter() - t0,
            sample_s=t_sample,
            teacher_s=t_sims,
        )
    elif args.variant == "npz":
        # no teacher needed to time the file format: sorted random similarities will do
        rng = np.random.default_rng(1)
        trip = sample_triplets("cluster_boundary", args.n_triplets, labels=labels, random_state=0)
        sims = -np.sort(-rng.random((args.n_triplets, 3), dtype=np.float32), axis=1)
        names = np.array(  # ImageNet-style paths, 30 characters
            [f"n{rng.integers(10**7, 10**8)}/n{i:08d}_{i % 99999:05d}.JPEG" for i in range(len(Z))]
        )
        del Z
        base = rss_bytes()
        out["rss_after_pool_gib"] = base / GIB
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            path = Path(tmp) / "train_cluster_border_500.npz"
            t0 = time.perf_counter()
            save_alignet_npz(path, trip, sims, names)
            t1 = time.perf_counter()
            peak_save = peak_rss_bytes()
            f_mm, s_mm, i_mm = load_alignet_npz(path, mmap=True)
            probe = np.random.default_rng(2).integers(0, len(trip), size=1000)
            assert (f_mm[probe] == names[trip[probe]]).all()
            assert (i_mm[probe] == trip[probe]).all() and (s_mm[probe] == sims[probe]).all()
            t2 = time.perf_counter()
            del f_mm, s_mm, i_mm
            f_full, s_full, i_full = load_alignet_npz(path)
            t3 = time.perf_counter()
            assert np.array_equal(i_full, trip) and np.array_equal(s_full, sims)
            assert (f_full[probe] == names[trip[probe]]).all()
            out.update(
                m=args.n_triplets,
                file_gib=path.stat().st_size / GIB,
                filenames_dtype=str(f_full.dtype),
                save_s=t1 - t0,
                peak_save_gib=peak_save / GIB,
                load_mmap_s=t2 - t1,
                load_full_s=t3 - t2,
                seconds=t3 - t0,
            )
    out["peak_rss_gib"] = peak_rss_bytes() / GIB
    return out


def child(args: argparse.Namespace, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant]
    for key in ("n_triplets", "ref_triplets", "n_items", "dim", "clusters"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.tmp:
        cmd += ["--tmp", args.tmp]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"variant {variant} failed:\n{res.stdout}\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", choices=["ours", "reference", "npz"])
    ap.add_argument("--n-triplets", type=int, default=10_000_000)
    ap.add_argument("--ref-triplets", type=int, default=1_000_000)
    ap.add_argument("--n-items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--clusters", type=int, default=500)
    ap.add_argument("--tmp", default=None, help="folder for the npz file (default: system tmp)")
    ap.add_argument("--skip-npz", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1/10 of every size")
    args = ap.parse_args()
    if args.quick:
        args.n_triplets //= 10
        args.ref_triplets //= 10
        args.n_items //= 10
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    t_start = time.perf_counter()
    print(
        f"pool {args.n_items:,} × {args.dim} float32, {args.clusters} Gaussian clusters "
        "(generating labels used as the k-means labels: sampling + similarity only)"
    )
    ours = child(args, "ours")
    ref = child(args, "reference")
    scale = args.n_triplets / ref["m"]
    ref_est = ref["seconds"] * scale
    print(f"\n{'variant':<11}{'triplets':>12}{'time [s]':>11}{'peak RSS [GiB]':>16}")
    print(
        f"{'ours':<11}{ours['m']:>12,}{ours['seconds']:>11.1f}{ours['peak_rss_gib']:>16.2f}"
        f"   (sampling {ours['sample_s']:.1f} s, teacher {ours['teacher_s']:.1f} s; "
        f"pool alone {ours['rss_after_pool_gib']:.2f} GiB)"
    )
    print(
        f"{'reference':<11}{ref['m']:>12,}{ref['seconds']:>11.1f}{ref['peak_rss_gib']:>16.2f}"
        f"   (measured on {ref['m']:,} rows: sampling {ref['sample_s']:.1f} s, "
        f"similarities {ref['teacher_s']:.1f} s)"
    )
    print(
        f"{'reference':<11}{args.n_triplets:>12,}{ref_est:>11.1f}{'':>16}"
        f"   (EXTRAPOLATED linearly ×{scale:g} from {ref['m']:,} rows, not run)"
    )
    print(f"\nspeed-up ours vs reference at {args.n_triplets:,}: {ref_est / ours['seconds']:.1f}×")
    if ours["m"] >= 10_000_000:
        target = "met" if ours["seconds"] < 60 and ours["peak_rss_gib"] < 2 else "MISSED"
        print(f"target (< 60 s and < 2 GiB peak RSS for 10 M): {target}")
    if not args.skip_npz:
        npz = child(args, "npz")
        print(
            f"\nAligNet npz round trip, {npz['m']:,} rows ({npz['filenames_dtype']} names, "
            f"file {npz['file_gib']:.2f} GiB; triplets + sims in memory before: "
            f"{npz['rss_after_pool_gib']:.2f} GiB RSS)\n"
            f"  save {npz['save_s']:.1f} s (peak RSS {npz['peak_save_gib']:.2f} GiB), "
            f"load mmap=True {npz['load_mmap_s']:.2f} s, "
            f"full load {npz['load_full_s']:.1f} s (peak RSS {npz['peak_rss_gib']:.2f} GiB)"
        )
    print(f"\ntotal benchmark wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
