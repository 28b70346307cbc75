"""The embedded demo: procedural world (files, determinism) and simulated observers."""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignet_engine.base.types import Judgments
from alignet_engine.demo import observers as obs
from alignet_engine.demo.observers import (
    DEFAULT_MIX,
    TRIPLET_TYPES,
    classify_triplets,
    ground_truth_similarity,
    luce_probabilities,
    make_demo_judgments,
    sample_demo_triplets,
    simulate_oddone,
)
from alignet_engine.demo.world import (
    FAMILY_LIBRARY,
    DemoWorld,
    generate_world,
    generate_world_job,
    load_world,
)
from alignet_engine.errors import InputError
from alignet_engine.jobs import Cancelled, JobControl, Progress

SMALL = {"n_families": 2, "n_categories": 2, "n_stimuli": 3, "n_pool": 1, "image_size": 64}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def _majority_agreement(j: Judgments) -> float:
    """Mean over distinct triplets of the share of responses that match the majority choice."""
    votes: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
    for row in j.triplets:
        votes[tuple(sorted(row))][int(row[2])] += 1
    return float(np.mean([max(c.values()) / sum(c.values()) for c in votes.values()]))


def _accuracy(S: np.ndarray, j: Judgments) -> float:
    """Share of responses whose odd one is the one a model with similarity ``S`` picks."""
    return float(np.mean(np.argmax(luce_probabilities(S, j.triplets, 1.0), axis=1) == 2))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    """The default world, with a small pool (the pool does not change the stimuli)."""
    return generate_world(tmp_path_factory.mktemp("demo") / "world", seed=0, n_pool=2)


@pytest.fixture(scope="module")
def judgments(world: DemoWorld) -> dict[str, Judgments]:
    return make_demo_judgments(world, random_state=0)


# ------------------------------------------------------------------------------------------
# World
# ------------------------------------------------------------------------------------------


def test_counts_layout_and_roles(world: DemoWorld) -> None:
    assert len(world) == 3 * 4 * (10 + 2)
    assert world.family_names == ("round", "angular", "elongated")
    assert len(world.category_names) == 12
    assert world.category_names[0] == "round/disc"
    assert world.family.dtype == np.int64 and world.category.dtype == np.int64
    # Every category belongs to exactly one family, and ids are grouped by category.
    assert np.array_equal(world.category_family[world.category], world.family)
    for c in range(12):
        roles = Counter(world.role[world.category == c].tolist())
        assert roles == {"fit": 6, "test": 4, "pool": 2}
    # ids() partitions the items; image_set() follows the same order and labels.
    all_ids = np.concatenate([world.ids(r) for r in ("fit", "test", "pool")])
    assert np.array_equal(np.sort(all_ids), np.arange(len(world)))
    full = world.image_set()
    assert full.paths == world.paths
    test_set = world.image_set("test")
    assert len(test_set) == 48
    assert test_set.paths == tuple(world.paths[i] for i in world.ids("test"))
    assert set(full.categories) == set(world.category_names)
    with pytest.raises(InputError):
        world.ids("train")
    # Folder per category, files named <role>_<kk>.png.
    for i, p in enumerate(world.paths):
        path = Path(p)
        fam, cat = world.category_names[world.category[i]].split("/")
        assert path.parent == world.root / f"{fam}_{cat}"
        assert path.name.startswith(f"{world.role[i]}_") and path.suffix == ".png"
        assert path.is_file()
    assert len(set(world.paths)) == len(world)
    for key in ("hue", "size", "x", "y", "rotation", "bg_hue", "bg_value"):
        assert world.attributes[key].shape == (len(world),)


def test_images_are_rgb_pngs(world: DemoWorld) -> None:
    for p in world.paths[::37]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (128, 128)
            pixels = np.asarray(im)
        assert pixels.shape == (128, 128, 3) and pixels.dtype == np.uint8
        assert pixels.std() > 5  # not blank


def test_load_world_round_trip(world: DemoWorld) -> None:
    back = load_world(world.root)
    assert back.paths == world.paths
    assert back.family_names == world.family_names
    assert back.category_names == world.category_names
    for name in ("family", "category", "role"):
        assert np.array_equal(getattr(back, name), getattr(world, name))
    for key, val in world.attributes.items():
        assert np.allclose(back.attributes[key], val)
    with pytest.raises(InputError):
        load_world(world.root / "round_disc")


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate_world(tmp_path / "a", seed=3, **SMALL)
    generate_world(tmp_path / "b", seed=3, **SMALL)
    generate_world(tmp_path / "c", seed=4, **SMALL)
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert len(a) == 2 * 2 * 4
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


def test_items_do_not_depend_on_pool_size(tmp_path: Path) -> None:
    generate_world(tmp_path / "a", seed=0, **SMALL)
    generate_world(tmp_path / "b", seed=0, **{**SMALL, "n_pool": 3})
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert all(b[k] == v for k, v in a.items())
    assert len(b) == len(a) + 2 * 2 * 2


def test_regenerating_removes_stale_images_only(tmp_path: Path) -> None:
    root = tmp_path / "w"
    generate_world(root, seed=0, **{**SMALL, "n_pool": 3})
    keep = root / "notes.txt"
    keep.write_text("mine")
    world = generate_world(root, seed=0, **SMALL)
    assert sorted(str(p) for p in root.rglob("*.png")) == sorted(world.paths)
    assert keep.read_text() == "mine"


def test_generation_job_reports_progress_and_cancels(tmp_path: Path) -> None:
    events = list(generate_world_job(tmp_path / "w", seed=0, **SMALL))
    assert all(isinstance(e, Progress) for e in events)
    assert events[-1].done == events[-1].total == 16
    control = JobControl()
    control.cancel()
    with pytest.raises(Cancelled):
        list(generate_world_job(tmp_path / "x", seed=0, control=control, **SMALL))


@pytest.mark.parametrize(
    "bad",
    [
        {"n_families": 0},
        {"n_families": len(FAMILY_LIBRARY) + 1},
        {"n_categories": 6},
        {"n_stimuli": 1},
        {"n_pool": -1},
        {"image_size": 8},
    ],
)
def test_bad_arguments_are_input_errors(tmp_path: Path, bad: dict[str, int]) -> None:
    with pytest.raises(InputError):
        generate_world(tmp_path / "w", **{**SMALL, **bad})


# ------------------------------------------------------------------------------------------
# Observers
# ------------------------------------------------------------------------------------------


def test_luce_probabilities() -> None:
    S = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.5, 0.0]])
    p = luce_probabilities(S, np.array([[0, 1, 2], [2, 0, 1]]), temperature=0.5)
    assert p.shape == (2, 3)
    assert np.allclose(p.sum(axis=1), 1.0)
    # odd = 2 leaves the pair (0, 1) with S = 1: weight e^2; odd = 0 leaves S12 = 0.5: e^1.
    expected = np.exp([1.0, 0.0, 2.0]) / np.exp([1.0, 0.0, 2.0]).sum()
    assert np.allclose(p[0], expected)
    assert np.allclose(p[1], expected[[2, 0, 1]])  # follows the row order
    assert np.allclose(luce_probabilities(S * 1000, np.array([[0, 1, 2]]), 1.0), [[0, 0, 1]])
    with pytest.raises(InputError):
        luce_probabilities(S, np.array([[0, 1, 2]]), 0.0)


def test_classify_triplets() -> None:
    family = np.array([0, 0, 0, 0, 1, 1, 2])
    category = np.array([0, 0, 0, 1, 2, 3, 4])
    trips = np.array([[0, 4, 6], [0, 3, 4], [0, 1, 3], [0, 1, 4], [4, 5, 0], [0, 1, 2], [3, 0, 2]])
    names = [TRIPLET_TYPES[k] for k in classify_triplets(family, category, trips)]
    assert names == [
        "three_families",
        "family_pair",
        "category_pair_near",
        "category_pair_far",
        "family_pair",
        "one_category",
        "category_pair_near",
    ]
    # Three categories of one family:
    fam = np.zeros(3, dtype=np.int64)
    assert TRIPLET_TYPES[classify_triplets(fam, np.arange(3), np.array([[0, 1, 2]]))[0]] == (
        "one_family"
    )


def test_judgments_are_deterministic(world: DemoWorld, judgments: dict[str, Judgments]) -> None:
    again = make_demo_judgments(world, random_state=0)
    other = make_demo_judgments(world, random_state=1)
    for split in ("fit", "test"):
        assert np.array_equal(judgments[split].triplets, again[split].triplets)
        assert np.array_equal(judgments[split].participant, again[split].participant)
        assert not np.array_equal(judgments[split].triplets, other[split].triplets)


def test_judgment_counts_and_object_disjointness(
    world: DemoWorld, judgments: dict[str, Judgments]
) -> None:
    fit, test = judgments["fit"], judgments["test"]
    for j, split in ((fit, "fit"), (test, "test")):
        assert j.kind == "oddone" and j.simulated and j.votes is None
        assert j.triplets.dtype == np.int64 and j.participant.dtype == np.int64
        assert j.meta["split"] == split
        assert ((j.participant >= 0) & (j.participant < 20)).all()
        assert (np.sort(j.triplets, axis=1)[:, 1:] != np.sort(j.triplets, axis=1)[:, :-1]).all()
    assert len(fit) == 3000 and len(test) == 400 * 5
    # Only the role's own items appear: no test triplet touches a fit item and vice versa.
    assert set(np.unique(fit.triplets)) <= set(world.ids("fit").tolist())
    assert set(np.unique(test.triplets)) <= set(world.ids("test").tolist())
    # Fit triplets are distinct; each test triplet is answered 5 times by 5 participants.
    assert len({tuple(sorted(r)) for r in fit.triplets}) == 3000
    who: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for row, p in zip(test.triplets, test.participant):
        who[tuple(sorted(row))].append(int(p))
    assert len(who) == 400
    assert all(len(ps) == 5 and len(set(ps)) == 5 for ps in who.values())


def test_triplet_mix_follows_the_weights(world: DemoWorld, judgments: dict[str, Judgments]) -> None:
    types = np.bincount(
        classify_triplets(world.family, world.category, judgments["fit"].triplets),
        minlength=len(TRIPLET_TYPES),
    )
    # 6 fit exemplars per category give only 12 · C(6, 3) = 240 "one_category" triplets,
    # fewer than its 10 % share; the other types split the rest in proportion to their weights.
    one_cat = TRIPLET_TYPES.index("one_category")
    assert types[one_cat] == 12 * math.comb(6, 3)
    weights = np.array([DEFAULT_MIX[t] for t in TRIPLET_TYPES])
    weights[one_cat] = 0.0
    expected = weights / weights.sum() * (3000 - types[one_cat])
    assert np.abs(np.delete(types - expected, one_cat)).max() <= 1


def test_rejection_sampling_path(world: DemoWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The large-set sampler (forced here) also gives distinct triplets in the right mix."""
    monkeypatch.setattr(obs, "_ENUMERATE_MAX", 0)
    monkeypatch.setattr(obs, "_BATCH", 20_000)
    ids = world.ids("fit")
    trips, types = sample_demo_triplets(
        world.family, world.category, ids, 1000, np.random.default_rng(0)
    )
    assert trips.shape == (1000, 3)
    assert len({tuple(sorted(r)) for r in trips}) == 1000
    assert set(np.unique(trips)) <= set(ids.tolist())
    assert np.array_equal(types, classify_triplets(world.family, world.category, trips))
    counts = np.bincount(types, minlength=len(TRIPLET_TYPES))
    assert np.abs(counts - np.array([DEFAULT_MIX[t] for t in TRIPLET_TYPES]) * 1000).max() <= 1


def test_scarce_types_hand_their_share_to_others(world: DemoWorld) -> None:
    # 2 test items per category: no "one_category" triplet exists at all.
    ids = np.concatenate(
        [world.ids("test")[world.category[world.ids("test")] == c][:2] for c in range(12)]
    )
    trips, types = sample_demo_triplets(
        world.family, world.category, ids, 300, np.random.default_rng(0)
    )
    assert len({tuple(sorted(r)) for r in trips}) == 300
    assert TRIPLET_TYPES.index("one_category") not in types
    with pytest.raises(InputError):
        sample_demo_triplets(world.family, world.category, ids[:4], 5, np.random.default_rng(0))


def test_choice_frequencies_match_luce(world: DemoWorld) -> None:
    # One "two of a family + one other" triplet: all three choices have non-trivial odds.
    fit = world.ids("fit")
    a = fit[world.category[fit] == 0][0]  # round/disc
    b = fit[world.category[fit] == 1][0]  # round/ring
    c = fit[world.family[fit] == 1][0]  # an angular item
    n = 20_000
    temperature = 0.4
    j = simulate_oddone(
        world,
        np.array([a, b, c]),
        n_triplets=1,
        n_repeats=n,
        temperature=temperature,
        random_state=7,
    )
    assert len(j) == n
    sub = np.array([a, b, c])
    p = luce_probabilities(ground_truth_similarity(world, sub), np.array([[0, 1, 2]]), temperature)[
        0
    ]
    assert p.min() > 0.05
    freq = np.array([(j.triplets[:, 2] == x).mean() for x in (a, b, c)])
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n))
    # The remaining pair keeps its ids: each row holds exactly {a, b, c}.
    assert (np.sort(j.triplets, axis=1) == np.sort(sub)).all()


def test_ground_truth_model_is_near_ceiling_and_random_is_chance(
    world: DemoWorld, judgments: dict[str, Judgments]
) -> None:
    test = judgments["test"]
    ceiling = _majority_agreement(test)
    assert 0.75 <= ceiling <= 0.85
    gt = _accuracy(ground_truth_similarity(world), test)
    assert gt > 0.65 and ceiling - gt < 0.1
    rng = np.random.default_rng(0)
    features = rng.standard_normal((len(world), 64))
    rand = _accuracy(features @ features.T, test)
    assert abs(rand - 1 / 3) < 0.05
    # Category labels alone (no family level) are clearly worse than the ground truth.
    same_cat = (world.category[:, None] == world.category[None, :]).astype(float)
    assert _accuracy(same_cat + 1e-9 * rng.standard_normal(same_cat.shape), test) < gt - 0.05


def test_ground_truth_similarity_structure(world: DemoWorld) -> None:
    S = ground_truth_similarity(world)
    assert S.shape == (len(world), len(world)) and np.allclose(S, S.T)
    same_cat = world.category[:, None] == world.category[None, :]
    same_fam = world.family[:, None] == world.family[None, :]
    assert S[same_cat].min() > S[same_fam & ~same_cat].max() - obs.W_HUE
    assert S[same_fam & ~same_cat].mean() > S[~same_fam].mean() + 0.3
    sub = world.ids("test")[:5]
    assert np.allclose(ground_truth_similarity(world, sub), S[np.ix_(sub, sub)])


def test_small_world_caps_triplet_counts(tmp_path: Path) -> None:
    small = generate_world(tmp_path / "w", seed=0, **SMALL)
    js = make_demo_judgments(small, random_state=0)
    n_fit = len(small.ids("fit"))
    assert len(js["fit"]) == math.comb(n_fit, 3)
    assert len(js["test"]) == 5 * math.comb(len(small.ids("test")), 3)
