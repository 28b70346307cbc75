"""Does the Distillation page's plot stall the event loop on a 100k-step run?

Feeds a synthetic 100k-step stream (the distillation's curves: loss, triplet, agreement, lr,
grad_norm, drift every step; val_agreement every 1,000 steps) into the live plots, offscreen,
in batches of ``--batch`` steps every 20 ms (a run five times faster than the engine's
~200 ms batches, to stress the plot), and measures the gaps between ticks of a 10 ms QTimer
on the GUI thread (the event-loop stalls) and the longest paint.

Baseline, in the same run: the previous drawing (every curve's full buffer handed to
pyqtgraph, with its peak downsampling and clip-to-view, every plot repainted per redraw).
Prints absolute ms (this machine is shared: compare the ratio) and new / baseline ratios.

    .venv/bin/python benchmarks/bench_gui_curves.py [--steps 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from alignet_app.widgets.plots import LiveCurves, default_group
from alignet_engine.jobs import LossBatch

GROUPS = (
    "Losses",
    "Agreement (train batch, validation)",
    "Learning rate",
    "Gradient norm (before clipping)",
    "Drift from θ₀ (‖θ − θ₀‖ / ‖θ₀‖)",
)


def stream(steps: int, batch: int):
    rng = np.random.default_rng(0)
    for start in range(1, steps + 1, batch):
        s = np.arange(start, min(steps + 1, start + batch))
        loss = 1.0 / np.sqrt(s) + 0.05 * rng.random(s.size)
        values = {
            "loss": loss,
            "triplet": loss * 0.9,
            "agreement": 1 - loss / 2,
            "lr": np.minimum(1.0, s / 5000) * 1e-4,
            "grad_norm": 1 + rng.random(s.size),
            "drift": np.sqrt(s) / 1000,
        }
        yield LossBatch("distill", s, values)
        val = s[s % 1000 == 0]
        if val.size:
            yield LossBatch("distill", val, {"val_agreement": 1 - 1.0 / np.sqrt(val)})


class OldCurves(pg.GraphicsLayoutWidget):
    """The drawing before this change: full buffers, pyqtgraph downsampling, all plots."""

    def __init__(self) -> None:
        super().__init__()
        self.setBackground("w")
        self.plots = {}
        for i, g in enumerate(GROUPS):
            p = self.addPlot(row=i // 3, col=i % 3)
            p.setDownsampling(auto=True, mode="peak")
            p.setClipToView(True)
            p.addLegend()
            self.plots[g] = p
        self.data: dict[str, list[np.ndarray]] = {}
        self.items: dict[str, pg.PlotDataItem] = {}
        self.dirty: set[str] = set()
        self.last_paint = 0.0
        self.max_paint = 0.0
        self.last = 0.0
        t = QTimer(self)
        t.setInterval(40)
        t.timeout.connect(self.redraw)
        t.start()
        self._t = t

    def paintEvent(self, e):
        t0 = time.perf_counter()
        super().paintEvent(e)
        self.last_paint = time.perf_counter() - t0
        self.max_paint = max(self.max_paint, self.last_paint)

    def add_batch(self, b: LossBatch) -> None:
        for n, v in b.values.items():
            if n not in self.items:
                self.items[n] = self.plots[default_group(n)].plot([], [], name=n, pen="b")
                self.data[n] = [np.zeros(0), np.zeros(0)]
            x, y = self.data[n]
            self.data[n] = [np.concatenate([x, b.steps]), np.concatenate([y, v])]
            self.dirty.add(n)

    def redraw(self) -> None:
        now = time.perf_counter()
        if not self.dirty or now - self.last < 4 * self.last_paint:
            return
        self.last = now
        for n in self.dirty:
            self.items[n].setData(*self.data[n])
        self.dirty = set()


def measure(widget, feed, steps: int, batch: int) -> dict:
    app = QApplication.instance()
    widget.resize(1000, 560)
    widget.show()
    settle = time.perf_counter() + 0.5  # the first paint of the empty plots: before the run
    while time.perf_counter() < settle:
        app.processEvents()
        time.sleep(0.001)
    ticks: list[float] = []
    tick = QTimer()
    tick.setInterval(10)
    tick.timeout.connect(lambda: ticks.append(time.perf_counter()))
    events = iter(list(stream(steps, batch)))
    done = [False]

    def push() -> None:
        for ev in events:
            feed(ev)
            if "val_agreement" not in ev.values:
                return
        done[0] = True

    feeder = QTimer()
    feeder.setInterval(20)
    feeder.timeout.connect(push)
    tick.start()
    feeder.start()
    t0 = time.perf_counter()
    while not done[0]:
        app.processEvents()
        time.sleep(0.001)
    # let the last redraws land
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)
    wall = time.perf_counter() - t0
    tick.stop()
    feeder.stop()
    gaps = np.diff(np.asarray(ticks)) * 1000
    last_quarter = gaps[int(0.75 * len(gaps)) :]
    return {
        "wall_s": round(wall, 2),
        "max_gap_ms": round(float(gaps.max()), 1),
        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
        "p50_gap_ms": round(float(np.median(gaps)), 1),
        "last_quarter_p99_ms": round(float(np.percentile(last_quarter, 99)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    QApplication.instance() or QApplication([])
    old = OldCurves()
    base = measure(old, old.add_batch, args.steps, args.batch)
    base["max_paint_ms"] = round(old.max_paint * 1000, 1)
    old.close()
    new = LiveCurves(GROUPS, columns=3, best=("val_agreement", "max"))
    new.clear(live=True)
    new.set_planned(args.steps)
    res = measure(new, new.add_batch, args.steps, args.batch)
    res["max_paint_ms"] = round(new.clock.max_paint_s * 1000, 1)
    res["drawn_points_loss"] = new.drawn_points("loss")
    res["points_loss"] = new.point_count("loss")
    print(json.dumps({"baseline": base, "new": res}, indent=1))
    for key in ("max_gap_ms", "p99_gap_ms", "last_quarter_p99_ms", "max_paint_ms"):
        print(f"{key}: new / baseline = {res[key] / base[key]:.2f}")


if __name__ == "__main__":
    main()
