"""Evaluation reads the judged items' features only (issue 9: no stage holds a full (n, d)
array it does not need): judgments about a few images of a large set read those rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignet_engine.align.metrics import clustered_accuracy_summary, oddone_correct


def test_evaluation_reads_only_the_judged_rows_and_scores_as_on_the_whole_set(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    n, d = 4000, 8
    F = rng.standard_normal((n, d)).astype(np.float32)
    G = rng.standard_normal((n, d)).astype(np.float32)
    judged = np.sort(rng.choice(n, 30, replace=False))
    triplets = judged[rng.integers(0, 30, size=(400, 3))]
    triplets = triplets[
        (triplets[:, 0] != triplets[:, 1])
        & (triplets[:, 0] != triplets[:, 2])
        & (triplets[:, 1] != triplets[:, 2])
    ]
    np.save(tmp_path / "f.npy", F)
    np.save(tmp_path / "g.npy", G)
    np.save(tmp_path / "j.npy", triplets)
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    for name, file in (("a", "f.npy"), ("b", "g.npy")):
        cli("import-features", project, str(tmp_path / file), "--set", "s", "--name", name)
    cli(
        "import-judgments",
        project,
        str(tmp_path / "j.npy"),
        "--format",
        "oddone-npy",
        "--set",
        "s",
        "--name",
        "j",
    )

    # the whole-array reader is off limits for triplet judgments
    import alignet_engine.stages.evaluate as evaluate_stage

    def whole_features(*_args, **_kwargs):
        raise AssertionError("evaluation read the whole (n, d) features")

    monkeypatch.setattr(evaluate_stage, "teacher_representation", whole_features)
    out = cli(
        "evaluate",
        project,
        "--set",
        "s",
        "--model",
        "a",
        "--judgments",
        "j",
        "--compare",
        "b",
        "--ci-unit",
        "items",
        "--n-boot",
        "300",
        "--random-state",
        "4",
    )
    # the same numbers as computed on the whole arrays with the original item ids
    correct = oddone_correct(F, triplets, metric="cosine")
    assert out["accuracy"] == pytest.approx(correct.mean())
    whole = clustered_accuracy_summary(correct, triplets, unit="items", n_boot=300, random_state=4)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((whole["ci_low"], whole["ci_high"]))
    other = oddone_correct(G, triplets, metric="cosine")
    assert out["comparison"]["difference"] == pytest.approx(correct.mean() - other.mean())
