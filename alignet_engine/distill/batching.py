"""Batches of the distillation job: which triplet rows a step draws and the images they name.

:class:`TripletSampler` draws the rows (epochs of fresh permutations, its whole state
checkpointable). The images come from one of two sources, both turning a sequence of id
arrays into :class:`ImageBatch` es on the training device:

* :class:`PoolImages` — a pre-decoded tensor ``(n, C, H, W)`` or a ``load_batch(ids)``
  callable, read in the training loop itself (small pools, tests).
* :class:`StreamedImages` — a map-style dataset (image id → decoded image) read by a torch
  ``DataLoader``: worker processes decode the next micro-batches while the model trains
  (``prefetch_factor`` batches per worker), pinned memory feeds a GPU asynchronously, and the
  validation loader keeps its workers between validations. Only the images of the batches
  being trained are in memory, so memory does not grow with the pool. The trainer hands it
  the ids of every micro-batch ahead of time (:meth:`StreamedImages.batches`): the order is
  the sampler's, so a run is the same whatever the number of workers, bitwise on the CPU.
"""

from __future__ import annotations

import copy
import multiprocessing
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from alignet_engine.errors import InputError

from .rows import Rows, StoredRows, row_blocks


class ImageDataset(Protocol):
    """What :class:`StreamedImages` reads: the pool, by image id.

    ``dataset[i]`` returns ``(image (C, H, W) float32, reason, i)``: ``reason`` is ``""`` for
    a readable image, else why it is not (the image is then zeros of the right shape); the
    extraction stage's image dataset has this form. ``paths`` (optional) names the files in
    error messages.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]: ...


class ImageBatch(NamedTuple):
    """A batch of pool images on the training device.

    Attributes
    ----------
    images : (k, C, H, W) float.
    ids : (k,) int64 image ids, in the order asked for.
    ok : (k,) bool, False where the image was unreadable and skipped (zeros in ``images``);
        None when every image is fine.
    """

    images: torch.Tensor
    ids: np.ndarray
    ok: np.ndarray | None


# a generator, not only an iterator: closing it stops the loader's workers (``distill`` does)
ImageBatches = Generator[ImageBatch, None, None]


class PoolImages:
    """Images by id from a pre-decoded tensor or a loader callable, moved to ``device``."""

    skipped: dict[int, tuple[str, str]] = {}  # noqa: RUF012 (read-only: never any here)

    def __init__(self, source: ImageSource, device: torch.device) -> None:
        self.device = device
        self.tensor: torch.Tensor | None = None
        self.load: Callable[[np.ndarray], torch.Tensor] | None = None
        if isinstance(source, torch.Tensor):
            if source.ndim != 4 or not source.is_floating_point():
                raise InputError(
                    "the image pool must be a float tensor (n, channels, height, width); "
                    f"got {source.dtype} {tuple(source.shape)}",
                    field="images",
                )
            self.tensor = source
        elif callable(source):
            self.load = source
        else:
            raise InputError(
                f"images must be a tensor or a callable; got {type(source).__name__}",
                field="images",
            )

    @property
    def count(self) -> int | None:
        return None if self.tensor is None else int(self.tensor.shape[0])

    def image_shape(self, image_id: int) -> tuple[int, ...]:
        """(C, H, W) of one image, without moving anything to the device (for messages)."""
        if self.tensor is not None:
            return tuple(self.tensor.shape[1:])
        assert self.load is not None
        return tuple(self.load(np.asarray([image_id], dtype=np.int64)).shape[1:])

    def __call__(self, ids: np.ndarray, channels_last: bool = False) -> torch.Tensor:
        if self.tensor is not None:
            index = torch.from_numpy(ids).to(self.tensor.device)
            batch = self.tensor.index_select(0, index)
        else:
            assert self.load is not None
            batch = self.load(ids)
            if (
                not isinstance(batch, torch.Tensor)
                or batch.ndim != 4
                or batch.shape[0] != len(ids)
                or not batch.is_floating_point()
            ):
                got = (
                    f"{batch.dtype} {tuple(batch.shape)}"
                    if isinstance(batch, torch.Tensor)
                    else type(batch).__name__
                )
                raise InputError(
                    f"load_batch must return a float tensor ({len(ids)}, channels, height, "
                    f"width) for {len(ids)} ids; got {got}",
                    field="images",
                )
        return _to_device(batch, self.device, channels_last)

    def batches(self, plan: Iterable[np.ndarray], channels_last: bool) -> ImageBatches:
        """The images of each id array of ``plan``, in order, read as they are asked for."""
        for ids in plan:
            yield ImageBatch(self(ids, channels_last), ids, None)

    def chunks(self, ids: np.ndarray, size: int, channels_last: bool) -> ImageBatches:
        """The images of ``ids`` in consecutive chunks of ``size``."""
        return self.batches((ids[b : b + size] for b in range(0, len(ids), size)), channels_last)

    def close(self) -> None:
        """Nothing to release (see :meth:`StreamedImages.close`)."""


def _to_device(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


class _Plan:
    """A DataLoader batch sampler over id arrays given from outside (one ``iter`` each)."""

    def __init__(self, plan: Iterable[np.ndarray] = ()) -> None:
        self.plan = plan

    def __iter__(self) -> Iterator[list[int]]:
        for ids in self.plan:
            yield ids.tolist()


class StreamedImages:
    """Pool images decoded on demand by torch ``DataLoader`` s (see the module docstring).

    Parameters
    ----------
    dataset : the pool by image id (:class:`ImageDataset`); with ``num_workers > 0`` it is
        sent to the worker processes, so it must be picklable (file paths and a transform,
        not decoded images).
    num_workers : decoding processes; 0 decodes in the training thread (slower, no extra
        processes). Does not change the result.
    prefetch_factor : micro-batches each worker decodes ahead.
    skip_corrupt : False — an unreadable image stops the job with an :class:`InputError`
        naming its file; True — it is recorded in :attr:`skipped` and the triplets that use
        it are left out of the loss, the agreement and the validation.
    multiprocessing_context : how workers start; None = the platform default in the main
        thread and ``"spawn"`` in any other thread (the GUI trains on a QThread, and forking a
        process with running threads can deadlock the child).

    Attributes
    ----------
    skipped : ``{image id: (file, reason)}`` of the unreadable images met so far.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        skip_corrupt: bool = False,
        multiprocessing_context: str | None = None,
    ) -> None:
        for name, value, low in (
            ("num_workers", num_workers, 0),
            ("prefetch_factor", prefetch_factor, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"must be an integer ≥ {low}; got {value!r}", field=name)
        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.skip_corrupt = skip_corrupt
        self.multiprocessing_context = multiprocessing_context
        self.device = torch.device("cpu")
        self.skipped: dict[int, tuple[str, str]] = {}
        self._eval_plan = _Plan()
        self._eval_loader: DataLoader[Any] | None = None

    @property
    def count(self) -> int:
        return len(self.dataset)

    def image_shape(self, image_id: int) -> tuple[int, ...]:
        """(C, H, W) of one image (decoded here, for messages)."""
        return tuple(self.dataset[int(image_id)][0].shape)

    def __call__(self, ids: np.ndarray, channels_last: bool = False) -> torch.Tensor:
        """The images of ``ids``, decoded in this thread (for a probe, not for training)."""
        items = [self.dataset[int(i)] for i in ids]
        for _image, reason, i in items:
            if reason:
                self._bad(int(i), reason)
        return _to_device(torch.stack([item[0] for item in items]), self.device, channels_last)

    def batches(self, plan: Iterable[np.ndarray], channels_last: bool) -> ImageBatches:
        """The images of each id array of ``plan``, in order, decoded ahead by the workers.

        The loader draws from ``plan`` up to ``num_workers × prefetch_factor`` arrays ahead
        of the one being consumed.
        """
        return self._read(self._loader(_Plan(plan), persistent=False), channels_last)

    def chunks(self, ids: np.ndarray, size: int, channels_last: bool) -> ImageBatches:
        """The images of ``ids`` in consecutive chunks of ``size`` (validation, caches).

        One loader serves every call, its workers kept alive between calls.
        """
        if self._eval_loader is None:
            self._eval_loader = self._loader(self._eval_plan, persistent=True)
        self._eval_plan.plan = [ids[b : b + size] for b in range(0, len(ids), size)]
        return self._read(self._eval_loader, channels_last)

    def close(self) -> None:
        """Stop the validation loader's workers (the training loader's stop when the
        iterator :meth:`batches` returned is closed or dropped)."""
        self._eval_loader = None

    def _loader(self, sampler: _Plan, *, persistent: bool) -> DataLoader[Any]:
        kwargs: dict[str, Any] = {}
        if self.num_workers:
            context = self.multiprocessing_context
            if context is None and threading.current_thread() is not threading.main_thread():
                context = "spawn"
            kwargs.update(
                prefetch_factor=self.prefetch_factor,
                persistent_workers=persistent,
                multiprocessing_context=(
                    None if context is None else multiprocessing.get_context(context)
                ),
            )
        return DataLoader(
            self.dataset,  # type: ignore[arg-type]
            batch_sampler=sampler,
            num_workers=self.num_workers,
            # pinned host memory lets the copy to the GPU run asynchronously
            pin_memory=self.device.type == "cuda",
            # each iterator draws its workers' base seed from this generator; without one it
            # would draw from torch's global RNG and shift the run's dropout draws
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        )

    def _read(self, loader: DataLoader[Any], channels_last: bool) -> ImageBatches:
        # a generator: closing it (or dropping it) drops the loader's iterator, which stops
        # the workers of a non-persistent loader
        for images, reasons, ids in loader:
            ok = None
            if any(reasons):
                ok = np.array([not r for r in reasons], dtype=bool)
                for j in np.flatnonzero(~ok):
                    self._bad(int(ids[j]), reasons[j])
            yield ImageBatch(_to_device(images, self.device, channels_last), ids.numpy(), ok)

    def _bad(self, image_id: int, reason: str) -> None:
        """Record (``skip_corrupt``) or refuse an unreadable image."""
        paths: Sequence[str] | None = getattr(self.dataset, "paths", None)
        where = paths[image_id] if paths is not None else f"pool image {image_id}"
        if not self.skip_corrupt:
            raise InputError(
                f"pool image {image_id} cannot be read: {reason}; fix or remove the file, or "
                "train with skip_corrupt to leave out the triplets that use it",
                source=where,
            )
        self.skipped.setdefault(image_id, (str(where), reason))


def image_source(
    images: torch.Tensor | Callable[[np.ndarray], torch.Tensor] | StreamedImages,
    device: torch.device,
) -> PoolImages | StreamedImages:
    """The source ``distill`` reads ``images`` from, on ``device``."""
    if isinstance(images, StreamedImages):
        images.device = device
        return images
    return PoolImages(images, device)


ImageSource = torch.Tensor | Callable[[np.ndarray], torch.Tensor] | StreamedImages


def check_triplets(
    triplets: Rows, sims: Rows, n_images: int | None, name: str
) -> tuple[Rows, Rows]:
    """Validate ``(m, 3)`` ids and ``(m, 3)`` similarities, in blocks of rows.

    Arrays in memory come back as int64 and float32; :class:`StoredRows` come back as they
    are (read a step's rows with :func:`~.rows.take_rows`, then convert).
    """
    if not isinstance(triplets, StoredRows):
        triplets = np.asarray(triplets)
    if not isinstance(sims, StoredRows):
        sims = np.asarray(sims)
    if len(triplets.shape) != 2 or triplets.shape[1] != 3 or triplets.shape[0] == 0:
        raise InputError(f"must have shape (m, 3) with m ≥ 1; got {triplets.shape}", field=name)
    if not np.issubdtype(triplets.dtype, np.integer):
        raise InputError(f"must hold integer image ids; got {triplets.dtype}", field=name)
    if tuple(sims.shape) != tuple(triplets.shape):
        raise InputError(
            f"similarities must have the triplets' shape {triplets.shape}; got {sims.shape}",
            field=f"{name} similarities",
        )
    for begin, block in row_blocks(sims):
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = begin + int(np.flatnonzero(~finite)[0])
            raise InputError(
                "similarities must be finite", row=row + 1, field=f"{name} similarities"
            )
    for begin, block in row_blocks(triplets):
        out_of_range = block < 0
        if n_images is not None:
            out_of_range |= block >= n_images
        if out_of_range.any():
            limit = f"[0, {n_images})" if n_images is not None else "≥ 0"
            row = begin + int(np.flatnonzero(out_of_range.any(axis=1))[0])
            raise InputError(f"image ids must lie in {limit}", row=row + 1, field=name)
    if isinstance(triplets, np.ndarray):
        triplets = triplets.astype(np.int64, copy=False)
    if isinstance(sims, np.ndarray):
        sims = sims.astype(np.float32, copy=False)
    return triplets, sims


class TripletSampler:
    """Endless stream of ``batch_size`` triplet rows: epochs of fresh permutations.

    A class rather than a generator so that its whole state — the numpy generator *and* the
    rest of the current permutation — can be saved in a checkpoint and restored exactly.
    """

    def __init__(self, m: int, batch_size: int, rng: np.random.Generator) -> None:
        self.m = m
        self.batch_size = batch_size
        self.rng = rng
        self.buffer = np.empty(0, dtype=np.int64)

    def __next__(self) -> np.ndarray:
        while self.buffer.size < self.batch_size:
            epoch = self.rng.permutation(self.m)
            # no copy of a whole epoch (80 MB at 10M rows) when nothing is left over
            self.buffer = np.concatenate([self.buffer, epoch]) if self.buffer.size else epoch
        rows = self.buffer[: self.batch_size]
        self.buffer = self.buffer[self.batch_size :]
        return rows

    def __deepcopy__(self, memo: dict[int, Any]) -> TripletSampler:
        """A copy drawing the same rows: its own generator state, the same buffer (never
        changed in place, only re-sliced or replaced, so sharing it is safe and saves a
        copy of the epoch)."""
        twin = TripletSampler(self.m, self.batch_size, copy.deepcopy(self.rng, memo))
        twin.buffer = self.buffer
        return twin

    def __iter__(self) -> Iterator[np.ndarray]:
        return self
