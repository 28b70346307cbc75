"""The features stage streams its rows into side arrays: the stored X is bitwise what an
in-memory extraction of the same images gives (with skipped images and after a resume), and a
cancelled, failed or abandoned extraction leaves no side file behind."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import alignet_engine.models.extract as extract_mod
import alignet_engine.stages.features as features_mod
from alignet_engine.base.types import ImageSet
from alignet_engine.config import ExtractConfig
from alignet_engine.jobs import Cancelled, JobControl, Progress, run_job
from alignet_engine.models import Backbone
from alignet_engine.models.extract import PartialFeatures, extract_features, extraction_job
from alignet_engine.models.registry import load_layers
from alignet_engine.stages.features import extract, extract_layers, stored_features
from alignet_engine.store import Project
from alignet_engine.store.sidefiles import SIDE_ARRAY_MIN_BYTES
from tests.helpers import noise_pngs

SIZE = 32  # model input side: small, so each forward is cheap on a 2-core CPU
MODEL = "efficientnet_lite0"


def _project(tmp_path: Path, paths: list[str]) -> Path:
    path = tmp_path / "p.alignet"
    with Project.create(path) as project:
        project.write_imageset("s", ImageSet(tuple(paths), ("",) * len(paths)), {})
    return path


def _side_files(project_path: Path) -> list[str]:
    """Every file in the project's side-array folder (finished ``.h5`` and ``.part``)."""
    folder = project_path.with_name(project_path.name + ".files") / "arrays"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _stored_as_side_array(project: Project, run_ref: str) -> bool:
    return any(where.endswith(f"{run_ref}/X") for where, _ in project.side_arrays())


@pytest.fixture()
def stream_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream even the few-image X of these tests (normally kept in memory up to 1 MiB)."""
    monkeypatch.setattr(features_mod, "SIDE_ARRAY_MIN_BYTES", 0)


def test_streamed_x_equals_an_in_memory_extraction_bitwise_with_skipped_images(
    lite0: Backbone, tmp_path: Path
) -> None:
    # 210 rows x 1280 float32 = 1.03 MiB: above the side-array threshold, streamed for real.
    n = 210
    assert n * lite0.feature_dim * 4 > SIDE_ARRAY_MIN_BYTES
    paths = noise_pngs(tmp_path / "img", n, size=lambda i: (20 + i % 7, 24 - i % 5))
    bad_rows = [3, 150, 209]
    for i in bad_rows:
        Path(paths[i]).write_bytes(b"not an image")
    path = _project(tmp_path, paths)
    reference = run_job(
        extraction_job(lite0, paths, batch_size=16, image_size=SIZE, skip_corrupt=True)
    )
    assert reference.features is not None

    cfg = ExtractConfig(
        image_set="s", model=MODEL, batch_size=16, image_size=SIZE, skip_corrupt=True
    )
    with Project.open(path) as project:
        run_id = run_job(extract(project, cfg))
        run = project.run(f"features/{run_id}")
        assert _stored_as_side_array(project, f"features/{run_id}")
        X = run.arrays["X"]
        assert X.dtype == np.float32 and X.shape == (n, 1280)
        # NaN rows compare equal: the skipped rows are NaN in both, every other bit the same
        np.testing.assert_array_equal(X, reference.features)
        assert np.flatnonzero(np.isnan(X).all(axis=1)).tolist() == bad_rows
        assert np.isfinite(np.delete(X, bad_rows, axis=0)).all()
        assert run.arrays["skipped_items"].tolist() == bad_rows
        assert run.summary["n_skipped"] == 3
    assert len(_side_files(path)) == 1 and _side_files(path)[0].endswith(".h5")


def test_cancelled_stage_leaves_no_side_file_and_resumes_bitwise(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream_everything: None
) -> None:
    paths = noise_pngs(tmp_path / "img", 7)
    path = _project(tmp_path, paths)
    reference = run_job(extract_features(lite0, paths, batch_size=2, image_size=SIZE))
    # one row per block: the resumed rows are copied in several bounded reads
    monkeypatch.setattr(extract_mod, "RESUME_BLOCK_BYTES", 4 * lite0.feature_dim)
    cfg = ExtractConfig(image_set="s", model=MODEL, batch_size=2, image_size=SIZE, device="cpu")

    with Project.open(path) as project:
        control = JobControl()
        job = extract(project, cfg, control)
        with pytest.raises(Cancelled):
            for event in job:
                if isinstance(event, Progress) and event.done == 4:
                    assert any(f.endswith(".part") for f in _side_files(path))  # streaming
                    control.cancel()
        assert _side_files(path) == []
        assert project.slots() == {}

        run_id = run_job(extract(project, cfg))
        run = project.run(f"features/{run_id}")
        assert run.summary["resumed_rows"] == 4
        assert _stored_as_side_array(project, f"features/{run_id}")
        # rows 0-3 from the partial file, 4-6 computed in the same batches: bit-identical
        np.testing.assert_array_equal(run.arrays["X"], reference)
        X, _ = stored_features(project, "s", MODEL)
        np.testing.assert_array_equal(X, reference)


def test_failed_or_abandoned_stage_leaves_no_side_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream_everything: None
) -> None:
    paths = noise_pngs(tmp_path / "img", 6)
    path = _project(tmp_path, paths)
    cfg = ExtractConfig(image_set="s", model=MODEL, batch_size=2, image_size=SIZE, resume=False)
    real = extract_mod._forward
    calls: list[int] = []

    def crashing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash inside the model")
        return real(*args)

    with Project.open(path) as project:
        with monkeypatch.context() as m:
            m.setattr(extract_mod, "_forward", crashing)
            with pytest.raises(RuntimeError, match="simulated crash"):
                run_job(extract(project, cfg))
        assert _side_files(path) == [] and project.slots() == {}

        # A consumer that stops iterating and closes the job (the GUI on quit) mid-way.
        job = extract(project, cfg)
        for event in job:
            if isinstance(event, Progress) and event.done == 2:
                assert _side_files(path)
                job.close()
                break
        assert _side_files(path) == [] and project.slots() == {}

        # A bad file without skip_corrupt fails the job after the scan: nothing left either.
        Path(paths[3]).write_bytes(b"broken")
        with pytest.raises(Exception, match="img_03"):
            run_job(extract(project, cfg))
        assert _side_files(path) == [] and project.slots() == {}


def test_failed_run_write_deletes_the_finished_side_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream_everything: None
) -> None:
    path = _project(tmp_path, noise_pngs(tmp_path / "img", 3))
    cfg = ExtractConfig(image_set="s", model=MODEL, batch_size=2, image_size=SIZE)

    def refusing(*args, **kwargs):
        raise OSError("simulated: the index cannot be written")

    with Project.open(path) as project:
        monkeypatch.setattr(project, "write_run", refusing)
        with pytest.raises(OSError, match="simulated"):
            run_job(extract(project, cfg))
    assert _side_files(path) == []


def test_several_layers_stream_one_side_array_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = noise_pngs(tmp_path / "img", 5)
    layers = ["blocks.3", "pre_logits"]
    lset = load_layers(MODEL, layers, probe_size=SIZE)
    combined = run_job(extract_features(lset.combined, paths, batch_size=2, image_size=SIZE))
    expected = lset.split(combined)

    path = _project(tmp_path, paths)
    cfg = ExtractConfig(image_set="s", model=MODEL, batch_size=2, image_size=SIZE, device="cpu")
    monkeypatch.setattr(features_mod, "SIDE_ARRAY_MIN_BYTES", 0)
    with Project.open(path) as project:
        run_ids = run_job(extract_layers(project, cfg, layers))
        assert len(_side_files(path)) == 2
        for run_id, want in zip(run_ids, expected, strict=True):
            assert _stored_as_side_array(project, f"features/{run_id}")
            X = project.run(f"features/{run_id}").arrays["X"]
            np.testing.assert_array_equal(X, want)

        # The first layer small enough to stay inline, the second streamed: same values.
        monkeypatch.setattr(features_mod, "SIDE_ARRAY_MIN_BYTES", 5 * 4 * expected[0].shape[1])
        again = run_job(extract_layers(project, cfg, layers))
        assert not _stored_as_side_array(project, f"features/{again[0]}")
        assert _stored_as_side_array(project, f"features/{again[1]}")
        for run_id, want in zip(again, expected, strict=True):
            np.testing.assert_array_equal(project.run(f"features/{run_id}").arrays["X"], want)


def test_job_writes_every_row_once_in_ascending_blocks(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a sink sees: blocks of consecutive rows, each row once, skipped rows as NaN,
    resumed rows copied from the partial file in blocks of at most RESUME_BLOCK_BYTES."""
    paths = noise_pngs(tmp_path / "img", 7)
    paths[2] = str(tmp_path / "missing.png")
    side = tmp_path / "side"
    side.mkdir()

    class Recorder:
        def __init__(self) -> None:
            self.rows = np.full((7, lite0.feature_dim), np.inf, np.float32)
            self.writes: list[tuple[int, int]] = []

        def __setitem__(self, key: slice, block: np.ndarray) -> None:
            assert block.dtype == np.float32 and block.shape == (key.stop - key.start, 1280)
            self.writes.append((key.start, key.stop))
            self.rows[key] = block

    def job(partial: PartialFeatures, out: Recorder):
        return extraction_job(
            lite0, paths, batch_size=3, image_size=SIZE, skip_corrupt=True, partial=partial,
            out=out,
        )  # fmt: skip

    first = Recorder()
    result = run_job(job(PartialFeatures(side), first))
    assert result.features is None and result.computed == 6
    assert first.writes == [(0, 3), (3, 6), (6, 7)]  # the batches, skipped row 2 included
    assert np.isnan(first.rows[2]).all() and np.isfinite(np.delete(first.rows, 2, axis=0)).all()
    reference = run_job(
        extraction_job(lite0, paths, batch_size=3, image_size=SIZE, skip_corrupt=True)
    )
    np.testing.assert_array_equal(first.rows, reference.features)

    # Again: the 6 good rows are resumed, 2 rows per read; the skipped row is tried again.
    monkeypatch.setattr(extract_mod, "RESUME_BLOCK_BYTES", 2 * 4 * lite0.feature_dim)
    second = Recorder()
    result = run_job(job(PartialFeatures(side), second))
    assert (result.resumed, result.computed, len(result.skipped)) == (6, 0, 1)
    assert second.writes == [(0, 2), (3, 5), (5, 7), (2, 3)]
    np.testing.assert_array_equal(second.rows, reference.features)


def _traced_peak(project: Project, cfg: ExtractConfig) -> int:
    """Peak bytes of the memory Python and numpy allocated while the stage extracted, up to
    its last batch (tracemalloc: numpy arrays are traced, torch's tensors and HDF5's buffers
    are not). Storing the run afterwards (the store hashes side files in 4 MiB reads) is
    the store's, bounded by its own block size."""
    tracemalloc.start()
    try:
        peak = 0
        for event in extract(project, cfg):
            if isinstance(event, Progress):
                peak = tracemalloc.get_traced_memory()[1]
        return peak
    finally:
        tracemalloc.stop()


def test_stage_memory_does_not_grow_with_the_pool(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the model loaded before tracing: its loading's buffers would hide what the job holds
    monkeypatch.setattr(features_mod, "backbone_for", lambda config: lite0)
    n = 300
    x_bytes = n * 1280 * 4  # 1.5 MB: streamed
    path = _project(tmp_path, noise_pngs(tmp_path / "img", n, size=lambda i: (12, 12)))
    cfg = ExtractConfig(image_set="s", model=MODEL, batch_size=10, image_size=SIZE, device="cpu")
    with Project.open(path) as project:
        streamed = _traced_peak(project, cfg)
        # the same stage with X in memory (as before streaming): the tracer sees the matrix
        monkeypatch.setattr(features_mod, "SIDE_ARRAY_MIN_BYTES", 10 * x_bytes)
        in_memory = _traced_peak(project, cfg)
    # ~1 MB of the stage's own (image set, h5py, batches) in both runs; the (n, d) matrix
    # only in the second
    assert in_memory - streamed >= 0.9 * x_bytes, (streamed, in_memory)
    assert streamed < x_bytes, (streamed, in_memory)
