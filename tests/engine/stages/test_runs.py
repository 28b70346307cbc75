"""Run management: which run of a slot is current, deleting runs, one definition of
staleness (transitive), a worse run that waits instead of replacing a better one, the
dashboard's next-step advice, and re-running everything stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.config import EvaluateConfig, TransformConfig
from alignet_engine.errors import ProjectError
from alignet_engine.jobs import Message, run_job
from alignet_engine.stages.evaluate import evaluate
from alignet_engine.stages.evaluate_all import evaluate_all, fit_judgments
from alignet_engine.stages.headlines import compare_headline
from alignet_engine.stages.imports import import_features
from alignet_engine.stages.order import stale_order
from alignet_engine.stages.rerun import rerun_stale
from alignet_engine.stages.transform import fit_transform
from alignet_engine.store import Project
from alignet_engine.views.status import advice, next_steps, pipeline_status


def _run(p: Project, stage: str, slot: str, inputs=None, summary=None, current=True) -> str:
    run_id = p.begin_job(stage, {})
    p.write_run(
        stage,
        run_id,
        slot=slot,
        params={"x": 1},
        arrays={"a": np.zeros(2)},
        inputs=inputs,
        summary=summary,
        make_current=current,
    )
    return f"{stage}/{run_id}"


def _project(tmp_path: Path) -> Project:
    p = Project.create(tmp_path / "p.alignet")
    p.write_imageset("s", ImageSet(("a", "b", "c"), ("", "", "")), {})
    p.write_judgments(
        "j", Judgments("oddone", np.array([[0, 1, 2]]), np.array([-1])), image_set="s", params={}
    )
    return p


def test_set_current_switches_runs_of_a_slot_and_is_journalled(tmp_path: Path) -> None:
    with _project(tmp_path) as p:
        first = _run(p, "distill", "distill")
        second = _run(p, "distill", "distill")
        other = _run(p, "clusters", "clusters")
        assert p.current("distill") == second
        assert p.set_current("distill", first) == second
        assert p.current("distill") == first
        record = p.journal()[-1]
        assert record["event"] == "set_current"
        assert (record["slot"], record["run"], record["previous"]) == ("distill", first, second)
        with pytest.raises(ProjectError, match="belongs to slot 'clusters'"):
            p.set_current("distill", other)
        with pytest.raises(ProjectError, match="No run"):
            p.set_current("distill", "distill/nope")
        assert p.current("distill") == first
        # interrupted-job detection ignores the new journal records
        assert p.interrupted_jobs() == []


def test_delete_run_needs_a_decision_about_a_current_run(tmp_path: Path) -> None:
    with _project(tmp_path) as p:
        old = _run(p, "distill", "distill")
        new = _run(p, "distill", "distill")
        features = _run(p, "features", "features:s:m+distilled", inputs={"distill": new})
        with pytest.raises(ProjectError, match="current run of 'distill'"):
            p.delete_run(new)
        assert {r.run_id for r in p.runs("distill")} == {old.split("/")[1], new.split("/")[1]}
        # a run that is not current goes without a question
        p.delete_run(old)
        assert [f"distill/{r.run_id}" for r in p.runs("distill")] == [new]
        with pytest.raises(ProjectError, match="No run"):
            p.run(old)
        # deleting the current run and clearing the slot makes its readers stale
        p.delete_run(new, clear_slot=True)
        assert "distill" not in p.slots() and "distill" not in p.info()["current"]
        assert p.stale_reasons(features) == [f"distill changed ({new} → deleted)"]
        assert p.journal()[-1]["event"] == "delete"
        assert "distill" not in p.info()["runs"][0]["run"]


def test_delete_run_replacing_it_with_another_run_of_the_slot(tmp_path: Path) -> None:
    with _project(tmp_path) as p:
        a = _run(p, "transform", "transform:t")
        b = _run(p, "transform", "transform:t")
        c = _run(p, "clusters", "clusters")
        with pytest.raises(ProjectError, match="not a run of slot"):
            p.delete_run(b, replace_with=c)
        with pytest.raises(ProjectError, match="Cannot make"):
            p.delete_run(b, replace_with=b)
        p.delete_run(b, replace_with=a)
        assert p.current("transform:t") == a
        assert p.journal()[-1] == {**p.journal()[-1], "run": b, "current": a}


def test_a_deleted_runs_side_arrays_go_with_the_next_garbage_collection(tmp_path: Path) -> None:
    with _project(tmp_path) as p:
        keep = _run(p, "features", "features:s:m")
        run_id = p.begin_job("features", {})
        big = np.ones((600, 600), np.float32)  # 1.4 MiB: stored in a side file
        p.write_run(
            "features",
            run_id,
            slot="features:s:m",
            params={},
            arrays={"X": big},
            make_current=False,
        )
        side = sorted((p.files_dir / "arrays").iterdir())
        assert len(side) == 1
        p.delete_run(f"features/{run_id}")
    # the writer's lease protects its files while it is open; reopened, gc may sweep them
    with Project.open(tmp_path / "p.alignet") as p:
        report = p.collect_garbage(dry_run=False)
        assert [Path(u).name for u in report.unreferenced] == [side[0].name]
        assert not side[0].exists() and p.current("features:s:m") == keep


def test_staleness_is_transitive_and_the_same_everywhere(tmp_path: Path) -> None:
    """A new distillation makes the student's features stale and, through them, their
    evaluation: info, stale_reasons and pipeline_status say so alike."""
    with _project(tmp_path) as p:
        d1 = _run(p, "distill", "distill")
        f = _run(p, "features", "features:s:m+distilled", inputs={"distill": d1})
        e = _run(
            p,
            "evaluate",
            "evaluate:s:m+distilled:judgments=j",
            inputs={"features:s:m+distilled": f},
        )
        assert p.staleness() == {d1: [], f: [], e: []}
        d2 = _run(p, "distill", "distill")
        direct = f"distill changed ({d1} → {d2})"
        assert p.stale_reasons(f) == [direct]
        assert p.stale_reasons(e) == [f"features:s:m+distilled: {direct}"]
        assert p.stale_reasons("evaluate:s:m+distilled:judgments=j") == p.stale_reasons(e)
        info = p.info()
        assert {r["run"]: r["stale"] for r in info["runs"]}[e] == p.stale_reasons(e)
        status = pipeline_status(info)
        assert status["features"].state == "stale" and status["evaluate"].state == "stale"
        assert status["distill"].state == "done"
        assert stale_order(info) == [f, e]
        steps = next_steps(info)
        assert [s.stage for s in steps[:2]] == ["features", "evaluate"]
        assert steps[0].text == "re-extract the student's features of s"
        assert steps[0].page == "Models & features" and steps[1].page == "Evaluation"
        assert advice(info).startswith(
            "Re-extract the student's features of s, then re-evaluate (1 evaluation)"
        )
        # going back to the first distillation makes everything current again
        p.set_current("distill", d1)
        assert all(not r["stale"] for r in p.info()["runs"])


def test_next_steps_for_an_empty_and_a_half_done_project(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p.alignet") as p:
        steps = next_steps(p.info())
        assert [s.page for s in steps] == ["Data"] and "import images" in steps[0].text
        p.write_imageset("s", ImageSet(("a", "b", "c"), ("", "", "")), {})
        assert next_steps(p.info())[0].text == ("import human judgments about the stimuli")
        j = Judgments("oddone", np.array([[0, 1, 2]]), np.array([-1]))
        p.write_judgments("j", j, image_set="s", params={})
        _run(p, "features", "features:s:m")
        steps = next_steps(p.info())
        assert [(s.stage, s.page) for s in steps] == [("transform", "Alignment")]


def test_compare_headline_decides_worse_by_the_stage_metric() -> None:
    worse = compare_headline(
        "distill", {"val_agreement_after": 0.903}, {"val_agreement_after": 0.993}, "distill/a"
    )
    assert worse is not None and worse.worse
    assert "0.903" in worse.sentence() and "0.993" in worse.sentence()
    better = compare_headline(
        "distill", {"val_agreement_after": 0.995}, {"val_agreement_after": 0.9}
    )
    assert better is not None and not better.worse
    assert compare_headline("distill", {"val_agreement_after": 0.9}, None) is None
    assert compare_headline("distill", {"val_agreement_after": 0.9}, {"steps": 3}) is None
    assert compare_headline("clusters", {"k": 3}, {"k": 4}) is None


def _planted(tmp_path: Path) -> tuple[np.ndarray, Judgments]:
    """Features that distort a planted embedding, and odd-one-out judgments of it."""
    rng = np.random.default_rng(0)
    n, d = 60, 6
    truth = rng.normal(size=(n, d))
    X = truth * np.array([4.0, 2.0, 1.0, 0.3, 0.2, 0.1]) + 0.1 * rng.normal(size=(n, d))
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    rows = []
    for _ in range(1500):
        a, b, c = (int(i) for i in rng.choice(n, 3, replace=False))
        sims = {c: truth[a] @ truth[b], b: truth[a] @ truth[c], a: truth[b] @ truth[c]}
        odd = max(sims, key=sims.get)
        rows.append([*(i for i in (a, b, c) if i != odd), odd])
    return X, Judgments("oddone", np.array(rows), np.full(len(rows), -1))


def test_a_worse_transform_waits_and_rerun_stale_brings_everything_up_to_date(
    tmp_path: Path,
) -> None:
    _, judgments = _planted(tmp_path)
    with Project.create(tmp_path / "p.alignet") as p:
        import_features(p, tmp_path / "X.npy", image_set="s", label="m")
        p.write_judgments("j", judgments, image_set="s", params={})
        good = TransformConfig(
            image_set="s", judgments=("j",), model="m", lam=0.0, lr=5e-2, max_epochs=60
        )
        good_id = run_job(fit_transform(p, good))
        summary = p.run(f"transform/{good_id}", arrays=False).summary
        assert 0.0 <= summary["val_accuracy"] <= 1.0
        # a hobbled fit (one epoch at a tiny learning rate) is worse on the held-out rows
        bad = TransformConfig(
            image_set="s", judgments=("j",), model="m", lam=0.0, lr=1e-6, max_epochs=1
        )
        events: list = []
        bad_id = run_job(fit_transform(p, bad), events.append)
        bad_summary = p.run(f"transform/{bad_id}", arrays=False).summary
        assert bad_summary["val_accuracy"] < summary["val_accuracy"]
        assert p.current("transform:teacher") == f"transform/{good_id}"
        warnings = [e.text for e in events if isinstance(e, Message) and e.level == "WARNING"]
        assert len(warnings) == 1 and f"transform/{bad_id}" in warnings[0]
        # the user can still choose it
        p.set_current("transform:teacher", f"transform/{bad_id}")
        p.set_current("transform:teacher", f"transform/{good_id}")

        evaluation = EvaluateConfig(
            image_set="s", model="m", transform="teacher", judgments="j", n_boot=20
        )
        run_job(evaluate(p, evaluation))
        # new features: the transform and (through it) the evaluation are stale
        import_features(p, tmp_path / "X.npy", image_set="s", label="m")
        info = p.info()
        order = stale_order(info)
        assert [r.split("/")[0] for r in order] == ["transform", "evaluate"]
        assert advice(info).startswith("Refit the transform teacher, then re-evaluate")
        done = run_job(rerun_stale(p))
        assert done == order
        info = p.info()
        assert not any(r["stale"] for r in info["runs"] if r["run"] in info["current"].values())
        assert next_steps(info)[0].stage == "clusters"
        # the re-run used the stored configuration
        new = p.run("transform:teacher", arrays=False)
        assert new.run_id not in (good_id, bad_id) and new.params == json.loads(
            json.dumps(good.to_dict())
        )

        # "evaluate all" scores held-out judgments only, unless the fit set is named
        p.write_judgments("held", judgments, image_set="s", params={})
        assert p.judgment_image_sets() == {"held": "s", "j": "s"}
        assert p.info()["judgment_image_sets"] == {"held": "s", "j": "s"}
        assert fit_judgments(p) == ["j"]
        result = run_job(evaluate_all(p, n_boot=20))
        targets = {p.run(ref, arrays=False).params["judgments"] for ref in result["ran"]}
        assert result["ran"] and targets == {"held"}


def test_cli_use_delete_and_info_advice(tmp_path: Path, cli) -> None:
    with _project(tmp_path) as p:
        a = _run(p, "distill", "distill")
        b = _run(p, "distill", "distill")
        _run(p, "features", "features:s:m+distilled", inputs={"distill": b})
    path = str(tmp_path / "p.alignet")
    out = cli("use", path, a)
    assert out["previous"] == b and out["current"] == a
    info = cli("info", path)
    assert info["pipeline"]["features"]["state"] == "stale"
    assert info["next_steps"][0]["text"] == "re-extract the student's features of s"
    listed = cli("runs", path, "--stage", "distill")["runs"]
    assert [(r["run"], r["current"]) for r in listed] == [(a, True), (b, False)]
    cli("delete-run", path, b)
    with Project.open(path, readonly=True) as p:
        assert [f"distill/{r.run_id}" for r in p.runs("distill")] == [a]
        assert json.loads(json.dumps(p.info()))["current"]["distill"] == a
