"""Feature extraction: a job that runs a backbone over an ordered list of image files."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Progress
from alignet_engine.models.devices import pick_device
from alignet_engine.models.images import ImageReadError, load_image, make_transform
from alignet_engine.models.registry import Backbone

logger = logging.getLogger(__name__)

STAGE = "extract"


class _ImageFiles(Dataset[tuple[torch.Tensor, str]]):
    """Decoded, transformed images; an unreadable file gives a zero tensor and its reason.

    Errors are returned rather than raised so that one bad file does not stop the scan: the
    user gets every bad file in one report instead of fixing them one run at a time.
    """

    def __init__(
        self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor], size: int
    ) -> None:
        self.paths = paths
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(load_image(self.paths[i])), ""
        except InputError as exc:
            return torch.zeros(3, self.size, self.size), exc.reason
        except Exception as exc:  # one odd file must not hide the others
            logger.debug("unexpected error on %s", self.paths[i], exc_info=True)
            reason = f"cannot be processed ({type(exc).__name__}: {exc})"
            return torch.zeros(3, self.size, self.size), reason


def extract_features(
    backbone: Backbone,
    paths: Sequence[str | os.PathLike[str]],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    image_size: int | None = None,
    control: JobControl | None = None,
    num_workers: int = 0,
) -> Job[np.ndarray]:
    """Compute ``backbone.features`` (pre-logits) for every image, in the order given.

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
    num_workers : DataLoader worker processes decoding images. 0 (default) decodes in the
        calling thread, which is safe inside the GUI's engine thread; more only pays off when
        decoding, not the model, is the bottleneck (large JPEGs on a GPU).

    Yields
    ------
    Progress
        ``Progress("extract", done_images, total_images)`` after each batch.

    Returns
    -------
    np.ndarray
        (n, feature_dim) float32.

    Raises
    ------
    ImageReadError (an InputError)
        Some files could not be read. Images are decoded lazily, batch by batch; after the first
        bad file the model is no longer run but the remaining files are still decoded, so the
        error lists every bad file.
    jobs.Cancelled
        ``control`` was cancelled.
    """
    # Bad arguments fail here, when the job is created, not at its first step; everything
    # with side effects (moving the model, reading files) waits until the job runs.
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    target = pick_device(device) if isinstance(device, str) else device
    files = [os.fspath(p) for p in paths]
    return _extract(
        backbone, files, batch_size, target, image_size, control or JobControl(), num_workers
    )


def _extract(
    backbone: Backbone,
    files: list[str],
    batch_size: int,
    target: torch.device | None,
    image_size: int | None,
    control: JobControl,
    num_workers: int,
) -> Job[np.ndarray]:
    n = len(files)
    out = np.empty((n, backbone.feature_dim), dtype=np.float32)
    if n == 0:
        return out

    if target is not None and target != backbone.device:
        backbone.to(target)
    dev = backbone.device
    size = backbone.preprocess.input_size if image_size is None else int(image_size)
    dataset = _ImageFiles(files, make_transform(backbone.preprocess, size), size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    n_batches = math.ceil(n / batch_size)
    logger.info(
        "extracting %s features of %d images at %d px on %s (batch %d)",
        backbone.name,
        n,
        size,
        dev,
        batch_size,
    )

    model = backbone.model
    was_training = model.training
    model.eval()
    bad: list[tuple[str, str]] = []
    done = 0
    try:
        batches = iter(loader)
        for _ in range(n_batches):
            control.check()
            x, reasons = next(batches)
            k = x.shape[0]
            for j, reason in enumerate(reasons):
                if reason:
                    logger.warning("cannot read %s: %s", files[done + j], reason)
                    bad.append((files[done + j], reason))
            if not bad:
                # inference_mode only around the forward: a grad-mode context held across a
                # `yield` would leak into whatever the consumer runs between events.
                with torch.inference_mode():
                    feats = backbone.features(x.to(dev, non_blocking=True))
                out[done : done + k] = feats.float().cpu().numpy()
            done += k
            yield Progress(
                STAGE, done, n, "checking the remaining images for errors" if bad else ""
            )
    finally:
        if was_training:
            model.train()

    if bad:
        raise ImageReadError(bad, n)
    return out
