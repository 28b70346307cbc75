"""Parameters declared once (issue 12 item 3): ranges checked from the declaration, and the
CLI's flags, defaults, choices and help generated from the config dataclasses."""

from __future__ import annotations

import dataclasses
import json
from numbers import Integral, Real

import pytest

from alignet_engine import cli
from alignet_engine.config import (
    ClusterConfig,
    EvaluateConfig,
    ExtractConfig,
    SampleConfig,
    TransformConfig,
)
from alignet_engine.config.distill import DistillConfig, DistillStageConfig
from alignet_engine.errors import InputError
from alignet_engine.params import Interval, field_help

CONFIGS = (
    ExtractConfig,
    TransformConfig,
    ClusterConfig,
    SampleConfig,
    EvaluateConfig,
    DistillConfig,
    DistillStageConfig,
)


def test_interval_membership_and_wording() -> None:
    positive = Interval(Integral, 1, None, closed="left")
    assert 1 in positive and 0 not in positive
    assert True not in positive  # a bool is no count
    assert 1.0 not in positive  # nor is a float
    unit = Interval(Real, 0, 1, closed="left")
    assert 0 in unit and 0.5 in unit and 1 not in unit
    assert float("nan") not in unit and float("inf") not in Interval(Real, 0, None)
    assert positive.describe() == "an integer ≥ 1"
    assert unit.describe() == "a finite number in [0, 1)"
    assert Interval(Real, 0, None, closed="neither").describe() == "a finite number > 0"


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_help(cls: type) -> None:
    assert set(field_help(cls)) == {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SampleConfig(n_triplets=0), "n_triplets"),
        (lambda: SampleConfig(strategy="nearest"), "strategy"),
        (lambda: ClusterConfig(image_set="p", k=1), "k"),
        (lambda: TransformConfig(image_set="s", judgments=("j",), alpha=1.0), "alpha"),
        (lambda: DistillConfig(lr=float("nan")), "lr"),
        (lambda: DistillConfig(augment=1), "augment"),  # type: ignore[arg-type]
        (lambda: DistillStageConfig(image_size=16), "image_size"),
        (lambda: EvaluateConfig(image_set="s", model="m", judgments="j", n_boot=0), "n_boot"),
    ],
)
def test_declared_ranges_and_choices_are_checked(make, field: str) -> None:
    with pytest.raises(InputError) as info:
        make()
    assert info.value.field == field


def test_configs_round_trip_through_json() -> None:
    stage = DistillStageConfig(image_size=64, training=DistillConfig(steps=7, warmup_steps=3))
    again = DistillStageConfig.from_dict(json.loads(json.dumps(stage.to_dict())))
    assert again == stage
    with pytest.raises(InputError, match="unknown"):
        SampleConfig.from_dict({"n_triplet": 5})


def _parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_generated_flags_give_the_dataclass_and_keep_the_old_spellings() -> None:
    args = _parse("sample", "p.alignet", "--n", "50", "--seed", "3", "--strategy", "random")
    assert cli._given(args, SampleConfig) == {
        "n_triplets": 50,
        "random_state": 3,
        "strategy": "random",
    }
    args = _parse(
        "fit-transform", "p.alignet", "--set", "s", "--judgments", "a", "b", "--folds", "4"
    )
    cfg = TransformConfig(**cli._given(args, TransformConfig))
    assert cfg == TransformConfig(image_set="s", judgments=("a", "b"), n_splits=4)
    args = _parse("distill", "p.alignet", "--decay-to-init", "0.5", "--no-channels-last")
    assert cli._given(args, DistillConfig) == {
        "weight_decay_to_init": 0.5,
        "channels_last": False,
    }
    args = _parse("extract", "p.alignet", "--set", "s", "--no-resume", "--workers", "0")
    cfg = ExtractConfig(**cli._given(args, ExtractConfig))
    assert (cfg.resume, cfg.num_workers, cfg.model) == (False, 0, TransformConfig.model)
    args = _parse("cluster", "p.alignet", "--set", "s", "--diagnose", "3", "4")
    assert ClusterConfig(**cli._given(args, ClusterConfig)).diagnose_ks == (3, 4)


def test_unset_flags_take_the_dataclass_defaults() -> None:
    args = _parse("distill", "p.alignet")
    assert cli._given(args, DistillConfig) == {}
    assert DistillConfig(**cli._given(args, DistillConfig)) == DistillConfig()


def test_literal_choices_are_the_flag_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parse("distill", "p.alignet", "--loss", "mse")
    assert info.value.code == 2
    assert "choose from kl, jsd, contrastive" in capsys.readouterr().err.replace("'", "")


def test_out_of_range_value_exits_2_naming_the_field(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "p.alignet"
    assert cli.main(["new", str(project)]) == 0
    assert cli.main(["sample", str(project), "--n", "0"]) == 2
    err = capsys.readouterr().err
    assert "field 'n_triplets'" in err and "must be an integer ≥ 1" in err


def test_pooling_choices_are_the_model_specs() -> None:
    import typing

    from alignet_engine.config import POOLINGS, Pooling

    assert typing.get_args(Pooling) == POOLINGS
