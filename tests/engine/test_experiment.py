"""Experiment mode, engine side: the trial plan, the session file (resume) and saved judgments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.base.types import ImageSet
from alignet_engine.errors import InputError
from alignet_engine.experiment import (
    ExperimentConfig,
    ExperimentLog,
    plan_trials,
    save_to_project,
    session_path,
    sessions,
)
from alignet_engine.store import Project


def config(**kw) -> ExperimentConfig:
    return ExperimentConfig(image_set="stimuli", **kw)


def test_plan_draws_distinct_triplets_and_places_repeats_later() -> None:
    plan = plan_trials(12, config(n_trials=60, repeat_fraction=0.2))
    assert plan.items.shape == (60, 3)
    assert all(len(set(row)) == 3 for row in plan.items.tolist())
    assert plan.items.min() >= 0 and plan.items.max() < 12
    new = [tuple(sorted(r)) for r, src in zip(plan.items.tolist(), plan.repeat_of) if src < 0]
    assert len(new) == len(set(new)), "a new trial repeats an earlier set"
    repeats = np.flatnonzero(plan.repeat_of >= 0)
    assert len(repeats) == 12
    for t in repeats:
        source = int(plan.repeat_of[t])
        assert plan.repeat_of[source] == -1
        assert sorted(plan.items[t]) == sorted(plan.items[source])
        assert t - source >= 3
    assert len(set(plan.repeat_of[repeats].tolist())) == len(repeats)  # each repeated once


def test_plan_is_seeded_per_participant_and_positions_are_balanced() -> None:
    a = plan_trials(30, config(n_trials=50, seed=3, participant=1))
    b = plan_trials(30, config(n_trials=50, seed=3, participant=1))
    c = plan_trials(30, config(n_trials=50, seed=3, participant=2))
    assert np.array_equal(a.items, b.items) and not np.array_equal(a.items, c.items)
    # where the smallest id of each triplet is shown: uniform over left / middle / right
    big = plan_trials(60, config(n_trials=3000, repeat_fraction=0.0))
    where = np.argmin(big.items, axis=1)
    share = np.bincount(where, minlength=3) / len(where)
    assert np.all(np.abs(share - 1 / 3) < 0.04), share


def test_plan_refuses_fewer_than_three_images() -> None:
    with pytest.raises(InputError, match="at least 3"):
        plan_trials(2, config())


def test_config_validation_names_the_field() -> None:
    with pytest.raises(InputError) as err:
        config(repeat_fraction=0.9)
    assert err.value.field == "repeat_fraction"
    with pytest.raises(InputError):
        config(n_trials=0)


def test_session_resumes_after_a_crash_and_ignores_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = ExperimentLog.create(path, config(n_trials=8, break_every=3), n_items=9)
    log.record(0, 2, 812.5)
    log.record(1, 0, 640.0)
    with pytest.raises(InputError, match="trial 3 answered but trial 2 is next"):
        log.record(3, 0, 100.0)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"trial": 2, "posi')  # killed in the middle of writing an answer
    again = ExperimentLog.open(path)
    assert again.next_trial == 2 and not again.finished
    assert np.array_equal(again.plan.items, log.plan.items)
    assert [a["odd"] for a in again.answers] == [
        int(log.plan.items[0, 2]),
        int(log.plan.items[1, 0]),
    ]
    assert [again.is_break_before(t) for t in range(8)] == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    with pytest.raises(InputError, match="already exists"):
        ExperimentLog.create(path, config(n_trials=8), n_items=9)


def test_a_corrupt_answer_in_the_middle_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = ExperimentLog.create(path, config(n_trials=4), n_items=5)
    log.record(0, 1, 500.0)
    log.record(1, 1, 500.0)
    lines = path.read_text().splitlines()
    lines[1] = "garbage"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        ExperimentLog.open(path)
    assert err.value.row == 2
    path.write_text(json.dumps({"format": "something else"}) + "\n")
    with pytest.raises(InputError, match="not an experiment session"):
        ExperimentLog.open(path)


def test_answers_become_judgments_with_the_odd_one_last(tmp_path: Path) -> None:
    log = ExperimentLog.create(tmp_path / "s.jsonl", config(n_trials=10, participant=7), 6)
    rng = np.random.default_rng(0)
    chosen = rng.integers(0, 3, size=10)
    for t, pos in enumerate(chosen):
        log.record(t, int(pos), 300.0 + t)
    j = log.judgments()
    assert j.kind == "oddone" and len(j) == 10
    for t, pos in enumerate(chosen):
        shown = log.plan.items[t].tolist()
        odd = shown[pos]
        assert j.triplets[t, 2] == odd
        assert sorted(j.triplets[t, :2].tolist()) == sorted(i for i in shown if i != odd)
    assert np.array_equal(j.participant, np.full(10, 7))
    assert np.array_equal(j.response_ms, 300.0 + np.arange(10))


def test_saved_judgments_round_trip_through_the_project(tmp_path: Path) -> None:
    images = ImageSet(tuple(f"/img/{i}.png" for i in range(6)), ("a",) * 3 + ("b",) * 3)
    with Project.create(tmp_path / "p.alignet") as project:
        project.write_imageset("stimuli", images, {})
        cfg = config(n_trials=20, repeat_fraction=0.25, participant=3)
        log = ExperimentLog.create(session_path(project, cfg), cfg, len(images))
        # a perfectly consistent participant: always the largest id is the odd one out
        for t in range(len(log.plan)):
            log.record(t, int(np.argmax(log.plan.items[t])), 400.0)
        assert log.consistency() == {"n_repeats": 5, "agreement": 1.0}
        name = save_to_project(project, log)
        stored, image_set = project.judgments(name)
        assert name == "experiment-p3" and image_set == "stimuli"
        assert np.array_equal(stored.triplets, log.judgments().triplets)
        assert np.array_equal(stored.response_ms, np.full(20, 400.0))
        assert [s.path.name for s in sessions(project)] == ["experiment-experiment-p3.jsonl"]
