"""Calibration of model triplet probabilities against human choice distributions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.align.calibration import (
    entropy,
    entropy_correlation,
    expected_calibration_error,
    kl_to_humans,
)
from alignet_engine.align.metrics import pair_similarities
from alignet_engine.align.soft_targets import choice_distributions
from alignet_engine.base.types import Judgments
from alignet_engine.errors import InputError


def test_ece_hand_computed() -> None:
    q = np.array([[0.7, 0.2, 0.1], [0.2, 0.35, 0.45]])
    p = np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    out = expected_calibration_error(q, p, n_bins=10)
    # row 0: confidence 0.7 (bin 7), agreement p[0] = 0.5; row 1: 0.45 (bin 4), agreement 1.0
    assert out["ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.55)
    assert out["mce"] == pytest.approx(0.55)
    assert out["mean_confidence"] == pytest.approx(0.575)
    assert out["mean_agreement"] == pytest.approx(0.75)
    assert out["n"] == 2
    assert out["bin_count"] == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0]
    assert out["bin_confidence"][7] == pytest.approx(0.7)
    assert out["bin_accuracy"][4] == pytest.approx(1.0)
    assert math.isnan(out["bin_accuracy"][0])
    assert out["bin_edges"][0] == 0.0 and out["bin_edges"][-1] == 1.0
    assert len(out["bin_edges"]) == 11
    json.dumps(out)  # JSON-able for the project store


def test_ece_pooling_within_a_bin_and_edge_cases() -> None:
    # two rows in one bin: over- and under-confident cancel inside the bin (ECE is per bin)
    q = np.array([[0.62, 0.2, 0.18], [0.64, 0.3, 0.06]])
    p = np.array([[0.52, 0.3, 0.18], [0.74, 0.2, 0.06]])
    assert expected_calibration_error(q, p)["ece"] == pytest.approx(0.0, abs=1e-12)
    # a model equal to the humans is perfectly calibrated
    h = np.random.default_rng(0).dirichlet([1, 1, 1], size=200)
    assert expected_calibration_error(h, h)["ece"] == pytest.approx(0.0, abs=1e-12)
    # a tie for the maximum: the model picks uniformly among the tied options
    tie = expected_calibration_error(np.array([[0.4, 0.4, 0.2]]), np.array([[1.0, 0.0, 0.0]]))
    assert tie["mean_agreement"] == pytest.approx(0.5)
    # confidence 1 falls into the last bin, two-option rows work
    two = expected_calibration_error(np.array([[1.0, 0.0]]), np.array([[0.8, 0.2]]), n_bins=5)
    assert two["bin_count"] == [0, 0, 0, 0, 1] and two["ece"] == pytest.approx(0.2)


def test_entropy_and_correlation() -> None:
    np.testing.assert_allclose(entropy(np.array([[1 / 3] * 3, [1.0, 0.0, 0.0]])), [np.log(3), 0])
    assert entropy(np.array([[0.5, 0.5]]))[0] == pytest.approx(np.log(2))
    q = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.4, 0.35, 0.25], [0.34, 0.33, 0.33]])
    p = np.array([[0.8, 0.1, 0.1], [0.5, 0.5, 0.0], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3]])
    out = entropy_correlation(q, p)
    hq, hp = entropy(q), entropy(p)
    assert out["pearson"] == pytest.approx(np.corrcoef(hq, hp)[0, 1])
    # ranks of hp: [0, 1, 2, 3] (0.639 < 0.693 < 1.030 < 1.089) and hq increasing too
    assert out["spearman"] == pytest.approx(1.0)
    assert out["mean_model_entropy"] == pytest.approx(hq.mean())
    assert out["mean_human_entropy"] == pytest.approx(hp.mean())
    assert out["n"] == 4
    flat = entropy_correlation(np.full((3, 3), 1 / 3), p[:3])
    assert math.isnan(flat["spearman"]) and math.isnan(flat["pearson"])


def test_kl_to_humans() -> None:
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.25, 0.75], [0.5, 0.5]])
    expected = (0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75) + np.log(2)) / 2
    assert kl_to_humans(q, p) == pytest.approx(expected)
    assert kl_to_humans(p, p) == 0.0  # options nobody chose add nothing (0·log 0 = 0)
    assert kl_to_humans(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]])) == math.inf


@pytest.mark.parametrize(
    ("q", "p", "msg"),
    [
        (np.full((2, 3), 1 / 3), np.full((3, 3), 1 / 3), "same shape"),
        (np.array([[0.5, 0.6, -0.1]]), np.full((1, 3), 1 / 3), "non-negative"),
        (np.array([[0.5, 0.6, 0.1]]), np.full((1, 3), 1 / 3), "sum to 1"),
        (np.array([[np.nan, 0.5, 0.5]]), np.full((1, 3), 1 / 3), "finite"),
        (np.ones((2, 1)), np.ones((2, 1)), "k >= 2"),
    ],
)
def test_bad_input(q: np.ndarray, p: np.ndarray, msg: str) -> None:
    for fn in (expected_calibration_error, entropy_correlation, kl_to_humans):
        with pytest.raises(InputError, match=msg):
            fn(q, p)


def test_bad_bins() -> None:
    with pytest.raises(InputError, match="n_bins"):
        expected_calibration_error(np.full((1, 3), 1 / 3), np.full((1, 3), 1 / 3), n_bins=0)


# --------------------------------------------------------------------------------------------
# real data: the VICE embedding against the THINGS repeated-triplet choice distributions
# --------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_things_vice_calibration(shared_data: Path) -> None:
    """VICE softmax(dot products) vs the 1,000 THINGS triplets answered 14-25 times each.

    Measured: ECE 0.027 (VICE slightly over-confident: mean confidence 0.660, expected
    agreement 0.636), entropy Spearman 0.68 / Pearson 0.70, mean entropy 0.782 nats for VICE
    (method.md quotes 0.794 on VICE's own 20k test probabilities) and 0.732 for the humans'
    empirical distributions, KL(human ‖ VICE) 0.104 nats vs 0.366 for a uniform model.
    """
    folder = shared_data / "things"
    raw = np.loadtxt(folder / "triplets_noiseceiling.tsv", dtype=np.int64, delimiter="\t")
    objects, choice = raw[:, :3] - 1, raw[:, 3] - 1  # 0-based ids, position of the odd one
    rows = []
    for obj, c in zip(objects.tolist(), choice.tolist()):
        odd = obj.pop(c)
        rows.append([*obj, odd])
    judgments = Judgments("oddone", np.asarray(rows, dtype=np.int64), raw[:, 4].copy())
    trip, human = choice_distributions(judgments)  # columns [pair 01, pair 02, pair 12]
    s = pair_similarities(np.load(folder / "vice_embedding_things.npy"), trip, "dot")
    vice = np.exp(s - s.max(axis=1, keepdims=True))
    vice /= vice.sum(axis=1, keepdims=True)

    ece = expected_calibration_error(vice, human)
    assert ece["n"] == 1000 and sum(ece["bin_count"]) == 1000
    assert ece["ece"] == pytest.approx(0.027, abs=0.003)
    # mean agreement with a random human is VICE's accuracy on the 20,000 responses (63.57 %),
    # up to the per-triplet weighting (14-25 responses per triplet)
    assert ece["mean_agreement"] == pytest.approx(0.636, abs=0.003)
    assert ece["mean_confidence"] > ece["mean_agreement"]  # slightly over-confident

    ent = entropy_correlation(vice, human)
    assert ent["spearman"] == pytest.approx(0.68, abs=0.01)
    assert ent["pearson"] == pytest.approx(0.70, abs=0.01)
    assert ent["mean_model_entropy"] == pytest.approx(0.782, abs=0.002)
    assert ent["mean_human_entropy"] == pytest.approx(0.732, abs=0.002)

    kl = kl_to_humans(vice, human)
    assert kl == pytest.approx(0.104, abs=0.002)
    assert kl < kl_to_humans(np.full_like(human, 1 / 3), human)
