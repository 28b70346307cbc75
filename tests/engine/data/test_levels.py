"""Levels (Muttenthaler et al. 2025): the restricted pickle reader, the importer and the
authors' scoring protocol on a generated file with Levels' exact structure.

The real ``pruned_dataset.pkl`` is not available here; the expected scores below are worked
out by hand from the responses written into the file (see the comments at ``_RESPONSES``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignet_engine.base.types import Judgments
from alignet_engine.data.levels_io import read_levels_pkl, safe_unpickle, triplet_level
from alignet_engine.errors import InputError

# ImageNet-style file names: the WordNet id is the part before "_"
A1, A2, A3 = "n01000001_1.JPEG", "n01000001_2.JPEG", "n01000001_3.JPEG"
B1, B2 = "n02000002_1.JPEG", "n02000002_2.JPEG"
C1, D1 = "n03000003_1.JPEG", "n04000004_1.JPEG"
E9 = "n05000005_9.JPEG"  # named by a trial, absent from the image folder
IMAGES = (A1, A2, A3, B1, B2, C1, D1)

# The four experimental triplets and each good participant's odd-one-out choice (P1..P4):
#  T1 global (A1, B1, C1): C1 C1 C1 B1 → majority C1; LOO: C1 ×3 (others C1 2, B1 1) = 1 each,
#     B1 (others C1 3) = 0 → 3/4; majority agreement 3/4.
#  T2 local (A1, A2, A3): A3 A3 A2 A1 → majority A3 (2 > 1, 1); LOO: each A3 sees A3 A2 A1,
#     a three-way tie holding A3 → 0.5 each; A2 and A1 see A3 twice → 0 → 1/4; agreement 2/4.
#  T3 class boundary (A1, A2, B1): B1 ×4 → majority B1; LOO 4/4; agreement 1.
#  T4 global (A2, B2, D1): B2 B2 D1 D1 → 2–2 tie, flagged; LOO: every response sees the other
#     option twice → 0; agreement 2/4.
T1, T2, T3, T4 = (A1, B1, C1), (A1, A2, A3), (A1, A2, B1), (A2, B2, D1)
_RESPONSES = {
    T1: (C1, C1, C1, B1),
    T2: (A3, A3, A2, A1),
    T3: (B1, B1, B1, B1),
    T4: (B2, B2, D1, D1),
}
CATCH = (A1, A1, C1)  # two identical images: the odd one is C1


def _trial(names, chosen, kind="exp_trial", rt=800.0, ttype="between_class"):
    return {
        "image1Path": names[0],
        "image2Path": names[1],
        "image3Path": names[2],
        "selected_image": chosen,
        "exp_trial_type": kind,
        "triplet_type": ttype,
        "rt": rt,
    }


def levels_dict() -> dict[str, list[dict]]:
    """Six participants: P1..P4 pass the filter, P5 fails the catch trials, P6 does not respond."""
    data: dict[str, list[dict]] = {}
    for p in range(4):
        trials = [
            _trial(t, _RESPONSES[t][p], rt=1000.0 + 10 * p + i)
            for i, t in enumerate((T1, T2, T3, T4))
        ]
        trials.append(_trial(CATCH, C1, kind="catch_trial"))
        trials.append(_trial(CATCH, C1, kind="catch_trial"))
        data[f"P{p + 1}"] = trials
    data["P1"].append(_trial((A1, B1, E9), E9))  # names an image the set lacks
    # P5 answers every catch trial wrongly (0/2 < 0.9): its A1 choices must not count
    data["P5"] = [_trial(t, t[0]) for t in (T1, T2, T3, T4)] + [
        _trial(CATCH, A1, kind="catch_trial"),
        _trial(CATCH, A1, kind="catch_trial"),
    ]
    # P6 leaves 11 trials unanswered (> 10): excluded although its catch trials are right
    data["P6"] = (
        [_trial(t, t[0]) for t in (T1, T2, T3, T4)]
        + [_trial(T1, None, rt=None) for _ in range(11)]
        + [_trial(CATCH, C1, kind="catch_trial")]
    )
    return data


def write_levels(tmp_path: Path, data: dict | None = None) -> Path:
    path = tmp_path / "pruned_dataset.pkl"
    with path.open("wb") as f:
        pickle.dump(levels_dict() if data is None else data, f)
    return path


def image_folder(tmp_path: Path, *, flat: bool = False) -> Path:
    root = tmp_path / ("flat" if flat else "train")
    for name in IMAGES:
        folder = root if flat else root / name.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40, 80, 120)).save(folder / name, format="JPEG")
    return root


# Model features: cosine similarity makes the odd ones C1 (T1, right), A1 (T2, wrong: the
# majority is A3), B1 (T3, right) and D1 (T4, one of the tied options).
FEATURES = {
    A1: [1.0, 0.3, 0.0, 0.0],
    A2: [1.0, 1.0, 0.0, 0.0],
    A3: [0.9, 1.1, 0.0, 0.0],
    B1: [0.8, 0.0, 0.6, 0.0],
    B2: [1.0, 1.0, 0.3, 0.0],
    C1: [0.0, 0.0, 0.0, 1.0],
    D1: [0.0, 0.0, 1.0, 1.0],
}


def _model_odd(names: tuple[str, str, str]) -> str:
    """The model's odd one out, by explicit cosines (independent of the engine)."""
    v = {n: np.asarray(FEATURES[n]) / np.linalg.norm(FEATURES[n]) for n in names}
    pairs = [(names[0], names[1]), (names[0], names[2]), (names[1], names[2])]
    best = max(pairs, key=lambda p: float(v[p[0]] @ v[p[1]]))
    return next(n for n in names if n not in best)


def test_the_designed_model_choices_hold() -> None:
    assert [_model_odd(t) for t in (T1, T2, T3, T4)] == [C1, A1, B1, D1]


# ---------------------------------------------------------------- the restricted unpickler
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_safe_unpickle_builds_builtins_only(tmp_path: Path) -> None:
    path = tmp_path / "ok.pkl"
    value = {"a": [1, 2.5, None, True], "b": ("x", b"y"), "c": {1, 2}, 3: frozenset({4})}
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        assert safe_unpickle(path) == value


def test_safe_unpickle_refuses_objects_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"P1": [_Evil(marker)]}))
    with pytest.raises(InputError, match="not loaded for safety") as err:
        safe_unpickle(path)
    assert "pathlib" in str(err.value) and "touch" in str(err.value)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"rt": np.float64(3.0)}))
    with pytest.raises(InputError, match="numpy"):
        safe_unpickle(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(InputError, match="not a readable pickle"):
        safe_unpickle(path)


# ---------------------------------------------------------------- reading
def test_level_from_the_number_of_wordnet_ids() -> None:
    assert triplet_level(T1) == "global"
    assert triplet_level(T2) == "local"
    assert triplet_level(T3) == "class_boundary"


@pytest.mark.parametrize("flat", [False, True])
def test_read_levels_filters_participants_and_matches_images(tmp_path: Path, flat: bool) -> None:
    from alignet_engine.data.importers import read_image_folder

    images = read_image_folder(image_folder(tmp_path, flat=flat))
    data = read_levels_pkl(write_levels(tmp_path), images)
    r = data.report
    assert data.participants == ("P1", "P2", "P3", "P4", "P5", "P6")
    assert set(r["participants_excluded"]) == {"P5", "P6"}
    assert "catch accuracy 0/2" in r["participants_excluded"]["P5"]
    assert "11 non-responses" in r["participants_excluded"]["P6"]
    assert r["catch_trials"] == 2 * 4 + 2 + 1
    assert r["trials_missing_images"] == 1 and r["missing_images"] == [E9]
    assert r["trials_kept"] == 16
    assert r["by_level"] == {"global": 8, "local": 4, "class_boundary": 4}

    j = data.judgments
    name = [Path(p).name for p in images.paths]
    rows = [tuple(name[i] for i in row) for row in j.triplets]
    # every kept row is (pair, pair, chosen odd one), from P1..P4 only
    assert sorted(set(j.participant.tolist())) == [0, 1, 2, 3]
    for (a, b, odd), p in zip(rows, j.participant, strict=True):
        triplet = next(t for t in _RESPONSES if set(t) == {a, b, odd})
        assert _RESPONSES[triplet][p] == odd
    assert j.types.tolist() == [triplet_level(r) for r in rows]
    # response times kept, per row
    first_p2 = int(np.flatnonzero(j.participant == 1)[0])
    assert j.response_ms[first_p2] == 1010.0

    # the filter is settable: nobody excluded with a lax one
    lax = read_levels_pkl(
        write_levels(tmp_path), images, min_catch_accuracy=0.0, max_nonresponses=100
    )
    assert lax.report["participants_excluded"] == {}
    assert lax.report["trials_kept"] == 16 + 4 + 4


def test_read_levels_errors_name_the_problem(tmp_path: Path) -> None:
    from alignet_engine.data.importers import read_image_folder

    images = read_image_folder(image_folder(tmp_path))
    bad = levels_dict()
    del bad["P2"][1]["image2Path"]
    with pytest.raises(InputError, match="P2") as err:
        read_levels_pkl(write_levels(tmp_path, bad), images)
    assert err.value.row == 2 and err.value.field == "image2Path"
    # a file about images the set does not hold at all: say to import ImageNet's images
    other = {"P1": [_trial(("n09_1.JPEG", "n09_2.JPEG", "n08_1.JPEG"), "n08_1.JPEG")]}
    with pytest.raises(InputError, match="import the ImageNet-2012 train images"):
        read_levels_pkl(write_levels(tmp_path, other), images)


# ---------------------------------------------------------------- the scoring protocol
def _features(images) -> np.ndarray:
    return np.array([FEATURES[Path(p).name] for p in images.paths])


def test_levels_scores_match_the_hand_computation(tmp_path: Path) -> None:
    from alignet_engine.align.metrics import levels_scores
    from alignet_engine.data.importers import read_image_folder

    images = read_image_folder(image_folder(tmp_path))
    j = read_levels_pkl(write_levels(tmp_path), images).judgments
    s = levels_scores(_features(images), j, n_boot=200)
    o = s["overall"]
    # untied T1 (right), T2 (wrong), T3 (right); T4 tied, the model picked a tied option
    assert o["accuracy"] == pytest.approx(2 / 3) and o["n"] == 3
    assert o["n_tied"] == 1 and o["tied_model_in_top"] == 1.0
    assert o["ceiling_leave_one_out"] == pytest.approx((3 + 1 + 4 + 0) / 16)
    assert o["ceiling_majority"] == pytest.approx((3 / 4 + 2 / 4 + 1 + 2 / 4) / 4)
    assert o["n_triplets"] == 4 and o["n_responses"] == 16
    g, loc, cb = (s["by_level"][k] for k in ("global", "local", "class_boundary"))
    assert (g["accuracy"], g["n"], g["n_tied"]) == (1.0, 1, 1)
    assert g["ceiling_leave_one_out"] == pytest.approx(3 / 8)
    assert g["ceiling_majority"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert (loc["accuracy"], loc["n"]) == (0.0, 1)
    assert loc["ceiling_leave_one_out"] == pytest.approx(1 / 4)
    assert loc["ceiling_majority"] == pytest.approx(2 / 4)
    assert (cb["accuracy"], cb["ceiling_leave_one_out"], cb["ceiling_majority"]) == (1.0, 1.0, 1.0)


def test_at_most_four_responses_are_sampled_per_triplet() -> None:
    from alignet_engine.align.metrics import sample_choice_counts

    # 10 responses to one triplet (7 choose item 2, 3 choose item 1), 2 to another
    rows = [[0, 1, 2]] * 7 + [[0, 2, 1]] * 3 + [[3, 4, 5]] * 2
    j = Judgments("oddone", np.array(rows), np.arange(12))
    seen = set()
    for seed in range(30):
        keys, counts, _ = sample_choice_counts(j, 4, seed)
        assert keys.tolist() == [[0, 1, 2], [3, 4, 5]]
        assert counts.sum(axis=1).tolist() == [4, 2] and counts[0, 0] == 0
        assert counts[0, 1] <= 3
        seen.add(tuple(counts[0]))
    assert len(seen) > 1  # the sample varies with the seed
    # the protocol is reproducible for one seed
    a = sample_choice_counts(j, 4, 7)[1]
    assert (a == sample_choice_counts(j, 4, 7)[1]).all()


def test_levels_through_the_cli(tmp_path: Path, cli) -> None:
    from alignet_engine.data.importers import read_image_folder

    root = image_folder(tmp_path)
    images = read_image_folder(root)
    np.save(tmp_path / "features.npy", _features(images))
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    cli("import-images", project, str(root), "--set", "imagenet")
    imported = cli(
        "import-judgments",
        project,
        str(write_levels(tmp_path)),
        "--format",
        "levels-pkl",
        "--set",
        "imagenet",
        "--name",
        "levels",
    )
    assert imported["n_triplets"] == 16
    assert imported["import_report"]["participants_kept"] == 4
    # settable filter through the CLI
    lax = cli(
        "import-judgments",
        project,
        str(write_levels(tmp_path)),
        "--format",
        "levels-pkl",
        "--set",
        "imagenet",
        "--name",
        "levels-lax",
        "--min-catch-accuracy",
        "0",
        "--max-nonresponses",
        "50",
    )
    assert lax["n_triplets"] == 24
    cli(
        "import-features",
        project,
        str(tmp_path / "features.npy"),
        "--set",
        "imagenet",
        "--name",
        "m",
    )
    result = cli("evaluate", project, "--set", "imagenet", "--model", "m", "--judgments", "levels")
    assert result["accuracy"] == pytest.approx(2 / 3) and result["n_tied"] == 1
    assert result["noise_ceiling"]["leave_one_out"] == pytest.approx(0.5)
    assert result["by_type"]["local"]["noise_ceiling"]["leave_one_out"] == pytest.approx(0.25)
    assert result["by_type"]["global"]["accuracy"] == 1.0
    assert result["levels"]["n_sample"] == 4


def test_levels_import_without_the_image_set_says_what_to_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alignet_engine.cli import main

    project = str(tmp_path / "p.alignet")
    assert main(["new", project, "--quiet"]) == 0
    code = main(
        [
            "import-judgments",
            project,
            str(write_levels(tmp_path)),
            "--format",
            "levels-pkl",
            "--set",
            "imagenet",
            "--name",
            "levels",
            "--quiet",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no image set 'imagenet'" in err and "nXXXXXXXX/" in err and "import-images" in err


def test_levels_rows_per_level_in_the_evaluation_table_and_report(tmp_path: Path, cli) -> None:
    from alignet_engine.data.importers import read_image_folder
    from alignet_engine.store import Project
    from alignet_engine.views.evaluation import evaluation_table
    from alignet_engine.views.report import report_data, report_html

    root = image_folder(tmp_path)
    np.save(tmp_path / "features.npy", _features(read_image_folder(root)))
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    cli("import-images", project, str(root), "--set", "imagenet")
    cli(
        "import-judgments",
        project,
        str(write_levels(tmp_path)),
        "--format",
        "levels-pkl",
        "--set",
        "imagenet",
        "--name",
        "levels",
    )
    cli(
        "import-features",
        project,
        str(tmp_path / "features.npy"),
        "--set",
        "imagenet",
        "--name",
        "m",
    )
    cli("evaluate", project, "--set", "imagenet", "--model", "m", "--judgments", "levels")
    with Project.open(project, readonly=True) as p:
        table = evaluation_table(p)
        page = report_html(report_data(p))
    rows = {r.name: r for r in table.rows}
    assert list(rows) == [
        "levels",
        "levels · class_boundary",
        "levels · global",
        "levels · local",
    ]
    local = rows["levels · local"]
    assert local.level == "local" and local.parent == "levels"
    assert local.noise_ceiling == pytest.approx(0.5)  # majority agreement of T2
    assert local.ceiling_detail["leave_one_out"] == pytest.approx(0.25)
    (cell,) = local.cells.values()
    assert cell.value == 0.0 and cell.n == 1
    assert rows["levels"].noise_ceiling == pytest.approx(0.6875)
    assert "levels · global" in page and "leave-one-out 0.375" in page
