"""Students that are not the embedded model at pre_logits: export, reload, TorchScript, and
extraction of a distilled student with a triplet head.

Two real students, each distilled for 2 steps at 32 px on the small generated pool of
``test_distill_stage``:

* ``torchvision:resnet18`` with random weights from a state-dict file whose classifier has 10
  classes (a "fine-tuned" checkpoint): the export must rebuild it without that file and with a
  10-class classifier;
* the embedded EfficientNet-Lite0 read at ``layer=conv_head&pooling=mean`` with a 4-d triplet
  head: the export and the ``+distilled`` features must be the head's output.

Every expected value is computed here by hand from the student file's tensors (plain
torchvision / timm modules, a forward hook, a matrix product), not through the registry.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from alignet_engine.config import ExtractConfig
from alignet_engine.config.distill import DistillConfig, DistillStageConfig
from alignet_engine.distill import load_student_head, load_student_state
from alignet_engine.export_model import export_onnx, export_torchscript, load_aligned_model
from alignet_engine.jobs import run_job
from alignet_engine.models import load_backbone, load_image, make_transform
from alignet_engine.stages.distill import run_distill
from alignet_engine.stages.export import export_student
from alignet_engine.stages.features import extract
from alignet_engine.store import Project
from tests.engine.stages.distill_project import SIZE, make_project

pytestmark = pytest.mark.usefixtures("one_thread")


def _distill(folder: Path, student: str, head_dim: int = 0) -> tuple[Path, Path]:
    """Distil ``student`` for 2 steps; export it. Returns (project, export folder)."""
    path = make_project(folder)
    config = DistillStageConfig(
        student=student,
        image_size=SIZE,
        device="cpu",
        training=DistillConfig(
            steps=2, batch_size=2, warmup_steps=0, lr=1e-2, head_dim=head_dim, val_every=0
        ),
    )
    out = folder / "export"
    out.mkdir()
    with Project.open(path) as project:
        run_job(run_distill(project, config))
        export_student(project, out)
    return path, out


def _batch(seed: int = 0, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated, still supported
def test_torchvision_student_with_a_10_class_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    start = torchvision.models.resnet18(weights=None, num_classes=10)
    weights = tmp_path / "resnet18-10-classes.pth"
    torch.save(start.state_dict(), weights)
    _, out = _distill(tmp_path, f"torchvision:resnet18?weights={weights}")
    weights.unlink()  # the export must not need the file the student started from

    exported = json.loads((out / "student.json").read_text())
    assert exported["spec"] == "torchvision:resnet18"  # no weights option
    assert exported["architecture"] == f"torchvision:resnet18?weights={weights}"
    assert (exported["layer"], exported["pooling"], exported["feature_dim"]) == (
        "pre_logits",
        "auto",
        512,
    )
    assert (exported["classifier"], exported["num_classes"]) == ("fc", 10)

    model = load_aligned_model(out)
    assert model.feature_dim == 512 and model.head is None and model.layer == "pre_logits"
    # by hand: the 10-class ResNet-18 with the student file's tensors, fc's input
    state = load_student_state(out / "student.safetensors")
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    reference.load_state_dict(state)
    assert not torch.equal(state["conv1.weight"], start.state_dict()["conv1.weight"])  # trained
    reference.fc = nn.Identity()
    reference.eval()
    x = _batch()
    with torch.no_grad():
        expected = reference(x)
        got = model(x)
    assert got.shape == (3, 512)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the classifier was rebuilt with 10 classes and holds the file's values
    assert torch.equal(model.model.fc.weight, state["fc.weight"])

    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "resnet.pt")))
    x = _batch(seed=1, n=4)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), expected_of(reference, x), rtol=0, atol=1e-5)


def expected_of(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x)


def _conv_head_mean(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0's conv_head output averaged over space, from ``state``, by hand."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(state)
    net.eval()
    seen: list[torch.Tensor] = []
    handle = net.conv_head.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    return seen[0].mean(dim=(2, 3))


def _has_onnx() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's TorchScript-based ONNX exporter
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_hooked_layer_student_with_a_head_exports_and_extracts_the_head(tmp_path: Path) -> None:
    spec = "efficientnet_lite0?layer=conv_head&pooling=mean"
    project_path, out = _distill(tmp_path, spec, head_dim=4)
    exported = json.loads((out / "student.json").read_text())
    assert (exported["layer"], exported["pooling"], exported["feature_dim"]) == (
        "conv_head",
        "mean",
        1280,
    )
    assert exported["embedding"] == "triplet_head" and exported["head_dim"] == 4

    student_file = out / "student.safetensors"
    state = load_student_state(student_file)
    head = load_student_head(student_file)
    assert head is not None and head["weight"].shape == (4, 1280)

    model = load_aligned_model(out)
    assert model.feature_dim == 4 and model.layer == "conv_head" and model.pooling == "mean"
    x = _batch()
    features = _conv_head_mean(state, x)
    expected = features @ head["weight"].T + head["bias"]
    with torch.no_grad():
        torch.testing.assert_close(model.backbone_features(x), features, rtol=0, atol=1e-5)
        torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-5)

    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "lite0.pt")))
    x2 = _batch(seed=2, n=5)
    with torch.no_grad():
        torch.testing.assert_close(
            traced(x2),
            _conv_head_mean(state, x2) @ head["weight"].T + head["bias"],
            rtol=1e-6,
            atol=1e-5,
        )

    if _has_onnx():  # a hooked layer: exported by tracing, checked against torch inside
        result = export_onnx(model, tmp_path / "lite0.onnx")
        assert result["opset"] == 18 and result["max_abs_diff"] < 1e-3

    # extraction with the distill run: the head's output, recorded as such in the run
    # (the model's own crop, which the hand-built transform below reproduces)
    config = ExtractConfig(
        image_set="pool",
        model=spec,
        image_size=SIZE,
        device="cpu",
        checkpoint="distill",
        preprocessing="model",
    )
    with Project.open(project_path) as project:
        run_job(extract(project, config))
        run = project.run(f"features:pool:{config.label}")
        paths = project.imageset("pool").paths
    assert config.label.endswith("+distilled")
    assert run.params["embedding"] == "triplet_head" and run.params["head_dim"] == 4
    assert run.summary["dim"] == 4
    preprocess = load_backbone(spec, pretrained=False).preprocess
    transform = make_transform(preprocess, SIZE)
    images = torch.stack([transform(load_image(p)) for p in paths])
    by_hand = (_conv_head_mean(state, images) @ head["weight"].T + head["bias"]).numpy()
    # the head's outputs reach ~340, where a float32 step is 3e-5: a relative term as well
    np.testing.assert_allclose(run.arrays["X"], by_hand, rtol=1e-6, atol=1e-5)
    # the same vectors as the exported model embeds
    np.testing.assert_allclose(model.embed(list(paths)), run.arrays["X"], rtol=1e-6, atol=1e-5)
    # and with the whole stimulus, the same vectors as an extraction of the whole stimulus
    whole = dataclasses.replace(config, preprocessing="whole")
    with Project.open(project_path) as project:
        run_job(extract(project, whole))
        X_whole = project.run(f"features:pool:{config.label}").arrays["X"]
    assert not np.allclose(X_whole, run.arrays["X"], rtol=1e-6, atol=1e-5)  # a crop differs
    np.testing.assert_allclose(
        load_aligned_model(out, preprocessing="whole").embed(list(paths)),
        X_whole,
        rtol=1e-6,
        atol=1e-5,
    )


def test_extraction_without_a_head_and_with_the_wrong_model(tmp_path: Path) -> None:
    from alignet_engine.errors import InputError

    project_path, out = _distill(tmp_path, "efficientnet_lite0")
    config = ExtractConfig(image_set="pool", image_size=SIZE, device="cpu", checkpoint="distill")
    with Project.open(project_path) as project:
        run_job(extract(project, config))
        run = project.run(f"features:pool:{config.label}")
        assert run.params["embedding"] == "backbone" and run.params["head_dim"] == 0
        # naming the distill run by its ref, as the GUI may, records it under its slot:
        # the features are current, not stale from the moment they are written
        distill_run = project.run("distill", arrays=False)
        by_ref = dataclasses.replace(config, checkpoint=f"{distill_run.stage}/{distill_run.run_id}")
        run_job(extract(project, by_ref))
        ref = project.current(f"features:pool:{config.label}")
        assert project.stale_reasons(ref) == []
        assert run.summary["dim"] == 1280
        # the exported model embeds the same vectors with the preprocessing the run records
        exported = load_aligned_model(out, preprocessing=run.params["preprocessing"])
        np.testing.assert_allclose(
            run.arrays["X"],
            exported.embed(list(project.imageset("pool").paths)),
            rtol=0,
            atol=1e-5,
        )
        # the student is an EfficientNet: a ResNet cannot take its weights
        wrong = ExtractConfig(
            image_set="pool",
            model="torchvision:resnet18?weights=random",
            image_size=SIZE,
            device="cpu",
            checkpoint="distill",
        )
        with pytest.raises(InputError, match="--model efficientnet_lite0") as info:
            run_job(extract(project, wrong))
        assert info.value.field == "model"
