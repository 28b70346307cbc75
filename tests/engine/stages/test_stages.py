"""Stage jobs over the project: cancel leaves a journal record and no run; two-alternative
judgments with votes go through the soft transform stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.config import ExtractConfig, TransformConfig
from alignet_engine.jobs import Cancelled, JobControl, Progress
from alignet_engine.stages.features import extract
from alignet_engine.stages.imports import import_features
from alignet_engine.stages.transform import fit_transform, stored_transform
from alignet_engine.store import Project


def test_cancelled_extraction_is_journaled_and_writes_no_run(tmp_path: Path) -> None:
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 40), (40 * i, 100, 200 - 30 * i)).save(p)
        paths.append(str(p))
    with Project.create(tmp_path / "p.alignet") as project:
        project.write_imageset("s", ImageSet(tuple(paths), ("",) * 6), {})
        control = JobControl()
        job = extract(project, ExtractConfig(image_set="s", batch_size=2, image_size=32), control)
        events = []
        with pytest.raises(Cancelled):
            for event in job:
                events.append(event)
                if isinstance(event, Progress):
                    control.cancel()
        assert [e.done for e in events if isinstance(e, Progress)] == [2]
        assert project.slots() == {}
        last = project.journal()[-1]
        assert last["event"] == "end" and last["status"] == "cancelled"
        assert project.interrupted_jobs() == []


def test_soft_transform_stage_on_two_alternative_votes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, d = 40, 6
    truth = rng.normal(size=(n, d))
    # Features that weight the observers' dimensions very unequally: a transform can fix that.
    X = truth * np.array([4.0, 2.0, 1.0, 0.3, 0.2, 0.1]) + 0.1 * rng.normal(size=(n, d))
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    rows, votes = [], []
    for _ in range(600):
        a, b, c = rng.choice(n, 3, replace=False)
        s_b, s_c = truth[a] @ truth[b], truth[a] @ truth[c]
        p_b = 1 / (1 + np.exp(-(s_b - s_c)))
        k = rng.binomial(5, p_b)
        if k == 5 - k:
            continue
        rows.append((a, b, c) if k > 5 - k else (a, c, b))
        votes.append((max(k, 5 - k), min(k, 5 - k)))
    j = Judgments("twoafc", np.array(rows), np.full(len(rows), -1), votes=np.array(votes))
    with Project.create(tmp_path / "p.alignet") as project:
        import_features(project, tmp_path / "X.npy", image_set="s", label="m")
        project.write_judgments("votes", j, image_set="s", params={})
        from alignet_engine.jobs import run_job

        run_job(
            fit_transform(
                project,
                TransformConfig(
                    image_set="s",
                    judgments=("votes",),
                    model="m",
                    objective="soft",
                    lam=0.0,
                    lr=1e-2,
                    max_epochs=60,
                ),
            )
        )
        run = project.run("transform:teacher", arrays=False)
        assert run.summary["kind"] == "twoafc" and run.summary["n_triplets"] == len(
            {(a, frozenset((b, c))) for a, b, c in rows}
        )  # soft targets: one row per distinct (anchor, pair)
        est, _ = stored_transform(project, "teacher")
        Z = est.transform(X)
        t = np.array(rows)

        def acc(F: np.ndarray) -> float:
            return float(
                np.mean(np.sum(F[t[:, 0]] * F[t[:, 1]], 1) > np.sum(F[t[:, 0]] * F[t[:, 2]], 1))
            )

        assert acc(Z) > acc(X) + 0.05


def test_a_transform_on_several_judgment_sets_keeps_votes_only_when_every_set_has_them(
    tmp_path: Path,
) -> None:
    from alignet_engine.stages.transform import _merged_judgments

    rows_a, rows_b = np.array([[0, 1, 2], [3, 4, 5]]), np.array([[1, 2, 3]])
    votes_a, votes_b = np.array([[3, 1], [2, 0]]), np.array([[4, 4]])
    with Project.create(tmp_path / "p.alignet") as project:
        ids = tuple(f"/x/{i}.png" for i in range(6))
        project.write_imageset("s", ImageSet(ids, ("",) * 6), {})
        for name, rows, votes in (
            ("a", rows_a, votes_a),
            ("b", rows_b, votes_b),
            ("plain", rows_b, None),
        ):
            j = Judgments("twoafc", rows, np.full(len(rows), -1), votes=votes)
            project.write_judgments(name, j, image_set="s", params={})

        both = _merged_judgments(project, TransformConfig(image_set="s", judgments=("a", "b")))
        assert both.triplets.tolist() == [[0, 1, 2], [3, 4, 5], [1, 2, 3]]
        assert both.votes is not None and both.votes.tolist() == [[3, 1], [2, 0], [4, 4]]
        one_plain = TransformConfig(image_set="s", judgments=("a", "plain"))
        assert _merged_judgments(project, one_plain).votes is None


def test_cluster_diagnostics_and_class_boundary_sampling_through_the_stages(
    tmp_path: Path,
) -> None:
    from alignet_engine.config import ClusterConfig, SampleConfig
    from alignet_engine.jobs import run_job
    from alignet_engine.stages.clusters import cluster
    from alignet_engine.stages.triplets import sample

    rng = np.random.default_rng(1)
    centres = rng.normal(scale=5.0, size=(4, 8))
    cats = np.repeat(np.arange(4), 15)
    X = centres[cats] + rng.normal(size=(60, 8))
    np.save(tmp_path / "pool.npy", X.astype(np.float32))
    with Project.create(tmp_path / "p.alignet") as project:
        names = tuple(f"c{c}" for c in cats)
        project.write_imageset("pool", ImageSet(tuple(f"/x/{i}.png" for i in range(60)), names), {})
        import_features(project, tmp_path / "pool.npy", image_set="pool", label="m")
        run_job(
            cluster(
                project,
                ClusterConfig(
                    image_set="pool",
                    model="m",
                    transform=None,
                    k=4,
                    diagnose_ks=(2, 4, 6),
                    n_nearest=3,
                ),
            )
        )
        summary = project.run("clusters", arrays=False).summary
        assert summary["diagnostics"]["best_k"] == 4
        assert [len(c["nearest"]) for c in summary["clusters"]] == [3, 3, 3, 3]
        run_job(sample(project, SampleConfig(n_triplets=200, n_val=0, strategy="class_boundary")))
        t = project.run("triplets").arrays["triplets"]
    # Class boundary: two items of one category and one of another; the teacher (here the
    # raw features, clustered by category) keeps the same-category pair and puts the other
    # item last.
    assert np.all(cats[t[:, 0]] == cats[t[:, 1]]) and np.all(cats[t[:, 2]] != cats[t[:, 0]])


def _planted(tmp_path: Path, n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A planted human embedding E (n, 4) and distorted model features X of the same items."""
    rng = np.random.default_rng(seed)
    E = np.maximum(rng.normal(size=(n, 4)), 0) * 2.0
    X = E * np.array([3.0, 1.0, 0.3, 0.1]) + 0.2 * rng.normal(size=(n, 4))
    X = np.concatenate([X, rng.normal(size=(n, 4))], axis=1)  # plus nuisance dimensions
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "E.npy", E.astype(np.float32))
    return X, E


def test_transform_from_an_imported_human_embedding_with_a_grid_search(tmp_path: Path) -> None:
    from alignet_engine.align.human_models import EmbeddingHumanModel, sample_random_triplets
    from alignet_engine.align.metrics import oddone_correct
    from alignet_engine.jobs import run_job

    X, E = _planted(tmp_path)
    held = sample_random_triplets(len(E), 3000, random_state=5)
    p = EmbeddingHumanModel(E).predict_proba(held)
    held = held[p[:, 0] > 0.6]  # clear human majority: the odd one is already last
    with Project.create(tmp_path / "p.alignet") as project:
        import_features(project, tmp_path / "X.npy", image_set="s", label="model")
        import_features(project, tmp_path / "E.npy", image_set="s", label="human")
        cfg = TransformConfig(
            image_set="s",
            model="model",
            targets="embedding:human",
            n_model_triplets=6000,
            objective="soft",
            lr=1e-2,
            max_epochs=40,
            search={"lam": [0.0, 10.0]},
            n_splits=2,
        )
        run_job(fit_transform(project, cfg))
        run = project.run("transform:teacher", arrays=False)
        est, _ = stored_transform(project, "teacher")
    assert run.summary["targets"] == "embedding:human"
    assert "features:s:human" in run.inputs  # re-importing the embedding makes it stale
    grid = run.summary["search"]["cv_results"]
    assert len(grid["params"]) == 2 and run.summary["search"]["best_params"] in grid["params"]
    zero_shot = oddone_correct(X, held, metric="cosine").mean()
    aligned = oddone_correct(est.transform(X), held, metric="dot").mean()
    assert aligned > zero_shot + 0.05


def test_transform_with_vice_targets_from_judgments(tmp_path: Path) -> None:
    from alignet_engine.align.human_models import EmbeddingHumanModel, sample_random_triplets
    from alignet_engine.jobs import run_job

    _, E = _planted(tmp_path, n=40)
    rng = np.random.default_rng(2)
    t = sample_random_triplets(len(E), 4000, random_state=3)
    p = EmbeddingHumanModel(E).predict_proba(t)  # column 0: p(last item is odd)
    choice = np.array([rng.choice(3, p=row) for row in p])
    order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[choice]  # chosen odd one last
    rows = np.take_along_axis(t, order, axis=1)
    j = Judgments("oddone", rows, np.full(len(rows), -1))
    with Project.create(tmp_path / "p.alignet") as project:
        import_features(project, tmp_path / "X.npy", image_set="s", label="model")
        project.write_judgments("human", j, image_set="s", params={})
        cfg = TransformConfig(
            image_set="s",
            model="model",
            judgments=("human",),
            targets="vice",
            vice_max_epochs=40,
            n_model_triplets=3000,
            max_epochs=5,
        )
        run_job(fit_transform(project, cfg))
        run = project.run("transform:teacher")
    assert run.summary["targets"] == "vice" and run.summary["vice_dims"] >= 1
    assert run.summary["n_triplets"] == 3000
    assert run.arrays["vice_loc"].shape[0] == 40


def test_transform_npz_round_trip_and_local_term_with_a_pool(tmp_path: Path, cli) -> None:
    from alignet_engine.align.human_models import EmbeddingHumanModel, sample_random_triplets

    _, E = _planted(tmp_path)
    t = sample_random_triplets(len(E), 2000, random_state=1)
    p = EmbeddingHumanModel(E).predict_proba(t)
    rows = t[p[:, 0] > 0.5]
    np.save(tmp_path / "j.npy", rows)
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    cli("import-features", project, str(tmp_path / "X.npy"), "--set", "s", "--name", "m")
    cli("import-features", project, str(tmp_path / "X.npy"), "--set", "pool", "--name", "m")
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
    fitted = cli(
        "fit-transform",
        project,
        "--set",
        "s",
        "--model",
        "m",
        "--judgments",
        "j",
        "--objective",
        "hard",
        "--alpha",
        "0.1",
        "--pool",
        "pool",
        "--max-epochs",
        "5",
    )
    assert fitted["kind"] == "oddone"
    with Project.open(project, readonly=True) as proj:
        assert "features:pool:m" in proj.run("transform:teacher", arrays=False).inputs
    cli("export", project, "--out", str(tmp_path / "out"), "--what", "transform")
    cli(
        "import-transform",
        project,
        str(tmp_path / "out" / "transform.npz"),
        "--set",
        "s",
        "--model",
        "m",
        "--name",
        "copy",
    )
    a = cli(
        "evaluate",
        project,
        "--set",
        "s",
        "--model",
        "m",
        "--judgments",
        "j",
        "--transform",
        "teacher",
    )
    b = cli(
        "evaluate", project, "--set", "s", "--model", "m", "--judgments", "j", "--transform", "copy"
    )
    assert a["accuracy"] == pytest.approx(b["accuracy"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, weights=np.eye(3), bias=np.zeros(3), mean=0.0, std=1.0)
    from alignet_engine.cli import main

    assert main(["import-transform", project, str(bad), "--set", "s", "--model", "m"]) == 2


def test_local_term_draws_at_most_pool_max_rows_of_a_large_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gLocal's local term sees random batches of pool rows, so a pool larger than
    ``pool_max_rows`` gives that many rows drawn at random, read block by block (a 1.28M
    pool is never loaded whole); a smaller pool is used whole, as before."""
    import alignet_engine.stages.transform as transform_stage
    from alignet_engine.jobs import Message

    rng = np.random.default_rng(1)
    n, d, m = 40, 6, 1000
    X = rng.normal(size=(n, d)).astype(np.float32)
    P = rng.normal(size=(m, d)).astype(np.float32)
    P[:, 0] = np.arange(m)  # each pool row names itself in column 0
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "P.npy", P)
    trip = np.array([rng.choice(n, 3, replace=False) for _ in range(300)])
    monkeypatch.setattr(transform_stage, "rows_for_budget", lambda *a, **k: 128)  # 8 blocks
    with Project.create(tmp_path / "p.alignet") as project:
        import_features(project, tmp_path / "X.npy", image_set="s", label="m")
        import_features(project, tmp_path / "P.npy", image_set="pool", label="m")
        project.write_judgments(
            "j", Judgments("oddone", trip, -np.ones(len(trip), np.int64)), image_set="s", params={}
        )

        def config(**kw: object) -> TransformConfig:
            return TransformConfig(
                image_set="s", judgments=("j",), model="m", alpha=0.5, pool="pool", **kw
            )

        drawn, _, summary = transform_stage._pool_rows(project, config(pool_max_rows=150))
        assert summary == {"pool_rows": m, "pool_rows_used": 150}
        ids = drawn[:, 0].astype(int)
        # distinct pool rows, in pool order, each exactly the stored row
        assert len(set(ids)) == 150 and np.all(np.diff(ids) > 0)
        np.testing.assert_array_equal(drawn, P[ids])
        # spread over the pool, not its first blocks
        assert ids.min() < m // 4 and ids.max() > 3 * m // 4
        again, _, _ = transform_stage._pool_rows(project, config(pool_max_rows=150))
        other, _, _ = transform_stage._pool_rows(project, config(pool_max_rows=150, random_state=1))
        np.testing.assert_array_equal(again, drawn)  # seeded
        assert not np.array_equal(other, drawn)
        whole, _, summary = transform_stage._pool_rows(project, config(pool_max_rows=m))
        np.testing.assert_array_equal(whole, P)
        assert summary == {"pool_rows": m, "pool_rows_used": m}

        events = list(fit_transform(project, config(pool_max_rows=150, max_epochs=3)))
        assert any(
            isinstance(e, Message) and "150 of 1000 rows of 'pool'" in e.text for e in events
        )
        run = project.run("transform:teacher", arrays=False)
        assert run.summary["pool_rows"] == m and run.summary["pool_rows_used"] == 150
        assert run.params["pool_max_rows"] == 150
