"""Is the triplet inspector smooth on ten million triplets?

Builds a project with a 10 M-row triplet run over a 100 k-item pool (the images are a few
demo files repeated) and a 1 M-row one, then measures in this process, offscreen:

(a) opening the page on the run (sources, lazy view, model reset, first row shown);
(b) jumping to random rows: fetch and paint a screenful (select, scroll, ``repaint()``);
(c) a filter over all rows (entropy + cluster of the odd one, in 1 M-row chunks);
(d) arrow-key stepping: one Down key press → selection, detail panel, repaint.

Baselines measured in the same run: the 1 M-row run, and the bare h5py reads a screenful
needs (one slice of triplets + sims + is_val). Prints absolute ms and ratios.

    .venv/bin/python benchmarks/bench_inspector.py [--rows 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["ALIGNET_NO_DIALOGS"] = "1"

import h5py
import numpy as np

from alignet_engine.base.types import ImageSet
from alignet_engine.store import Project

N_ITEMS = 100_000
K = 50


def build(path: Path, n_rows: int, images: list[str]) -> float:
    """Write a project with an ``n_rows`` triplet run; returns seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    with Project.create(path, overwrite=True) as p:
        paths = tuple(images[i % len(images)] for i in range(N_ITEMS))
        p.write_imageset("pool", ImageSet(paths, ("",) * N_ITEMS), {})
        params = {"image_set": "pool", "model": "m", "transform": None, "k": K}
        rid = p.begin_job("clusters", params)
        p.write_run(
            "clusters",
            rid,
            slot="clusters",
            params=params,
            arrays={"labels": rng.integers(0, K, N_ITEMS), "centroids": np.zeros((K, 2))},
            summary={"k": K, "clusters": []},
        )
        trip = rng.integers(0, N_ITEMS, size=(n_rows, 3))
        sims = np.sort(rng.normal(size=(n_rows, 3)).astype(np.float32), axis=1)[:, ::-1]
        is_val = np.zeros(n_rows, bool)
        is_val[-10_000:] = True
        params = {"strategy": "cluster_boundary", "n_triplets": n_rows - 10_000, "n_val": 10_000}
        rid = p.begin_job("triplets", params)
        p.write_run(
            "triplets",
            rid,
            slot="triplets",
            params=params,
            arrays={"triplets": trip, "sims": np.ascontiguousarray(sims), "is_val": is_val},
            summary={"n_train": n_rows - 10_000, "n_val": 10_000, "image_set": "pool"},
        )
        del trip, sims
    return time.perf_counter() - t0


def ms(seconds: list[float]) -> str:
    return f"median {1000 * statistics.median(seconds):7.2f} ms, max {1000 * max(seconds):7.2f} ms"


def measure(app, path: Path, label: str, jumps: int = 50, steps: int = 100) -> dict[str, float]:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from alignet_app.main_window import MainWindow
    from alignet_engine.views import browse

    window = MainWindow()
    window.resize(1440, 900)
    window.show()
    app.processEvents()
    t0 = time.perf_counter()
    window.open_project(str(path))
    window.show_page("triplets")
    page = window.page("triplets")
    page.repaint()
    t_open = time.perf_counter() - t0
    assert page.view is not None
    n = page.model.rowCount()
    table = page.table
    rng = np.random.default_rng(1)

    # (b) random jumps: a cold block each time (the cache is keyed by block)
    jump_t = []
    for row in rng.integers(0, n, size=jumps):
        t0 = time.perf_counter()
        table.select_row(int(row))
        table.viewport().repaint()
        page.detail.repaint()
        jump_t.append(time.perf_counter() - t0)

    # bare baseline: the h5py reads a screenful needs (same random positions)
    with h5py.File(path, "r", locking=False) as f:
        g = f[page.view.ref]
        bare_t = []
        for row in rng.integers(0, n, size=jumps):
            t0 = time.perf_counter()
            s = int(row)
            _ = g["triplets"][s : s + 40], g["sims"][s : s + 40], g["is_val"][s : s + 40]
            bare_t.append(time.perf_counter() - t0)

    # (c) filter over all rows (the page would submit this as a job; timed directly here)
    spec = browse.TripletFilter(entropy_min=0.8, cluster=3, cluster_of="odd")
    t0 = time.perf_counter()
    result = None
    job = browse.filter_triplets(page.view, spec)
    try:
        while True:
            next(job)
    except StopIteration as stop:
        result = stop.value
    t_filter = time.perf_counter() - t0

    # (d) arrow-key stepping
    table.select_row(int(rng.integers(0, n - steps - 1)))
    table.setFocus()
    step_t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        QTest.keyClick(table, Qt.Key.Key_Down)
        table.viewport().repaint()
        page.detail.repaint()
        step_t.append(time.perf_counter() - t0)
    window.session.shutdown()
    window.close()
    print(f"--- {label}: {n:,} rows")
    print(f"(a) open page + model + first row : {1000 * t_open:8.1f} ms")
    print(f"(b) jump + fetch + paint a screen : {ms(jump_t)}")
    print(f"    bare h5py slice of 40 rows    : {ms(bare_t)}")
    print(f"(c) filter all rows               : {1000 * t_filter:8.1f} ms -> {result.count:,} rows")
    print(f"(d) arrow-key step + repaint      : {ms(step_t)}")
    return {
        "open": t_open,
        "jump": statistics.median(jump_t),
        "bare": statistics.median(bare_t),
        "filter": t_filter,
        "step": statistics.median(step_t),
        "n": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keep", help="build the projects in this folder and keep them")
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    demo = Path("/tmp/gui-demo/images")
    images = sorted(str(f) for f in demo.rglob("*.png"))[:50] or ["/nonexistent.png"]
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-inspector-"))
    folder.mkdir(parents=True, exist_ok=True)
    small, big = folder / "small.alignet", folder / "big.alignet"
    n_small = max(1, args.rows // 10)
    if not small.exists():
        print(f"building {n_small:,} rows: {build(small, n_small, images):.1f} s")
    if not big.exists():
        print(f"building {args.rows:,} rows: {build(big, args.rows, images):.1f} s")
    base = measure(app, small, "baseline (1/10 of the rows)")
    res = measure(app, big, "full")
    print("--- ratios full / baseline (1.0 = independent of size)")
    for key in ("open", "jump", "filter", "step"):
        print(f"{key:>7}: {res[key] / base[key]:6.2f}x  (rows: {res['n'] / base['n']:.0f}x)")
    print(f"   jump vs bare h5py slice (full): {res['jump'] / res['bare']:.1f}x")
    if not args.keep:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
