"""Align a representation of the THINGS concepts with people, from Python (no window, no project).

Run: ``.venv/bin/python examples/things_alignment.py`` (about a minute on 2 cores).

There are no THINGS images here, so the "model" representation is honest concept metadata
that was not derived from odd-one-out judgments: the 27 manual THINGS categories
(``category_mat_manual.tsv``, 0/1 per concept). The human side is the published VICE embedding
(1,854 × 42, learned from 4.7 M THINGS triplets), used as the soft teacher exactly as the
AligNet paper uses it: it labels random triplets with choice probabilities, and an affine
transform of the features is fitted to them (uncertainty distillation, KL). Accuracy is then
measured on the 20,000 real responses to the 1,000 repeated THINGS triplets, against the
noise ceiling of those people.

The data are read where they lie (``../shared/data/things`` beside the checkout, or the
folder given as the first argument); nothing is copied. Without them the script says so and
exits 0 (nothing to do). ``tests/test_examples.py`` runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from alignet_engine import (
    AffineTransform,
    EmbeddingHumanModel,
    Judgments,
    accuracy_summary,
    noise_ceiling_oddone,
    oddone_correct,
    sample_random_triplets,
    soft_targets_from_model,
)

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "things"
#: the files the script reads
FILES = ("category_mat_manual.tsv", "triplets_noiseceiling.tsv", "vice_embedding_things.npy")


def human_judgments(folder: Path) -> Judgments:
    """``triplets_noiseceiling.tsv``: 1-based ids, then the position (1..3) of the odd one."""
    raw = np.loadtxt(folder / "triplets_noiseceiling.tsv", dtype=np.int64, delimiter="\t")
    objects, odd = raw[:, :3] - 1, raw[:, 3] - 1
    rest = np.array([[1, 2], [0, 2], [0, 1]])[odd]
    rows = np.arange(len(raw))
    first, second = objects[rows, rest[:, 0]], objects[rows, rest[:, 1]]
    triplets = np.stack([first, second, objects[rows, odd]], axis=1)  # the odd one last
    return Judgments("oddone", triplets, raw[:, 4].copy())  # column 5: participant id


def align(things: Path, n_model_triplets: int = 100_000) -> dict[str, dict[str, float]]:
    """Fit the soft transform and score both representations; prints a small table.

    Returns ``{"ceiling": {...}, "categories": summary, "categories + soft transform":
    summary}``, each summary an :func:`accuracy_summary` dict (accuracy, ci_low, ci_high, n).
    """
    features = np.loadtxt(things / "category_mat_manual.tsv", delimiter="\t", skiprows=1)
    people = human_judgments(things)
    vice = EmbeddingHumanModel.from_npy(things / "vice_embedding_things.npy")

    # 1. VICE labels 100k random triplets with its choice probabilities (the soft targets).
    triplets, probabilities = soft_targets_from_model(
        vice, sample_random_triplets(len(features), n_model_triplets, random_state=0)
    )
    # 2. The surrogate teacher: an affine map of the features fitted to those probabilities.
    transform = AffineTransform("soft", random_state=0).fit(
        features, triplets, targets=probabilities
    )

    # 3. Agreement with the real responses, before and after, against the people's ceiling.
    ceiling = noise_ceiling_oddone(people)
    print(f"{len(people):,} responses to {ceiling['n_triplets']} repeated THINGS triplets")
    print(f"noise ceiling (leave-one-out):  {ceiling['leave_one_out']:.3f}")
    results: dict[str, dict[str, float]] = {"ceiling": dict(ceiling)}
    # Most concepts share no category with the other two of a triplet: their three similarities
    # tie, and a tie counts as wrong (as in the authors' evaluation), hence the low zero-shot score.
    for name, representation in (
        ("categories", features),
        ("categories + soft transform", transform.transform(features)),
    ):
        s = accuracy_summary(oddone_correct(representation, people.triplets, "dot"), random_state=0)
        print(f"{name:30s} {s['accuracy']:.3f}  95% CI [{s['ci_low']:.3f}, {s['ci_high']:.3f}]")
        results[name] = dict(s)
    return results


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    things = Path(args[0]) if args else DEFAULT
    missing = [name for name in FILES if not (things / name).is_file()]
    if missing:
        print(
            f"THINGS data not found in {things} (missing {', '.join(missing)}); pass the "
            "folder holding them as the first argument. Nothing to do.",
            file=sys.stderr,
        )
        return 0
    align(things)
    return 0


if __name__ == "__main__":
    sys.exit(main())
