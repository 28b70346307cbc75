"""Helpers the tests share (no test in this module): image files to read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def noise_pngs(
    folder: Path,
    n: int,
    *,
    seed: int = 0,
    size: Callable[[int], tuple[int, int]] = lambda i: (40 + 3 * i, 52 - 2 * i),
) -> list[str]:
    """Write ``n`` distinct RGB noise PNGs ``img_00.png`` ... into ``folder``; their paths.

    ``size(i)`` is image ``i``'s (height, width) in px: by default every image differs in
    size and none is square, so resizing and cropping are exercised.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, size=(*size(i), 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths
