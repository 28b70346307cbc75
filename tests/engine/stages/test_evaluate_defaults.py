"""Evaluation follows the representation: the similarity recorded at import is the default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_evaluate_uses_the_similarity_recorded_at_import(tmp_path: Path, cli) -> None:
    # item 0 is long and points between 1 and 2: by dot product 0 pairs with the long item 1,
    # by cosine 1 and 2 (same direction) pair up; the humans chose 2 as odd (dot's answer)
    F = np.array([[3.0, 3.0], [4.0, 0.0], [0.1, 0.0], [0.0, 1.0]])
    np.save(tmp_path / "vice.npy", F)
    np.save(tmp_path / "j.npy", np.array([[0, 1, 2], [0, 1, 2], [1, 2, 3]]))
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    out = cli(
        "import-features",
        project,
        str(tmp_path / "vice.npy"),
        "--set",
        "s",
        "--name",
        "vice",
        "--similarity",
        "dot",
    )
    assert out["similarity"] == "dot"
    cli("import-features", project, str(tmp_path / "vice.npy"), "--set", "s", "--name", "plain")
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

    def by_hand(metric: str) -> float:
        X = F / np.linalg.norm(F, axis=1, keepdims=True) if metric == "cosine" else F
        right = 0
        for i, j, k in [(0, 1, 2), (0, 1, 2), (1, 2, 3)]:
            right += X[i] @ X[j] > max(X[i] @ X[k], X[j] @ X[k])
        return right / 3

    assert by_hand("dot") != by_hand("cosine")
    dot = cli("evaluate", project, "--set", "s", "--model", "vice", "--judgments", "j")
    assert dot["metric"] == "dot" and "recorded" in dot["metric_source"]
    assert dot["accuracy"] == pytest.approx(by_hand("dot"))
    plain = cli("evaluate", project, "--set", "s", "--model", "plain", "--judgments", "j")
    assert plain["metric"] == "cosine" and plain["metric_source"] == "default for raw features"
    assert plain["accuracy"] == pytest.approx(by_hand("cosine"))
    given = cli(
        "evaluate",
        project,
        "--set",
        "s",
        "--model",
        "vice",
        "--judgments",
        "j",
        "--metric",
        "cosine",
    )
    assert given["metric_source"] == "given" and given["accuracy"] == plain["accuracy"]


def test_the_import_dialogs_request_records_the_similarity(tmp_path: Path) -> None:
    from alignet_engine.jobs import run_job
    from alignet_engine.store import Project
    from alignet_engine.views.preview import ImportRequest, import_job

    np.save(tmp_path / "e.npy", np.abs(np.random.default_rng(0).normal(size=(5, 3))))
    request = ImportRequest(
        kind="features",
        path=str(tmp_path / "e.npy"),
        name="vice",
        image_set="s",
        similarity="dot",
    )
    with Project.create(tmp_path / "p.alignet") as project:
        run_job(import_job(project, request, None))
        assert project.run("features:s:vice", arrays=False).params["similarity"] == "dot"
