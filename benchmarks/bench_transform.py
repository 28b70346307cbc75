"""Transform-fitting throughput: our AffineTransform against a gLocal-style reference loop.

Problem (one per feature width d)
---------------------------------
* "Human" space: the real THINGS VICE embedding (1854 × 42, ``../shared/data/things``), or a
  random non-negative 42-d stand-in when the data folder is absent (``--synthetic``).
* Model features X (1854 × d): the human space through a random linear map with badly scaled
  dimensions (log-uniform scales 0.1–10), plus high-variance nuisance dimensions. So the
  zero-shot dot product is poor and a linear map (re-weight, suppress the nuisance) recovers
  the human space: a hidden linear map with a known answer.
* Triplets: uniform random, the odd one out sampled from the VICE Luce model
  (softmax over the three pair dot products, T = 1, as VICE was fitted), so the labels carry
  human-like noise. Train ``--n-train`` rows, test ``--n-test`` rows on the same objects.

Contenders (same features, same training triplets, same number of epochs, no early stopping)
--------------------------------------------------------------------------------------------
* ``glocal-ref``: the gLocal probing loop (method.md §2) re-implemented here in torch: scalar
  μ/σ; W = 1e-3·I, b = 1e-3·1; per batch of 256 triplets index the batch's items, standardise and
  transform only those rows, triplet softmax cross-entropy over dot products (T = 1) +
  λ‖W − mean(diag W)·I‖²_F, Adam, grad-norm clip 1.0, LinearLR warm-up over the epochs, a
  per-batch Python loop. Global term only (α = 0) for both contenders.
* ``ours@256``: AffineTransform with the same batch size and learning rate (the stage default).
* ``ours``: AffineTransform with large batches (``--batch-size``, default 8192) and a larger
  learning rate (``--lr``, default 0.05): fewer steps, and each step transforms all n items once
  and gathers the batch's pair similarities instead of transforming 3·B rows (see
  ``alignet_engine/align/transform.py``, "Speed").

Reports wall time, triplets/s (training rows × epochs / seconds), the speed-up over the
reference, and held-out accuracy (plus the VICE ceiling: accuracy of the true model).

Run: ``.venv/bin/python benchmarks/bench_transform.py`` (about 1.5 minutes on 2 busy cores;
the two gLocal-style runs and ``ours@256`` take most of it).
"""

from __future__ import annotations

import argparse
import logging
import math
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
from alignet_engine.align.transform import AffineTransform  # noqa: E402

VICE = REPO.parent / "shared" / "data" / "things" / "vice_embedding_things.npy"


@dataclass
class Problem:
    X: np.ndarray  # (n, d) float32 model features
    H: np.ndarray  # (n, 42) human space
    train: np.ndarray  # (t, 3) odd one last
    test: np.ndarray  # (m, 3) odd one last


def _luce_rows(H: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` random triplets over H's rows, odd one sampled from softmax of pair dots, last."""
    n = H.shape[0]
    a = rng.integers(0, n, size=(2 * m, 3))
    a = a[(a[:, 0] != a[:, 1]) & (a[:, 0] != a[:, 2]) & (a[:, 1] != a[:, 2])][:m]
    s = pair_similarities(H, a, "dot")  # [s01, s02, s12]
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    pair = (rng.random(len(a))[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(0, 2)
    odd = 2 - pair  # pair 0 = (0, 1) -> odd col 2, ...
    rest = np.array([[1, 2], [0, 2], [0, 1]])[odd]
    r = np.arange(len(a))
    return np.stack([a[r, rest[:, 0]], a[r, rest[:, 1]], a[r, odd]], axis=1)


def make_problem(d: int, n_train: int, n_test: int, synthetic: bool, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    if not synthetic and VICE.is_file():
        H = np.load(VICE).astype(np.float64)
    else:
        H = np.maximum(rng.normal(size=(1854, 42)) * 0.8, 0.0)
    n, h = H.shape
    scales = np.exp(rng.uniform(np.log(0.1), np.log(10.0), size=h))
    P = rng.normal(size=(h, d)) / np.sqrt(d)
    nuisance = rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d)) * 0.5
    X = ((H * scales) @ P + nuisance).astype(np.float32)
    return Problem(X, H, _luce_rows(H, n_train, rng), _luce_rows(H, n_test, rng))


def glocal_reference(
    X: np.ndarray, triplets: np.ndarray, *, lam: float, lr: float, epochs: int, batch_size: int
) -> np.ndarray:
    """gLocal's probing loop (global term), returns the transformed features (n, d)."""
    torch.manual_seed(0)
    Xt = torch.from_numpy(X.astype(np.float32))
    mu, sd = Xt.mean(), Xt.std()
    d = X.shape[1]
    W = (1e-3 * torch.eye(d)).requires_grad_(True)
    b = (1e-3 * torch.ones(d)).requires_grad_(True)
    eye = torch.eye(d)
    opt = torch.optim.Adam([W, b], lr=lr)
    sched = torch.optim.lr_scheduler.LinearLR(opt, total_iters=epochs)
    trip = torch.from_numpy(triplets)
    target = torch.zeros(batch_size, dtype=torch.long)
    for _ in range(epochs):
        perm = torch.randperm(trip.shape[0])
        for s in range(0, trip.shape[0], batch_size):
            batch = trip[perm[s : s + batch_size]]
            x = (Xt[batch.reshape(-1)] - mu) / sd  # only the batch's items
            z = (x @ W + b).view(-1, 3, d)
            a, p, o = z.unbind(1)
            logits = torch.stack([(a * p).sum(-1), (a * o).sum(-1), (p * o).sum(-1)], dim=1)
            loss = F.cross_entropy(logits, target[: logits.shape[0]])
            loss = loss + lam * ((W - W.diagonal().mean() * eye) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([W, b], 1.0)
            opt.step()
        sched.step()
    with torch.no_grad():
        return (((Xt - mu) / sd) @ W + b).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--n-train", type=int, default=40_000)
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lam", type=float, default=0.1, help="gLocal 'final' default")
    ap.add_argument("--lr-ref", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=5e-2, help="learning rate of 'ours'")
    ap.add_argument("--batch-size", type=int, default=8192, help="batch size of 'ours'")
    ap.add_argument("--skip-ours256", action="store_true")
    ap.add_argument("--synthetic", action="store_true", help="random human space, not VICE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # the same for every contender; the machine is shared

    # Warm-up: the first torch optimiser of a process imports torch._dynamo (1-3 s), and the first
    # ops load kernels; neither belongs to the timing of whichever contender happens to run first.
    warm = make_problem(8, 2000, 10, synthetic=True)
    glocal_reference(warm.X, warm.train, lam=0.1, lr=1e-3, epochs=1, batch_size=256)
    for bs in (256, 2000):
        AffineTransform(max_epochs=1, batch_size=bs, val_fraction=0.0).fit(warm.X, warm.train)

    rows: list[tuple] = []
    for d in args.dims:
        pb = make_problem(d, args.n_train, args.n_test, args.synthetic)
        n_rows = pb.train.shape[0] * args.epochs
        ceiling = oddone_correct(pb.H, pb.test, "dot").mean()
        zero_shot = oddone_correct(pb.X, pb.test, "dot").mean()
        results = {}

        t0 = time.perf_counter()
        Z = glocal_reference(
            pb.X, pb.train, lam=args.lam, lr=args.lr_ref, epochs=args.epochs, batch_size=256
        )
        results["glocal-ref"] = (time.perf_counter() - t0, oddone_correct(Z, pb.test, "dot").mean())

        variants = {"ours": (args.batch_size, args.lr)}
        if not args.skip_ours256:
            variants["ours@256"] = (256, args.lr_ref)
        for name, (bs, lr) in variants.items():
            est = AffineTransform(
                "hard",
                lam=args.lam,
                lr=lr,
                max_epochs=args.epochs,
                batch_size=bs,
                patience=args.epochs,
                val_fraction=0.0,
                random_state=0,
            )
            t0 = time.perf_counter()
            est.fit(pb.X, pb.train)
            results[name] = (time.perf_counter() - t0, est.score(pb.X, pb.test))

        ref_t = results["glocal-ref"][0]
        for name, (sec, acc) in results.items():
            rows.append((d, name, sec, n_rows / sec, ref_t / sec, acc, zero_shot, ceiling))

    print(
        f"\n{args.n_train} train / {args.n_test} test triplets, {args.epochs} epochs, "
        f"lam={args.lam}, 1 torch thread; ref: batch 256 lr {args.lr_ref}; "
        f"ours: batch {args.batch_size} lr {args.lr}"
    )
    head = (
        "d",
        "contender",
        "wall s",
        "triplets/s",
        "speed-up",
        "test acc",
        "zero-shot",
        "ceiling",
    )
    print("{:>5} {:<11} {:>8} {:>11} {:>9} {:>9} {:>10} {:>8}".format(*head))
    for d, name, sec, tps, ratio, acc, zs, ceil in rows:
        print(
            f"{d:>5} {name:<11} {sec:>8.2f} {tps:>11.0f} {ratio:>8.1f}x {acc:>9.4f} "
            f"{zs:>10.4f} {ceil:>8.4f}"
        )
    print(
        "speed-up = glocal-ref wall time / contender wall time (same d, same run); test acc = "
        "held-out\nodd-one-out accuracy (dot product) on Luce-sampled labels; zero-shot = raw "
        "features;\nceiling = the true VICE model on the same labels. Timings on a shared "
        "machine are noisy:\ncompare ratios, not absolute seconds."
    )
    assert all(math.isfinite(r[2]) for r in rows)


if __name__ == "__main__":
    main()
