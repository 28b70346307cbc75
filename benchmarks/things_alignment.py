"""THINGS alignment with the VICE embedding as the human model (uncertainty distillation, offline).

Run: ``.venv/bin/python benchmarks/things_alignment.py [--triplets 100000] [--quick]``
(about 3-4 minutes on 2 busy cores; ``--quick`` uses fewer triplets and epochs).

What it does
------------
1. **Human model.** The published VICE embedding of the 1,854 THINGS concepts
   (``vice_embedding_things.npy``, (1854, 42), non-negative) wrapped in
   :class:`EmbeddingHumanModel` (softmax over dot products, T = 1).
2. **Teacher triplets.** ``--triplets`` uniformly random triplets over all 1,854 concepts
   (:func:`sample_random_triplets`); :func:`soft_targets_from_model` puts VICE's most likely odd
   one last and returns VICE's probabilities in the transform's logit order.
3. **Features.** There are no THINGS images here, so no network features. Instead an honest
   concept-level feature matrix built from THINGS metadata that is NOT derived from odd-one-out
   judgments (see :func:`metadata_features`):
     * 27 manual high-level categories (``category_mat_manual.tsv``, 0/1),
     * the 26 further THINGS-data categories of ``Categories_final_20200131.tsv`` (its first 27
       columns repeat the 27 manual ones — they differ in one entry — so they are not
       counted twice),
     * 11 mean property ratings (``animacy.csv``: manmade, precious, lives, heavy, natural,
       moves, grasp, hold, be.moved, pleasant, arousing),
     * log mean real-world size (``size_fixed.csv``, ';'-separated),
   each column z-scored → (1854, 65). Ratings files are joined by ``uniqueID`` (their row
   orders differ from the concept order in a few places), the category table by position
   (checked against the concept names).
4. **Transforms.** ``AffineTransform(objective="soft")`` fitted to VICE's probabilities (KL), and
   a hard baseline ``AffineTransform(objective="hard")`` fitted to the argmax of the same
   predictions (the reordered rows) — same triplets, same hyper-parameters.
5. **Evaluation** on the 20,000 responses to the 1,000 repeated triplets
   (``triplets_noiseceiling.tsv``): accuracy = the model's odd one equals the response, with a
   95 % bootstrap CI over responses (:func:`accuracy_summary`) and a cluster bootstrap over the
   1,000 triplets (responses to one triplet are not independent); mean KL(human ‖ model) over
   the 1,000 per-triplet human choice distributions where the model gives probabilities.

Caveats printed with the table: the transforms never see a human triplet, only VICE-predicted
ones over random triplets, so object overlap with the test set is fine — but VICE itself was
trained on THINGS triplets (the published 4.7 M-triplet training set), so "VICE" and everything
distilled from it are not independent of the human data in the way an image model is.

6. **Own VICE fit.** There are no THINGS training triplets here (only the 20 k repeated-set
   responses, 1,000 unique triplets over ≤ 3,000 concept slots — far too few for an 1,854×d
   embedding). We therefore fit :class:`VICE` on triplets SIMULATED from the shipped embedding
   (random triplets, one sampled choice each from its softmax): a recovery check at THINGS
   scale. It reports the dimensions kept, fit time, agreement with the generating embedding on
   held-out simulated triplets, and accuracy on the real human responses. The budget is far
   below VICE's (≈ 4 M triplets, up to 2,000 epochs), so it is a smoke test, not a replication.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignet_engine.align.human_models import (  # noqa: E402
    VICE,
    EmbeddingHumanModel,
    sample_random_triplets,
    soft_targets_from_model,
)
from alignet_engine.align.metrics import (  # noqa: E402
    accuracy_summary,
    noise_ceiling_oddone,
    oddone_correct,
)
from alignet_engine.align.soft_targets import choice_distributions  # noqa: E402
from alignet_engine.align.transform import AffineTransform  # noqa: E402
from alignet_engine.base.types import Judgments  # noqa: E402

THINGS = REPO.parent / "shared" / "data" / "things"
ANIMACY_COLS = (
    "manmade",
    "precious",
    "lives",
    "heavy",
    "natural",
    "moves",
    "grasp",
    "hold",
    "be.moved",
    "pleasant",
    "arousing",
)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def load_concept_ids(folder: Path) -> list[str]:
    with open(folder / "item_names.tsv", newline="", encoding="utf-8") as fh:
        return [row["uniqueID"] for row in csv.DictReader(fh, delimiter="\t")]


def load_human_judgments(folder: Path) -> Judgments:
    """``triplets_noiseceiling.tsv``: 1-based ids, choice = position (1..3) of the odd one."""
    raw = np.loadtxt(folder / "triplets_noiseceiling.tsv", dtype=np.int64, delimiter="\t")
    objects = raw[:, :3] - 1
    pos = raw[:, 3] - 1
    rest = np.array([[1, 2], [0, 2], [0, 1]])[pos]
    r = np.arange(raw.shape[0])
    trip = np.stack([objects[r, rest[:, 0]], objects[r, rest[:, 1]], objects[r, pos]], axis=1)
    return Judgments("oddone", trip, raw[:, 4].copy(), meta={"source": "triplets_noiseceiling"})


def _norm_id(s: str) -> str:
    return s.strip().replace(" ", "_").replace("-", "_")


def metadata_features(folder: Path) -> tuple[np.ndarray, list[str]]:
    """(1854, 65) z-scored concept features from THINGS metadata (no odd-one-out data).

    Returns the matrix and one name per column.
    """
    ids = load_concept_ids(folder)
    n = len(ids)
    # 27 manual categories, positional (same row order as the concepts, PROVENANCE.md)
    with open(folder / "category_mat_manual.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    cat27_names = rows[0]
    cat27 = np.asarray(rows[1 : n + 1], dtype=np.float64)
    # 53 THINGS-data categories; the table ends with a totals row. Its 'Word' column is the
    # uniqueID without the sense digit (bat1 -> bat) and with spaces: check it positionally.
    path53 = folder / "things_data_ratings" / "Categories_final_20200131.tsv"
    with open(path53, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header, body = rows[0], rows[1 : n + 1]
    for uid, row in zip(ids, body, strict=True):
        if _norm_id(row[0]) not in (_norm_id(uid), re.sub(r"\d+$", "", _norm_id(uid))):
            raise ValueError(f"{path53.name}: row for {uid!r} reads {row[0]!r}")
    cat53 = np.array([[1.0 if v.strip() else 0.0 for v in row[2:]] for row in body])
    if header[2 : 2 + 27] != cat27_names:
        raise ValueError("the first 27 THINGS-data categories are not the 27 manual ones")
    n_diff = int((cat53[:, :27] != cat27).sum())
    extra_names = header[2 + 27 :]
    extra = cat53[:, 27:]
    # property ratings, joined by uniqueID
    with open(folder / "things_data_ratings" / "animacy.csv", newline="", encoding="utf-8") as fh:
        animacy = {row["uniqueID"]: row for row in csv.DictReader(fh)}
    anim = np.array([[float(animacy[u][f"{c}_mean"]) for c in ANIMACY_COLS] for u in ids])
    with open(
        folder / "things_data_ratings" / "size_fixed.csv", newline="", encoding="utf-8"
    ) as fh:
        size = {_norm_id(row["uniqueID"]): row for row in csv.DictReader(fh, delimiter=";")}
    mean_size = np.array([float(size[_norm_id(u)]["meanSize"]) for u in ids])
    # sizes span orders of magnitude (a grain of sand to a mountain); the ratings scale is
    # already roughly logarithmic but strictly positive, so the log only tames the tail
    log_size = np.log(np.maximum(mean_size, 1.0))[:, None]
    F = np.concatenate([cat27, extra, anim, log_size], axis=1)
    names = [f"cat:{c}" for c in cat27_names] + [f"cat:{c}" for c in extra_names]
    names += [f"rating:{c}" for c in ANIMACY_COLS] + ["rating:log_size"]
    sd = F.std(axis=0)
    if (sd == 0).any():
        raise ValueError(f"constant feature column(s): {np.array(names)[sd == 0].tolist()}")
    F = (F - F.mean(axis=0)) / sd
    logging.getLogger(__name__).info(
        "metadata features %s (27 manual categories differ from THINGS-data's in %d entries)",
        F.shape,
        n_diff,
    )
    return F.astype(np.float32), names


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
def cluster_ci(correct: np.ndarray, groups: np.ndarray, n_boot: int = 2000) -> tuple[float, float]:
    """95 % CI of the response-level accuracy, resampling whole triplets (clusters)."""
    _, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    c = np.bincount(inv, weights=correct.astype(np.float64))
    tot = np.bincount(inv).astype(np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, c.size, size=(n_boot, c.size))
    acc = c[idx].sum(axis=1) / tot[idx].sum(axis=1)
    lo, hi = np.quantile(acc, [0.025, 0.975])
    return float(lo), float(hi)


def mean_kl(human_p: np.ndarray, model_p: np.ndarray) -> float:
    """Mean KL(human ‖ model) per triplet; both (u, 3) in the same column order."""
    q = np.clip(model_p, 1e-12, None)
    terms = np.where(human_p > 0, human_p * (np.log(np.clip(human_p, 1e-12, None)) - np.log(q)), 0)
    return float(terms.sum(axis=1).mean())


def softmax_dot(F: np.ndarray, trip: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    g = F.astype(np.float64)[trip]
    s = np.stack(
        [
            np.einsum("td,td->t", g[:, 0], g[:, 1]),
            np.einsum("td,td->t", g[:, 0], g[:, 2]),
            np.einsum("td,td->t", g[:, 1], g[:, 2]),
        ],
        axis=1,
    )
    s = temperature * s
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--triplets", type=int, default=100_000, help="VICE-labelled teacher triplets")
    ap.add_argument("--quick", action="store_true", help="fewer triplets and epochs (smoke run)")
    ap.add_argument("--no-vice-fit", action="store_true", help="skip fitting our own VICE")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not THINGS.is_dir():
        sys.exit(f"THINGS data not found at {THINGS}")
    n_teacher = 20_000 if args.quick else int(args.triplets)
    max_epochs = 10 if args.quick else 40

    t_start = time.perf_counter()
    ids = load_concept_ids(THINGS)
    n = len(ids)
    human = load_human_judgments(THINGS)
    uniq_trip, human_p = choice_distributions(human)
    _, groups = np.unique(np.sort(human.triplets, axis=1), axis=0, return_inverse=True)
    groups = groups.reshape(-1)
    ceiling = noise_ceiling_oddone(human)
    vice = EmbeddingHumanModel.from_npy(THINGS / "vice_embedding_things.npy")
    F, names = metadata_features(THINGS)

    rows: list[tuple[str, np.ndarray, float, str]] = []

    def add(name: str, correct: np.ndarray, kl: float, note: str = "") -> None:
        rows.append((name, correct, kl, note))

    # VICE (the human model itself)
    p_vice = vice.predict_proba(human.triplets)
    add(
        "VICE embedding (human model)",
        (p_vice[:, 0] > p_vice[:, 1]) & (p_vice[:, 0] > p_vice[:, 2]),
        mean_kl(human_p, vice.predict_proba(uniq_trip)),
        "trained on THINGS triplets",
    )
    # zero-shot metadata features (cosine, method.md §6 default; no probabilities)
    add(
        "metadata features, zero-shot (cosine)", oddone_correct(F, human.triplets, "cosine"), np.nan
    )
    # dot product of the z-scored features = the transform's starting point (W = I, b = 0)
    add("metadata features, zero-shot (dot)", oddone_correct(F, human.triplets, "dot"), np.nan)

    # teacher triplets and soft targets
    t0 = time.perf_counter()
    raw = sample_random_triplets(n, n_teacher, random_state=args.seed)
    teach_trip, teach_p = soft_targets_from_model(vice, raw)
    t_targets = time.perf_counter() - t0
    common = {
        "lam": 1e-3,
        "lr": 1e-2,
        "batch_size": 1024,
        "max_epochs": max_epochs,
        "patience": 5,
        "random_state": args.seed,
    }
    fits: dict[str, tuple[AffineTransform, float]] = {}
    for objective in ("soft", "hard"):
        t0 = time.perf_counter()
        est = AffineTransform(objective, **common)
        est.fit(F, teach_trip, targets=teach_p if objective == "soft" else None)
        fits[objective] = (est, time.perf_counter() - t0)
    for objective, label in (
        ("soft", "soft transform (KL to VICE)"),
        ("hard", "hard transform (VICE argmax)"),
    ):
        est, secs = fits[objective]
        Z = est.transform(F)
        add(
            label,
            oddone_correct(Z, human.triplets, "dot"),
            mean_kl(human_p, est.predict_proba(F, uniq_trip)),
            f"{secs:.0f} s, {est.n_epochs_} ep (best {est.best_epoch_}), T={est.temperature_:.3g}",
        )

    # ------------------------------------------------------------------ table
    print()
    print(
        f"THINGS odd-one-out, {len(human)} responses to {ceiling['n_triplets']} repeated triplets"
    )
    print(
        f"features: metadata {F.shape} ({len(names)} columns); teacher: {n_teacher:,} random "
        f"triplets labelled by VICE ({t_targets:.1f} s); transform hyper-parameters {common}"
    )
    print()
    hdr = (
        f"{'model':40s} {'acc':>7s} {'95% CI (responses)':>19s} {'95% CI (triplets)':>18s} "
        f"{'KL(h‖m)':>8s}  note"
    )
    print(hdr)
    print("-" * len(hdr))
    print(
        f"{'noise ceiling (majority agreement)':40s} {ceiling['majority_agreement']:7.4f} "
        f"{'':19s} {'':18s} {'':8s}  leave-one-out {ceiling['leave_one_out']:.4f}"
    )
    print(f"{'chance':40s} {1 / 3:7.4f}")
    for name, correct, kl, note in rows:
        s = accuracy_summary(correct, random_state=0)
        lo, hi = cluster_ci(correct, groups)
        kl_s = f"{kl:8.4f}" if np.isfinite(kl) else f"{'—':>8s}"
        print(
            f"{name:40s} {s['accuracy']:7.4f}   [{s['ci_low']:.4f}, {s['ci_high']:.4f}]"
            f"  [{lo:.4f}, {hi:.4f}] {kl_s}  {note}"
        )
    h_ent = -np.where(human_p > 0, human_p * np.log(np.clip(human_p, 1e-12, None)), 0).sum(1)
    print(
        f"\nKL(h‖m): mean over the 1,000 triplets of KL(human choice distribution ‖ model). "
        f"Mean human entropy {h_ent.mean():.3f} nats, uniform model KL "
        f"{mean_kl(human_p, np.full_like(human_p, 1 / 3)):.4f}."
    )
    print(
        "Caveat: the transforms saw only VICE-labelled random triplets, never a human triplet; "
        "but VICE was itself trained on THINGS odd-one-out data, so it (and what is distilled "
        "from it) is not independent of the human test data."
    )

    # ------------------------------------------------------------------ own VICE fit
    if not args.no_vice_fit:
        fit_own_vice(vice, human, n, quick=args.quick, seed=args.seed)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


def _sample_choices(model: EmbeddingHumanModel, raw: np.ndarray, seed: int) -> np.ndarray:
    """One simulated response per row from the model's softmax, odd one last."""
    rng = np.random.default_rng(seed)
    p = model.predict_proba(raw)
    pair = (rng.random(raw.shape[0])[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(max=2)
    odd = 2 - pair
    rest = np.array([[1, 2], [0, 2], [0, 1]])[odd]
    r = np.arange(raw.shape[0])
    return np.stack([raw[r, rest[:, 0]], raw[r, rest[:, 1]], raw[r, odd]], axis=1)


def fit_own_vice(
    teacher: EmbeddingHumanModel, human: Judgments, n: int, *, quick: bool, seed: int
) -> None:
    n_train = 30_000 if quick else 200_000
    train = _sample_choices(teacher, sample_random_triplets(n, n_train, seed + 1), seed + 2)
    test = _sample_choices(teacher, sample_random_triplets(n, 20_000, seed + 3), seed + 4)
    est = VICE(
        n_dims=100,
        lr=1e-2,
        batch_size=512,
        max_epochs=5 if quick else 30,
        burnin=20,
        ws=10,
        random_state=seed,
    )
    t0 = time.perf_counter()
    for _ in est.iter_fit(train, n):
        pass
    secs = time.perf_counter() - t0
    p_test = teacher.predict_proba(test)
    gen_acc = float(np.mean((p_test[:, 0] > p_test[:, 1]) & (p_test[:, 0] > p_test[:, 2])))
    agree = float(
        np.mean(
            np.argmax(est.predict_proba(test, mc_samples=5), axis=1) == np.argmax(p_test, axis=1)
        )
    )
    human_acc = est.score(human.triplets, mc_samples=5)
    print(
        f"\nOwn VICE, fitted to {n_train:,} triplets SIMULATED from the shipped embedding "
        f"(d_init 100, lr 1e-2, batch 512, burn-in 20, ws 10):"
    )
    print(
        f"  {est.n_epochs_} epochs in {secs:.0f} s ({secs / est.n_epochs_:.1f} s/epoch), "
        f"{'converged' if est.converged_ else 'max_epochs reached'}; {est.n_dims_} dims kept "
        f"(shipped: 42); dims per epoch {est.history_['n_dims'][:: max(1, est.n_epochs_ // 10)]}"
    )
    print(
        f"  held-out simulated triplets: accuracy {est.score(test, mc_samples=5):.4f} vs the "
        f"generating embedding's {gen_acc:.4f}; argmax agreement with it {agree:.4f}"
    )
    print(f"  real human responses (20 k): accuracy {human_acc:.4f} (shipped embedding 0.6357)")


if __name__ == "__main__":
    main()
