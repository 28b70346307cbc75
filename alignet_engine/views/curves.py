"""What a plot draws of a long curve: a bounded min/max decimation and TensorBoard's EMA.

A 100k-step distillation logs 100k points per curve; a screen is ~1,000 px wide, and the
cost of painting a polyline grows with its points. :class:`MinMaxDecimator` keeps, per bin of
``bin`` consecutive points, the point with the smallest and the one with the largest y (in x
order), so every spike stays visible while at most ``2 * max_bins`` points are drawn. It is
incremental: appending k points costs O(k) (amortised; when the bins fill up, pairs of bins
merge, halving the count), so the cost of a redraw does not grow with the run.

:func:`ema` is TensorBoard's smoothing: an exponential moving average with weight ``w``,
debiased at the start (``s_t = (w s_{t-1} + (1 - w) x_t) / (1 - w^(t+1))`` with ``s_{-1} = 0``),
ignoring NaNs (a NaN keeps the previous smoothed value).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

#: bins kept by default: 1,024 bins → at most 2,048 drawn points, ~2 points per pixel of a
#: full-width plot
MAX_BINS = 1024


class MinMaxDecimator:
    """Incremental min/max decimation of a growing (x, y) series.

    Feed the full series' growing arrays to :meth:`update`; :meth:`points` returns the
    drawn points: per complete bin its min and max (x order), then the raw points of the
    incomplete last bin. x must be non-decreasing (steps); y may hold NaN (dropped).
    """

    def __init__(self, max_bins: int = MAX_BINS) -> None:
        if max_bins < 2:
            raise ValueError(f"max_bins must be >= 2, got {max_bins}")
        self.max_bins = max_bins
        self.bin = 1
        self.done = 0  # points of the source reduced into complete bins
        # per complete bin: x and y of its min and of its max (float64 (nb,) each)
        self._xmin = np.empty(0)
        self._ymin = np.empty(0)
        self._xmax = np.empty(0)
        self._ymax = np.empty(0)

    def reset(self) -> None:
        self.__init__(self.max_bins)  # type: ignore[misc]

    @property
    def n_bins(self) -> int:
        return int(self._ymin.size)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Reduce the points of ``x, y`` (the whole series so far) not reduced yet."""
        n = len(y)
        if n < self.done:  # the series was cleared and refilled
            self.reset()
        while True:
            stop = self.done + (n - self.done) // self.bin * self.bin
            if stop > self.done:
                self._reduce(x[self.done : stop], y[self.done : stop])
                self.done = stop
            if self.n_bins <= self.max_bins:
                return
            self._merge_pairs()

    def _reduce(self, x: np.ndarray, y: np.ndarray) -> None:
        b = self.bin
        xs = np.asarray(x, np.float64).reshape(-1, b)
        ys = np.asarray(y, np.float64).reshape(-1, b)
        finite = np.isfinite(ys)
        lo = np.where(finite, ys, np.inf).argmin(axis=1)
        hi = np.where(finite, ys, -np.inf).argmax(axis=1)
        rows = np.arange(ys.shape[0])
        self._xmin = np.concatenate([self._xmin, xs[rows, lo]])
        self._ymin = np.concatenate([self._ymin, ys[rows, lo]])
        self._xmax = np.concatenate([self._xmax, xs[rows, hi]])
        self._ymax = np.concatenate([self._ymax, ys[rows, hi]])

    def _merge_pairs(self) -> None:
        """Double the bin size: merge bins (0, 1), (2, 3), …; an odd last bin is re-reduced."""
        m = self.n_bins // 2 * 2
        odd = self.n_bins - m
        if odd:  # its points go back to the unreduced tail (read again at the new size)
            self.done -= self.bin
        pairs = np.arange(0, m, 2)

        def pick(xs: np.ndarray, ys: np.ndarray, better: np.ndarray) -> tuple[np.ndarray, ...]:
            choose_second = better
            return (
                np.where(choose_second, xs[pairs + 1], xs[pairs]),
                np.where(choose_second, ys[pairs + 1], ys[pairs]),
            )

        a, b = self._ymin[pairs], self._ymin[pairs + 1]
        self._xmin, self._ymin = pick(self._xmin, self._ymin, (b < a) | np.isnan(a))
        a, b = self._ymax[pairs], self._ymax[pairs + 1]
        self._xmax, self._ymax = pick(self._xmax, self._ymax, (b > a) | np.isnan(a))
        self.bin *= 2

    def points(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) float64 to draw for the series ``x, y`` (call :meth:`update` first)."""
        if self.bin == 1:  # not decimated yet: the points themselves
            px, py = np.asarray(x, np.float64), np.asarray(y, np.float64)
            keep = np.isfinite(py)
            return px[keep], py[keep]
        first = self._xmin <= self._xmax
        bx = np.empty(2 * self.n_bins)
        by = np.empty(2 * self.n_bins)
        bx[0::2] = np.where(first, self._xmin, self._xmax)
        by[0::2] = np.where(first, self._ymin, self._ymax)
        bx[1::2] = np.where(first, self._xmax, self._xmin)
        by[1::2] = np.where(first, self._ymax, self._ymin)
        tail_x = np.asarray(x[self.done :], np.float64)
        tail_y = np.asarray(y[self.done :], np.float64)
        px = np.concatenate([bx, tail_x])
        py = np.concatenate([by, tail_y])
        keep = np.isfinite(py)
        return px[keep], py[keep]


def decimate(
    x: np.ndarray, y: np.ndarray, max_bins: int = MAX_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation of a whole series at once (x non-decreasing, (n,) each)."""
    d = MinMaxDecimator(max_bins)
    d.update(x, y)
    return d.points(x, y)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average of ``values`` (n,) float64.

    weight in [0, 1): 0 returns the values unchanged; 0.99 averages over ~100 points.
    NaNs are skipped (the output keeps the last smoothed value there; leading NaNs stay NaN).
    """
    return EmaStream(weight).push(values)


class EmaStream:
    """:func:`ema` fed in pieces: ``push(values)`` returns the new values' smoothed points.

    The EMA is causal, so the smoothed series of a growing curve only grows: a live plot
    smooths each batch as it arrives, at O(batch) cost.
    """

    def __init__(self, weight: float) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"the smoothing weight must be in [0, 1), got {weight}")
        self.weight = weight
        self._state = 0.0  # the biased average s_{t-1}
        self._t = 0  # finite points seen
        self._last = np.nan  # the last debiased value (carried through NaNs)

    def push(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        w = self.weight
        if w == 0.0:
            return v.copy()
        out = np.empty(v.shape)
        finite = np.isfinite(v)
        f = v[finite]
        if f.size:
            # s_t = w s_{t-1} + (1 - w) x_t: a first-order IIR filter, continued from the state
            s, _ = lfilter([1.0 - w], [1.0, -w], f, zi=[w * self._state])
            self._state = float(s[-1])
            t = self._t + np.arange(1, f.size + 1, dtype=np.float64)
            self._t += f.size
            out[finite] = s / (1.0 - w**t)
        # NaNs keep the last smoothed value (leading ones stay NaN)
        last = self._last
        for i in np.flatnonzero(~finite):
            out[i] = out[i - 1] if i > 0 else last
        if v.size:
            self._last = float(out[-1])
        return out
