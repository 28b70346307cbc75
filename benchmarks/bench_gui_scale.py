"""Longest GUI event-loop stall while browsing a 200 k-image pool and 10 M triplets.

Builds a project (offscreen) holding a pool of ``--pool`` real image files (the first files
of an ImageNet-layout folder, e.g. the one ``bench_scale.py`` makes), 64-d features, a
k = 500 clusters run and a ``--triplets``-row triplet run; then drives the main window:

data      the Data page shows the pool's grid (thumbnails decode in the background) and
          jumps to 30 random scroll positions, repainting each;
clusters  the Clusters page loads the run's overview and its pool map (a labelled sample);
inspector the Triplets page opens the run, jumps to 30 random rows, steps 50 rows by key.

A 10 ms QTimer ticks on the GUI thread throughout; a gap between two ticks is a stall the
user would feel. Printed per phase: the longest gap and the 99th percentile, for the full
sizes and for a baseline of 1/100 the pool and triplets measured in the same run.

    PYTHONPATH=. QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui_scale.py \
        --tree /tmp/alignet-bench-scale/full/pool-1280000 --pool 200000 --triplets 10000000
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["ALIGNET_NO_DIALOGS"] = "1"

import numpy as np

from alignet_engine.base.types import ImageSet
from alignet_engine.store import Project

K = 500
D = 64


def pool_files(tree: Path, n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` files of an ImageNet-layout folder (synset order), with categories."""
    paths: list[str] = []
    cats: list[str] = []
    for syn in sorted(os.listdir(tree)):
        for name in sorted(os.listdir(tree / syn)):
            paths.append(str(tree / syn / name))
            cats.append(syn)
            if len(paths) == n:
                return paths, cats
    return paths, cats


def build(path: Path, paths: list[str], cats: list[str], n_rows: int) -> None:
    n = len(paths)
    rng = np.random.default_rng(0)
    with Project.create(path, overwrite=True) as p:
        p.write_imageset("pool", ImageSet(paths, cats), {})
        params = {"image_set": "pool", "model": "m", "layer": "", "pooling": "auto"}
        rid = p.begin_job("features", params)
        p.write_run(
            "features",
            rid,
            slot="features:pool:m",
            params=params,
            arrays={"X": rng.standard_normal((n, D), dtype=np.float32)},
            summary={"n": n},
        )
        labels = rng.integers(0, K, n)
        params = {"image_set": "pool", "model": "m", "transform": None, "k": K}
        rid = p.begin_job("clusters", params)
        nearest = [
            {
                "cluster": c,
                "size": int((labels == c).sum()),
                "nearest": np.flatnonzero(labels == c)[:8].tolist(),
            }
            for c in range(K)
        ]
        p.write_run(
            "clusters",
            rid,
            slot="clusters",
            params=params,
            arrays={"labels": labels, "centroids": np.zeros((K, D), np.float32)},
            summary={
                "k": K,
                "clusters": nearest,
                "sizes": np.bincount(labels, minlength=K).tolist(),
            },
        )
        trip = rng.integers(0, n, size=(n_rows, 3))
        sims = np.sort(rng.normal(size=(n_rows, 3)).astype(np.float32), axis=1)[:, ::-1]
        is_val = np.zeros(n_rows, bool)
        is_val[-max(1, n_rows // 100) :] = True
        params = {"strategy": "cluster_boundary", "n_triplets": n_rows, "n_val": 0}
        rid = p.begin_job("triplets", params)
        p.write_run(
            "triplets",
            rid,
            slot="triplets",
            params=params,
            arrays={"triplets": trip, "sims": np.ascontiguousarray(sims), "is_val": is_val},
            summary={"n_train": n_rows, "n_val": 0, "image_set": "pool"},
        )


class Ticks:
    """Timestamps of a 10 ms QTimer on the GUI thread, split into named phases."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.times: list[float] = []
        self.marks: list[tuple[str, int]] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))
        self.timer.start()

    def phase(self, name: str) -> None:
        self.marks.append((name, len(self.times)))

    def report(self) -> dict[str, tuple[float, float]]:
        out = {}
        bounds = [*self.marks, ("end", len(self.times))]
        for (name, a), (_, b) in itertools.pairwise(bounds):
            t = np.asarray(self.times[max(0, a - 1) : b])
            gaps = np.diff(t) * 1000 if t.size > 1 else np.zeros(1)
            out[name] = (float(gaps.max()), float(np.percentile(gaps, 99)))
        return out


def pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def wait_for(app, cond, timeout: float = 600.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError("the GUI did not get there in time")
        app.processEvents()
        time.sleep(0.005)


def measure(app, path: Path) -> dict[str, tuple[float, float]]:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from alignet_app.main_window import MainWindow

    rng = np.random.default_rng(1)
    window = MainWindow()
    window.resize(1440, 900)
    window.show()
    app.processEvents()
    ticks = Ticks()
    ticks.phase("open project")
    window.open_project(str(path))
    pump(app, 0.5)

    ticks.phase("data page")
    window.show_page("data")
    data = window.page("data")
    data.show_image_set("pool")
    pump(app, 1.0)
    bar = data.grid.view.verticalScrollBar()
    for _ in range(30):
        bar.setValue(int(rng.integers(0, max(1, bar.maximum()) + 1)))
        data.grid.view.viewport().repaint()
        pump(app, 0.1)

    ticks.phase("clusters page")
    window.show_page("clusters")
    clusters = window.page("clusters")
    wait_for(app, lambda: clusters.pool_map is not None and not window.session.runner.busy)
    pump(app, 0.5)

    ticks.phase("inspector")
    window.show_page("triplets")
    page = window.page("triplets")
    wait_for(app, lambda: page.view is not None)
    n = page.model.rowCount()
    table = page.table
    for row in rng.integers(0, n, size=30):
        table.select_row(int(row))
        pump(app, 0.05)
    table.setFocus()
    for _ in range(50):
        QTest.keyClick(table, Qt.Key.Key_Down)
        pump(app, 0.02)
    ticks.timer.stop()
    window.session.shutdown()
    window.close()
    return ticks.report()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", required=True, help="an ImageNet-layout folder of image files")
    ap.add_argument("--pool", type=int, default=200_000)
    ap.add_argument("--triplets", type=int, default=10_000_000)
    ap.add_argument("--work", default="/tmp/alignet-bench-scale")
    args = ap.parse_args()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    work = Path(args.work)
    paths, cats = pool_files(Path(args.tree), args.pool)
    sizes = {
        "baseline": (max(100, args.pool // 100), max(1000, args.triplets // 100)),
        "full": (len(paths), args.triplets),
    }
    results = {}
    for label, (n, m) in sizes.items():
        project = work / f"gui-{n}-{m}.alignet"
        t0 = time.perf_counter()
        build(project, paths[:n], cats[:n], m)
        print(f"built {label}: {n:,} images, {m:,} triplets in {time.perf_counter() - t0:.0f} s")
        results[label] = measure(app, project)
    print("longest event-loop stall per phase, ms (99th percentile of the 10 ms ticks' gaps)")
    for phase in results["full"]:
        b, f = results["baseline"][phase], results["full"][phase]
        print(
            f"  {phase:14s} baseline {b[0]:7.0f} ({b[1]:5.0f})   full {f[0]:7.0f} ({f[1]:5.0f})"
            f"   ratio of longest {f[0] / max(b[0], 1e-9):5.1f}×"
        )


if __name__ == "__main__":
    main()
