"""Loading an exported aligned student, converting it (torch.export, TorchScript, ONNX), its
model card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from alignet_engine import __version__
from alignet_engine.config.distill import DistillConfig
from alignet_engine.distill import save_student
from alignet_engine.errors import InputError, ModelUnavailableError
from alignet_engine.export_model import (
    AlignedModel,
    export_onnx,
    export_pt2,
    export_torchscript,
    load_aligned_model,
    write_model_card,
)
from alignet_engine.models import load_backbone, make_transform

ARCH = "efficientnet_lite0"
IMAGE_SIZE = 64  # small inputs keep every forward pass (and the exports) fast on a CPU
PERTURBED = "conv_head.weight"


def _export_folder(folder: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Write student.safetensors + student.json the way ``export_student`` does."""
    folder.mkdir(parents=True, exist_ok=True)
    distill_params = {
        "student": ARCH,
        "image_size": IMAGE_SIZE,
        "device": "cpu",
        "training": DistillConfig(steps=5, warmup_steps=1).to_dict(),
    }
    weights = folder / "student.safetensors"
    sha = save_student(
        weights,
        model,
        {
            "architecture": ARCH,
            "layer": "pre_logits",
            "image_size": IMAGE_SIZE,
            "distill": distill_params,
            "run": "distill/test-run",
        },
    )
    assert sha == hashlib.sha256(weights.read_bytes()).hexdigest()
    summary = {"student": ARCH, "steps": 5, "final_loss": 0.5, "checkpoint_sha256": sha}
    config = {
        "format": "alignet-student",
        "alignet_studio": __version__,
        "architecture": ARCH,
        "layer": "pre_logits",
        "image_size": IMAGE_SIZE,
        "distill": distill_params,
        "summary": summary,
        "run": "distill/test-run",
        "weights": weights.name,
        "weights_sha256": sha,
    }
    (folder / "student.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """An export folder whose student is the pretrained lite0 with one weight perturbed."""
    backbone = load_backbone(ARCH)
    with torch.no_grad():
        # a distinctive change, so "weights from the file" cannot pass as "weights from the
        # package" or timm's random init
        backbone.model.get_parameter(PERTURBED).mul_(1.5).add_(0.01)
    folder = tmp_path_factory.mktemp("export") / "run"
    _export_folder(folder, backbone.model)
    return folder, backbone.model


@pytest.fixture(scope="module")
def aligned(exported: tuple[Path, torch.nn.Module]) -> AlignedModel:
    return load_aligned_model(exported[0])


def test_loads_the_file_weights_and_matches_the_backbone(
    exported: tuple[Path, torch.nn.Module], aligned: AlignedModel
) -> None:
    _, reference = exported
    assert not aligned.training
    assert aligned.architecture == ARCH and aligned.layer == "pre_logits"
    assert aligned.feature_dim == 1280
    assert torch.equal(
        aligned.state_dict()[f"model.{PERTURBED}"], reference.state_dict()[PERTURBED]
    )
    pristine = load_backbone(ARCH).model.state_dict()[PERTURBED]
    assert not torch.allclose(aligned.state_dict()[f"model.{PERTURBED}"], pristine)

    x = aligned.example_input(2)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        got = aligned(x)
    assert got.shape == (2, 1280)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_preprocess_honours_the_exported_image_size(aligned: AlignedModel) -> None:
    default = load_backbone(ARCH, pretrained=False).preprocess
    assert aligned.preprocess.input_size == IMAGE_SIZE
    assert (
        aligned.preprocess.mean == default.mean and aligned.preprocess.crop_pct == default.crop_pct
    )
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), np.uint8))
    assert aligned.transform(img).shape == (3, IMAGE_SIZE, IMAGE_SIZE)


def test_the_safetensors_file_alone_loads_too(
    exported: tuple[Path, torch.nn.Module], aligned: AlignedModel
) -> None:
    model = load_aligned_model(exported[0] / "student.safetensors")
    assert model.preprocess == aligned.preprocess
    x = aligned.example_input(1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), aligned(x), rtol=0, atol=0)


def test_embed_paths_and_pil_images(tmp_path: Path, aligned: AlignedModel) -> None:
    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 255, (72, 90, 3), np.uint8)) for _ in range(3)]
    paths = []
    for i, img in enumerate(imgs):
        paths.append(tmp_path / f"im{i}.png")
        img.save(paths[-1])
    from_paths = aligned.embed([str(p) for p in paths], batch_size=2)
    from_pil = aligned.embed(imgs)
    assert from_paths.shape == (3, 1280) and from_paths.dtype == np.float32
    # batches of 2 vs 3 take different CPU kernel paths: rounding-level differences only
    np.testing.assert_allclose(from_paths, from_pil, rtol=0, atol=1e-4)
    # the same numbers as the transform + forward by hand
    batch = torch.stack([make_transform(aligned.preprocess)(im) for im in imgs])
    with torch.no_grad():
        np.testing.assert_allclose(from_pil, aligned(batch).numpy(), rtol=0, atol=1e-5)
    assert aligned.embed([]).shape == (0, 1280)
    with pytest.raises(InputError, match=r"missing\.png"):
        aligned.embed([tmp_path / "missing.png"])


def test_pt2_program_reproduces_the_students_features(
    tmp_path: Path, exported: tuple[Path, torch.nn.Module], aligned: AlignedModel
) -> None:
    """The .pt2 file alone (torch.export.load, no AligNet code) gives the student's features
    of real preprocessed images, at a batch size other than the export's."""
    path = export_pt2(aligned, tmp_path / "student.pt2")
    assert path.is_file() and not list(tmp_path.glob(".*tmp*"))  # no temporary file left
    program = torch.export.load(str(path)).module()
    rng = np.random.default_rng(3)
    imgs = [Image.fromarray(rng.integers(0, 255, (70, 96, 3), np.uint8)) for _ in range(5)]
    batch = torch.stack([make_transform(aligned.preprocess)(im) for im in imgs])
    _, reference = exported
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(batch), pre_logits=True)
        got = program(batch)
    assert got.shape == (5, 1280)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_pt2_refuses_a_student_read_through_a_hook(
    tmp_path: Path, aligned: AlignedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A student read at a named layer ends its forward pass with an exception from a hook,
    which torch.export cannot follow: a clear error naming the alternatives, no file."""
    monkeypatch.setattr(aligned, "layer", "blocks.5")
    with pytest.raises(InputError, match=r"torch\.export cannot follow.*torchscript or onnx"):
        export_pt2(aligned, tmp_path / "student.pt2")
    assert not list(tmp_path.iterdir())


def test_torchscript_round_trip_shows_no_deprecation_warning(
    tmp_path: Path, aligned: AlignedModel
) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_torchscript(aligned, tmp_path / "student.pt")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], caught
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        loaded = torch.jit.load(str(path))
    x = aligned.example_input(4)  # a batch size other than the trace's
    with torch.no_grad():
        diff = (loaded(x) - aligned(x)).abs().max().item()
    assert diff < 1e-4


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's legacy exporter (opset < 18)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("opset", [17, 18])  # TorchScript-based and torch.export-based paths
def test_onnx_round_trip(tmp_path: Path, aligned: AlignedModel, opset: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    result = export_onnx(aligned, tmp_path / "student.onnx", opset=opset)
    assert result["max_abs_diff"] < 1e-3 and result["opset"] == opset
    written = {o.domain: o.version for o in onnx.load(result["path"]).opset_import}
    assert written[""] == opset
    session = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    x = aligned.example_input(5)
    (got,) = session.run(None, {"images": x.numpy()})
    assert got.shape == (5, 1280)
    with torch.no_grad():
        assert np.abs(got - aligned(x).numpy()).max() < 1e-3


def test_onnx_without_onnx_installed_says_what_to_install(
    tmp_path: Path, aligned: AlignedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ModelUnavailableError, match="pip install onnx onnxruntime onnxscript"):
        export_onnx(aligned, tmp_path / "student.onnx")


def test_loading_never_reads_the_packaged_weights(
    exported: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    import alignet_engine.models.registry as registry

    def refuse(name: str) -> str:
        raise AssertionError("load_aligned_model must not look for packaged/pretrained weights")

    monkeypatch.setattr(registry, "weights_path", refuse)
    assert load_aligned_model(exported[0]).feature_dim == 1280


def test_model_card(tmp_path: Path, aligned: AlignedModel) -> None:
    metrics = {"things_odd_one_out_accuracy": 0.5321, "val": {"agreement": 0.61}}
    path = write_model_card(tmp_path, aligned.config, metrics)
    text = path.read_text()
    assert path.name == "MODEL_CARD.md"
    assert ARCH in text and "pre_logits" in text
    assert "things_odd_one_out_accuracy | 0.5321" in text and "val.agreement | 0.61" in text
    assert f"input_size | {IMAGE_SIZE}" in text
    assert f"torch | {torch.__version__}" in text
    assert "number of triplets | not recorded" in text  # not in the config → not invented
    no_metrics = write_model_card(tmp_path / "b", {"architecture": ARCH}).read_text()
    assert "No evaluation metrics were supplied." in no_metrics


def test_bad_paths_give_clear_errors(
    tmp_path: Path, exported: tuple[Path, torch.nn.Module]
) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_aligned_model(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"no student\.safetensors"):
        load_aligned_model(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not an aligned-model file"):
        load_aligned_model(text)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not safetensors at all")
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_aligned_model(fake)
    # a plain safetensors file without the student metadata
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(InputError, match="not an AligNet student checkpoint"):
        load_aligned_model(plain)


def test_tampered_or_mismatched_weights_are_refused(
    tmp_path: Path, exported: tuple[Path, torch.nn.Module]
) -> None:
    folder, _ = exported
    # student.json promises other bytes than the file holds
    bad = tmp_path / "tampered"
    bad.mkdir()
    (bad / "student.safetensors").write_bytes((folder / "student.safetensors").read_bytes())
    cfg = json.loads((folder / "student.json").read_text())
    cfg["weights_sha256"] = "0" * 64
    (bad / "student.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="sha256"):
        load_aligned_model(bad)
    # weights of another architecture
    wrong = tmp_path / "wrong.safetensors"
    save_student(wrong, torch.nn.Linear(2, 2), {"architecture": ARCH, "layer": "pre_logits"})
    with pytest.raises(InputError, match="do not fit architecture"):
        load_aligned_model(wrong)
    unknown = tmp_path / "unknown.safetensors"
    save_student(unknown, torch.nn.Linear(2, 2), {"architecture": "resnet9000"})
    with pytest.raises(InputError, match="unknown model"):
        load_aligned_model(unknown)
