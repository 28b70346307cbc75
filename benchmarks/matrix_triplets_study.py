"""Similarity matrices as training data: a transform fitted on triplets derived from per-subject
matrices of some items, evaluated by RSA on held-out items.

Data (synthetic subjects over real THINGS structure; say so when quoting the numbers)
-------------------------------------------------------------------------------------
* Items: ``--items`` random THINGS concepts; their "true" similarity is the dot product of the
  real THINGS VICE embedding (``../shared/data/things/vice_embedding_things.npy``, 42-d).
* Subjects: ``--subjects`` matrices S_s = H Hᵀ + E_s, E_s symmetric Gaussian noise with sd
  ``--noise`` × sd(H Hᵀ) (an independent draw per subject): noisy raters of one shared space.
* Model features: H through a random linear map to ``--dim`` dimensions with badly scaled
  input dimensions (log-uniform 0.1–10) plus Gaussian nuisance (std 0.5 after a random
  rotation) — the same construction as ``bench_transform_default.py``. Not a real network.
* Split: :func:`~alignet_engine.align.matrix_triplets.split_items`, half the items fit, half
  test (object-disjoint). ``--triplets`` distinct triplets over the fit items, answered by every
  subject (:func:`triplets_from_matrices`); the subjects' answers per triplet give the soft
  targets (:func:`choice_distributions`), their majority the hard labels. λ is chosen as
  ``fit-transform`` chooses it on a problem this small (3-fold object-disjoint CV over
  ``LAM_CV_GRID``); the estimator's size rule without CV is shown for contrast.

Reported on the TEST items only: RSA (Spearman of the model's cosine RSM with the mean subject
matrix, upper triangle) zero-shot vs after the soft and the hard transform, the subjects' RSA
noise ceiling there, and odd-one-out agreement with the subjects' answers to test-item triplets.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/matrix_triplets_study.py``
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignet_engine.align.matrix_triplets import split_items, triplets_from_matrices  # noqa: E402
from alignet_engine.align.metrics import noise_ceiling_matrix, oddone_correct, rsa  # noqa: E402
from alignet_engine.align.model_selection import TransformSearch  # noqa: E402
from alignet_engine.align.soft_targets import choice_distributions  # noqa: E402
from alignet_engine.align.transform import AffineTransform  # noqa: E402
from alignet_engine.stages.transform import LAM_CV_GRID  # noqa: E402

VICE = REPO.parent / "shared" / "data" / "things" / "vice_embedding_things.npy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=120)
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--noise", type=float, default=1.5)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--triplets", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(args.seed)

    H_all = np.load(VICE).astype(np.float64)
    H = H_all[np.sort(rng.choice(len(H_all), args.items, replace=False))]
    n, h = H.shape
    true = H @ H.T
    sd = true[np.triu_indices(n, 1)].std()
    subjects = []
    for _ in range(args.subjects):
        E = rng.normal(size=(n, n)) * args.noise * sd
        subjects.append(true + (E + E.T) / np.sqrt(2))
    S = np.stack(subjects)
    scales = np.exp(rng.uniform(np.log(0.1), np.log(10.0), size=h))
    P = rng.normal(size=(h, args.dim)) / np.sqrt(args.dim)
    nuisance = rng.normal(size=(n, args.dim)) @ (
        rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)
    )
    X = ((H * scales) @ P + 0.5 * nuisance).astype(np.float32)

    fit_items, test_items = split_items(n, test_fraction=0.5, random_state=args.seed)
    fit = triplets_from_matrices(S, args.triplets, items=fit_items, random_state=1)
    n_test_trip = min(
        args.triplets, len(test_items) * (len(test_items) - 1) * (len(test_items) - 2) // 6
    )
    test = triplets_from_matrices(S, n_test_trip, items=test_items, random_state=2)
    trip, probs = choice_distributions(fit.judgments)  # majority odd one last = hard label

    # λ as fit-transform chooses it for a problem this small: object-disjoint 3-fold CV
    grid = {"lam": list(LAM_CV_GRID)}
    soft_cv = TransformSearch(grid, base_params={"objective": "soft"}, random_state=0)
    soft = soft_cv.fit(X, trip, targets=probs).best_estimator_
    hard_cv = TransformSearch(grid, base_params={"objective": "hard"}, random_state=0)
    hard = hard_cv.fit(X, trip).best_estimator_
    size_rule = AffineTransform("soft", random_state=0).fit(X, trip, targets=probs)

    T = np.ix_(test_items, test_items)
    mean_test = S.mean(axis=0)[T]
    ceiling = noise_ceiling_matrix(S[:, test_items][:, :, test_items])
    resp = test.judgments.triplets  # every subject's answer, odd one last

    def report(name: str, Z: np.ndarray, metric: str) -> None:
        r = rsa(Z[test_items], mean_test)
        agree = oddone_correct(Z, resp, metric).mean()
        print(f"{name:<18} RSA {r:.3f}   odd-one-out agreement {agree:.3f}")

    print(
        f"{n} THINGS concepts ({len(fit_items)} fit / {len(test_items)} test), {args.subjects} "
        f"simulated subjects (noise {args.noise}), features {X.shape}; {fit.n_triplets} fit "
        f"triplets x {args.subjects} subjects = {len(fit.judgments)} responses"
    )
    print(
        f"test items: RSA noise ceiling lower {ceiling['lower']:.3f} upper {ceiling['upper']:.3f}; "
        f"{len(resp)} test responses"
    )
    report("zero-shot", X, "cosine")
    report("soft transform", soft.transform(X), "dot")
    report("hard transform", hard.transform(X), "dot")
    report("soft, size-rule λ", size_rule.transform(X), "dot")
    print(
        f"cross-validated λ: soft {soft.settings_.lam:.3g}, hard {hard.settings_.lam:.3g}; "
        f"size rule (estimator without CV) {size_rule.settings_.lam:.3g}"
    )


if __name__ == "__main__":
    main()
