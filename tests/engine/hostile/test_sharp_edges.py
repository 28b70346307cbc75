"""Issue 13 item 9: sharp edges of normal use that the corpus does not reach."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from alignet_engine.base.types import ImageSet, Judgments
from alignet_engine.cli import build_parser
from alignet_engine.config import ClusterConfig, ExtractConfig, TransformConfig
from alignet_engine.jobs import Progress, run_job
from alignet_engine.stages.imports import import_features
from alignet_engine.stages.transform import fit_transform
from alignet_engine.store import Project


def _default(parser, command: str, option: str) -> object:
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a.default for a in sub._actions if option in a.option_strings)


def test_extract_fit_transform_and_cluster_default_to_one_model() -> None:
    parser = build_parser()
    configs = {"extract": ExtractConfig, "fit-transform": TransformConfig, "cluster": ClusterConfig}
    # a flag left unset (None) takes its config dataclass's declared default
    defaults = {
        c: _default(parser, c, "--model")
        or next(f.default for f in dataclasses.fields(cls) if f.name == "model")
        for c, cls in configs.items()
    }
    teacher = next(f.default for f in dataclasses.fields(TransformConfig) if f.name == "model")
    assert set(defaults.values()) == {teacher}, defaults


def test_progress_after_early_stopping_reports_the_epochs_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 30
    np.save(tmp_path / "X.npy", rng.standard_normal((n, 8)).astype(np.float32))
    # random odd-one-out labels: nothing to learn, so the validation loss stops improving
    triplets = np.array([rng.choice(n, 3, replace=False) for _ in range(400)], dtype=np.int64)
    with Project.create(tmp_path / "p.alignet") as p:
        p.write_imageset("s", ImageSet(("",) * n, ("",) * n), {})
        import_features(p, tmp_path / "X.npy", image_set="s", label="m")
        p.write_judgments(
            "j",
            Judgments("oddone", triplets, np.full(len(triplets), -1, dtype=np.int64)),
            image_set="s",
            params={},
        )
        cfg = TransformConfig(
            image_set="s", judgments=("j",), model="m", max_epochs=500, patience=2, lr=0.05
        )
        events: list[object] = []
        run_id = run_job(fit_transform(p, cfg), events.append)
        summary = p.run(f"transform/{run_id}", arrays=False).summary
    last = [e for e in events if isinstance(e, Progress)][-1]
    assert summary["epochs"] < cfg.max_epochs  # it did stop early
    assert (last.done, last.total) == (summary["epochs"], summary["epochs"])
    assert f"stopped early at epoch {summary['epochs']} of {cfg.max_epochs}" in last.message
