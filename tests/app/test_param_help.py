"""One source for every parameter (issue 12 item 3): the GUI forms' tooltips and
``alignet-cli``'s ``--help`` are the same declared help text, and the forms' ranges are the
declared bounds."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from alignet_engine.cli import build_parser
from alignet_engine.config import (
    ClusterConfig,
    EvaluateConfig,
    ExtractConfig,
    SampleConfig,
    TransformConfig,
)
from alignet_engine.config.distill import DistillConfig, DistillStageConfig

#: page key → (form attribute, config class, CLI command)
FORMS = {
    "features": [("form", ExtractConfig, "extract")],
    "alignment": [("form", TransformConfig, "fit-transform")],
    "clusters": [("form", ClusterConfig, "cluster")],
    "triplets": [("form", SampleConfig, "sample")],
    "distill": [
        ("stage_form", DistillStageConfig, "distill"),
        ("training_form", DistillConfig, "distill"),
    ],
    "evaluate": [("form", EvaluateConfig, "evaluate")],
}


def _cli_help(command: str) -> dict[str, str]:
    """dest → the help argparse prints for it (its %-formatting applied)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[command]
    formatter = p._get_formatter()
    return {a.dest: formatter._expand_help(a) for a in p._actions if a.help}


@pytest.mark.parametrize("key", list(FORMS))
def test_form_tooltips_and_cli_help_are_the_same_text(window, key: str) -> None:
    page = window.page(key)
    for attr, cls, command in FORMS[key]:
        form = getattr(page, attr)
        assert form.cls is cls
        cli = _cli_help(command)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        compared = 0
        for name, editor in form.editors.items():
            declared = fields[name].metadata["help"]
            assert declared, f"{cls.__name__}.{name} declares no help"
            # the tooltip: the declared text, then the field's code name
            assert editor.toolTip() == f"{declared} [{name}]"
            if name in cli:  # a flag for this field: the same words, then its default
                assert cli[name].startswith(declared), (command, name)
                compared += 1
        assert compared >= min(3, len(form.editors)), (key, attr)


def test_cli_help_shows_declared_defaults_and_no_doubled_percent(capsys) -> None:
    cli = _cli_help("evaluate")
    n_boot = next(f for f in dataclasses.fields(EvaluateConfig) if f.name == "n_boot")
    assert cli["n_boot"] == f"{n_boot.metadata['help']} (default: 1000)"
    assert "95% confidence" in cli["n_boot"] and "%%" not in cli["n_boot"]


def test_form_ranges_come_from_the_declared_bounds(window) -> None:
    clusters = window.page("clusters").form.editors["k"]
    assert clusters.minimum() == 2  # ClusterConfig.k: Interval(Integral, 2, None)
    steps = window.page("distill").training_form.editors["steps"]
    assert steps.minimum() == 1
    warmup = window.page("distill").training_form.editors["warmup_steps"]
    assert warmup.minimum() == 0


def test_matrix_triplets_dialog_and_cli_share_the_help(window) -> None:
    from alignet_app.dialogs.matrix_triplets_dialog import MatrixTripletsDialog
    from alignet_engine.config import MatrixTripletsConfig

    dialog = MatrixTripletsDialog(window.page("data"), ["r"])
    cli = _cli_help("matrix-triplets")
    for f in dataclasses.fields(MatrixTripletsConfig):
        declared = f.metadata["help"]
        assert dialog.form.editors[f.name].toolTip() == f"{declared} [{f.name}]"
        assert cli[f.name].startswith(declared)
