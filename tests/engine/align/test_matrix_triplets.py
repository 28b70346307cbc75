"""Odd-one-out judgments derived from per-subject similarity matrices."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.align.matrix_triplets import split_items, triplets_from_matrices
from alignet_engine.align.soft_targets import choice_distributions
from alignet_engine.cli import main
from alignet_engine.errors import InputError
from alignet_engine.store import Project


def _odd_by_hand(S: np.ndarray, a: int, b: int, c: int) -> int | None:
    """The item left out of the single most similar pair, or None on a tie / missing value."""
    vals = {(a, b): S[a, b], (a, c): S[a, c], (b, c): S[b, c]}
    if any(np.isnan(v) for v in vals.values()):
        return None
    top = max(vals.values())
    winners = [p for p, v in vals.items() if v == top]
    if len(winners) != 1:
        return None
    return ({a, b, c} - set(winners[0])).pop()


def test_every_subject_answers_every_triplet_as_its_matrix_says() -> None:
    rng = np.random.default_rng(0)
    n = 7
    A = rng.integers(1, 6, size=(3, n, n)).astype(float)  # Likert-like: ties happen
    A = (A + A.transpose(0, 2, 1)) / 2
    A[2, 0, 1] = A[2, 1, 0] = np.nan  # subject 2 did not rate pair (0, 1)
    res = triplets_from_matrices(A, 35, random_state=1)  # all C(7, 3) triplets
    j = res.judgments
    assert res.n_triplets == 35 and j.kind == "oddone"
    got = {(tuple(sorted(r)), int(p)): int(r[2]) for r, p in zip(j.triplets, j.participant)}
    assert len(got) == len(j)  # a subject answers a triplet at most once
    expected, skipped = {}, 0
    for trip in itertools.combinations(range(n), 3):
        for s in range(3):
            odd = _odd_by_hand(A[s], *trip)
            if odd is None:
                skipped += 1
            else:
                expected[(trip, s)] = odd
    assert got == expected
    assert res.n_skipped == skipped > 0
    # the pair kept together is the subject's most similar one
    for r, p in zip(j.triplets, j.participant):
        assert A[p, r[0], r[1]] > max(A[p, r[0], r[2]], A[p, r[1], r[2]])


def test_dissimilarities_choice_distributions_and_split() -> None:
    rng = np.random.default_rng(1)
    n = 20
    D = rng.random(size=(4, n, n))
    fit, test = split_items(n, test_fraction=0.4, random_state=3)
    assert np.intersect1d(fit, test).size == 0 and np.union1d(fit, test).size == n
    assert test.size == 8
    res = triplets_from_matrices(D, 50, kind="dissimilarity", items=test, random_state=0)
    assert set(np.unique(res.judgments.triplets)) <= set(test.tolist())
    # soft targets: the share of subjects choosing each odd one, by hand
    trip, probs = choice_distributions(res.judgments)
    sim = -(D + D.transpose(0, 2, 1)) / 2
    for row, p in zip(trip[:25], probs[:25]):
        i, j_, k = row
        votes = [_odd_by_hand(sim[s], i, j_, k) for s in range(4)]
        votes = [v for v in votes if v is not None]
        # logit order [p(odd = col 2), p(odd = col 1), p(odd = col 0)]
        assert p == pytest.approx(
            [votes.count(k) / len(votes), votes.count(j_) / len(votes), votes.count(i) / len(votes)]
        )


def test_bad_matrices_are_refused() -> None:
    with pytest.raises(InputError, match="no subject answered"):
        triplets_from_matrices(np.ones((2, 5, 5)), 5)
    with pytest.raises(InputError, match="subjects, n, n"):
        triplets_from_matrices(np.ones((2, 5, 4)), 5)
    with pytest.raises(InputError, match="distinct triplets"):
        triplets_from_matrices(np.random.default_rng(0).random((5, 5)), 11)
    with pytest.raises(InputError, match="fewer than 3"):
        split_items(5, test_fraction=0.5)


def test_cli_fit_and_test_splits_are_object_disjoint(tmp_path: Path, cli) -> None:
    rng = np.random.default_rng(2)
    n = 30
    truth = rng.normal(size=(n, 5))
    subjects = np.stack([truth @ truth.T + rng.normal(size=(n, n)) for _ in range(5)])
    subjects = (subjects + subjects.transpose(0, 2, 1)) / 2  # the importer wants symmetry
    np.save(tmp_path / "ratings.npy", subjects)
    np.save(tmp_path / "X.npy", truth.astype(np.float32))
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    cli("import-features", project, str(tmp_path / "X.npy"), "--set", "s", "--name", "m")
    cli("import-matrix", project, str(tmp_path / "ratings.npy"), "--set", "s", "--name", "r")
    fit = cli("matrix-triplets", project, "--matrix", "r", "--n", "300", "--name", "fit")
    test = cli(
        "matrix-triplets",
        project,
        "--matrix",
        "r",
        "--n",
        "200",
        "--name",
        "test",
        "--split",
        "test",
    )
    assert (fit["n_items"], test["n_items"]) == (15, 15)
    assert fit["n_responses"] == 5 * 300 - fit["n_skipped"]
    with Project.open(project, readonly=True) as p:
        jf, set_f = p.judgments("fit")
        jt, _ = p.judgments("test")
        params = p._read_data("judgments", "test")[1]["params"]
    assert set_f == "s"
    assert np.intersect1d(np.unique(jf.triplets), np.unique(jt.triplets)).size == 0
    assert sorted(params["items"]) == sorted(np.unique(jt.triplets).tolist())
    # the derived judgments fit a soft transform like any repeated triplets
    out = cli(
        "fit-transform",
        project,
        "--set",
        "s",
        "--model",
        "m",
        "--judgments",
        "fit",
        "--lam",
        "0.01",
        "--max-epochs",
        "3",
    )
    assert out["n_triplets"] == 300
    # too many triplets for the split: exit 2, project unchanged
    assert (
        main(
            ["matrix-triplets", project, "--matrix", "r", "--n", "100000", "--name", "x", "--quiet"]
        )
        == 2
    )
    with Project.open(project, readonly=True) as p:
        assert "x" not in p.names("judgments")


def test_derive_job_writes_what_the_matrices_say_and_cancels_cleanly(tmp_path: Path) -> None:
    from alignet_engine.base.types import ImageSet
    from alignet_engine.config import MatrixTripletsConfig
    from alignet_engine.jobs import Cancelled, JobControl, Message, Progress
    from alignet_engine.stages.matrix_triplets import derive_triplets

    rng = np.random.default_rng(4)
    n = 12
    S = rng.normal(size=(3, n, n))
    S = (S + S.transpose(0, 2, 1)) / 2
    with Project.create(tmp_path / "p.alignet") as project:
        project.write_imageset("s", ImageSet(("",) * n, ("",) * n), {})
        project.write_matrix("m", S, image_set="s", kind="similarity", params={})
        control = JobControl()
        control.cancel()
        config = MatrixTripletsConfig(matrix="m", name="j", n_triplets=40, split="all")
        with pytest.raises(Cancelled):
            list(derive_triplets(project, config, control))
        assert "j" not in project.names("judgments")
        events = []
        job = derive_triplets(project, config)
        try:
            while True:
                events.append(next(job))
        except StopIteration as stop:
            result = stop.value
        assert [e.done for e in events if isinstance(e, Progress)] == [0, 1]
        assert "40 triplets" in next(e.text for e in events if isinstance(e, Message))
        j, image_set = project.judgments("j")
        assert image_set == "s" and len(j) == len(result.judgments)
        # every stored response is the odd one out of that subject's matrix, by hand
        for (a, b, c), subject in zip(j.triplets, j.participant, strict=True):
            assert _odd_by_hand(S[subject], a, b, c) == c  # odd one last
        assert result.n_triplets == 40 and result.items.size == n
    with pytest.raises(InputError, match="test_fraction"):
        MatrixTripletsConfig(matrix="m", test_fraction=1.0)
