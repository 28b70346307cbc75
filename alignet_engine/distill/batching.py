"""Batches of the distillation job: which triplet rows a step draws and the images they name.

:class:`TripletSampler` draws the rows (epochs of fresh permutations, its whole state
checkpointable); :class:`PoolImages` turns image ids into a batch on the training device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from alignet_engine.errors import InputError

ImageSource = torch.Tensor | Callable[[np.ndarray], torch.Tensor]


class PoolImages:
    """Images by id from a pre-decoded tensor or a loader callable, moved to ``device``."""

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
        batch = batch.to(self.device, non_blocking=True)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch


def check_triplets(
    triplets: np.ndarray, sims: np.ndarray, n_images: int | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``(m, 3)`` ids and ``(m, 3)`` similarities; return int64, float32."""
    triplets = np.asarray(triplets)
    sims = np.asarray(sims)
    if triplets.ndim != 2 or triplets.shape[1] != 3 or triplets.shape[0] == 0:
        raise InputError(f"must have shape (m, 3) with m ≥ 1; got {triplets.shape}", field=name)
    if not np.issubdtype(triplets.dtype, np.integer):
        raise InputError(f"must hold integer image ids; got {triplets.dtype}", field=name)
    if sims.shape != triplets.shape:
        raise InputError(
            f"similarities must have the triplets' shape {triplets.shape}; got {sims.shape}",
            field=f"{name} similarities",
        )
    if not np.all(np.isfinite(sims)):
        row = int(np.flatnonzero(~np.isfinite(sims).all(axis=1))[0])
        raise InputError("similarities must be finite", row=row + 1, field=f"{name} similarities")
    out_of_range = triplets < 0
    if n_images is not None:
        out_of_range |= triplets >= n_images
    if out_of_range.any():
        limit = f"[0, {n_images})" if n_images is not None else "≥ 0"
        row = int(np.flatnonzero(out_of_range.any(axis=1))[0])
        raise InputError(f"image ids must lie in {limit}", row=row + 1, field=name)
    return triplets.astype(np.int64, copy=False), sims.astype(np.float32, copy=False)


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
            self.buffer = np.concatenate([self.buffer, self.rng.permutation(self.m)])
        rows = self.buffer[: self.batch_size]
        self.buffer = self.buffer[self.batch_size :]
        return rows

    def __iter__(self) -> Iterator[np.ndarray]:
        return self
