"""Reading stimulus images robustly and turning them into model input tensors."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import v2 as T

from alignet_engine.errors import InputError
from alignet_engine.models.registry import Preprocess

logger = logging.getLogger(__name__)

#: Images whose shorter side is above this are shrunk while loading. Model inputs are at most a
#: few hundred pixels, so this bounds memory and resize time; the extra resampling step changes
#: the final input only by rounding-level amounts.
MAX_SHORT_SIDE = 1024

#: Transparent pixels are composited onto white: stimulus cut-outs with alpha are almost always
#: shown to participants on a white page, so white is what they saw.
BACKGROUND_RGB = (255, 255, 255)

_RESAMPLE = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def load_image(
    path: str | os.PathLike[str], *, max_short_side: int | None = MAX_SHORT_SIDE
) -> Image.Image:
    """Open an image file as an 8-bit RGB :class:`PIL.Image.Image`.

    Parameters
    ----------
    path : image file (any format Pillow reads: JPEG, PNG, TIFF, BMP, GIF, WebP...). For
        multi-frame files the first frame is used.
    max_short_side : if the shorter side is larger, the image is shrunk (aspect kept) so it is
        this size; JPEGs are decoded at reduced scale directly (draft mode). ``None`` keeps the
        full resolution.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, upright per the EXIF orientation tag (as browsers show it).

    Notes
    -----
    Greyscale and 1-bit → grey replicated to R, G, B. Palette → RGB (its transparency honoured).
    CMYK / YCbCr / LAB → RGB by Pillow's conversion. Alpha (RGBA, LA, PA, palette transparency)
    → composited onto white (:data:`BACKGROUND_RGB`). 16-bit greyscale (``"I;16*"``) → scaled by
    255/65535. 32-bit ``"I"`` and float ``"F"`` have no fixed range: values within [0, 255] are
    taken as 8-bit, within [0, 65535] as 16-bit, within [0, 1] (float) as fractions; anything
    else is min-max stretched to [0, 255].

    Raises
    ------
    InputError
        Missing file, a folder, a format Pillow cannot read, corrupt or truncated data, or an
        image so large that Pillow refuses it as a possible decompression bomb. The message
        names the file.
    """
    source = str(path)
    try:
        # No warnings.catch_warnings() around this to hush DecompressionBombWarning: it swaps
        # process-global state and is not thread-safe, and the GUI loads on a worker thread.
        with Image.open(source) as img:
            if max_short_side is not None and img.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale when that still leaves enough pixels:
                # a 6000x6000 JPEG then costs a 1500x1500 decode instead of 36 MP.
                w, h = img.size
                scale = max_short_side / min(w, h)
                if scale < 1:
                    img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
            img.load()
            mode = img.mode
            try:
                out = _to_rgb(img, max_short_side)
            except (ValueError, OSError) as exc:
                raise _ModeError(f"cannot convert image mode '{mode}' to RGB ({exc})") from exc
    except _ModeError as exc:
        raise InputError(str(exc), source=source) from None
    except FileNotFoundError:
        raise InputError("image file not found", source=source) from None
    except IsADirectoryError:
        raise InputError("is a folder, not an image file", source=source) from None
    except PermissionError:
        raise InputError("no permission to read this image file", source=source) from None
    except UnidentifiedImageError:
        raise InputError(
            "not a readable image (unsupported format, or not an image at all)", source=source
        ) from None
    except Image.DecompressionBombError as exc:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # Pillow raises this only when a limit is set
        raise InputError(
            f"image is too large to open safely ({exc}); shrink it below {limit} pixels",
            source=source,
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated/corrupt data as OSError, and some plugins as SyntaxError
        # or ValueError.
        raise InputError(f"image data is corrupt or truncated ({exc})", source=source) from None
    return out


class _ModeError(Exception):
    """A decoded image whose pixel mode we cannot turn into RGB."""


def _to_rgb(img: Image.Image, max_short_side: int | None = None) -> Image.Image:
    """Convert any Pillow mode to RGB (see :func:`load_image` for the rules), shrinking first.

    The shrink happens before the per-pixel conversions so a 100-megapixel 16-bit scan is
    converted at ~1 MP, not at full size (the conversions make float64 copies). Modes Pillow
    cannot resample well are first brought to one it can: ``I;16*`` to ``I`` (resize refuses
    ``I;16``), ``1`` to ``L`` and palettes to RGB(A) (both would be resized nearest-neighbour).
    """
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        img, mode = img.convert("RGBA"), "RGBA"
    elif mode == "P":
        img, mode = img.convert("RGB"), "RGB"
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")

    # Map 32-bit and float greyscale to [0, 255] with a range taken from the full-resolution
    # image: bicubic overshoot after the shrink must not change which rule applies.
    lo, gain = 0.0, 1.0
    if mode.startswith("I;16"):
        lo, gain = 0.0, 255.0 / 65535.0
        img = img.convert("I")
    elif mode in ("I", "F"):
        lo, gain = _unknown_range_map(img, mode)

    img = _shrink(img, max_short_side)

    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return _grey_array_to_rgb((arr - lo) * gain)
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _shrink(img: Image.Image, max_short_side: int | None) -> Image.Image:
    """Resize so the shorter side is ``max_short_side`` (aspect kept); smaller images pass.

    ``reducing_gap`` lets Pillow first box-reduce by an integer factor (``Image.reduce``),
    then resample the rest bicubically: fast on huge images and still antialiased.
    """
    if max_short_side is None or min(img.size) <= max_short_side:
        return img
    w, h = img.size
    s = max_short_side / min(w, h)
    new = (max(1, round(w * s)), max(1, round(h * s)))
    return img.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _unknown_range_map(img: Image.Image, mode: str) -> tuple[float, float]:
    """``(lo, gain)`` so that ``(value - lo) * gain`` lies in [0, 255] for an I or F image."""
    if mode == "I":
        # no full-size copy, unlike numpy; one band, so (min, max)
        lo_i, hi_i = cast(tuple[float, float], img.getextrema())
        lo, hi = float(lo_i), float(hi_i)
    else:
        arr = np.asarray(img, dtype=np.float32)
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return 0.0, 0.0
        lo, hi = float(finite.min()), float(finite.max())
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return 0.0, 255.0
    if lo >= 0.0 and hi <= 255.0:
        return 0.0, 1.0
    if lo >= 0.0 and hi <= 65535.0:
        return 0.0, 255.0 / 65535.0
    return (lo, 255.0 / (hi - lo)) if hi > lo else (lo, 0.0)


def _grey_array_to_rgb(arr: np.ndarray) -> Image.Image:
    grey = np.clip(np.nan_to_num(arr), 0.0, 255.0).round().astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def make_transform(
    preprocess: Preprocess, image_size: int | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """The eval transform: resize and centre crop as ``preprocess.crop_mode`` says, to
    tensor, normalise (or, for a whole-stimulus preprocessing, resize the whole image to the
    square input).

    The crop modes are timm's own eval transform (``timm.data.create_transform``), so a
    ``timm:`` model sees exactly what it was evaluated with, ``squash`` and ``border`` included.

    Parameters
    ----------
    preprocess : the model's settings (:attr:`Backbone.preprocess`).
    image_size : side of the output square in pixels, replacing ``preprocess.input_size``
        (e.g. 128 to run the demo faster on a CPU). The crop fraction is kept, so the shorter
        side is resized to ``floor(image_size / crop_pct)`` as timm does.

    Returns
    -------
    Callable[[PIL.Image.Image], torch.Tensor]
        Maps an RGB image to a (3, size, size) float32 tensor, normalised with the model's
        mean/std.
    """
    size = preprocess.input_size if image_size is None else int(image_size)
    if size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if preprocess.whole:  # the whole stimulus, squeezed to the square input: nothing cut off
        return T.Compose(
            [
                T.Resize((size, size), interpolation=_RESAMPLE[preprocess.interpolation]),
                T.PILToTensor(),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(mean=list(preprocess.mean), std=list(preprocess.std)),
            ]
        )
    if preprocess.crop_mode != "center":
        from timm.data import create_transform

        return create_transform(  # type: ignore[no-any-return]
            input_size=(3, size, size),
            is_training=False,
            interpolation=preprocess.interpolation,
            mean=preprocess.mean,
            std=preprocess.std,
            crop_pct=preprocess.crop_pct,
            crop_mode=preprocess.crop_mode,
        )
    scale_size = math.floor(size / preprocess.crop_pct)
    # Resize and crop the PIL image (Pillow's antialiased resampling) before converting to a
    # tensor: the same order and backend as timm's eval transform (its ``center`` mode), so
    # features match timm; tests check it against ``timm.data.create_transform``.
    return T.Compose(
        [
            T.Resize(scale_size, interpolation=_RESAMPLE[preprocess.interpolation]),
            T.CenterCrop(size),
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(preprocess.mean), std=list(preprocess.std)),
        ]
    )


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has an extension Pillow registers as an image it can open."""
    ext = Path(path).suffix.lower()
    return ext in Image.registered_extensions() and ext not in (".pdf", ".eps", ".ps")


class ImageReadError(InputError):
    """One or more images of a set could not be read.

    bad_files : ``(path, reason)`` for every unreadable file, in input order. The message lists
        them too (the first :data:`MAX_LISTED` of them).
    """

    MAX_LISTED = 50

    def __init__(self, bad_files: list[tuple[str, str]], total: int) -> None:
        self.bad_files = tuple(bad_files)
        if len(bad_files) == 1:
            path, reason = bad_files[0]
            super().__init__(reason, source=path)
            return
        lines = [f"  {p}: {r}" for p, r in bad_files[: self.MAX_LISTED]]
        if len(bad_files) > self.MAX_LISTED:
            lines.append(f"  ... and {len(bad_files) - self.MAX_LISTED} more")
        super().__init__(
            f"{len(bad_files)} of {total} images could not be read; fix or remove them:\n"
            + "\n".join(lines)
        )
