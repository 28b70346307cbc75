"""Feature extraction: a resumable job that runs a backbone over an ordered list of image files.

Row ``i`` of the result always belongs to image ``i``, whatever the batch size or the number
of decoding workers. The rows go to an in-memory array, or, batch by batch, to any ``out``
that takes ``out[lo:hi] = block`` (the features stage passes side-array writers, so its
memory does not grow with the pool). With a :class:`PartialFeatures` the rows are also
written, in batches, to side files, so an extraction that was cancelled, failed or killed
continues where it stopped the next time it is run with the same model, weights, image files
and preprocessing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from alignet_engine.base.devices import pick_device
from alignet_engine.errors import InputError
from alignet_engine.files import atomic_write_bytes
from alignet_engine.jobs import Job, JobControl, Message, Progress
from alignet_engine.models.images import ImageReadError, load_image, make_transform
from alignet_engine.models.registry import Backbone

logger = logging.getLogger(__name__)

STAGE = "extract"

#: Partial results (written to their file batch by batch) are synced and recorded as done at
#: least this often (seconds) ...
FLUSH_SECONDS = 5.0
#: ... and at least every this many batches. A killed process loses at most that much work;
#: each flush costs an fsync and a rewrite of the (n,) int64 rows file.
FLUSH_BATCHES = 50

#: Bumped when the partial-file layout changes, so old files are not misread.
_PARTIAL_VERSION = 1


#: Rows taken over from a partial file are copied to the output in blocks of at most this
#: many bytes (8 MiB: 1600 rows of 1280 float32), so resuming costs no memory per pool row.
RESUME_BLOCK_BYTES = 8 << 20


class RowSink(Protocol):
    """Where an extraction writes its (n, d) float32 rows: ``sink[lo:hi] = block`` with
    ``block`` (hi - lo, d) float32. A numpy array is one; so is the store's
    ``SideArrayWriter``, which takes the rows straight to a file."""

    def __setitem__(self, key: slice, value: np.ndarray, /) -> None: ...


@dataclass(frozen=True)
class SkippedImage:
    """An image left out with ``skip_corrupt``: 0-based row ``index``, its file and why."""

    index: int
    path: str
    reason: str


@dataclass(frozen=True)
class Extraction:
    """What an extraction job returns.

    features : (n, d) float32, rows of skipped images NaN; None when the job wrote its rows
        to the ``out`` its caller gave (:func:`extraction_job`).
    skipped : the images left out (only with ``skip_corrupt``), in row order.
    resumed : rows taken over from an earlier, interrupted run's partial file.
    computed : rows the model computed in this run.
    autocast : ``"bfloat16"`` / ``"float16"`` when CUDA mixed precision was used, else None.
    """

    features: np.ndarray | None
    skipped: tuple[SkippedImage, ...] = ()
    resumed: int = 0
    computed: int = 0
    autocast: str | None = None


class _ImageFiles(Dataset[tuple[torch.Tensor, str, int]]):
    """Decoded, transformed images ``rows`` ((k,) int indices into ``paths``: an array, or a
    range for the whole pool); an unreadable file gives zeros and its reason.

    Errors are returned rather than raised so that one bad file does not stop the scan: the
    user gets every bad file in one report instead of fixing them one run at a time. Each item
    carries its row so the consumer can check the order (workers must not reorder).
    """

    def __init__(
        self,
        paths: Sequence[str],
        rows: np.ndarray | Sequence[int],
        transform: Callable[[Image.Image], torch.Tensor],
        size: int,
    ) -> None:
        self.paths = paths
        self.rows = rows
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, str, int]:
        i = int(self.rows[j])
        try:
            return self.transform(load_image(self.paths[i])), "", i
        except InputError as exc:
            return torch.zeros(3, self.size, self.size), exc.reason, i
        except Exception as exc:  # one odd file must not hide the others
            logger.debug("unexpected error on %s", self.paths[i], exc_info=True)
            reason = f"cannot be processed ({type(exc).__name__}: {exc})"
            return torch.zeros(3, self.size, self.size), reason, i


# --------------------------------------------------------------------------- partial files


def model_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes and bytes) of ``model``.

    Two models with this digest compute the same function (for the same architecture), so it
    identifies pretrained and fine-tuned weights alike without trusting file names.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # A uint8 view reads the raw bytes of any dtype (bf16 included, which numpy lacks).
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            # hashed in place: a bytes copy would cost the largest tensor again (5 MB for
            # Lite0's classifier, more for big models)
            h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def file_fingerprints(paths: Sequence[str]) -> np.ndarray:
    """(n,) int64 fingerprint of each file: its path, size and modification time, never 0.

    A file replaced or edited in place gets a new size or mtime, which is how ``make`` and
    ``rsync`` detect changes too; reading the content would cost as much as decoding it. A
    missing file gets a fingerprint as well (its row never counts as done).
    """
    out = np.empty(len(paths), dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        d = hashlib.blake2b(f"{p}|{stamp}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(d, "little", signed=True) or 1
    return out


class PartialFeatures:
    """Rows of an unfinished extraction, kept in side files so that a later run resumes.

    Three files per extraction, named by ``key``, a digest of everything that decides the
    values of a row (model weights, layer, preprocessing, image size, file list, precision):

    - ``extract-<key>.partial.npy``: the (n, d) float32 features, rows written as computed;
    - ``extract-<key>.rows.npy``: (n,) int64, the file fingerprint (:func:`file_fingerprints`)
      a row was computed from, 0 where it is not done yet; replaced atomically on each flush,
      after the features were synced, so it never claims a row whose values are not on disk;
    - ``extract-<key>.partial.json``: what the key was made of (checked on resume) and ``tag``.

    A row is taken over only if its image file still has the same path, size and mtime.

    Parameters
    ----------
    side_path : maps a file name to its path in the project's side-file folder
        (:meth:`Project.side_path`), or a folder.
    tag : what these features become (e.g. the slot ``features:<set>:<label>``); when an
        extraction finishes, :meth:`discard` also deletes partial files of the same tag left by
        earlier settings, which can no longer be resumed into the current run.
    flush_seconds, flush_batches : flush at least this often; ``None`` reads the module
        defaults :data:`FLUSH_SECONDS`, :data:`FLUSH_BATCHES` at run time.

    Rows are written with plain file writes, not through a memory map: a full disk then
    raises an OSError (and resuming is given up with a warning) instead of killing the process
    with SIGBUS.
    """

    def __init__(
        self,
        side_path: Callable[[str], Path] | str | os.PathLike[str],
        *,
        tag: str = "",
        flush_seconds: float | None = None,
        flush_batches: int | None = None,
    ) -> None:
        if callable(side_path):
            self._side_path = side_path
        else:
            folder = Path(side_path)
            self._side_path = lambda name: folder / name
        self.tag = tag
        self.flush_seconds = flush_seconds
        self.flush_batches = flush_batches
        self.key: str | None = None
        self.resumed = 0
        self._rows: np.ndarray | None = None  # fingerprint of each done row, 0 = not done
        self._dim = 0
        self._reused = np.zeros(0, dtype=bool)  # rows open() found done
        self._fp = np.zeros(0, dtype=np.int64)  # (n,) fingerprints of the files
        self._offset = 0  # byte offset of row 0 in the .npy
        self._dirty: list[np.ndarray] = []  # rows written since the last sync
        self._fh: BinaryIO | None = None  # the features file, open between syncs
        self._since_flush = 0
        self._last_flush = time.monotonic()
        self._broken = False

    # paths ------------------------------------------------------------------------------
    def _file(self, suffix: str) -> Path:
        assert self.key is not None
        return self._side_path(f"extract-{self.key}.{suffix}")

    @property
    def files(self) -> tuple[Path, Path, Path]:
        """(features .npy, rows .npy, .json) of the open extraction."""
        return self._file("partial.npy"), self._file("rows.npy"), self._file("partial.json")

    # open -------------------------------------------------------------------------------
    def open(self, meta: Mapping[str, Any], fingerprints: np.ndarray, dim: int) -> np.ndarray:
        """Open (or start) the side files of the extraction ``meta`` of (n, ``dim``) rows.

        Parameters
        ----------
        meta : what decides the values of a row (hashed into :attr:`key`).
        fingerprints : (n,) int64, :func:`file_fingerprints` of the image files.
        dim : d, the width of a row.

        Returns
        -------
        np.ndarray
            (n,) bool, True for rows an earlier run finished; read them with
            :meth:`resumed_blocks`.
        """
        meta_json = json.dumps({"v": _PARTIAL_VERSION, **meta}, sort_keys=True, default=str)
        self.key = hashlib.sha256(meta_json.encode()).hexdigest()[:20]
        self._fp = fingerprints
        self._dim = int(dim)
        n, d = len(fingerprints), self._dim
        feats_path, rows_path, json_path = self.files
        reused = np.zeros(n, dtype=bool)
        if json_path.is_file():
            try:
                info = json.loads(json_path.read_text())
                if json.dumps(info["meta"], sort_keys=True) != meta_json:
                    raise ValueError("settings differ (digest collision)")
                # A memory map reads only the header here; rows are read by resumed_blocks.
                stored = np.load(feats_path, mmap_mode="r")
                rows = np.load(rows_path)
                if stored.shape != (n, d) or stored.dtype != np.float32 or rows.shape != (n,):
                    raise ValueError(f"shape {stored.shape} / {rows.shape}, expected ({n}, {d})")
                reused = (rows == fingerprints) & (rows != 0)
                self._offset = int(stored.offset)
                del stored
                rows[~reused] = 0
                self._rows = rows
                self._reused = reused
                self.resumed = int(reused.sum())
                return reused
            except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
                logger.warning("partial extraction %s unusable (%s); starting over", json_path, exc)
                reused[:] = False
        try:
            self._create(meta_json, n, d)
        except OSError as exc:
            self._give_up(exc)
        return reused

    def resumed_blocks(self, max_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """The rows taken over by :meth:`open`, as ``(lo, block)``: ``block`` (k, d) float32
        holds rows ``lo .. lo + k - 1``, 1 <= k <= ``max_rows``, in ascending order.

        Plain file reads, not a memory map: the pages read do not stay in this process's
        resident memory, so resuming a pool of millions of rows costs ``max_rows`` rows.

        Raises
        ------
        OSError
            The partial file cannot be read any more (it was there when opened).
        """
        if not self.resumed:
            return
        d = self._dim
        feats_path = self.files[0]
        with open(feats_path, "rb") as fh:
            for a, b in _runs(np.flatnonzero(self._reused), max_rows):
                fh.seek(self._offset + a * d * 4)
                block = np.fromfile(fh, dtype=np.float32, count=(b - a) * d)
                if block.size != (b - a) * d:
                    raise OSError(f"{feats_path} is shorter than when it was opened")
                yield a, block.reshape(b - a, d)

    def _create(self, meta_json: str, n: int, d: int) -> None:
        feats_path, rows_path, json_path = self.files
        json_path.unlink(missing_ok=True)  # the .json marks a complete set: remove it first
        # A sparse file of the full size with the .npy header; rows are filled in by flush().
        mm = np.lib.format.open_memmap(feats_path, mode="w+", dtype=np.float32, shape=(n, d))
        self._offset = int(mm.offset)
        del mm
        self._rows = np.zeros(n, dtype=np.int64)
        _atomic_save(rows_path, self._rows)
        payload = {"meta": json.loads(meta_json), "tag": self.tag, "created": time.time()}
        atomic_write_bytes(json_path, json.dumps(payload, indent=1).encode())

    # write ------------------------------------------------------------------------------
    def mark(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Rows ``rows`` ((k,) int, ascending) are final, with ``values`` (k, d) float32.

        They are written to the features file now (nothing is held in memory) and recorded
        as done at the next :meth:`flush`, once synced.
        """
        if self._broken or self._rows is None or not len(rows):
            return
        rows = np.asarray(rows, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float32)
        try:
            if self._fh is None:
                self._fh = open(self.files[0], "r+b")  # noqa: SIM115 (closed by flush)
            start = 0
            for a, b in _runs(rows):
                self._fh.seek(self._offset + a * 4 * values.shape[1])
                self._fh.write(values[start : start + b - a].data)
                start += b - a
        except OSError as exc:
            self._give_up(exc)
            return
        self._dirty.append(rows)
        self._since_flush += 1

    def maybe_flush(self) -> None:
        """Flush if :attr:`flush_seconds` passed or :attr:`flush_batches` batches were marked."""
        seconds = FLUSH_SECONDS if self.flush_seconds is None else self.flush_seconds
        batches = FLUSH_BATCHES if self.flush_batches is None else self.flush_batches
        if self._since_flush >= batches or time.monotonic() - self._last_flush >= seconds:
            self.flush()

    def flush(self) -> None:
        """Sync the rows marked since the last flush, then record them as done."""
        self._last_flush = time.monotonic()
        self._since_flush = 0
        if self._broken or self._rows is None or not self._dirty or self._fh is None:
            return
        rows = np.concatenate(self._dirty)
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._close()
            self._rows[rows] = self._fp[rows]
            _atomic_save(self.files[1], self._rows)
        except OSError as exc:
            self._give_up(exc)
            return
        self._dirty.clear()

    def _close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()

    def _give_up(self, exc: OSError) -> None:
        # Resuming is a convenience: a full or read-only disk must not fail the extraction.
        logger.warning("cannot write partial extraction files (%s); this run cannot resume", exc)
        self._broken = True
        self._dirty.clear()
        with contextlib.suppress(OSError):
            self._close()

    @property
    def broken(self) -> bool:
        """True once writing the side files failed (the extraction goes on without them)."""
        return self._broken

    # finish -----------------------------------------------------------------------------
    def discard(self) -> None:
        """Delete this extraction's files and older ones of the same :attr:`tag`.

        Call after the finished features are stored safely elsewhere.
        """
        self._dirty.clear()
        with contextlib.suppress(OSError):
            self._close()
        if self.key is None:
            return
        victims = [self.files]
        json_path = self.files[2]
        if self.tag:
            for other in json_path.parent.glob("extract-*.partial.json"):
                if other == json_path:
                    continue
                try:
                    same = json.loads(other.read_text()).get("tag") == self.tag
                except (OSError, ValueError):
                    continue
                if same:
                    key = other.name.removeprefix("extract-").removesuffix(".partial.json")
                    base = other.parent / f"extract-{key}"
                    victims.append((Path(f"{base}.partial.npy"), Path(f"{base}.rows.npy"), other))
        for feats, rows, meta in victims:
            meta.unlink(missing_ok=True)  # first: without it the others are never read
            rows.unlink(missing_ok=True)
            feats.unlink(missing_ok=True)


def _runs(rows: np.ndarray, max_rows: int | None = None) -> Iterator[tuple[int, int]]:
    """``(a, b)`` for each run of consecutive values ``a .. b - 1`` in ``rows`` ((k,) int,
    ascending, no repeats), runs cut to at most ``max_rows`` values."""
    if not len(rows):
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
        a, b = int(rows[lo]), int(rows[hi - 1]) + 1
        step = b - a if max_rows is None else max_rows
        for c in range(a, b, step):
            yield c, min(c + step, b)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- the job


def default_workers() -> int:
    """Decoding processes for a headless extraction: one core fewer than the machine has, <= 8.

    One core stays with the main process, which runs the model (on the CPU) or feeds the GPU.
    Beyond ~8 processes JPEG decoding at model input sizes keeps even a large GPU busy, and
    each worker costs a process with its own copy of the interpreter. Only the CPUs this
    process may run on are counted (a cluster job's allocation, not the whole node).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def _autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU has it (same range as float32: no overflow), else fp16; CUDA only.

    On the CPU autocast is never used: bf16 matmuls are slow on most CPUs and would change
    the features, so ``amp`` there keeps the exact float32 results.
    """
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def extraction_job(
    backbone: Backbone,
    paths: Sequence[str | os.PathLike[str]],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    image_size: int | None = None,
    control: JobControl | None = None,
    num_workers: int = 0,
    amp: bool = False,
    skip_corrupt: bool = False,
    partial: PartialFeatures | None = None,
    key_extra: Mapping[str, Any] | None = None,
    out: RowSink | None = None,
) -> Job[Extraction]:
    """Compute ``backbone.features`` for every image, in the order given; see :class:`Extraction`.

    Parameters
    ----------
    backbone : the model; it is moved to ``device`` (and stays there) and run in eval mode
        (a model in train mode is put back in train mode afterwards).
    paths : image files; row ``i`` of the result belongs to ``paths[i]``.
    batch_size : images per forward pass (>= 1). Results agree across batch sizes up to float
        rounding (~1e-5 relative).
    device : ``None`` = wherever the backbone already is; a string goes through
        :func:`pick_device`.
    image_size : input side in pixels instead of the model's native one (e.g. 128 for speed).
    control : checked before each batch, so a cancel takes effect within one batch.
    num_workers : DataLoader worker processes decoding images while the model runs; 0 decodes
        in the calling thread (safe anywhere, e.g. the GUI's engine thread). The order of the
        rows does not depend on it.
    amp : on CUDA, run the forward under ``torch.autocast`` (bf16, or fp16 on GPUs without
        bf16); features are stored as float32 either way. Ignored on other devices.
    skip_corrupt : unreadable images become NaN rows, each reported by a warning
        :class:`Message` and listed in :attr:`Extraction.skipped`, instead of failing the job.
    partial : side files to write rows to in batches and to resume from (see
        :class:`PartialFeatures`); ``None`` keeps everything in memory.
    key_extra : JSON-able settings that also decide the values (e.g. a stage's config); they
        join the resume key.
    out : where the (n, d) rows go (d = ``backbone.feature_dim``), e.g. a side-array writer,
        so that the job's memory does not grow with n: each row is written once, in blocks
        of consecutive rows (``out[lo:hi] = block``), skipped images as NaN rows; when the
        job raises, some rows were not written. ``None``: a new in-memory array, returned as
        :attr:`Extraction.features`.

    Yields
    ------
    Progress
        ``Progress("extract", done_images, total_images)`` after each batch.
    Message
        When resuming, and for each unreadable file.

    Returns
    -------
    Extraction

    Raises
    ------
    ImageReadError (an InputError)
        Without ``skip_corrupt``: some files could not be read. After the first bad file the
        model is no longer run but the remaining files are still decoded, so the error lists
        every bad file. Rows finished before it stay in ``partial``.
    jobs.Cancelled
        ``control`` was cancelled (finished rows stay in ``partial``).
    """
    # Bad arguments fail here, when the job is created, not at its first step; everything
    # with side effects (moving the model, reading files) waits until the job runs.
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    target = pick_device(device) if isinstance(device, str) else device
    files = [os.fspath(p) for p in paths]
    return _extract(
        backbone,
        files,
        batch_size=batch_size,
        target=target,
        image_size=image_size,
        control=control or JobControl(),
        num_workers=num_workers,
        amp=amp,
        skip_corrupt=skip_corrupt,
        partial=partial,
        key_extra=dict(key_extra or {}),
        out=out,
    )


def extract_features(
    backbone: Backbone,
    paths: Sequence[str | os.PathLike[str]],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    image_size: int | None = None,
    control: JobControl | None = None,
    num_workers: int = 0,
    amp: bool = False,
) -> Job[np.ndarray]:
    """:func:`extraction_job` without resuming or skipping; returns the (n, d) float32 array.

    Raises :class:`ImageReadError` listing every unreadable file.
    """
    job = extraction_job(
        backbone,
        paths,
        batch_size=batch_size,
        device=device,
        image_size=image_size,
        control=control,
        num_workers=num_workers,
        amp=amp,
    )
    return _features_only(job)


def _features_only(job: Job[Extraction]) -> Job[np.ndarray]:
    features = (yield from job).features
    assert features is not None  # no `out` was given
    return features


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module, channels_last: bool) -> Iterator[None]:
    """Eval mode (and channels-last weights on CUDA) for the block; restored afterwards."""
    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        if was_training:
            model.train()


def _resume_key(
    backbone: Backbone,
    files: list[str],
    size: int,
    autocast: torch.dtype | None,
    key_extra: dict[str, Any],
) -> dict[str, Any]:
    """What a partial extraction must match to be reused: the model and its weights, the
    preprocessing, the device type and precision, and the files in order."""
    return {
        "model": backbone.name,
        "arch": getattr(backbone, "arch", ""),
        "layer": str(getattr(backbone, "layer", "")),
        "pooling": str(getattr(backbone, "pooling", "")),
        "weights_sha256": model_digest(backbone.model),
        "preprocess": backbone.preprocess.to_dict(),
        "image_size": size,
        "autocast": str(autocast) if autocast else None,
        "device_type": backbone.device.type,
        "n": len(files),
        "dim": backbone.feature_dim,
        "paths_sha256": hashlib.sha256("\n".join(files).encode()).hexdigest(),
        "extra": key_extra,
    }


def _extract(
    backbone: Backbone,
    files: list[str],
    *,
    batch_size: int,
    target: torch.device | None,
    image_size: int | None,
    control: JobControl,
    num_workers: int,
    amp: bool,
    skip_corrupt: bool,
    partial: PartialFeatures | None,
    key_extra: dict[str, Any],
    out: RowSink | None,
) -> Job[Extraction]:
    n = len(files)
    dim = backbone.feature_dim
    in_memory: np.ndarray | None = None
    sink: RowSink
    if out is None:
        sink = in_memory = np.full((n, dim), np.nan, dtype=np.float32)
    else:
        sink = out
    if n == 0:
        return Extraction(in_memory)

    if target is not None and target != backbone.device:
        backbone.to(target)
    dev = backbone.device
    cuda = dev.type == "cuda"
    autocast = _autocast_dtype(dev, amp)
    size = backbone.preprocess.input_size if image_size is None else int(image_size)

    todo = np.arange(n)
    fingerprints = np.zeros(n, dtype=np.int64)
    if partial is not None:
        meta = _resume_key(backbone, files, size, autocast, key_extra)
        fingerprints = file_fingerprints(files)
        reused = partial.open(meta, fingerprints, dim)
        todo = np.flatnonzero(~reused)
        block_rows = max(1, RESUME_BLOCK_BYTES // (4 * max(1, dim)))
        for lo, block in partial.resumed_blocks(block_rows):
            sink[lo : lo + len(block)] = block
        if partial.resumed:
            yield Message(
                STAGE,
                f"resuming an interrupted extraction: {partial.resumed} of {n} images were "
                f"already done ({partial.files[0].name})",
            )

    logger.info(
        "extracting %s features of %d images (%d to compute) at %d px on %s (batch %d, "
        "%d workers, autocast %s)",
        backbone.name,
        n,
        len(todo),
        size,
        dev,
        batch_size,
        num_workers,
        autocast,
    )
    resumed = n - len(todo)
    done = resumed
    bad: list[tuple[str, str]] = []
    skipped: list[SkippedImage] = []
    computed = 0
    try:
        with _eval_mode(backbone.model, channels_last=cuda):
            if len(todo) == 0:
                yield Progress(STAGE, n, n)
            else:
                dataset = _ImageFiles(files, todo, make_transform(backbone.preprocess, size), size)
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=False,
                    num_workers=num_workers,
                    # Pinned host memory lets the copy to the GPU run asynchronously.
                    pin_memory=cuda,
                )
                batches = iter(loader)
                for b in range(math.ceil(len(todo) / batch_size)):
                    control.check()
                    x, reasons, idx = next(batches)
                    rows = todo[b * batch_size : b * batch_size + x.shape[0]]
                    if not np.array_equal(idx.numpy(), rows):
                        raise RuntimeError("DataLoader returned images out of order")  # a bug
                    ok = np.array([not r for r in reasons], dtype=bool)
                    for j in np.flatnonzero(~ok):
                        path, reason = files[rows[j]], reasons[j]
                        logger.warning("cannot read %s: %s", path, reason)
                        if skip_corrupt:
                            skipped.append(SkippedImage(int(rows[j]), path, reason))
                        else:
                            bad.append((path, reason))
                        verb = "skipped" if skip_corrupt else "cannot read"
                        yield Message(STAGE, f"{verb} {path}: {reason}", "WARNING")
                    if not bad:
                        values = np.full((len(rows), dim), np.nan, dtype=np.float32)
                        if ok.any():
                            good = rows[ok]
                            xb = x if ok.all() else x[torch.from_numpy(ok)]
                            feats = _forward(backbone, xb, dev, autocast)
                            if feats.shape != (len(good), dim):
                                raise ValueError(
                                    f"{backbone.name} gave features of shape {feats.shape} for "
                                    f"{len(good)} images at {size} px; expected "
                                    f"({len(good)}, {dim}) (its feature_dim)"
                                )
                            values[ok] = feats
                            computed += len(good)
                            if partial is not None:
                                partial.mark(good, feats)
                                partial.maybe_flush()
                        # skipped images' rows too (NaN): every row of `out` is written
                        start = 0
                        for a, b in _runs(rows):
                            sink[a:b] = values[start : start + b - a]
                            start += b - a
                    done += x.shape[0]
                    message = "checking the remaining images for errors" if bad else ""
                    yield Progress(STAGE, done, n, message)
    finally:
        # Whatever stopped the job (cancel, a bad file, an exception, the consumer closing
        # it), the rows finished so far are kept for the next run.
        if partial is not None:
            partial.flush()

    if bad:
        raise ImageReadError(bad, n)
    return Extraction(
        features=in_memory,
        skipped=tuple(skipped),
        resumed=resumed,
        computed=computed,
        autocast=str(autocast).removeprefix("torch.") if autocast else None,
    )


def _forward(
    backbone: Backbone, x: torch.Tensor, dev: torch.device, autocast: torch.dtype | None
) -> np.ndarray:
    """(b, d) float32 features of the batch ``x`` (b, 3, H, W) on the host."""
    x = x.to(dev, non_blocking=True)
    if dev.type == "cuda":
        # Matches the channels-last weights: convolutions then skip layout transposes.
        x = x.contiguous(memory_format=torch.channels_last)
    # inference_mode only around the forward: a grad-mode context held across a `yield`
    # would leak into whatever the consumer runs between events.
    with torch.inference_mode():
        if autocast is None:
            feats = backbone.features(x)
        else:
            with torch.autocast("cuda", dtype=autocast):
                feats = backbone.features(x)
            feats = feats.float()
            if autocast == torch.float16 and not bool(torch.isfinite(feats).all()):
                # fp16 tops out at 65504; a batch that overflowed is redone in float32.
                logger.warning("fp16 overflow in a batch; recomputing it in float32")
                feats = backbone.features(x).float()
        return feats.float().cpu().numpy()
