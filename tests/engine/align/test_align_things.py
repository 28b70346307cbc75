"""Published THINGS numbers reproduced from the real data (../shared/data/things).

The file is parsed here with a tiny independent reader (not the engine's importers), so the test
checks the metrics, not the importer: ``triplets_noiseceiling.tsv`` has no header and 5 integer
columns ``obj_1 obj_2 obj_3 choice participant``; ids are 1-based, ``choice`` (1..3) is the
position of the odd one out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignet_engine.align.metrics import (
    accuracy_summary,
    noise_ceiling_oddone,
    oddone_correct,
    pair_similarities,
)
from alignet_engine.align.soft_targets import choice_distributions
from alignet_engine.base.types import Judgments

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def things(shared_data: Path) -> tuple[Judgments, np.ndarray]:
    folder = shared_data / "things"
    raw = np.loadtxt(folder / "triplets_noiseceiling.tsv", dtype=np.int64, delimiter="\t")
    assert raw.shape == (20_000, 5)
    objects = raw[:, :3] - 1  # 1-based -> 0-based
    choice = raw[:, 3] - 1  # position of the odd one, now 0..2
    rows = []
    for obj, c in zip(objects.tolist(), choice.tolist()):
        odd = obj.pop(c)
        rows.append([*obj, odd])  # odd one LAST, the others in presentation order
    judgments = Judgments("oddone", np.asarray(rows, dtype=np.int64), raw[:, 4].copy())
    embedding = np.load(folder / "vice_embedding_things.npy")
    assert embedding.shape == (1854, 42)
    return judgments, embedding


def test_things_noise_ceiling(things: tuple[Judgments, np.ndarray]) -> None:
    judgments, _ = things
    out = noise_ceiling_oddone(judgments)
    assert out["majority_agreement"] == pytest.approx(0.6722, abs=1e-3)  # PROVENANCE.md
    assert out["n_triplets"] == 1000 and out["n_responses"] == 20_000
    # predicting a response from the others' majority is harder than agreeing with a majority
    # that includes the response itself
    assert 0.55 < out["leave_one_out"] < out["majority_agreement"]


def test_things_vice_accuracy(things: tuple[Judgments, np.ndarray]) -> None:
    judgments, embedding = things
    correct = oddone_correct(embedding, judgments.triplets, "dot")
    summary = accuracy_summary(correct, random_state=0)
    assert summary["accuracy"] == pytest.approx(0.6357, abs=2e-3)  # PROVENANCE.md: 63.57 %
    assert summary["ci_low"] < summary["accuracy"] < summary["ci_high"]
    assert summary["ci_high"] - summary["ci_low"] < 0.02


def test_things_choice_distributions(things: tuple[Judgments, np.ndarray]) -> None:
    judgments, embedding = things
    trip, probs = choice_distributions(judgments)
    assert trip.shape == (1000, 3) and probs.shape == (1000, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # majority agreement again, from the soft targets: the majority is column 0 by construction
    assert probs[:, 0].mean() == pytest.approx(0.6722, abs=1e-3)
    # the VICE softmax is a sensible model of the human distribution: it is closer (in KL) to
    # the human choice distribution than the uniform distribution is
    s = pair_similarities(embedding, trip, "dot")
    q = np.exp(s - s.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    ce_vice = -(probs * np.log(q)).sum(axis=1).mean()
    assert ce_vice < np.log(3)
