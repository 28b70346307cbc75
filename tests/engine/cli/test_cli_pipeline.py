"""The CLI end to end: the quick demo through every stage, errors that leave the project whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignet_engine.cli import main
from alignet_engine.store import Project


def _cosine_oddone_accuracy(X: np.ndarray, triplets: np.ndarray) -> float:
    """Independent re-computation: the odd one (last column) is right iff pair (0,1) is the
    strictly most similar pair by cosine similarity."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    s01 = np.einsum("ij,ij->i", Xn[triplets[:, 0]], Xn[triplets[:, 1]])
    s02 = np.einsum("ij,ij->i", Xn[triplets[:, 0]], Xn[triplets[:, 2]])
    s12 = np.einsum("ij,ij->i", Xn[triplets[:, 1]], Xn[triplets[:, 2]])
    return float(np.mean((s01 > s02) & (s01 > s12)))


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tmp_path: Path, cli) -> None:
    result = cli("demo", "--out", str(tmp_path), "--quick")
    rows = {r["model"].split(" (")[0]: r for r in result["rows"]}
    assert set(rows) == {"base teacher", "aligned teacher", "base student", "distilled student"}
    for row in rows.values():
        assert 0.0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1.0
        assert row["simulated"] is True
    ceiling = result["noise_ceiling"]["majority_agreement"]
    assert 0.7 < ceiling < 0.9
    # The simulated judgments carry their triplet type: a breakdown that adds up.
    by_type = rows["aligned teacher"]["by_type"]
    assert len(by_type) >= 4
    assert sum(v["n"] for v in by_type.values()) == rows["aligned teacher"]["n"]
    # The aligned teacher learned something real from the fit judgments, on held-out objects.
    assert rows["aligned teacher"]["accuracy"] > rows["base teacher"]["accuracy"] + 0.03

    # Reported numbers match an independent computation from the raw file contents.
    project = Path(result["project"])
    with Project.open(project, readonly=True) as p:  # large arrays may live in side files
        feats = p.run("features:stimuli:efficientnet_lite2").arrays["X"]
        test = p.judgments("test (simulated)")[0].triplets
    assert rows["base teacher"]["accuracy"] == pytest.approx(_cosine_oddone_accuracy(feats, test))

    # Every stage left a current, non-stale run and no interrupted job.
    info = cli("info", str(project))
    stages = {r["run"].split("/")[0] for r in info["runs"]}
    assert {
        "features",
        "transform",
        "clusters",
        "triplets",
        "distill",
        "evaluate",
        "export",
    } <= stages
    assert info["interrupted"] == []
    current = set(info["current"].values())
    assert all(not r["stale"] for r in info["runs"] if r["run"] in current)

    # Exports exist: student weights + config, transform (gLocal layout), AligNet npz.
    files = result["exports"]
    cfg = json.loads(Path(files["config"]).read_text())
    assert cfg["architecture"] == "efficientnet_lite0" and Path(files["weights"]).is_file()
    assert Path(files["pt2"]).is_file()  # the torch.export program, checked when written
    with np.load(files["transform"]) as t:
        assert {"weights", "bias", "mean", "std"} <= set(t.files)
        assert t["weights"].shape == (1280, 1280)
    with np.load(files["triplets_train"]) as npz:
        sims = npz["similarities"]
        assert np.all(sims[:, 2] <= sims[:, 0]) and np.all(sims[:, 2] <= sims[:, 1])
        assert npz["filenames"].shape == npz["indices"].shape

    assert "architecture" in Path(files["model_card"]).read_text()

    # The exported student, loaded as a user would, reproduces the distilled features the
    # pipeline stored; TorchScript and ONNX exports are checked against it.
    from alignet_engine.export_model import load_aligned_model

    with Project.open(project, readonly=True) as p:  # paths are stored compactly
        features = p.run("features:stimuli:efficientnet_lite0+distilled")
        paths = p.imageset("stimuli").paths[:5]
    distilled = features.arrays["X"]
    # judged stimuli are extracted as the whole stimulus; the run records it
    assert features.params["preprocessing"] == "whole"
    student = load_aligned_model(Path(files["weights"]).parent, preprocessing="whole")
    np.testing.assert_allclose(student.embed(list(paths)), distilled[:5], atol=1e-4)
    compiled = cli(
        "export", str(project), "--out", str(tmp_path / "compiled"), "--what", "torchscript", "onnx"
    )["files"]
    assert Path(compiled["torchscript"]).is_file() and Path(compiled["onnx"]).is_file()
    assert float(compiled["onnx_max_abs_diff"]) < 1e-3

    # Re-fitting the transform makes everything downstream of it stale.
    cli(
        "fit-transform",
        str(project),
        "--set",
        "stimuli",
        "--judgments",
        "fit (simulated)",
        "--objective",
        "hard",
        "--max-epochs",
        "2",
    )
    with Project.open(project, readonly=True) as p:
        assert p.stale_reasons("clusters") and p.stale_reasons("triplets")
        assert p.stale_reasons("features:stimuli:efficientnet_lite2") == []


def test_bad_import_names_file_and_row_and_leaves_project_unchanged(
    tmp_path: Path, cli, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "p.alignet"
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(images / f"{i}.png")
    cli("new", str(project))
    cli("import-images", str(project), str(images), "--name", "s")
    before = project.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("item_1,item_2,item_3,odd_position\n0,1,2,3\n0,1,9,3\n")
    code = main(
        [
            "import-judgments",
            str(project),
            str(bad),
            "--format",
            "oddone-csv",
            "--set",
            "s",
            "--name",
            "j",
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert code == 2
    error = json.loads(out.out.strip().splitlines()[-1])["error"]
    assert "bad.csv" in error and "row 3" in error
    assert project.read_bytes() == before
    code = main(["evaluate", str(project), "--set", "s", "--model", "nope", "--judgments", "j"])
    err = capsys.readouterr().err
    assert code == 2 and "No features of 'nope'" in err and "--model" in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from alignet_engine.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {
        "new",
        "info",
        "import-images",
        "import-judgments",
        "import-matrix",
        "import-features",
        "extract",
        "fit-transform",
        "cluster",
        "sample",
        "distill",
        "evaluate",
        "export",
        "demo",
    } <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "--json" in out
        # -v counts; its start of 0 is not a default worth showing (it read "DEBUG (default: 0)")
        assert "(default: 0)" not in " ".join(out.split("--verbose", 1)[1].split()[:20])


def test_rsa_against_a_per_subject_matrix(tmp_path: Path, cli) -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    n, d = 30, 16
    truth = rng.normal(size=(n, d))
    features = truth + 0.8 * rng.normal(size=(n, d))
    np.save(tmp_path / "features.npy", features.astype(np.float32))
    tn = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    subjects = np.stack([tn @ tn.T + 0.3 * rng.normal(size=(n, n)) for _ in range(4)])
    subjects = (subjects + subjects.transpose(0, 2, 1)) / 2  # symmetric, as ratings are
    np.save(tmp_path / "ratings.npy", subjects)

    project = str(tmp_path / "p.alignet")
    cli("new", project)
    cli(
        "import-features",
        project,
        str(tmp_path / "features.npy"),
        "--set",
        "s",
        "--name",
        "model",
    )
    cli(
        "import-matrix",
        project,
        str(tmp_path / "ratings.npy"),
        "--set",
        "s",
        "--name",
        "ratings",
    )
    result = cli(
        "evaluate",
        project,
        "--set",
        "s",
        "--model",
        "model",
        "--matrix",
        "ratings",
        "--n-boot",
        "200",
    )

    fn = features / np.linalg.norm(features, axis=1, keepdims=True)
    iu = np.triu_indices(n, k=1)
    expected = spearmanr((fn @ fn.T)[iu], subjects.mean(0)[iu]).statistic
    assert result["spearman"] == pytest.approx(expected)
    assert result["ci_low"] < result["spearman"] < result["ci_high"]
    ceiling = result["noise_ceiling"]
    assert ceiling["n_subjects"] == 4 and ceiling["lower"] < ceiling["upper"] <= 1.0
    # The features are a noisy copy of what the subjects rated: below the ceiling, above 0.
    assert 0.1 < result["spearman"] < ceiling["upper"]


def test_search_grid_argument_is_parsed_into_numbers_and_names() -> None:
    from alignet_engine.cli import build_parser
    from alignet_engine.config import parse_search_grid
    from alignet_engine.errors import InputError

    args = build_parser().parse_args(
        [
            "fit-transform",
            "p",
            "--set",
            "s",
            "--search",
            "lam=.5,1,1e-3",
            "standardize=scalar,perdim",
        ]
    )
    # the CLI's words, read by the one grid parser the Alignment page uses too
    grid = parse_search_grid("; ".join(args.search))
    assert grid == {"lam": [0.5, 1, 0.001], "standardize": ["scalar", "perdim"]}
    with pytest.raises(InputError, match="NAME=V1,V2"):
        parse_search_grid("lam")
