"""The extraction job: worker order, resuming after cancel / crash / kill, skipped images,
and the image modes load_image must handle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alignet_engine.models.extract as extract_mod
from alignet_engine.base.types import ImageSet
from alignet_engine.config import ClusterConfig, ExtractConfig
from alignet_engine.errors import InputError
from alignet_engine.jobs import Cancelled, JobControl, Message, Progress, run_job
from alignet_engine.models import Backbone, Preprocess, load_backbone, load_image, make_transform
from alignet_engine.models.extract import (
    PartialFeatures,
    extract_features,
    extraction_job,
    file_fingerprints,
    model_digest,
)
from alignet_engine.stages.clusters import cluster
from alignet_engine.stages.features import extract, stored_features
from alignet_engine.store import Project
from tests.helpers import noise_pngs

REPO = Path(__file__).resolve().parents[3]
SIZE = 32  # model input side: small, so each forward is cheap on a 2-core CPU


def _manual(backbone: Backbone, paths: list[str], size: int = SIZE) -> np.ndarray:
    """Features computed without the job: decode, transform, one forward per image."""
    tf = make_transform(backbone.preprocess, size)
    with torch.inference_mode():
        return np.stack([backbone.features(tf(load_image(p))[None])[0].numpy() for p in paths])


class _CountingForward:
    """Wraps ``Backbone.features`` and counts the images it is run on."""

    def __init__(self, original) -> None:
        self.original = original
        self.images = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.original(x)


@pytest.fixture()
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths decoded by the extraction job (in-process, i.e. with num_workers=0)."""
    seen: list[str] = []
    real = extract_mod.load_image

    def counting(path, **kw):
        seen.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(extract_mod, "load_image", counting)
    return seen


# --------------------------------------------------------------------------- order, workers


def test_workers_keep_row_order_and_values(lite0: Backbone, tmp_path: Path) -> None:
    paths = noise_pngs(tmp_path, 7)
    serial = run_job(extract_features(lite0, paths, batch_size=3, image_size=SIZE))
    forked = run_job(extract_features(lite0, paths, batch_size=3, image_size=SIZE, num_workers=2))
    # Same batches, same decoding: the workers change where decoding runs, not the result.
    np.testing.assert_array_equal(serial, forked)
    np.testing.assert_allclose(serial, _manual(lite0, paths), rtol=1e-4, atol=1e-5)


def test_amp_is_a_no_op_off_cuda(lite0: Backbone, tmp_path: Path) -> None:
    paths = noise_pngs(tmp_path, 3)
    plain = run_job(extraction_job(lite0, paths, batch_size=3, image_size=SIZE))
    amp = run_job(extraction_job(lite0, paths, batch_size=3, image_size=SIZE, amp=True))
    assert amp.autocast is None and plain.autocast is None
    np.testing.assert_array_equal(plain.features, amp.features)
    assert amp.features.dtype == np.float32


def test_bad_arguments_fail_at_creation(lite0: Backbone) -> None:
    with pytest.raises(ValueError, match="num_workers"):
        extraction_job(lite0, ["x.png"], num_workers=-1)
    with pytest.raises(ValueError, match="num_workers"):
        ExtractConfig(image_set="s", num_workers=-2)


# --------------------------------------------------------------------------- resuming


def test_cancel_then_resume_computes_only_the_missing_rows(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = noise_pngs(tmp_path / "img", 7)
    reference = run_job(extract_features(lite0, paths, batch_size=2, image_size=SIZE))
    side = tmp_path / "side"
    side.mkdir()

    counter = _CountingForward(lite0.features)
    monkeypatch.setattr(lite0, "features", counter)
    control = JobControl()
    partial = PartialFeatures(side, tag="t", flush_batches=10**6, flush_seconds=1e6)
    job = extraction_job(
        lite0, paths, batch_size=2, image_size=SIZE, control=control, partial=partial
    )
    progress = []
    with pytest.raises(Cancelled):
        for event in job:
            if isinstance(event, Progress):
                progress.append(event.done)
                if event.done == 4:
                    control.cancel()
    assert progress == [2, 4] and counter.images == 4
    # The flush on cancel wrote the 4 finished rows although no periodic flush was due.
    rows = np.load(partial.files[1])
    assert (rows != 0).tolist() == [True] * 4 + [False] * 3

    counter.images = 0
    again = PartialFeatures(side, tag="t")
    events: list[object] = []
    result = run_job(
        extraction_job(lite0, paths, batch_size=2, image_size=SIZE, partial=again),
        events.append,
    )
    assert counter.images == 3  # rows 4, 5, 6 only
    assert (result.resumed, result.computed) == (4, 3)
    assert any(isinstance(e, Message) and "4 of 7" in e.text for e in events)
    assert [e.done for e in events if isinstance(e, Progress)] == [6, 7]
    # Same batches ([4, 5], [6]) as the uninterrupted run: bit-identical on the CPU.
    np.testing.assert_array_equal(result.features, reference)
    again.discard()
    assert list(side.iterdir()) == []


def test_changed_files_and_settings_are_not_resumed(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = noise_pngs(tmp_path / "img", 5)
    side = tmp_path / "side"
    side.mkdir()
    first = run_job(
        extraction_job(lite0, paths, batch_size=2, image_size=SIZE, partial=PartialFeatures(side))
    )
    assert first.resumed == 0 and first.computed == 5

    # Replace image 1 by a different picture: only that row is computed again.
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(paths[1])
    counter = _CountingForward(lite0.features)
    monkeypatch.setattr(lite0, "features", counter)
    second = run_job(
        extraction_job(lite0, paths, batch_size=2, image_size=SIZE, partial=PartialFeatures(side))
    )
    assert (second.resumed, second.computed, counter.images) == (4, 1, 1)
    np.testing.assert_allclose(second.features, _manual(lite0, paths), rtol=1e-4, atol=1e-5)
    assert not np.allclose(second.features[1], first.features[1])

    # Another input size is another extraction: nothing is resumed.
    third = run_job(
        extraction_job(lite0, paths, batch_size=2, image_size=48, partial=PartialFeatures(side))
    )
    assert third.resumed == 0 and third.computed == 5


def test_fingerprints_and_model_digest(lite0: Backbone, tmp_path: Path) -> None:
    paths = noise_pngs(tmp_path, 2)
    a = file_fingerprints([*paths, str(tmp_path / "missing.png")])
    assert a.dtype == np.int64 and (a != 0).all() and len(set(a.tolist())) == 3
    np.testing.assert_array_equal(a, file_fingerprints([*paths, str(tmp_path / "missing.png")]))
    Path(paths[0]).write_bytes(Path(paths[0]).read_bytes() + b"\0")
    assert file_fingerprints(paths)[0] != a[0] and file_fingerprints(paths)[1] == a[1]

    other = load_backbone("efficientnet_lite0", pretrained=False)
    assert model_digest(lite0.model) == model_digest(lite0.model)
    assert model_digest(lite0.model) != model_digest(other.model)


def test_unwritable_side_folder_does_not_fail_the_extraction(
    lite0: Backbone, tmp_path: Path
) -> None:
    paths = noise_pngs(tmp_path, 3)
    partial = PartialFeatures(tmp_path / "no" / "such" / "folder")
    result = run_job(extraction_job(lite0, paths, batch_size=2, image_size=SIZE, partial=partial))
    assert partial.broken
    np.testing.assert_allclose(result.features, _manual(lite0, paths), rtol=1e-4, atol=1e-5)


def _project_with_images(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    paths = noise_pngs(tmp_path / "img", n)
    path = tmp_path / "p.alignet"
    with Project.create(path) as project:
        project.write_imageset("s", ImageSet(tuple(paths), ("",) * n), {})
    return path, paths


def _partials(project_path: Path) -> list[str]:
    folder = project_path.with_name(project_path.name + ".files")
    return sorted(p.name for p in folder.glob("extract-*")) if folder.is_dir() else []


def test_stage_resumes_after_an_exception_inside_the_model(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoded: list[str]
) -> None:
    path, paths = _project_with_images(tmp_path, 7)
    reference = _manual(lite0, paths)
    cfg = ExtractConfig(image_set="s", batch_size=2, image_size=SIZE, device="cpu")
    monkeypatch.setattr(extract_mod, "FLUSH_BATCHES", 1)

    # The batch forward of the job raises on its third batch (a CUDA OOM, a driver error...).
    real = extract_mod._forward
    calls = []

    def crashing(*args):
        calls.append(args[1].shape[0])
        if len(calls) == 3:
            raise RuntimeError("simulated crash inside the model")
        return real(*args)

    with Project.open(path) as project:
        with monkeypatch.context() as m:
            m.setattr(extract_mod, "_forward", crashing)
            with pytest.raises(RuntimeError, match="simulated crash"):
                run_job(extract(project, cfg))
        assert project.slots() == {}
        assert project.journal()[-1]["status"] == "failed"
        assert len(_partials(path)) == 3
        assert decoded == paths[:6]  # the third batch was decoded, then the model failed

        decoded.clear()
        run_id = run_job(extract(project, cfg))
        assert decoded == paths[4:]  # only the missing rows are decoded again
        run = project.run(f"features/{run_id}")
        assert run.summary["resumed_rows"] == 4 and run.summary["n_skipped"] == 0
        np.testing.assert_allclose(run.arrays["X"], reference, rtol=1e-4, atol=1e-5)
        X, _ = stored_features(project, "s", "efficientnet_lite0")
        assert np.isfinite(X).all()
        assert _partials(path) == []  # removed once the run was committed


def test_stage_resumes_after_the_process_is_killed(tmp_path: Path, decoded: list[str]) -> None:
    """SIGKILL: no finally block runs; only the periodic flushes count."""
    path, paths = _project_with_images(tmp_path, 7)
    script = textwrap.dedent(
        f"""
        import os, signal
        import alignet_engine.models.extract as ex
        from alignet_engine.config import ExtractConfig
        from alignet_engine.jobs import Progress
        from alignet_engine.stages.features import extract
        from alignet_engine.store import Project
        ex.FLUSH_BATCHES = 1
        ex.FLUSH_SECONDS = 1e6
        cfg = ExtractConfig(image_set="s", batch_size=2, image_size={SIZE}, device="cpu")
        project = Project.open({str(path)!r})
        for event in extract(project, cfg):
            if isinstance(event, Progress) and event.done == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    with Project.open(path) as project:  # the dead process's lock is taken over
        assert [j["stage"] for j in project.interrupted_jobs()] == ["features"]
        cfg = ExtractConfig(image_set="s", batch_size=2, image_size=SIZE, device="cpu")
        run_id = run_job(extract(project, cfg))
        assert decoded == paths[4:]
        run = project.run(f"features/{run_id}")
        assert run.summary["resumed_rows"] == 4
        assert project.interrupted_jobs() == []  # the killed job is closed as resumed
        assert project.journal()[-1]["status"] == "resumed"
    reference = run_job(
        extract_features(load_backbone("efficientnet_lite0"), paths, batch_size=2, image_size=SIZE)
    )
    # Rows 0-3 came from another process, whose torch thread count may differ from this one's
    # (earlier tests change it), and a different split of the reductions moves the last float
    # bits; bitwise equality holds within one process (the cancel and exception tests).
    np.testing.assert_allclose(run.arrays["X"], reference, rtol=1e-4, atol=1e-5)
    assert _partials(path) == []


# --------------------------------------------------------------------------- skipping


def _corrupt_files(folder: Path) -> tuple[str, str, str]:
    truncated = folder / "cut_off.jpg"
    Image.new("RGB", (200, 200), (200, 30, 30)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:400])
    garbage = folder / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    return str(truncated), str(garbage), str(folder / "missing.jpg")


def test_skip_corrupt_stores_nan_rows_and_later_stages_refuse_them(
    lite0: Backbone, tmp_path: Path
) -> None:
    good = noise_pngs(tmp_path / "img", 5)
    truncated, garbage, missing = _corrupt_files(tmp_path)
    paths = [good[0], truncated, *good[1:4], garbage, good[4], missing]
    bad_rows = [1, 5, 7]
    path = tmp_path / "p.alignet"
    with Project.create(path) as project:
        project.write_imageset("s", ImageSet(tuple(paths), ("",) * len(paths)), {})
        cfg = ExtractConfig(image_set="s", batch_size=3, image_size=SIZE, skip_corrupt=True)
        events: list[object] = []
        run_id = run_job(extract(project, cfg), events.append)

        warnings = [e for e in events if isinstance(e, Message) and e.level == "WARNING"]
        assert [w.text.split(":")[0] for w in warnings] == [
            f"skipped {p}" for p in paths if p not in good
        ]
        run = project.run(f"features/{run_id}")
        X = run.arrays["X"]
        assert X.dtype == np.float32 and X.shape == (8, 1280)
        assert np.flatnonzero(np.isnan(X).all(axis=1)).tolist() == bad_rows
        assert run.arrays["skipped_items"].tolist() == bad_rows
        assert run.summary["n_skipped"] == 3
        assert [s["path"] for s in run.summary["skipped"]] == [truncated, garbage, missing]
        assert "not found" in run.summary["skipped"][2]["reason"]
        keep = [i for i in range(8) if i not in bad_rows]
        np.testing.assert_allclose(X[keep], _manual(lite0, good), rtol=1e-4, atol=1e-5)

        with pytest.raises(InputError) as info:
            stored_features(project, "s", "efficientnet_lite0")
        message = str(info.value)
        assert "3 of the image set's items" in message
        for i, p in zip(bad_rows, (truncated, garbage, missing)):
            assert f"item {i} {p}" in message
        assert "not found" in message and "extract again" in message
        X2, _ = stored_features(project, "s", "efficientnet_lite0", allow_missing=True)
        assert np.isnan(X2[bad_rows]).all()

        # A later stage (k-means on the raw features) stops with that error, writes nothing.
        ccfg = ClusterConfig(image_set="s", model="efficientnet_lite0", transform=None, k=2)
        with pytest.raises(InputError, match=r"garbage\.png"):
            run_job(cluster(project, ccfg))
        assert "clusters" not in project.slots()


def test_without_skip_every_bad_file_is_reported_and_good_rows_are_kept(
    lite0: Backbone, tmp_path: Path, decoded: list[str]
) -> None:
    good = noise_pngs(tmp_path / "img", 4)
    truncated, garbage, _ = _corrupt_files(tmp_path)
    paths = [*good[:2], truncated, good[2], garbage, good[3]]
    path = tmp_path / "p.alignet"
    with Project.create(path) as project:
        project.write_imageset("s", ImageSet(tuple(paths), ("",) * len(paths)), {})
        cfg = ExtractConfig(image_set="s", batch_size=2, image_size=SIZE)
        with pytest.raises(InputError) as info:
            run_job(extract(project, cfg))
        assert "cut_off.jpg" in str(info.value) and "garbage.png" in str(info.value)

        # The user repairs the files; the rows before the first bad one are not recomputed.
        Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(truncated, format="JPEG")
        Image.fromarray(np.full((30, 30, 3), 99, np.uint8)).save(garbage, format="PNG")
        decoded.clear()
        run_id = run_job(extract(project, cfg))
        assert decoded == paths[2:]
        X = project.run(f"features/{run_id}").arrays["X"]
        np.testing.assert_allclose(X, _manual(lite0, paths), rtol=1e-4, atol=1e-5)


def test_cli_extract_flags(tmp_path: Path, cli) -> None:
    folder = tmp_path / "imgs"
    noise_pngs(folder, 4)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    project = str(tmp_path / "p.alignet")
    cli("new", project)
    cli("import-images", project, "--name", "s", str(folder))
    out = cli(
        "extract", project, "--set", "s", "--image-size", str(SIZE), "--batch-size", "2",
        "--workers", "0", "--skip-corrupt", "--no-resume",
    )  # fmt: skip
    assert out["n"] == 5 and out["n_skipped"] == 1
    assert out["skipped"][0]["path"].endswith("broken.png")
    with Project.open(project, readonly=True) as p:
        params = p.run(out["run"], arrays=False).params
    assert params["num_workers"] == 0 and params["skip_corrupt"] and not params["resume"]
    assert json.loads(json.dumps(params)) == params


# --------------------------------------------------------------------------- image modes


def _save(tmp_path: Path, name: str, img: Image.Image, **kw: object) -> str:
    p = tmp_path / name
    img.save(p, **kw)
    return str(p)


def test_alpha_palette_and_grey_alpha_are_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (20, 10), (0, 0))  # transparent black
    la.paste((50, 255), (0, 0, 10, 10))  # left half opaque dark grey
    pal = Image.new("P", (20, 10), 0)
    pal.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)  # index 0 blue, 1 red
    pal.paste(1, (10, 0, 20, 10))
    for name, img, kw in (
        ("la.png", la, {}),
        ("p_trns.png", pal, {"transparency": 0}),
        ("p_trns.gif", pal, {"transparency": 0}),
    ):
        path = _save(tmp_path, name, img, **kw)
        out = np.asarray(load_image(path))
        assert out.shape == (10, 20, 3), name
        if name.startswith("la"):
            assert tuple(out[5, 2]) == (50, 50, 50) and tuple(out[5, 15]) == (255, 255, 255)
        else:  # index 0 (blue) is the transparent one
            assert tuple(out[5, 2]) == (255, 255, 255), name
            assert tuple(out[5, 15]) == (255, 0, 0), name


def test_32_bit_and_float_greyscale_ranges(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 200, dtype=np.float64).reshape(10, 20)
    cases = {
        # values within [0, 255] are 8-bit, within [0, 65535] 16-bit, else min-max stretched
        "i8.tif": (Image.fromarray((ramp * 255).round().astype(np.int32), mode="I"), 255),
        "i16.tif": (Image.fromarray((ramp * 65535).round().astype(np.int32), mode="I"), 255),
        "iwide.tif": (Image.fromarray((ramp * 2e6 - 1e6).astype(np.int32), mode="I"), 255),
        "f01.tif": (Image.fromarray(ramp.astype(np.float32), mode="F"), 255),
    }
    for name, (img, top) in cases.items():
        path = _save(tmp_path, name, img)
        assert Image.open(path).mode == img.mode, name
        out = np.asarray(load_image(path))[..., 0].astype(int)
        assert out[0, 0] == 0 and out[-1, -1] == top, name
        np.testing.assert_allclose(out, ramp * 255, atol=1.01, err_msg=name)
    # An 8-bit-valued 32-bit image is not mistaken for a dark 16-bit one.
    dim = Image.fromarray(np.full((10, 20), 128, np.int32), mode="I")
    assert np.asarray(load_image(_save(tmp_path, "dim.tif", dim)))[0, 0, 0] == 128


def test_huge_16_bit_image_is_shrunk_before_conversion(tmp_path: Path) -> None:
    h, w = 1500, 3000
    deep = (np.linspace(0, 65535, w)[None, :].repeat(h, axis=0)).astype(np.uint16)
    path = _save(tmp_path, "deep.png", Image.fromarray(deep))
    assert Image.open(path).mode == "I;16"
    img = load_image(path, max_short_side=100)
    assert img.size == (200, 100) and img.mode == "RGB"
    row = np.asarray(img)[50, :, 0].astype(float)
    # A horizontal ramp stays a full-range ramp after the shrink.
    np.testing.assert_allclose(row, np.linspace(0, 255, 200), atol=2.0)


def test_large_jpeg_draft_decode_matches_full_decode(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:2400, 0:3200]
    arr = np.stack([xx * 255 // 3200, yy * 255 // 2400, (xx + yy) * 255 // 5600], -1)
    path = _save(tmp_path, "big.jpg", Image.fromarray(arr.astype(np.uint8)), quality=92)
    fast = load_image(path, max_short_side=300)  # draft: decoded at 1/8 scale
    full = load_image(path, max_short_side=None).resize((400, 300), Image.Resampling.BICUBIC)
    assert fast.size == (400, 300)
    diff = np.abs(np.asarray(fast, float) - np.asarray(full, float))
    assert diff.mean() < 2.0 and diff.max() < 20


def test_decompression_bomb_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(tmp_path, "bomb.png", Image.new("RGB", (400, 300)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 2x this is refused outright
    with pytest.raises(InputError) as info:
        load_image(path)
    assert info.value.source == path and "too large" in str(info.value)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path, "rotated.jpg", img, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[5, 10], np.asarray(out)[35, 10]
    assert top[2] > 200 and bottom[0] > 200  # the blue half is now on top


def test_transform_output_for_every_mode(tmp_path: Path) -> None:
    tf = make_transform(Preprocess(224, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875), SIZE)
    for mode in ("L", "LA", "RGBA", "P", "1", "I", "F", "CMYK"):
        path = _save(tmp_path, f"m_{mode}.tif", Image.new(mode, (50, 40)))
        x = tf(load_image(path))
        assert x.shape == (3, SIZE, SIZE) and torch.isfinite(x).all(), mode
