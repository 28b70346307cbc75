"""Several layers in one pass (``extract --layers``): the same features as one extraction per
layer, stored as one run per layer, from a single pass over the images."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from alignet_engine.base.types import ImageSet
from alignet_engine.cli import main
from alignet_engine.config import ExtractConfig, features_slot
from alignet_engine.errors import InputError
from alignet_engine.jobs import Progress
from alignet_engine.models import load_backbone
from alignet_engine.models.registry import load_layers
from alignet_engine.stages.features import extract, extract_layers
from alignet_engine.store import Project
from tests.helpers import noise_pngs

SIZE = 64
# timm's own pre-logits path, an inner block (hooked), the classifier output
LAYERS = ["blocks.3", "pre_logits", "output"]


def test_one_forward_pass_equals_each_layer_alone() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 3, SIZE, SIZE)
    lset = load_layers("efficientnet_lite0", LAYERS, probe_size=SIZE)
    calls = []
    handle = lset.combined.model.conv_stem.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        together = lset.combined.features(x)
    handle.remove()
    assert len(calls) == 1  # the network ran once for all three layers
    parts = lset.split(together.numpy())
    for layer, part, got in zip(LAYERS, lset.parts, parts, strict=True):
        alone = load_backbone("efficientnet_lite0", layer=layer, probe_size=SIZE)
        with torch.no_grad():
            want = alone.features(x).numpy()
        assert part.feature_dim == want.shape[1] and part.label == alone.label
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="twice"):
        load_layers("efficientnet_lite0", ["blocks.3", "blocks.3"])
    with pytest.raises(InputError, match=r"no layer .blocks\.99."):
        load_layers("efficientnet_lite0", ["blocks.99"])


def test_extract_layers_stores_the_runs_of_single_extractions(tmp_path: Path) -> None:
    paths = tuple(noise_pngs(tmp_path, 5, size=lambda i: (48, 56)))
    with Project.create(tmp_path / "p.alignet") as project:
        project.write_imageset("s", ImageSet(paths, ("",) * len(paths)), {})
        base = ExtractConfig(
            image_set="s",
            model="efficientnet_lite0",
            batch_size=2,
            image_size=SIZE,
            preprocessing="model",
        )
        events = list(extract_layers(project, base, LAYERS))
        progress = [e.done for e in events if isinstance(e, Progress)]
        assert progress == [2, 4, 5]  # one pass over the five images, not three
        together = {
            layer: project.run(features_slot("s", replace(base, layer=layer).label))
            for layer in LAYERS
        }
        for layer in LAYERS:
            single = replace(base, layer=layer)
            for _ in extract(project, single):
                pass
            alone = project.run(features_slot("s", single.label))
            assert alone.run_id != together[layer].run_id  # a new run in the same slot
            np.testing.assert_allclose(
                together[layer].arrays["X"], alone.arrays["X"], rtol=1e-5, atol=1e-6
            )
            assert together[layer].params == alone.params
        assert all(j["status"] == "done" for j in project.journal() if j["event"] == "end")
        with pytest.raises(InputError, match="twice"):
            list(extract_layers(project, base, ["output", "output"]))
        with pytest.raises(InputError, match="distilled"):
            list(extract_layers(project, replace(base, checkpoint="distill"), LAYERS))


def test_cli_extract_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = tuple(noise_pngs(tmp_path, 3, size=lambda i: (48, 56)))
    project = tmp_path / "p.alignet"
    with Project.create(project) as p:
        p.write_imageset("s", ImageSet(paths, ("",) * 3), {})
    args = ["extract", str(project), "--set", "s", "--model", "efficientnet_lite0"]
    args += ["--image-size", str(SIZE), "--workers", "0", "--json"]
    assert main([*args, "--layers", "blocks.2,output", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["dim"] for r in out["runs"]] == [
        load_backbone("efficientnet_lite0", layer=layer, probe_size=SIZE).feature_dim
        for layer in ("blocks.2", "output")
    ]
    assert main([*args, "--layers", "blocks.2,nope", "--quiet"]) == 2
