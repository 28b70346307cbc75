"""Peak memory of ``alignet-cli import-alignet-pool`` at two pool sizes, as a user runs it.

The AligNet authors' ``representations.npz`` is 1.28 M × 1152 float32 (6 GB). The import
must not need memory in proportion to it: its peak resident memory should be about the same
for a small and a 10× larger file. Each import runs as a child process (the CLI, as a user
types it) on a synthetic ``representations.npz`` of N rows × 1152 float32 (random features,
500 cluster ids, stored uncompressed as ``np.savez`` writes it, and deflated as
``np.savez_compressed`` does) with ``--filenames imagenet2012_filenames.npy``, into a project
whose image set holds all N images (paths in sorted order, the file's rows in a shuffled
"TFDS" order, as for ImageNet). The peak RSS is the kernel's high-water mark of that child
alone (``os.wait4``'s ``ru_maxrss``; file pages of memory maps count), the peak anonymous
memory its RssAnon sampled every 10 ms (what it allocated itself). Printed: each run's peaks
and time, and per storage the ratios large / small, next to the ratio of the features'
sizes. (The CLI's imports alone, torch among them, peak at ~950 MiB of RSS on this machine:
the floor of both columns.)

    .venv/bin/python benchmarks/bench_alignet_pool_import.py [--quick] [--code DIR]
        [--baseline DIR] [--work DIR]

``--code DIR``: the checkout whose CLI runs (default: this one); ``--baseline DIR``: also run
another checkout's (e.g. ``git archive`` of the commit before a change) on the same sizes and
print the ratio of their peaks at the large size. ``--quick``: 2 k and 20 k rows. The files
(~1 GB at 200 k rows) are written block by block under ``--work`` and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignet_engine.base.types import ImageSet  # noqa: E402
from alignet_engine.store import Project  # noqa: E402

DIM, K = 1152, 500
MIB = 2**20


def write_pool(folder: Path, n: int, *, compressed: bool, seed: int = 0) -> tuple[Path, Path]:
    """``representations.npz`` (n × DIM float32 features, n int32 cluster ids) and
    ``imagenet2012_filenames.npy``, written in blocks (the generator needs no n × DIM array)."""
    rng = np.random.default_rng(seed)
    npz = folder / ("representations-deflated.npz" if compressed else "representations.npz")
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(npz, "w", compression=mode, compresslevel=1, allowZip64=True) as zf:
        with zf.open("representations.npy", "w", force_zip64=True) as fh:
            header = {"descr": "<f4", "fortran_order": False, "shape": (n, DIM)}
            np.lib.format.write_array_header_1_0(fh, header)
            for lo in range(0, n, 8192):
                rows = min(8192, n - lo)
                fh.write(rng.standard_normal((rows, DIM), dtype=np.float32).tobytes())
        with zf.open("clusters.npy", "w") as fh:
            np.lib.format.write_array(fh, rng.integers(0, K, size=n).astype(np.int32))
    names = folder / "imagenet2012_filenames.npy"
    np.save(names, tfds_names(n))
    return npz, names


def tfds_names(n: int) -> np.ndarray:
    """(n,) ImageNet-style file names in a shuffled order (TFDS's is not sorted by name)."""
    names = np.array([f"n{1440764 + i % 1000:08d}_{i}.JPEG" for i in range(n)])
    return names[np.random.default_rng(1).permutation(n)]


def make_project(path: Path, n: int) -> None:
    """A project whose image set 'pool' holds the n images (sorted paths, no files needed:
    the import matches rows to paths by name)."""
    paths = sorted(f"/imagenet/train/{s.split('_')[0]}/{s}" for s in tfds_names(n).tolist())
    with Project.create(path, overwrite=True) as project:
        project.write_imageset("pool", ImageSet(tuple(paths), tuple(p[16:25] for p in paths)), {})


def _anon_mib(pid: int) -> float:
    """The process's resident anonymous memory (RssAnon), MiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_import(code: Path, project: Path, npz: Path, names: Path) -> tuple[float, float, float]:
    """(peak RSS MiB, peak anonymous MiB, seconds) of one ``import-alignet-pool`` child."""
    cmd = [sys.executable, "-m", "alignet_engine.cli", "import-alignet-pool", str(project)]
    cmd += [str(npz), "--set", "pool", "--filenames", str(names), "--json"]
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        # cwd: ``python -m`` puts the working folder first on sys.path, before PYTHONPATH
        child = subprocess.Popen(cmd, env=env, cwd=code, stdout=out, stderr=err)
        anon = [0.0]
        done = threading.Event()

        def sample() -> None:  # every 10 ms, as benchmarks/bench_scale.py does
            while not done.wait(0.01):
                anon[0] = max(anon[0], _anon_mib(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"import failed ({child.returncode}):\n{err.read().decode()[-3000:]}")
        result = json.loads(out.read())
        assert result["items"] == result["file_rows"] and result["dim"] == DIM, result
        return usage.ru_maxrss / 1024, anon[0], seconds


def measure(code: Path, work: Path, sizes: tuple[int, int], compressed: bool) -> list[float]:
    """Print one row per size for the CLI of ``code``; returns the peak RSS per size."""
    storage = "deflated" if compressed else "stored"
    peaks, anons = [], []
    for n in sizes:
        npz, names = write_pool(work, n, compressed=compressed)
        project = work / "pool.alignet"
        make_project(project, n)
        peak, anon, seconds = run_import(code, project, npz, names)
        peaks.append(peak)
        anons.append(anon)
        size = n * DIM * 4 / MIB
        print(f"{storage:<9} {n:>8} {size:>13.0f} {peak:>13.0f} {anon:>14.0f} {seconds:>7.1f}")
        for f in work.iterdir():
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    added = (sizes[1] - sizes[0]) * DIM * 4 / MIB
    print(
        f"  ratio large/small: peak RSS {peaks[1] / peaks[0]:.2f}, peak anon "
        f"{anons[1] / anons[0]:.2f} (features {sizes[1] / sizes[0]:.0f}x); peak RSS grew "
        f"{(peaks[1] - peaks[0]) / added:.2f}x the added features' bytes"
    )
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 k and 20 k rows")
    ap.add_argument("--sizes", type=int, nargs=2, help="small and large row counts")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose CLI runs")
    ap.add_argument("--baseline", type=Path, help="also run this checkout's CLI (e.g. before)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: the system's)")
    ap.add_argument("--storage", choices=("stored", "deflated", "both"), default="both")
    args = ap.parse_args()
    sizes = args.sizes or ((2_000, 20_000) if args.quick else (20_000, 200_000))
    storages = {"stored": [False], "deflated": [True], "both": [False, True]}[args.storage]
    codes = [args.code] + ([args.baseline] if args.baseline else [])
    work = Path(tempfile.mkdtemp(prefix="bench-pool-", dir=args.work))
    print(f"features {DIM}-d float32, k = {K}; scratch {work}")
    try:
        large: dict[Path, list[float]] = {}
        for code in codes:
            print(f"code: {code}")
            print(
                f"{'storage':<9} {'rows':>8} {'features MiB':>13} {'peak RSS MiB':>13} "
                f"{'peak anon MiB':>14} {'time s':>7}"
            )
            large[code] = [measure(code, work, sizes, c)[1] for c in storages]
        if args.baseline:
            ratios = ", ".join(
                f"{'deflated' if c else 'stored'} {a / b:.2f}"
                for c, a, b in zip(storages, large[args.code], large[args.baseline], strict=True)
            )
            print(f"peak RSS at {sizes[1]} rows, {args.code} / {args.baseline}: {ratios}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
