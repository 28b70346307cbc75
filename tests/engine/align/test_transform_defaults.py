"""The transform fit's automatic settings, the gLocal preset, and their CLI flags."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.align.transform import PRESETS, AffineTransform, FitSettings
from alignet_engine.store import Project


def test_automatic_settings_follow_the_problem_size() -> None:
    # THINGS-size: 450k training rows of 384-d features. Hand-computed from the documented
    # rules: batch = 2^floor(log2(450000/32)) = 2^13 capped at 8192; lr = 1e-3·√(8192/256);
    # 55 steps per epoch → patience ceil(100/55) = 2; λ = 3e-3·384²/450000.
    big = AffineTransform().resolved_settings(450_000, 1854, 384)
    assert big.batch_size == 8192
    assert big.lr == pytest.approx(1e-3 * math.sqrt(32))
    assert big.patience == 2
    assert big.lam == pytest.approx(3e-3 * 384**2 / 450_000)
    assert big.n_threads is None
    assert set(big.auto) == {"batch_size", "lr", "patience", "tol", "lam"}
    # demo-size: 1800 rows of 64-d features → gLocal's batch and lr, 8 steps → patience 13
    small = AffineTransform().resolved_settings(1800, 48, 64)
    assert (small.batch_size, small.lr, small.patience) == (256, 1e-3, 13)
    assert small.n_threads == 1  # 48·64² multiply-adds per step: one thread is faster
    assert small.lam == pytest.approx(3e-3 * 64**2 / 1800)
    # a tiny wide problem: λ capped at 1
    assert AffineTransform().resolved_settings(500, 48, 1280).lam == 1.0


def test_explicit_settings_and_the_glocal_preset_are_used_as_given() -> None:
    est = AffineTransform(
        lam=0.3, lr=0.02, batch_size=100, patience=4, tol=0.0, max_epochs=7, n_threads=1
    )
    assert est.resolved_settings(450_000, 1854, 384) == FitSettings(100, 0.02, 0.3, 7, 4, 0.0, 1)
    glocal = AffineTransform(**PRESETS["glocal"]).resolved_settings(450_000, 1854, 384)
    # method.md §2.7: batch 256, Adam 1e-3, ≤ 100 epochs, patience 15, min_delta 1e-4; λ 0.1
    assert glocal == FitSettings(256, 1e-3, 0.1, 100, 15, 1e-4, None)


def test_a_default_fit_is_as_good_as_glocal_settings_held_out() -> None:
    """Planted linear map, Luce-sampled answers: the automatic fit generalises to held-out
    triplets about as well as gLocal's settings, and records what it chose."""
    rng = np.random.default_rng(3)
    n, d = 120, 12
    X = rng.normal(size=(n, d))
    A = rng.normal(size=(d, d)) / np.sqrt(d) @ np.diag(np.linspace(0.1, 2.0, d))
    H = X @ A

    def answered(m: int) -> np.ndarray:
        t = np.array([rng.choice(n, 3, replace=False) for _ in range(m)])
        s = np.stack(
            [
                (H[t[:, 0]] * H[t[:, 1]]).sum(1),
                (H[t[:, 0]] * H[t[:, 2]]).sum(1),
                (H[t[:, 1]] * H[t[:, 2]]).sum(1),
            ],
            1,
        )
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        pair = (rng.random(m)[:, None] > np.cumsum(p, 1)).sum(1).clip(0, 2)
        odd = 2 - pair
        rest = np.array([[1, 2], [0, 2], [0, 1]])[odd]
        r = np.arange(m)
        return np.stack([t[r, rest[:, 0]], t[r, rest[:, 1]], t[r, odd]], 1)

    train, test = answered(6000), answered(3000)
    default = AffineTransform(random_state=0).fit(X, train)
    glocal = AffineTransform(random_state=0, **PRESETS["glocal"]).fit(X, train)
    zero_shot = AffineTransform(random_state=0, max_epochs=1, lr=1e-9).fit(X, train)
    assert default.settings_.auto == ("batch_size", "lr", "patience", "tol", "lam", "n_threads")
    assert default.score(X, test) >= glocal.score(X, test) - 0.01
    assert default.score(X, test) > zero_shot.score(X, test) + 0.05


def _planted(tmp_path: Path, n: int = 60) -> None:
    rng = np.random.default_rng(0)
    E = np.maximum(rng.normal(size=(n, 4)), 0) * 2.0
    X = np.concatenate([E * [3.0, 1.0, 0.3, 0.1], rng.normal(size=(n, 4))], axis=1)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "E.npy", E.astype(np.float32))


def test_cli_flags_preset_and_cross_validated_lambda(tmp_path: Path, cli) -> None:
    from alignet_engine.stages.transform import LAM_CV_GRID

    _planted(tmp_path)
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    for label in ("m", "human"):
        name = "X.npy" if label == "m" else "E.npy"
        cli("import-features", project, str(tmp_path / name), "--set", "s", "--name", label)
    base = (
        "fit-transform",
        project,
        "--set",
        "s",
        "--model",
        "m",
        "--targets",
        "embedding:human",
        "--n-model-triplets",
        "3000",
        "--max-epochs",
        "8",
    )

    # small problem, no --lam: λ comes from object-disjoint cross-validation over the grid
    auto = cli(*base, "--name", "auto")
    assert auto["search"]["cv_results"]["param_lam"] == list(LAM_CV_GRID)
    assert auto["search"]["best_params"]["lam"] in LAM_CV_GRID
    assert auto["fit_settings"]["lam"] == auto["search"]["best_params"]["lam"]

    # explicit flags are used as given, no search
    given = cli(
        *base,
        "--lam",
        "0.05",
        "--batch-size",
        "64",
        "--patience",
        "3",
        "--threads",
        "1",
        "--lr",
        "0.002",
        "--name",
        "given",
    )
    assert "search" not in given
    fs = given["fit_settings"]
    assert (fs["lam"], fs["batch_size"], fs["patience"], fs["n_threads"], fs["lr"]) == (
        0.05,
        64,
        3,
        1,
        0.002,
    )

    # the gLocal preset fills what is not given with gLocal's settings
    glocal = cli(*base, "--preset", "glocal", "--patience", "2", "--name", "glocal")
    fs = glocal["fit_settings"]
    assert (fs["batch_size"], fs["lr"], fs["lam"], fs["patience"], fs["tol"]) == (
        256,
        1e-3,
        0.1,
        2,
        1e-4,
    )
    with Project.open(project, readonly=True) as p:
        assert p.run("transform:glocal", arrays=False).params["preset"] == "glocal"
