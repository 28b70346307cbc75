"""Materials study: zero-shot vs hard vs soft transform on held-out materials (issue 3, §8).

Data: Lagunas et al. (2019) material-appearance triplets (anchor, chosen, other + vote counts)
on 100 rendered materials, read from ``../shared/data/material_similarity`` where it lies.

Protocol: the 100 materials are split object-disjointly into 3 folds (k-fold over materials,
a triplet belongs to a fold only if all three materials do). For each fold the transforms are
fitted on the triplets of the other folds' materials and scored on this fold's triplets;
held-out predictions of all folds are pooled. Accuracy is on strict-majority triplets (ties
have no majority), with bootstrap 95% CIs; calibration compares the model's two-alternative
probabilities with the human vote proportions on the held-out triplets. The zero-shot model
gets a single softmax temperature fitted on the training folds, so its calibration is fair.

Run: ``.venv/bin/python benchmarks/materials_alignment.py [--model efficientnet_lite2]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from alignet_engine.align import AffineTransform, choice_distributions
from alignet_engine.align.calibration import entropy_correlation, expected_calibration_error
from alignet_engine.align.metrics import accuracy_summary
from alignet_engine.align.model_selection import object_disjoint_folds
from alignet_engine.base.types import Judgments
from alignet_engine.data.importers import read_image_folder, read_materials_json
from alignet_engine.jobs import run_job
from alignet_engine.models import extract_features, load_backbone

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "material_similarity"


def features(model: str, cache: Path) -> np.ndarray:
    path = cache / f"materials_{model}.npy"
    if path.is_file():
        return np.load(path)
    images = read_image_folder(DATA / "havran1_ennis_298x298_LDR")
    X = run_job(extract_features(load_backbone(model), images.paths, batch_size=25))
    np.save(path, X)
    return X


def two_afc_probs(F: np.ndarray, t: np.ndarray, temperature: float) -> np.ndarray:
    """(t, 2) softmax over [sim(a, c), sim(a, o)] · temperature."""
    s = np.stack([np.sum(F[t[:, 0]] * F[t[:, 1]], 1), np.sum(F[t[:, 0]] * F[t[:, 2]], 1)], 1)
    z = s * temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(F: np.ndarray, t: np.ndarray, p_human: np.ndarray) -> float:
    """The softmax temperature minimising cross-entropy to the human vote proportions."""
    grid = np.geomspace(0.1, 1000, 200)
    losses = [-np.mean(np.sum(p_human * np.log(two_afc_probs(F, t, T) + 1e-12), 1)) for T in grid]
    return float(grid[int(np.argmin(losses))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite2")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--cache", default="/tmp/alignet-bench-cache")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    X = features(args.model, cache)
    parts = [read_materials_json(DATA / f"answers_processed_{s}.json") for s in ("train", "test")]
    allj = Judgments(
        "twoafc",
        np.concatenate([j.triplets for j in parts]),
        np.concatenate([j.participant for j in parts]),
        votes=np.concatenate([j.votes for j in parts]),
    )  # type: ignore[misc]
    triplets, probs = choice_distributions(allj)  # unique (anchor, pair) rows, vote shares
    folds = object_disjoint_folds(triplets, n_items=100, n_splits=args.folds, random_state=0)

    held = {name: [] for name in ("zero-shot", "hard", "soft")}
    held_rows: list[np.ndarray] = []
    for k, (train, test) in enumerate(folds):
        tr, te = triplets[train], triplets[test]
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        T0 = fit_temperature(Xn, tr, probs[train])
        held["zero-shot"].append(two_afc_probs(Xn, te, T0))
        strict = probs[train][:, 0] > 0.5
        hard = AffineTransform("hard", lam=0.1, random_state=0).fit(X, tr[strict], kind="twoafc")
        held["hard"].append(hard.predict_proba(X, te, kind="twoafc"))
        soft = AffineTransform("soft", lam=0.1, random_state=0).fit(
            X, tr, kind="twoafc", targets=probs[train]
        )
        held["soft"].append(soft.predict_proba(X, te, kind="twoafc"))
        held_rows.append(test)
        print(
            f"fold {k}: {len(train)} fit / {len(test)} held-out triplets "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    rows = np.concatenate(held_rows)
    human = probs[rows]
    strict = human[:, 0] > 0.5
    table = {}
    print(
        f"\nMaterials, {args.model}: held-out materials ({args.folds}-fold, object-disjoint), "
        f"{int(strict.sum())} strict-majority triplets of {len(rows)}"
    )
    print(f"{'model':<10} {'accuracy':>9} {'95% CI':>17} {'ECE':>7} {'H corr':>7} {'H model':>8}")
    for name, chunks in held.items():
        p = np.concatenate(chunks)
        acc = accuracy_summary(p[strict, 0] > p[strict, 1], random_state=0)
        ece = expected_calibration_error(p, human)["ece"]
        ent = entropy_correlation(p, human)
        table[name] = {**acc, "ece": ece, **ent}
        print(
            f"{name:<10} {acc['accuracy']:>9.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]"
            f" {ece:>7.3f} {ent['spearman']:>7.3f} {ent['mean_model_entropy']:>8.3f}"
        )
    print(
        f"human mean entropy {table['soft']['mean_human_entropy']:.3f} nats; "
        f"wall time {time.perf_counter() - t0:.0f} s"
    )
    (cache / f"materials_{args.model}.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
