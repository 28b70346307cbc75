"""Cluster bootstrap CIs and paired comparisons, on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from alignet_engine.align.metrics import (
    clustered_accuracy_summary,
    paired_accuracy_test,
    paired_rsa_test,
)


def _repeated(n_triplets: int, reps: int, seed: int = 0) -> np.ndarray:
    """(n_triplets * reps, 3) rows: each of n_triplets distinct triplets answered reps times."""
    rng = np.random.default_rng(seed)
    base = np.stack([rng.choice(60, 3, replace=False) for _ in range(n_triplets)])
    return np.repeat(base, reps, axis=0)


def test_triplet_bootstrap_equals_hand_resampling_of_triplets() -> None:
    """Every response to a triplet agrees, so the triplet bootstrap is a bootstrap of the
    per-triplet 0/1 means: compare its CI with an independent loop over triplets."""
    trip = _repeated(40, 5)
    per_triplet = np.random.default_rng(1).random(40) < 0.6
    correct = np.repeat(per_triplet, 5)
    got = clustered_accuracy_summary(correct, trip, n_boot=4000, random_state=3)
    rng = np.random.default_rng(11)
    means = [per_triplet[rng.integers(0, 40, 40)].mean() for _ in range(4000)]
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert got["accuracy"] == pytest.approx(per_triplet.mean())
    assert got["ci_unit"] == "triplets" and got["n"] == 200 and got["n_units"] == 40
    assert got["ci_low"] == pytest.approx(lo, abs=0.03)
    assert got["ci_high"] == pytest.approx(hi, abs=0.03)
    # treating the 200 correlated responses as independent gives a CI about √5 too narrow
    resp = clustered_accuracy_summary(correct, trip, unit="responses", n_boot=4000)
    width, resp_width = got["ci_high"] - got["ci_low"], resp["ci_high"] - resp["ci_low"]
    assert resp_width < 0.6 * width


def test_item_bootstrap_weights_triplets_by_item_copies() -> None:
    """One triplet per row, all items distinct across triplets: drawing items with
    replacement keeps a triplet m_i m_j m_k times; check the CI brackets the accuracy and is
    wider than the triplet CI (dropping a triplet is likelier when any of 3 items can go)."""
    trip = np.arange(90).reshape(30, 3)
    correct = np.arange(30) % 3 != 0  # 2/3 right
    items = clustered_accuracy_summary(correct, trip, unit="items", n_boot=2000)
    triplets = clustered_accuracy_summary(correct, trip, unit="triplets", n_boot=2000)
    assert items["ci_unit"] == "items" and items["n_units"] == 90
    assert items["ci_low"] < 2 / 3 < items["ci_high"]
    assert items["ci_high"] - items["ci_low"] > triplets["ci_high"] - triplets["ci_low"]


def test_paired_test_when_a_is_better_on_every_triplet() -> None:
    trip = _repeated(50, 3)
    a = np.ones(150, dtype=bool)
    b = np.repeat(np.arange(50) % 2 == 0, 3)  # B right on half the triplets
    got = paired_accuracy_test(a, b, trip, n_boot=999)
    assert got["difference"] == pytest.approx(0.5)
    assert got["accuracy_a"] == 1.0 and got["accuracy_b"] == 0.5
    assert 0 < got["ci_low"] <= 0.5 <= got["ci_high"]
    # no resample can show B ahead: p is the smallest the bootstrap can give, 2 / (B + 1)
    assert got["p_value"] == pytest.approx(2 / 1000)
    assert got["unit"] == "triplets"


def test_paired_test_without_a_difference_covers_zero() -> None:
    """A alone right on 10 triplets, B alone on 10 others, both on 30, neither on 10: the
    difference is exactly 0, its CI covers 0 and the p-value is large."""
    trip = _repeated(60, 4, seed=2)
    a_trip = np.r_[np.ones(10), np.zeros(10), np.ones(30), np.zeros(10)].astype(bool)
    b_trip = np.r_[np.zeros(10), np.ones(10), np.ones(30), np.zeros(10)].astype(bool)
    got = paired_accuracy_test(np.repeat(a_trip, 4), np.repeat(b_trip, 4), trip, n_boot=2000)
    assert got["difference"] == 0.0
    assert got["ci_low"] < 0 < got["ci_high"]
    assert got["p_value"] > 0.5
    # a paired CI is narrower than comparing two separate CIs: the shared 40 triplets cancel
    a_alone = clustered_accuracy_summary(np.repeat(a_trip, 4), trip, n_boot=2000)
    assert got["ci_high"] - got["ci_low"] < 2 * (a_alone["ci_high"] - a_alone["ci_low"])


def test_p_values_are_uniform_enough_under_the_null() -> None:
    """Under H0 (A and B exchangeable) a 5% test rejects about 5% of the time."""
    rejections = 0
    n_sim = 120
    for seed in range(n_sim):
        rng = np.random.default_rng(seed)
        trip = _repeated(60, 2, seed=seed)
        a = np.repeat(rng.random(60) < 0.6, 2)
        b = np.repeat(rng.random(60) < 0.6, 2)
        rejections += (
            paired_accuracy_test(a, b, trip, n_boot=400, random_state=seed)["p_value"] < 0.05
        )
    assert rejections / n_sim < 0.15


def test_paired_rsa_by_items() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    n = 25
    truth = rng.normal(size=(n, 8))
    tn = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    human = tn @ tn.T
    good = truth + 0.2 * rng.normal(size=(n, 8))
    bad = truth + 3.0 * rng.normal(size=(n, 8))
    got = paired_rsa_test(good, bad, human, n_boot=300)
    iu = np.triu_indices(n, k=1)

    def rho(f: np.ndarray) -> float:
        fn = f / np.linalg.norm(f, axis=1, keepdims=True)
        return float(spearmanr((fn @ fn.T)[iu], human[iu]).statistic)

    assert got["spearman_a"] == pytest.approx(rho(good))
    assert got["difference"] == pytest.approx(rho(good) - rho(bad))
    assert got["ci_low"] > 0 and got["p_value"] < 0.05 and got["unit"] == "items"
    same = paired_rsa_test(good, good, human, n_boot=100)
    assert same["difference"] == 0 and same["ci_low"] == 0 == same["ci_high"]
    assert same["p_value"] == 1.0


def test_evaluate_compare_through_the_cli_and_the_report(tmp_path, cli) -> None:
    """Two representations on one judgment set: the paired difference equals the difference
    of their accuracies computed here by hand, and the report shows it."""
    from alignet_engine.store import Project
    from alignet_engine.views.evaluation import evaluation_table
    from alignet_engine.views.report import report_data, report_html

    rng = np.random.default_rng(0)
    n, d = 30, 6
    truth = rng.normal(size=(n, d))
    good, bad = truth + 0.3 * rng.normal(size=(n, d)), truth + 2.0 * rng.normal(size=(n, d))
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "bad.npy", bad)
    trip = np.stack([rng.choice(n, 3, replace=False) for _ in range(150)])
    tn = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    rows = []
    for t in np.repeat(trip, 2, axis=0):  # each triplet answered twice, by the "truth"
        s = [tn[t[0]] @ tn[t[1]], tn[t[0]] @ tn[t[2]], tn[t[1]] @ tn[t[2]]]
        odd = [2, 1, 0][int(np.argmax(s))]
        pair = [x for x in range(3) if x != odd]
        rows.append([t[pair[0]], t[pair[1]], t[odd]])
    np.save(tmp_path / "j.npy", np.asarray(rows))
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    for name in ("good", "bad"):
        cli("import-features", project, str(tmp_path / f"{name}.npy"), "--set", "s", "--name", name)
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
    result = cli(
        "evaluate",
        project,
        "--set",
        "s",
        "--model",
        "good",
        "--judgments",
        "j",
        "--compare",
        "bad",
        "--n-boot",
        "300",
    )

    def acc(f: np.ndarray) -> float:
        fn = f / np.linalg.norm(f, axis=1, keepdims=True)
        r = np.asarray(rows)
        return float(
            np.mean(
                (np.sum(fn[r[:, 0]] * fn[r[:, 1]], 1) > np.sum(fn[r[:, 0]] * fn[r[:, 2]], 1))
                & (np.sum(fn[r[:, 0]] * fn[r[:, 1]], 1) > np.sum(fn[r[:, 1]] * fn[r[:, 2]], 1))
            )
        )

    cmp = result["comparison"]
    assert result["accuracy"] == pytest.approx(acc(good))
    assert cmp["difference"] == pytest.approx(acc(good) - acc(bad))
    assert cmp["against"] == "bad" and cmp["unit"] == "triplets"
    assert result["ci_unit"] == "triplets" and result["metric_source"] == "default for raw features"
    assert cmp["ci_low"] <= cmp["difference"] <= cmp["ci_high"]
    with Project.open(project, readonly=True) as p:
        table = evaluation_table(p)
        cell = next(iter(table.rows[0].cells.values()))
        assert cell.comparison is not None and cell.ci_unit == "triplets"
        page = report_html(report_data(p))
    assert "vs bad:" in page and "paired" in page


def test_evaluate_compare_on_a_matrix_is_paired_over_items(tmp_path, cli) -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    n = 20
    truth = rng.normal(size=(n, 5))
    tn = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    noise = rng.normal(size=(3, n, n))
    np.save(tmp_path / "m.npy", tn @ tn.T + 0.05 * (noise + noise.transpose(0, 2, 1)))
    feats = {"near": truth + 0.3 * rng.normal(size=(n, 5)), "far": rng.normal(size=(n, 5))}
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    for name, f in feats.items():
        np.save(tmp_path / f"{name}.npy", f)
        cli("import-features", project, str(tmp_path / f"{name}.npy"), "--set", "s", "--name", name)
    cli("import-matrix", project, str(tmp_path / "m.npy"), "--set", "s", "--name", "m")
    result = cli(
        "evaluate",
        project,
        "--set",
        "s",
        "--model",
        "near",
        "--matrix",
        "m",
        "--compare",
        "far",
        "--n-boot",
        "200",
    )
    human = np.load(tmp_path / "m.npy").mean(axis=0)
    iu = np.triu_indices(n, k=1)

    def rho(f: np.ndarray) -> float:
        fn = f / np.linalg.norm(f, axis=1, keepdims=True)
        return float(spearmanr((fn @ fn.T)[iu], human[iu]).statistic)

    cmp = result["comparison"]
    assert result["ci_unit"] == "items" and cmp["unit"] == "items" and cmp["against"] == "far"
    assert cmp["difference"] == pytest.approx(rho(feats["near"]) - rho(feats["far"]))
    assert cmp["ci_low"] > 0 and cmp["p_value"] < 0.05
