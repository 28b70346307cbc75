"""The whole-stimulus preprocessing preset and the auto default of extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignet_engine.models.preprocess import IMAGENET_DEFAULT, Preprocess, whole_stimulus
from tests.helpers import noise_pngs


def test_whole_stimulus_resizes_everything_and_uses_imagenet_statistics() -> None:
    from alignet_engine.models import make_transform

    own = Preprocess(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)
    whole = whole_stimulus(own)
    assert whole.whole and whole.crop_pct == 1.0 and whole.input_size == 224
    assert whole.mean == IMAGENET_DEFAULT.mean and whole.std == IMAGENET_DEFAULT.std
    assert Preprocess.from_dict(whole.to_dict()) == whole
    old = own.to_dict()
    del old["whole"]  # runs stored before the preset existed
    assert Preprocess.from_dict(old) == own

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(30, 70, 3), dtype=np.uint8)  # wide: a crop would cut
    img = Image.fromarray(arr)
    got = make_transform(whole, 16)(img).numpy()
    # by hand: the whole image squeezed to 16 × 16 with PIL's bicubic, then normalised
    small = np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    expected = (small - np.array(IMAGENET_DEFAULT.mean)) / np.array(IMAGENET_DEFAULT.std)
    np.testing.assert_allclose(got, expected.transpose(2, 0, 1), atol=1e-5)
    # the model's own transform crops the sides away: a different input
    cropped = make_transform(own, 16)(img).numpy()
    assert cropped.shape == got.shape and not np.allclose(cropped, got)
    with pytest.raises(ValueError, match="crop_pct"):
        Preprocess(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875, whole=True)


def test_extraction_defaults_to_the_whole_stimulus_for_sets_people_judged(tmp_path: Path) -> None:
    from alignet_engine.base.types import Judgments
    from alignet_engine.config import ExtractConfig
    from alignet_engine.jobs import run_job
    from alignet_engine.models import load_backbone, load_image, make_transform
    from alignet_engine.stages.features import extract, resolve_preprocessing
    from alignet_engine.stages.imports import import_images
    from alignet_engine.store import Project

    for folder, n in (("stim", 4), ("pool", 3)):  # portrait images of different heights
        noise_pngs(tmp_path / folder, n, seed=1, size=lambda i: (24 + 4 * i, 40))
    with Project.create(tmp_path / "p.alignet") as project:
        images = import_images(project, "stimuli", tmp_path / "stim")
        import_images(project, "pool", tmp_path / "pool")
        j = Judgments("oddone", np.array([[0, 1, 2], [1, 3, 0]]), np.array([0, 1]))
        project.write_judgments("people", j, image_set="stimuli", params={})
        auto = ExtractConfig(image_set="stimuli", image_size=32, batch_size=4)
        assert resolve_preprocessing(project, auto) == "whole"
        assert resolve_preprocessing(project, ExtractConfig(image_set="pool")) == "model"
        assert (
            resolve_preprocessing(
                project, ExtractConfig(image_set="stimuli", preprocessing="model")
            )
            == "model"
        )
        run_job(extract(project, auto))
        run = project.run("features:stimuli:efficientnet_lite0")
        assert run.params["preprocessing"] == "whole" and run.params["preprocess"]["whole"]
        backbone = load_backbone("efficientnet_lite0")
        tf = make_transform(whole_stimulus(backbone.preprocess), 32)
        with torch.inference_mode():
            manual = np.stack(
                [backbone.features(tf(load_image(p))[None])[0].numpy() for p in images.paths]
            )
        np.testing.assert_allclose(run.arrays["X"], manual, rtol=1e-4, atol=1e-5)
        run_job(extract(project, ExtractConfig(image_set="pool", image_size=32)))
        pool = project.run("features:pool:efficientnet_lite0", arrays=False)
        assert pool.params["preprocessing"] == "model" and not pool.params["preprocess"]["whole"]


#: a timm model whose pretrained config asks for ``crop_mode="squash"`` (crop_pct 1.0, 384 px)
SQUASH_MODEL = "timm:convnextv2_nano.fcmae_ft_in22k_in1k_384"


def test_timm_crop_mode_squash_is_honoured() -> None:
    """A ``timm:`` model's preprocessing comes from timm.data.resolve_model_data_config and
    its transform is timm's create_transform: ``squash`` resizes the whole (wide) image to the
    square input instead of cropping its middle."""
    import timm.data

    from alignet_engine.models import load_backbone, make_transform

    backbone = load_backbone(SQUASH_MODEL, pretrained=False)  # architecture only, no download
    pre = backbone.preprocess
    resolved = timm.data.resolve_model_data_config(backbone.model)
    assert resolved["crop_mode"] == "squash"
    assert (pre.crop_mode, pre.input_size, pre.crop_pct) == ("squash", 384, 1.0)
    assert (pre.mean, pre.std) == (tuple(resolved["mean"]), tuple(resolved["std"]))
    assert Preprocess.from_dict(pre.to_dict()) == pre

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, size=(40, 120, 3), dtype=np.uint8))
    got = make_transform(pre, 24)(img)
    reference = timm.data.create_transform(**{**resolved, "input_size": (3, 24, 24)})
    torch.testing.assert_close(got, reference(img), rtol=0, atol=1e-6)
    # independently: squash at crop_pct 1 is the whole image resized to 24 x 24, normalised
    squashed = np.asarray(img.resize((24, 24), Image.Resampling.BICUBIC), np.float32) / 255
    mean, std = np.array(pre.mean, np.float32), np.array(pre.std, np.float32)
    expected = torch.from_numpy(((squashed - mean) / std).transpose(2, 0, 1))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the centre crop the preprocessing used to apply would have cut the wide image's sides
    centre = make_transform(Preprocess(24, pre.mean, pre.std, "bicubic", 1.0), 24)(img)
    assert (centre - got).abs().max() > 0.1


def test_center_crop_matches_timm_create_transform() -> None:
    """The own centre-crop path is timm's ``center`` mode, pixel for pixel."""
    import timm.data

    from alignet_engine.models import make_transform

    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (50, 81, 3), np.uint8))
    reference = timm.data.create_transform(
        input_size=(3, 32, 32),
        interpolation="bicubic",
        mean=pre.mean,
        std=pre.std,
        crop_pct=0.875,
        crop_mode="center",
    )
    torch.testing.assert_close(make_transform(pre)(img), reference(img), rtol=0, atol=1e-6)
