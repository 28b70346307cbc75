"""The transform fit's DEFAULT settings against an independent full-gradient script.

Question: does a user who runs ``fit-transform`` without tuning anything get a fit as good
as a short hand-written large-batch script, in comparable time?

Problem (one per ``--size``)
----------------------------
* "Human" space H: the real THINGS VICE embedding (1854 × 42 non-negative dimensions,
  ``../shared/data/things/vice_embedding_things.npy``).
* Model features X (n × d): H through a random linear map with badly scaled dimensions
  (log-uniform scales 0.1–10, then a Gaussian (42, d) map), plus Gaussian nuisance of rank d
  (std 0.5 per entry before a random rotation). The zero-shot dot product of X is poor; a
  linear map recovers most of H.
* Triplets: uniform random ordered triples of distinct items over the FIT objects, soft
  targets = the VICE Luce model (softmax of the three pair dot products of H, T = 1), each
  row ordered with VICE's most likely odd one last (hard label = that argmax).
* Object-disjoint split: a random 80 % of the items are fit objects, 20 % test objects;
  ``--n-test`` test triplets are drawn over the test objects only (labels as above).
* Sizes: ``things`` = all 1854 items, d = 384, 500 000 fit triplets (the issue's THINGS-size
  problem); ``demo`` = the first 48 items of H, d = 64, 2 000 fit triplets (the embedded
  demo's scale: 48 stimuli, a few thousand responses).

Contenders (same X, triplets and targets; soft objective = the stage default)
-----------------------------------------------------------------------------
* ``script``: ~30 lines of torch written here, independent of alignet_engine: scalar μ/σ,
  W = I, b = 0, a learned log-temperature starting at −log d (unit-scale logits), Adam lr
  1e-2, batch 8192, 8 epochs,
  every step transforms all n items and gathers the batch's pair dot products (full
  gradient through Z), KL(p ‖ q) + λ‖W − mean(diag W)·I‖²_F with λ = 1e-3.
* ``default``: ``AffineTransform(objective="soft")`` with no other argument (its automatic
  batch size, learning rate, stopping, λ, threads), holding out its own validation rows.
* ``glocal``: ``AffineTransform(**PRESETS["glocal"])`` (gLocal's exact settings: batch 256,
  lr 1e-3, patience 15, ≤ 100 epochs), only with ``--glocal`` (about 20 minutes at THINGS size).

Reports wall time, the ratio default / script, held-out accuracy (agreement with VICE's
argmax on test-object triplets), held-out KL(VICE ‖ model) in nats, zero-shot and the VICE
ceiling (1.0 for accuracy by construction of the labels, so the ceiling shown is the
accuracy of VICE's own samples: how often a Luce draw equals the argmax).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_transform_default.py --size things demo``
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignet_engine.align.metrics import oddone_correct, pair_similarities  # noqa: E402
from alignet_engine.align.transform import PRESETS, AffineTransform  # noqa: E402

VICE = REPO.parent / "shared" / "data" / "things" / "vice_embedding_things.npy"
SIZES = {"things": (1854, 384, 500_000), "demo": (48, 64, 2_000)}


@dataclass
class Problem:
    X: np.ndarray  # (n, d) float32 model features
    fit: np.ndarray  # (t, 3) int64, fit objects only, VICE argmax odd one last
    fit_p: np.ndarray  # (t, 3) float64 VICE probabilities, logit order
    test: np.ndarray  # (m, 3) int64, test objects only
    test_p: np.ndarray  # (m, 3)


def _labelled(H: np.ndarray, items: np.ndarray, m: int, rng: np.random.Generator):
    """``m`` random triplets over ``items``, reordered with VICE's argmax odd one last."""
    a = items[rng.integers(0, items.size, size=(2 * m + 64, 3))]
    a = a[(a[:, 0] != a[:, 1]) & (a[:, 0] != a[:, 2]) & (a[:, 1] != a[:, 2])][:m]
    s = pair_similarities(H, a, "dot")  # [s01, s02, s12]: p(odd = col 2, col 1, col 0)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    odd = 2 - p.argmax(axis=1)
    rest = np.array([[1, 2], [0, 2], [0, 1]])[odd]
    order = np.column_stack([rest, odd])
    trip = np.take_along_axis(a, order, axis=1)
    p_odd = np.take_along_axis(p[:, ::-1], order, axis=1)  # p(odd = new col c)
    return trip.astype(np.int64), np.ascontiguousarray(p_odd[:, ::-1])


def make_problem(size: str, n_test: int, seed: int = 0, n_fit: int | None = None) -> Problem:
    n, d, t = SIZES[size]
    t = n_fit or t
    rng = np.random.default_rng(seed)
    H = np.load(VICE).astype(np.float64)[:n]
    h = H.shape[1]
    scales = np.exp(rng.uniform(np.log(0.1), np.log(10.0), size=h))
    P = rng.normal(size=(h, d)) / np.sqrt(d)
    nuisance = rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d)) * 0.5
    X = ((H * scales) @ P + nuisance).astype(np.float32)
    perm = rng.permutation(n)
    fit_items, test_items = np.sort(perm[: int(0.8 * n)]), np.sort(perm[int(0.8 * n) :])
    fit, fit_p = _labelled(H, fit_items, t, rng)
    test, test_p = _labelled(H, test_items, n_test, rng)
    return Problem(X, fit, fit_p, test, test_p)


def script_fit(X, trip, p, *, lam=1e-3, lr=1e-2, batch=8192, epochs=8, seed=0):
    """The independent full-gradient script; returns (n, d) logit-scaled features."""
    g = torch.Generator().manual_seed(seed)
    Xt = torch.from_numpy(X)
    Xs = (Xt - Xt.mean()) / Xt.std()
    d = X.shape[1]
    W = torch.eye(d, requires_grad=True)
    b = torch.zeros(d, requires_grad=True)
    # logits start at unit scale: dot products of standardised d-dim rows are O(d)
    log_t = torch.tensor(-np.log(d), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([W, b, log_t], lr=lr)
    tr, pt, eye = torch.from_numpy(trip), torch.from_numpy(p).float(), torch.eye(d)
    for _ in range(epochs):
        perm = torch.randperm(tr.shape[0], generator=g)
        for s in range(0, tr.shape[0], batch):
            rows = perm[s : s + batch]
            i, j, k = tr[rows].unbind(1)
            Z = Xs @ W + b
            logits = (
                torch.stack([(Z[i] * Z[j]).sum(1), (Z[i] * Z[k]).sum(1), (Z[j] * Z[k]).sum(1)], 1)
                * log_t.exp()
            )
            loss = -(pt[rows] * F.log_softmax(logits, 1)).sum(1).mean()
            loss = loss + lam * ((W - W.diagonal().mean() * eye) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return ((Xs @ W + b) * (log_t.exp() ** 0.5)).numpy()


def heldout(Z: np.ndarray, pb: Problem, temperature: float = 1.0) -> tuple[float, float]:
    """(accuracy vs VICE argmax, mean KL(VICE ‖ model) nats) on the test-object triplets."""
    acc = float(oddone_correct(Z, pb.test, "dot").mean())
    s = pair_similarities(Z, pb.test, "dot") * temperature
    s = s - s.max(axis=1, keepdims=True)
    logq = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    p = pb.test_p
    kl = float((p * (np.log(np.maximum(p, 1e-300)) - logq)).sum(axis=1).mean())
    return acc, kl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", nargs="+", choices=sorted(SIZES), default=["things", "demo"])
    ap.add_argument("--n-test", type=int, default=20_000)
    ap.add_argument(
        "--n-fit",
        type=int,
        help="fit triplets instead of the size's (e.g. 100000 on a busy machine)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads for everyone")
    ap.add_argument("--glocal", action="store_true", help="also run the gLocal preset (slow)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    # warm-up: torch's first optimiser imports torch._dynamo (seconds), not a contender's cost
    w = make_problem("demo", 50)
    script_fit(w.X, w.fit[:500], w.fit_p[:500], epochs=1)

    rows = []
    for size in args.size:
        pb = make_problem(size, args.n_test, n_fit=args.n_fit if size == "things" else None)
        X = pb.X
        zs = heldout((X - X.mean()) / X.std(), pb)
        t0 = time.perf_counter()
        Z = script_fit(X, pb.fit, pb.fit_p)
        t_script = time.perf_counter() - t0
        rows.append((size, "script", t_script, 1.0, *heldout(Z, pb), zs[0]))
        contenders = {"default": {}}
        if args.glocal:
            contenders["glocal"] = dict(PRESETS["glocal"])
        for name, params in contenders.items():
            est = AffineTransform("soft", random_state=0, **params)
            t0 = time.perf_counter()
            est.fit(X, pb.fit, targets=pb.fit_p)
            sec = time.perf_counter() - t0
            acc_kl = heldout(est.transform(X), pb, est.temperature_)
            rows.append((size, name, sec, sec / t_script, *acc_kl, zs[0]))
            print(f"{size} {name}: {est.n_epochs_} epochs, {est.settings_}", flush=True)

    print(
        f"\ntorch threads {threads}; soft objective; object-disjoint held-out triplets; "
        f"things fit triplets: {args.n_fit or SIZES['things'][2]}"
    )
    print(
        "{:>7} {:<9} {:>8} {:>11} {:>9} {:>9} {:>10}".format(
            "size", "fit", "wall s", "vs script", "test acc", "test KL", "zero-shot"
        )
    )
    for size, name, sec, ratio, acc, kl, z in rows:
        print(f"{size:>7} {name:<9} {sec:>8.2f} {ratio:>10.2f}x {acc:>9.4f} {kl:>9.4f} {z:>10.4f}")
    print(
        "vs script = wall time / the script's wall time (same size, same run); test acc = "
        "agreement with VICE's argmax\non triplets of held-out objects; test KL = "
        "KL(VICE ‖ model) there, nats. Shared noisy machine: compare ratios."
    )


if __name__ == "__main__":
    main()
