"""examples/: the scripts a researcher copies run against the public API and give real numbers."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "things_alignment.py"


def test_things_example_skips_cleanly_without_the_data(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "nowhere")],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "THINGS data not found" in done.stderr and done.stdout == ""


@pytest.mark.slow
def test_things_example_aligns_categories_with_people(shared_data: Path) -> None:
    """The example's transform raises agreement with the 20k real THINGS responses; its
    zero-shot number equals an independent count of strict dot-product wins."""
    things = shared_data / "things"
    example = runpy.run_path(str(EXAMPLE))
    results = example["align"](things, n_model_triplets=20_000)

    features = np.loadtxt(things / "category_mat_manual.tsv", delimiter="\t", skiprows=1)
    people = example["human_judgments"](things)
    t = people.triplets  # (n, 3): the pair the person kept together, then the odd one
    a, b, c = features[t[:, 0]], features[t[:, 1]], features[t[:, 2]]
    s_ab, s_ac, s_bc = (a * b).sum(1), (a * c).sum(1), (b * c).sum(1)
    correct = (s_ab > s_ac) & (s_ab > s_bc)  # a tie counts as wrong
    base = results["categories"]
    assert base["n"] == len(people) == 20_000
    assert base["accuracy"] == pytest.approx(correct.mean(), abs=1e-12)

    aligned = results["categories + soft transform"]
    ceiling = results["ceiling"]["leave_one_out"]
    assert aligned["ci_low"] > base["ci_high"]  # the alignment helps, beyond the CIs
    assert 1 / 3 < aligned["accuracy"] < ceiling + 0.02
