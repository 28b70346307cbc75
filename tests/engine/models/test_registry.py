"""The model registry: specs, offline weights (torch hub / HF caches, files, TorchScript,
user modules), layer listing and reading, pooling, preprocessing, and the CLI commands.

Every model here is real (torchvision / timm architectures, a real CIFAR-10 checkpoint) and
runs on small inputs; reference values are computed independently of the registry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from alignet_engine.config import ExtractConfig
from alignet_engine.errors import InputError, ModelUnavailableError
from alignet_engine.models import (
    ModelSpec,
    backbone_for,
    list_layers,
    load_backbone,
    make_transform,
    model_label,
)
from alignet_engine.models.layers import pool
from alignet_engine.models.preprocess import crop_pct_for

SIZE = 64  # small inputs keep every forward pass fast on a CPU
RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name torchvision's URL ends in


def _x(batch: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _same_params(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _resnet18(seed: int = 0, **kwargs: int) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, **kwargs).eval()


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME; returns its hub/checkpoints folder (created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    assert Path(torch.hub.get_dir()) / "checkpoints" == folder
    return folder


# ----------------------------------------------------------------------------- the CIFAR ResNet
class _ShortcutA(nn.Module):
    """He et al.'s option-A shortcut: stride-2 subsampling, channels zero-padded both sides."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = (
            _ShortcutA(cout // 4) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016) with the parameter names of akamaster's code."""

    def __init__(self, n: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(*[_Block(16, 16, 1) for _ in range(n)])
        self.layer2 = nn.Sequential(_Block(16, 32, 2), *[_Block(32, 32, 1) for _ in range(n - 1)])
        self.layer3 = nn.Sequential(_Block(32, 64, 2), *[_Block(64, 64, 1) for _ in range(n - 1)])
        self.linear = nn.Linear(64, classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trunk(x)
        out = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return self.linear(out)


def cifar_resnet20() -> nn.Module:
    """Factory for the dotted-path spec ``tests.engine.models.test_registry:cifar_resnet20``."""
    return CifarResNet(3)


FACTORY = "tests.engine.models.test_registry:cifar_resnet20"
CIFAR_PRE = "input_size=32&crop_pct=1.0&mean=0.485,0.456,0.406&std=0.229,0.224,0.225"


# ----------------------------------------------------------------------------- specs and labels
@pytest.mark.parametrize(
    ("text", "kind", "source", "label"),
    [
        ("efficientnet_lite0", "embedded", "efficientnet_lite0", "efficientnet_lite0"),
        ("torchvision:resnet18", "torchvision", "resnet18", "torchvision-resnet18"),
        (
            "torchvision:resnet50.IMAGENET1K_V1",
            "torchvision",
            "resnet50.IMAGENET1K_V1",
            "torchvision-resnet50.IMAGENET1K_V1",
        ),
        ("timm:convnext_tiny", "timm", "convnext_tiny", "timm-convnext_tiny"),
        ("/models/enc.torchscript.pt", "torchscript", "/models/enc.torchscript.pt", "enc"),
        ("torchscript:enc.ts", "torchscript", "enc.ts", "enc"),
        ("lab.nets:build", "module", "lab.nets:build", "lab.nets.build"),
        (
            "torchvision:resnet18?weights=/ckpt/ft v2.pth&layer=layer3&pooling=mean",
            "torchvision",
            "resnet18",
            "torchvision-resnet18=ft-v2@layer3,mean",
        ),
        ("timm:vit_small_patch16_224?label=my ViT/S", "timm", "vit_small_patch16_224", "my-ViT-S"),
    ],
)
def test_spec_parse_round_trip_and_label(text: str, kind: str, source: str, label: str) -> None:
    spec = ModelSpec.parse(text)
    assert (spec.kind, spec.source) == (kind, source)
    assert spec.label == label
    assert ModelSpec.parse(spec.to_string()) == spec
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert not set(label) & set(":/ \\")


def test_spec_options_typed_and_long_labels_hashed() -> None:
    spec = ModelSpec.parse(f"{FACTORY}?{CIFAR_PRE}")
    assert spec.preprocess_overrides == {
        "input_size": 32,
        "crop_pct": 1.0,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    assert ModelSpec.parse(spec.to_string()) == spec
    a = model_label("timm:" + "x" * 90 + "a")
    b = model_label("timm:" + "x" * 90 + "b")
    assert len(a) <= 80 and len(b) <= 80 and a != b


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "torchvision:",
        "timm:x?pooling=max",
        "timm:x?colour=red",
        "timm:x?layer",
        "timm:x?input_size=-3",
        "timm:x?mean=1,2",
        "bad-module:factory",
    ],
)
def test_bad_specs_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError):
        ModelSpec.parse(bad)


def test_extract_config_fields_and_label_rule() -> None:
    assert ExtractConfig(image_set="s").label == "efficientnet_lite0"
    assert (
        ExtractConfig(image_set="s", checkpoint="distill").label == "efficientnet_lite0+distilled"
    )
    cfg = ExtractConfig(
        image_set="s",
        model="torchvision:resnet18",
        weights="/w/finetuned.pth",
        layer="layer3",
        pooling="flatten",
    )
    assert cfg.label == "torchvision-resnet18=finetuned@layer3,flatten"
    assert ExtractConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # the config's default pooling / layer never override options written into the spec
    assert ExtractConfig(image_set="s", model="timm:x?layer=blocks.3").label == "timm-x@blocks.3"
    with pytest.raises(ValueError, match="pooling"):
        ExtractConfig(image_set="s", pooling="max")


# ----------------------------------------------------------------------------- torchvision
def test_torchvision_weights_from_the_torch_hub_cache(torch_home: Path) -> None:
    reference = _resnet18(seed=1)
    torch.save(reference.state_dict(), torch_home / RESNET18_FILE)

    backbone = load_backbone("torchvision:resnet18")
    _same_params(backbone.model, reference)
    assert backbone.weights == str(torch_home / RESNET18_FILE)
    assert (backbone.layer, backbone.head, backbone.feature_dim) == ("pre_logits", "fc", 512)
    assert backbone.label == "torchvision-resnet18"

    x = _x()
    trunk = nn.Sequential(*list(reference.children())[:-1])  # everything up to avgpool
    with torch.no_grad():
        expected = trunk(x).flatten(1)
        got = backbone.features(x)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_missing_torchvision_weights_name_file_and_folder(torch_home: Path) -> None:
    with pytest.raises(ModelUnavailableError) as err:
        load_backbone("torchvision:resnet18")
    msg = str(err.value)
    assert RESNET18_FILE in msg and str(torch_home) in msg
    assert "--weights" in msg and "random" in msg
    assert not list(torch_home.iterdir())  # nothing was downloaded


def test_torchvision_preprocess_from_weights_transforms() -> None:
    backbone = load_backbone("torchvision:resnet50?weights=random", probe_size=SIZE)
    p = backbone.preprocess
    # ResNet50_Weights.IMAGENET1K_V2: resize 232, crop 224, bilinear, ImageNet mean/std
    t = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    assert p.input_size == t.crop_size[0] == 224
    assert math.floor(p.input_size / p.crop_pct) == t.resize_size[0] == 232
    assert (p.interpolation, p.mean, p.std) == ("bilinear", tuple(t.mean), tuple(t.std))
    image = Image.new("RGB", (300, 400), (10, 200, 30))
    assert make_transform(p)(image).shape == (3, 224, 224)
    for crop, resize in [(224, 232), (224, 256), (384, 384), (518, 518), (240, 271)]:
        assert math.floor(crop / crop_pct_for(crop, resize)) == resize


def test_state_dict_file_with_a_fine_tuned_head(tmp_path: Path) -> None:
    reference = _resnet18(seed=2, num_classes=10)  # e.g. fine-tuned on 10 classes
    path = tmp_path / "finetuned.pth"
    torch.save({"epoch": 3, "state_dict": reference.state_dict()}, path)  # a training checkpoint

    backbone = load_backbone("torchvision:resnet18", weights=str(path))
    _same_params(backbone.model, reference)
    assert backbone.label == "torchvision-resnet18=finetuned"
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(backbone.model(x), reference(x), rtol=0, atol=0)
        expected = nn.Sequential(*list(reference.children())[:-1])(x).flatten(1)
        torch.testing.assert_close(backbone.features(x), expected, rtol=0, atol=0)


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(_resnet18().state_dict(), path)
    with pytest.raises(InputError, match="do not fit architecture 'torchvision:resnet34'"):
        load_backbone("torchvision:resnet34", weights=str(path))
    with pytest.raises(ModelUnavailableError, match=r"nope\.pth"):
        load_backbone("torchvision:resnet18", weights=str(tmp_path / "nope.pth"))


def test_unknown_architectures_list_near_matches() -> None:
    with pytest.raises(InputError, match="torchvision:resnet18"):
        load_backbone("torchvision:resnet181")
    with pytest.raises(InputError, match="timm:convnext_tiny"):
        load_backbone("timm:convnext_tinny")
    with pytest.raises(InputError, match="torchvision:resnet18"):
        load_backbone("resnet18")  # a bare name: suggests the prefixed specs


# ----------------------------------------------------------------------------- timm
def _hf_cache(root: Path, repo_id: str, filename: str) -> Path:
    """The Hugging Face hub cache layout: refs/main names the snapshot holding the file."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    return snap / filename


def test_timm_weights_from_the_hf_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(3)
    reference = timm.create_model("test_resnet", pretrained=False).eval()
    repo_id = reference.pretrained_cfg["hf_hub_id"]
    save_file(reference.state_dict(), str(_hf_cache(tmp_path / "hf", repo_id, "model.safetensors")))

    backbone = load_backbone("timm:test_resnet")
    _same_params(backbone.model, reference)
    assert backbone.preprocess.input_size == 160 and backbone.preprocess.crop_pct == 0.95
    x = _x()
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(backbone.features(x), expected, rtol=0, atol=0)
    assert backbone.feature_dim == expected.shape[1]

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailableError, match=r"model\.safetensors.*test_resnet\.r160"):
        load_backbone("timm:test_resnet")


def test_safetensors_file_with_a_timm_architecture(tmp_path: Path) -> None:
    torch.manual_seed(4)
    reference = timm.create_model("test_vit", pretrained=False).eval()
    path = tmp_path / "vit.safetensors"
    save_file(reference.state_dict(), str(path))
    backbone = load_backbone(f"timm:test_vit?weights={path}")
    _same_params(backbone.model, reference)
    x = _x(size=160)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(backbone.features(x), expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- layers and pooling
def test_layer_pooling_matches_manual_tensor_ops() -> None:
    reference = _resnet18(seed=5)
    x = _x()
    with torch.no_grad():
        maps = nn.Sequential(*list(reference.children())[:-3])(x)  # up to layer3
    assert maps.shape == (2, 256, 4, 4)
    for pooling, expected in [
        ("mean", maps.mean(dim=(2, 3))),
        ("auto", maps.mean(dim=(2, 3))),
        ("flatten", maps.reshape(2, -1)),
    ]:
        backbone = load_backbone(
            "torchvision:resnet18?weights=random", layer="layer3", pooling=pooling, probe_size=SIZE
        )
        backbone.model.load_state_dict(reference.state_dict())
        assert (backbone.layer, backbone.pooling) == ("layer3", pooling)
        assert backbone.feature_dim == expected.shape[1]
        with torch.no_grad():
            torch.testing.assert_close(backbone.features(x), expected, rtol=0, atol=0)


def test_cls_pooling_of_a_vit_block() -> None:
    torch.manual_seed(6)
    reference = timm.create_model("test_vit", pretrained=False).eval()
    x = _x(size=160)
    with torch.no_grad():
        tokens = reference.norm_pre(reference._pos_embed(reference.patch_embed(x)))
        tokens = reference.blocks[:2](tokens)  # the output of blocks.1
    backbone = load_backbone("timm:test_vit?weights=random&layer=blocks.1&pooling=cls")
    backbone.model.load_state_dict(reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(backbone.features(x), tokens[:, 0], rtol=0, atol=0)
        auto = load_backbone("timm:test_vit?weights=random&layer=blocks.1")
        auto.model.load_state_dict(reference.state_dict())
        torch.testing.assert_close(auto.features(x), tokens[:, 0], rtol=0, atol=0)  # class token
    t = torch.randn(2, 5, 3)
    torch.testing.assert_close(pool(t, "mean"), t.mean(1))
    with pytest.raises(InputError, match="cls"):
        pool(torch.randn(2, 3, 4, 4), "cls")


def test_hooked_features_are_differentiable() -> None:
    backbone = load_backbone("torchvision:resnet18?weights=random&layer=layer2", probe_size=SIZE)
    backbone.model.train()
    feats = backbone.features(_x())
    feats.square().sum().backward()
    assert backbone.model.conv1.weight.grad is not None
    assert backbone.model.conv1.weight.grad.abs().sum() > 0
    assert backbone.model.layer4[0].conv1.weight.grad is None  # not run: stopped after layer2


def test_list_layers_shapes() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 5),
    )
    layers = {info.name: info for info in list_layers(model, SIZE)}
    assert layers["output"].shape == (1, 5)
    assert layers["0"].shape == (1, 8, SIZE // 2, SIZE // 2) and layers["0"].type == "Conv2d"
    assert layers["2"].shape == (1, 8, 2, 2)
    assert layers["3"].shape == (1, 32)
    assert layers["4"].shape == (1, 5)
    assert list(layers) == ["output", "0", "1", "2", "3", "4"]


def test_unknown_layer_lists_near_names() -> None:
    with pytest.raises(InputError, match="layer3"):
        load_backbone("torchvision:resnet18?weights=random&layer=layr3", probe_size=SIZE)


# ----------------------------------------------------------------------------- TorchScript
def test_torchscript_file(tmp_path: Path) -> None:
    reference = _resnet18(seed=7)
    path = tmp_path / "encoder.torchscript.pt"
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(reference, _x()), str(path))
    backbone = load_backbone(str(path))
    assert backbone.layer == "output" and backbone.feature_dim == 1000
    assert backbone.preprocess.input_size == 224 and backbone.preprocess.interpolation == "bilinear"
    x = _x(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(backbone.features(x), reference(x), rtol=1e-5, atol=1e-5)
    assert load_backbone(f"{path}?input_size=128").preprocess.input_size == 128
    with pytest.raises(InputError, match="TorchScript"):
        load_backbone(str(path), layer="layer3")
    # a state dict given as a model is explained, not unpickled as a model
    sd = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), sd)
    with pytest.raises(InputError, match="weights"):
        load_backbone(str(sd))


# ----------------------------------------------------------------------------- user modules
def test_dotted_path_factory_with_a_real_cifar_checkpoint(shared_data: Path) -> None:
    ckpt = shared_data / "cifar10_resnet_akamaster" / "resnet20-12fca82f.th"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} not present")
    backbone = load_backbone(f"{FACTORY}?weights={ckpt}&{CIFAR_PRE}")
    assert backbone.label == "tests.engine.models.test_registry.cifar_resnet20=resnet20-12fca82f"
    assert (backbone.layer, backbone.head, backbone.feature_dim) == ("pre_logits", "linear", 64)
    assert backbone.preprocess.input_size == 32 and backbone.preprocess.crop_pct == 1.0

    # independent: the legacy torch.save file read by hand, DataParallel's prefix stripped
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    reference = CifarResNet(3).eval()
    missing, unexpected = reference.load_state_dict(
        {k.removeprefix("module."): v for k, v in raw.items()}, strict=False
    )
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    _same_params_except_counters(backbone.model, reference)
    x = _x(4, 32)
    with torch.no_grad():
        expected = reference.trunk(x).mean(dim=(2, 3))
        torch.testing.assert_close(backbone.features(x), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(backbone.model(x), reference(x), rtol=0, atol=0)


def _same_params_except_counters(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(sa[k], sb[k]), k


def test_cifar_resnet20_recognises_real_airplane_photos(shared_data: Path) -> None:
    ckpt = shared_data / "cifar10_resnet_akamaster" / "resnet20-12fca82f.th"
    photos = sorted((shared_data / "caltech101_mini" / "airplanes").glob("*.jpg"))
    if not ckpt.is_file() or not photos:
        pytest.skip("CIFAR checkpoint or Caltech photos not present")
    backbone = load_backbone(f"{FACTORY}?weights={ckpt}&{CIFAR_PRE}")
    tf = make_transform(backbone.preprocess)
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in photos])
    with torch.no_grad():
        top1 = backbone.model(x).argmax(1).tolist()
    assert sum(c == 0 for c in top1) >= 3, top1  # CIFAR-10 class 0 is "airplane"


def test_module_factory_errors() -> None:
    with pytest.raises(InputError, match="cannot import module"):
        load_backbone("no_such_pkg.nets:build")
    with pytest.raises(InputError, match="cifar_resnet20"):
        load_backbone("tests.engine.models.test_registry:cifar_resnet2")


# ----------------------------------------------------------------------------- config and CLI
def test_backbone_for_an_extract_config(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(_resnet18(seed=8).state_dict(), path)
    cfg = ExtractConfig(
        image_set="s",
        model="torchvision:resnet18",
        weights=str(path),
        layer="layer4",
        pooling="flatten",
        image_size=SIZE,
    )
    backbone = backbone_for(cfg)
    assert backbone.layer == "layer4" and backbone.label == cfg.label
    assert backbone.feature_dim == 512 * 2 * 2  # flatten at the configured 64 px
    with torch.no_grad():
        assert backbone.features(_x()).shape == (2, backbone.feature_dim)


def test_cli_models_and_layers(cli, torch_home: Path) -> None:
    torch.save(_resnet18().state_dict(), torch_home / RESNET18_FILE)
    info = cli("models")
    assert [e["spec"] for e in info["embedded"]] == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    ]
    assert {
        "spec": "torchvision:resnet18.IMAGENET1K_V1",
        "file": str(torch_home / RESNET18_FILE),
    } in (info["torchvision_cached"])
    layers = cli("layers", "torchvision:resnet18")
    assert (layers["default_layer"], layers["pre_logits_of"], layers["feature_dim"]) == (
        "pre_logits",
        "fc",
        512,
    )
    shapes = {r["name"]: r["shape"] for r in layers["layers"]}
    assert shapes["layer3"] == [1, 256, 14, 14] and shapes["avgpool"] == [1, 512, 1, 1]


def test_cli_layers_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    from alignet_engine.cli import main

    assert main(["layers", "torchvision:resnet18?weights=random"]) == 0
    out = capsys.readouterr().out
    assert "input of 'fc'" in out and "layer4.1.conv2" in out
    assert main(["layers", "torchvision:resnet181", "--json"]) == 2
    assert "torchvision:resnet18" in json.loads(capsys.readouterr().out.splitlines()[-1])["error"]
