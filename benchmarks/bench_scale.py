"""Issue 9's figures in one run: a study of ImageNet shape on one workstation.

Sections (each selectable; every heavy step runs in a child process of its own, so each peak
RSS is that step's alone; ``peak RSS`` is the kernel's high-water mark (VmHWM, file-backed
pages of a memory map included), ``peak anon`` the largest anonymous resident memory sampled
every 10 ms, i.e. what the step itself allocated):

a  a small write on a project holding >= 6 GB of features vs an empty one
   (``benchmarks/bench_store.py``, from the store work; skipped with a note if absent).
b  importing 1.28 M manifest paths (existence check, compact image set, written to a
   project), and the same tree as an ImageNet-layout folder. The files exist: 1.28 M files of
   one tiny PNG (~70 bytes) in 1000 synset folders, created once under the work folder.
   Baseline in the same run: one ``os.path.isfile`` per path (the existence check before).
c  k-means, k = 500, on 1.28 M × 1280 float32 memory-mapped synthetic features (1000
   Gaussian classes, stored in class order as an ImageNet folder is), CPU, default budget.
d  10 M cluster-boundary triplets with teacher labels from the 1.28 M memory-mapped pool
   (labels from c) vs today's path at 100 k (the pool in memory), as the baseline.
e  distillation (``benchmarks/bench_distill_scale.py`` from the distill work, if present).
f  GUI stalls browsing the 200 k pool and 10 M triplets (``benchmarks/bench_gui_scale.py``).

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--sections bcdf] [--work DIR]

``--quick``: small sizes (20 k pool, 64-d, k = 20, 200 k triplets) to check that it runs.
The machine is shared and noisy: read the ratios, and times as orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 2**20


def tiny_png() -> bytes:
    """A 4×4 grey PNG (~70 bytes): every pool file is a real, decodable image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buf, format="PNG")
    return buf.getvalue()


FULL = {
    "n_pool": 1_280_000,
    "n_classes": 1000,
    "d": 1280,
    "k": 500,
    "m": 10_000_000,
    "n_base": 100_000,
    "gui_pool": 200_000,
    "gui_triplets": 10_000_000,
}
QUICK = {
    "n_pool": 20_000,
    "n_classes": 100,
    "d": 64,
    "k": 20,
    "m": 200_000,
    "n_base": 5_000,
    "gui_pool": 5_000,
    "gui_triplets": 200_000,
}


# ------------------------------------------------------------------ measuring in a child
class PeakSampler:
    """Samples this process's anonymous resident memory every 10 ms (RssAnon, /proc)."""

    def __init__(self) -> None:
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, self._read())
            time.sleep(0.01)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, self._read())


def child(task: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``task`` in a fresh interpreter; returns its result with seconds and peaks."""
    cmd = [sys.executable, __file__, "--child", json.dumps({"task": task, **kwargs})]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _in_child(spec: dict[str, Any]) -> None:
    task = TASKS[spec.pop("task")]
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        result = task(**spec)
        seconds = time.perf_counter() - t0
    result.update(
        seconds=seconds,
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        peak_anon=sampler.peak_anon,
    )
    print(json.dumps(result))


def fmt(r: dict[str, Any]) -> str:
    return (
        f"{r['seconds']:8.1f} s   peak RSS {r['peak_rss'] / MIB:8.0f} MiB   "
        f"peak anon {r['peak_anon'] / MIB:8.0f} MiB"
    )


# ------------------------------------------------------------------ data sets
def make_tree(work: Path, n: int, n_classes: int) -> tuple[Path, Path]:
    """An ImageNet-layout folder of ``n`` tiny PNGs and its manifest CSV (made once)."""
    tree, manifest = work / f"pool-{n}", work / f"pool-{n}.csv"
    if (work / f"pool-{n}.done").exists():
        return tree, manifest
    per = -(-n // n_classes)
    png = tiny_png()
    t0 = time.perf_counter()
    with open(manifest, "w") as csv:
        csv.write("path,category\n")
        made = 0
        for c in range(n_classes):
            syn = f"n{c:08d}"
            (tree / syn).mkdir(parents=True, exist_ok=True)
            for i in range(min(per, n - made)):
                name = f"{syn}_{i}.png"
                with open(tree / syn / name, "wb") as fh:
                    fh.write(png)
                csv.write(f"pool-{n}/{syn}/{name},{syn}\n")
            made += min(per, n - made)
    (work / f"pool-{n}.done").write_text("")
    print(f"  (made {n} files in {time.perf_counter() - t0:.0f} s)")
    return tree, manifest


def make_features(work: Path, n: int, d: int, n_classes: int) -> Path:
    """(n, d) float32 memmap: Gaussian classes (unit-norm-scale centres + noise), class order."""
    path = work / f"features-{n}x{d}.f32"
    if path.exists() and path.stat().st_size == n * d * 4:
        return path
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n_classes, d), dtype=np.float32) * np.float32(2 / np.sqrt(d))
    cls = np.sort(rng.integers(0, n_classes, size=n))
    tmp = path.with_suffix(".tmp")  # renamed when complete: a killed run is not reused
    Z = np.memmap(tmp, dtype=np.float32, mode="w+", shape=(n, d))
    for s in range(0, n, 20_000):
        block = rng.standard_normal((min(20_000, n - s), d), dtype=np.float32)
        block *= np.float32(1 / np.sqrt(d))
        block += centres[cls[s : s + 20_000]]
        Z[s : s + block.shape[0]] = block
    Z.flush()
    del Z
    tmp.replace(path)
    return path


# ------------------------------------------------------------------ child tasks
def task_isfile(manifest: str) -> dict[str, Any]:
    base = Path(manifest).parent
    with open(manifest) as fh:
        next(fh)
        paths = [os.path.join(base, line.split(",", 1)[0]) for line in fh]
    t0 = time.perf_counter()
    ok = sum(os.path.isfile(p) for p in paths)
    return {"n": len(paths), "ok": ok, "check_seconds": time.perf_counter() - t0}


def task_import(source: str, project: str) -> dict[str, Any]:
    from alignet_engine.data.images import read_image_folder, read_image_manifest
    from alignet_engine.store import Project

    t0 = time.perf_counter()
    images = read_image_folder(source) if Path(source).is_dir() else read_image_manifest(source)
    t_read = time.perf_counter() - t0
    with Project.create(project, overwrite=True) as p:
        p.write_imageset("pool", images, {"source": source})
    t_write = time.perf_counter() - t0 - t_read
    with Project.open(project, readonly=True) as p:
        t1 = time.perf_counter()
        back = p.imageset("pool")
        t_back = time.perf_counter() - t1
    assert len(back) == len(images) and back.paths[-1] == images.paths[-1]
    return {
        "n": len(images),
        "read_seconds": t_read,
        "write_seconds": t_write,
        "reopen_seconds": t_back,
        "stored_mib": (
            images.path_bytes.nbytes + images.path_offsets.nbytes + images.category_codes.nbytes
        )
        / MIB,
    }


def task_kmeans(features: str, n: int, d: int, k: int, labels_out: str) -> dict[str, Any]:
    from alignet_engine.align.clustering import kmeans

    Z = np.memmap(features, dtype=np.float32, mode="r", shape=(n, d))
    labels, _, inertia = kmeans(Z, k, random_state=0, device="cpu")
    np.save(labels_out, labels)
    return {"inertia": inertia, "clusters_used": int(np.unique(labels).size)}


def task_triplets(features: str, n: int, d: int, m: int, labels: str, in_memory: bool) -> dict:
    from alignet_engine.align.triplet_sampling import sample_triplets, teacher_odd_one_out

    lab = np.load(labels)[:n]
    Z = np.memmap(features, dtype=np.float32, mode="r", shape=(n, d))
    if in_memory:  # today's stage: the whole (transformed) pool is an in-memory array
        Z = np.array(Z)
    t0 = time.perf_counter()
    raw = sample_triplets("cluster_boundary", m, labels=lab, random_state=0)
    t_sample = time.perf_counter() - t0
    trip, sims = teacher_odd_one_out(Z, raw, device="cpu")
    return {
        "sample_seconds": t_sample,
        "label_seconds": time.perf_counter() - t0 - t_sample,
        "rows": int(trip.shape[0]),
        "odd_last": bool((sims[:, 2] <= sims[:, 0]).all()),
    }


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "isfile": task_isfile,
    "import": task_import,
    "kmeans": task_kmeans,
    "triplets": task_triplets,
}


# ------------------------------------------------------------------ sections
def run_script(name: str, quick: bool) -> None:
    script = ROOT / "benchmarks" / name
    if not script.exists():
        print(f"  {name} is not in this checkout (not landed yet): skipped")
        return
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    print("  " + (out.stdout + out.stderr).strip().replace("\n", "\n  "))


def section_b(work: Path, size: dict[str, int]) -> None:
    n = size["n_pool"]
    tree, manifest = make_tree(work, n, size["n_classes"])
    base = child("isfile", manifest=str(manifest))
    man = child("import", source=str(manifest), project=str(work / "import-m.alignet"))
    fold = child("import", source=str(tree), project=str(work / "import-f.alignet"))
    print(f"  one os.path.isfile per path (before): {base['check_seconds']:6.1f} s")
    for label, r in (("manifest", man), ("folder", fold)):
        print(f"  {label:8s} import of {r['n']} paths: {fmt(r)}")
        print(
            f"           read+check {r['read_seconds']:.1f} s, write to project "
            f"{r['write_seconds']:.1f} s, read back {r['reopen_seconds']:.2f} s, "
            f"{r['stored_mib']:.0f} MiB of arrays"
        )


def section_c(work: Path, size: dict[str, int]) -> None:
    n, d, k = size["n_pool"], size["d"], size["k"]
    features = make_features(work, n, d, size["n_classes"])
    r = child(
        "kmeans", features=str(features), n=n, d=d, k=k, labels_out=str(work / f"labels-{n}.npy")
    )
    print(f"  k-means k={k} on {n} × {d} memmap ({n * d * 4 / 2**30:.1f} GiB): {fmt(r)}")
    print(f"           inertia {r['inertia']:.4g}, {r['clusters_used']} non-empty clusters")


def section_d(work: Path, size: dict[str, int]) -> None:
    n, d, m, nb = size["n_pool"], size["d"], size["m"], size["n_base"]
    features = make_features(work, n, d, size["n_classes"])
    labels = work / f"labels-{n}.npy"
    if not labels.exists():  # section c not run: the generating classes, merged in pairs
        rng = np.random.default_rng(0)
        np.save(labels, np.sort(rng.integers(0, size["n_classes"], size=n)) // 2)
    base = child(
        "triplets", features=str(features), n=nb, d=d, m=m, labels=str(labels), in_memory=True
    )
    big = child(
        "triplets", features=str(features), n=n, d=d, m=m, labels=str(labels), in_memory=False
    )
    print(f"  {m} triplets, {nb} pool in memory (today):   {fmt(base)}")
    print(f"  {m} triplets, {n} pool memory-mapped:  {fmt(big)}")
    print(
        f"           sampling {big['sample_seconds']:.1f} s + teacher labels "
        f"{big['label_seconds']:.1f} s; ratios (memmap {n} / today {nb}): time "
        f"{big['seconds'] / base['seconds']:.2f}×, peak RSS "
        f"{big['peak_rss'] / base['peak_rss']:.2f}×, peak anon "
        f"{big['peak_anon'] / base['peak_anon']:.2f}×"
    )


def section_f(work: Path, size: dict[str, int], quick: bool) -> None:
    tree, _ = make_tree(work, size["n_pool"], size["n_classes"])
    script = ROOT / "benchmarks" / "bench_gui_scale.py"
    cmd = [
        sys.executable,
        str(script),
        "--tree",
        str(tree),
        "--pool",
        str(size["gui_pool"]),
        "--triplets",
        str(size["gui_triplets"]),
        "--work",
        str(work),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    print("  " + (out.stdout + out.stderr).strip().replace("\n", "\n  "))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--sections", default="abcdef", help="which sections, e.g. 'bcd'")
    ap.add_argument("--work", default="/tmp/alignet-bench-scale", help="data sets (kept)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _in_child(json.loads(args.child))
        return
    size = QUICK if args.quick else FULL
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_scale ({'quick' if args.quick else 'full'} sizes: {size}); {os.cpu_count()} CPUs")
    for key, title, fn in (
        (
            "a",
            "a) small write on a >= 6 GB project vs an empty one",
            lambda: run_script("bench_store.py", args.quick),
        ),
        ("b", "b) importing the pool's paths", lambda: section_b(work, size)),
        ("c", "c) k-means", lambda: section_c(work, size)),
        ("d", "d) cluster-boundary triplets", lambda: section_d(work, size)),
        ("e", "e) distillation", lambda: run_script("bench_distill_scale.py", args.quick)),
        ("f", "f) GUI stalls", lambda: section_f(work, size, args.quick)),
    ):
        if key in args.sections:
            print(title)
            fn()


if __name__ == "__main__":
    main()
