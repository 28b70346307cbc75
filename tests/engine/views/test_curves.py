"""Min/max decimation and EMA smoothing of long curves (alignet_engine.views.curves)."""

from __future__ import annotations

import numpy as np
import pytest

from alignet_engine.views.curves import MinMaxDecimator, decimate, ema


def _reference_bins(x, y, b):
    """Per bin of b points: the (x, y) of its min and max, by a plain loop."""
    out = []
    for s in range(0, len(y) // b * b, b):
        yy = y[s : s + b]
        i, j = s + int(np.argmin(yy)), s + int(np.argmax(yy))
        out.extend(sorted([(x[i], y[i]), (x[j], y[j])]))
    return out


def test_incremental_decimation_matches_a_direct_reduction_and_stays_bounded() -> None:
    rng = np.random.default_rng(0)
    n = 100_000
    x = np.arange(n, dtype=float)
    y = rng.normal(size=n).cumsum()
    y[54_321] = 1e6  # a spike must survive
    d = MinMaxDecimator(max_bins=256)
    for stop in range(0, n + 1, 997):  # appended in uneven batches, as a live run does
        d.update(x[:stop], y[:stop])
        px, py = d.points(x[:stop], y[:stop])
        assert len(px) <= 2 * 256 + d.bin
    d.update(x, y)
    px, py = d.points(x, y)
    assert len(px) <= 2 * 256 + d.bin
    assert 1e6 in py and py.min() == y.min()
    assert np.all(np.diff(px) >= 0)  # drawn left to right
    # the complete bins equal a direct reduction at the final bin size
    ref = _reference_bins(x, y, d.bin)
    got = list(zip(px[: len(ref)], py[: len(ref)], strict=True))
    assert got == [(float(a), float(b)) for a, b in ref]
    # the tail is drawn raw
    np.testing.assert_array_equal(py[len(ref) :], y[d.done :])


def test_short_series_are_drawn_as_they_are_and_nans_dropped() -> None:
    x = np.arange(10.0)
    y = np.array([1, 2, np.nan, 4, 5, 6, 7, 8, 9, 10.0])
    px, py = decimate(x, y, max_bins=64)
    np.testing.assert_array_equal(px, x[np.isfinite(y)])
    np.testing.assert_array_equal(py, y[np.isfinite(y)])


def test_ema_is_tensorboards_debiased_average() -> None:
    v = np.array([1.0, 3.0, np.nan, 2.0, 8.0])
    w = 0.6
    # by hand: s = w s + (1 - w) x over finite points, divided by 1 - w^(t+1)
    expected, s, t = [], 0.0, 0
    for x in v:
        if np.isnan(x):
            expected.append(expected[-1])
            continue
        s = w * s + (1 - w) * x
        t += 1
        expected.append(s / (1 - w**t))
    np.testing.assert_allclose(ema(v, w), expected)
    np.testing.assert_array_equal(ema(v, 0.0), v)
    assert np.isnan(ema(np.full(3, np.nan), 0.5)).all()
    with pytest.raises(ValueError, match="smoothing"):
        ema(v, 1.0)


def test_ema_fed_in_batches_equals_ema_of_the_whole_series() -> None:
    from alignet_engine.views.curves import EmaStream

    rng = np.random.default_rng(1)
    v = rng.normal(size=1000)
    v[[0, 10, 500]] = np.nan
    stream = EmaStream(0.9)
    parts = [stream.push(p) for p in np.array_split(v, 17)]
    np.testing.assert_allclose(np.concatenate(parts), ema(v, 0.9), equal_nan=True)
