"""A deterministic procedural world of images: the embedded demo's stimuli.

Nothing here comes from third-party data: every image is drawn with numpy and Pillow from a
seed, so the same seed gives the same PNG bytes (with the pinned numpy and Pillow; another
version's float maths may move a pixel by one level).

Ground-truth hierarchy
----------------------
Up to 4 superordinate FAMILIES (a shape class) × up to 5 basic CATEGORIES each (a shape
variant within the class). The default world uses the first 3 families × first 4 categories::

    round      : disc, ring, oval, flower, cog
    angular    : triangle, square, star, arrowhead, cross
    elongated  : bar, wave, arc, zigzag, hook
    organic    : blob, leaf, heart, drop, bean

Each category also owns a characteristic object *hue range* (centre ± 0.025 on the HSV hue
circle) and a characteristic surface *texture* (solid, stripes, dots, checker, speckle). Hue
and texture are assigned by two different Latin squares over (family, category)::

    hue index     = (category + family) mod 5       (red, yellow, green, blue, purple)
    texture index = (category + 2·family) mod 5

so within a family every category has its own hue and texture, but every hue and every
texture recurs in the other families. A category is therefore the *conjunction* shape
variant + hue + texture, and a family is defined by outline shape alone: colour and texture
cut across families. A pretrained network sees part of the structure zero-shot (the items of
a category agree in every cue) but weighs the family level and colour differently from the
observers of :mod:`alignet_engine.demo.observers` and is distracted by background patterns,
so a linear re-weighting of its features can improve agreement (numbers below).

Exemplar recipe (all drawn from the item's own seeded generator)
----------------------------------------------------------------
* object: category shape, stretched anisotropically (aspect 0.85-1.18), rotated uniformly in
  [0°, 360°), radius 0.20-0.36 × image size, centre anywhere that keeps it inside the frame;
* colour: category hue ± 0.025, saturation 0.55-0.90, value 0.60-0.95 (shade jitter);
* texture: the category's pattern, fixed to the object frame, with random orientation, phase,
  frequency (± 15 %) and contrast 0.35-0.60; a soft lighting gradient across the object;
* background (pure nuisance, independent of the object): uniformly random hue, saturation
  0.05-0.45, a value at least 0.25 away from the object's (so the object always stands
  out), a linear lightness gradient in a random direction, a random pattern from the same
  texture set as object surfaces (contrast 0.15-0.35, object-like scale; "solid" = none) and
  faint luminance grain; a thin contrasting outline around the object.

Background colour and pattern vary as much as anything in the image, which is realistic: it
is the nuisance variation the alignment must learn to ignore (the background pattern is what
the pretrained CNN is most distracted by).

Measured on the default world (seed 0; pretrained EfficientNet-Lite0, pooled 1280-d
features, cosine similarity; observers at their default temperature), on the 400 test
triplets × 5: noise ceiling 0.81, ground-truth model 0.76, zero-shot CNN 0.65, and an
identity-initialised affine map of its (PCA-128) features fitted on the fit triplets 0.71.
The CNN gets same-category triplets right but under-weights the family level (0.61 vs 0.86
on "two of one family + one other" triplets) and object colour (0.38 vs 0.54 on triplets
from three families); its features still separate both levels linearly (nearest-centroid
category and family accuracy 0.94 on test items).

Files
-----
``generate_world(out_dir)`` writes ``out_dir/<family>_<category>/<role>_<kk>.png`` (one
sub-folder per category; ``kk`` is the 2-digit index of the exemplar within its role) and a
manifest ``out_dir/world.json`` that :func:`load_world` reads back. Per category there are
``n_stimuli`` "stimulus" exemplars, split object-disjointly into ``fit`` (60 %) and ``test``
(40 %), plus ``n_pool`` ``pool`` exemplars that never get judgments (the distillation pool).
Every image is 3-channel 8-bit RGB, ``image_size`` × ``image_size`` pixels.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from alignet_engine.base.types import ImageSet
from alignet_engine.errors import InputError
from alignet_engine.jobs import Job, JobControl, Progress, run_job

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("fit", "test", "pool")
MANIFEST_NAME = "world.json"
_MANIFEST_VERSION = 1

FAMILY_LIBRARY: dict[str, tuple[str, ...]] = {
    "round": ("disc", "ring", "oval", "flower", "cog"),
    "angular": ("triangle", "square", "star", "arrowhead", "cross"),
    "elongated": ("bar", "wave", "arc", "zigzag", "hook"),
    "organic": ("blob", "leaf", "heart", "drop", "bean"),
}
MAX_FAMILIES = len(FAMILY_LIBRARY)
MAX_CATEGORIES = 5

# Hue centres on the HSV circle: red, yellow, green, blue, purple.
HUE_CENTRES: tuple[float, ...] = (0.0, 0.14, 0.33, 0.60, 0.79)
HUE_NAMES: tuple[str, ...] = ("red", "yellow", "green", "blue", "purple")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "speckle")
# Background patterns are drawn uniformly from these, independent of the object (nuisance).
BG_TEXTURES: tuple[str, ...] = TEXTURES

_SUPERSAMPLE = 4  # shape masks are drawn at 4x and box-filtered down: cheap anti-aliasing
_ROLE_CODE = {"fit": 0, "test": 1, "pool": 2}


def category_hue_index(family: int, category: int) -> int:
    """Index into :data:`HUE_CENTRES` of category ``category`` (within-family) of ``family``."""
    return (category + family) % len(HUE_CENTRES)


def category_texture_index(family: int, category: int) -> int:
    """Index into :data:`TEXTURES` of category ``category`` (within-family) of ``family``."""
    return (category + 2 * family) % len(TEXTURES)


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields make the generated __eq__ ambiguous
class DemoWorld:
    """A generated demo world: image files plus their ground-truth hierarchy.

    Item ids are row indices into :attr:`paths` (the order of :meth:`image_set` with
    ``role=None``); :mod:`alignet_engine.demo.observers` judgments use these ids.

    Attributes
    ----------
    root : folder holding the category sub-folders and ``world.json``.
    paths : (n,) absolute PNG paths, as str, grouped by category then role (fit, test, pool).
    family : (n,) int64, family id per item, into :attr:`family_names`.
    category : (n,) int64, global category id per item, into :attr:`category_names`.
    family_names : (n_families,) e.g. ``("round", "angular", "elongated")``.
    category_names : (n_families · n_categories,) global ``"family/category"`` labels,
        e.g. ``"round/disc"``.
    role : (n,) str (``<U4``), ``"fit"``, ``"test"`` or ``"pool"`` per item.
    attributes : exemplar attributes, each (n,) float64 — ``hue``, ``saturation``, ``value``
        (object colour, HSV in [0, 1]), ``size`` (object radius / image size), ``x``, ``y``
        (centre / image size), ``rotation`` (degrees), ``aspect`` (x stretch), ``bg_hue``,
        ``bg_value`` and ``bg_texture`` (index into :data:`TEXTURES`, as a float).
    seed : the seed the world was generated from.
    image_size : width = height of every image, in pixels.
    """

    root: Path
    paths: tuple[str, ...]
    family: np.ndarray
    category: np.ndarray
    family_names: tuple[str, ...]
    category_names: tuple[str, ...]
    role: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    image_size: int = 128

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def category_family(self) -> np.ndarray:
        """(n_categories_total,) int64: the family id of each global category id."""
        out = np.empty(len(self.category_names), dtype=np.int64)
        out[self.category] = self.family
        return out

    def ids(self, role: str) -> np.ndarray:
        """(k,) int64 item ids (into the full list) of the items with ``role``, ascending."""
        if role not in ROLES:
            raise InputError(f"unknown role '{role}'; expected one of {ROLES}", field="role")
        return np.flatnonzero(self.role == role).astype(np.int64)

    def image_set(self, role: str | None = None) -> ImageSet:
        """The images of ``role`` (all items when None) as an :class:`ImageSet`.

        Categories are the ``"family/category"`` labels. Note that an ImageSet of one role
        numbers its items 0..k-1; map them back to world ids with :meth:`ids`.
        """
        idx = np.arange(len(self)) if role is None else self.ids(role)
        return ImageSet(
            paths=tuple(self.paths[i] for i in idx),
            categories=tuple(self.category_names[self.category[i]] for i in idx),
        )


# --------------------------------------------------------------------------------------------
# Shapes: each is a list of drawing operations in unit coordinates (extent about radius 1).
#   ("poly", (k, 2) float array, fill)          filled polygon, fill 255 = object, 0 = hole
#   ("line", (k, 2) float array, width, fill)   thick polyline with round joints and caps
# --------------------------------------------------------------------------------------------

_Op = tuple


def _radial(r: Callable[[np.ndarray], np.ndarray], k: int = 144) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, k, endpoint=False)
    rr = r(t)
    return np.stack([rr * np.cos(t), rr * np.sin(t)], axis=1)


def _regular(n: int, r: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2.0 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _shape_ops(name: str) -> list[_Op]:
    """Drawing operations of shape ``name`` in unit coordinates (y up)."""
    t = np.linspace(0.0, 2.0 * np.pi, 144, endpoint=False)
    if name == "disc":
        return [("poly", _radial(lambda t: np.ones_like(t)), 255)]
    if name == "ring":
        return [
            ("poly", _radial(lambda t: np.ones_like(t)), 255),
            ("poly", _radial(lambda t: np.full_like(t, 0.52)), 0),
        ]
    if name == "oval":
        return [("poly", np.stack([np.cos(t), 0.55 * np.sin(t)], axis=1), 255)]
    if name == "flower":
        # Six rounded petals (|cos| gives round tips and inward cusps, unlike a star).
        return [("poly", _radial(lambda t: 0.62 + 0.38 * np.abs(np.cos(3 * t))), 255)]
    if name == "cog":
        # Square-ish teeth: a clipped sinusoid of 8 periods on the rim.
        return [("poly", _radial(lambda t: 0.80 + 0.2 * np.clip(3 * np.sin(8 * t), -1, 1)), 255)]
    if name == "triangle":
        return [("poly", _regular(3), 255)]
    if name == "square":
        return [("poly", _regular(4, phase=np.pi / 4), 255)]
    if name == "star":
        outer = _regular(5)
        inner = _regular(5, r=0.42, phase=np.pi / 2 + np.pi / 5)
        return [("poly", np.stack([outer, inner], axis=1).reshape(-1, 2), 255)]
    if name == "arrowhead":
        pts = [(1.0, 0.0), (-0.85, 0.8), (-0.4, 0.0), (-0.85, -0.8)]
        return [("poly", np.asarray(pts), 255)]
    if name == "cross":
        a, w = 1.0, 0.3
        pts = [(w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w), (-w, -a)]
        pts += [(w, -a), (w, -w), (a, -w), (a, w)]
        return [("poly", np.asarray(pts), 255)]
    if name == "bar":
        return [("poly", np.asarray([(1, 0.17), (-1, 0.17), (-1, -0.17), (1, -0.17)]), 255)]
    if name == "wave":
        x = np.linspace(-0.92, 0.92, 60)
        return [("line", np.stack([x, 0.28 * np.sin(2.0 * np.pi * x / 0.92)], axis=1), 0.26, 255)]
    if name == "arc":
        angle = np.linspace(np.deg2rad(-75), np.deg2rad(75), 50)
        arc = np.stack([1.05 * np.cos(angle) - 0.55, 1.05 * np.sin(angle)], axis=1)
        return [("line", arc, 0.28, 255)]
    if name == "zigzag":
        x = np.linspace(-0.95, 0.95, 6)
        y = np.where(np.arange(6) % 2 == 0, -0.28, 0.28)
        return [("line", np.stack([x, y], axis=1), 0.24, 255)]
    if name == "hook":
        angle = np.linspace(np.pi, 2.0 * np.pi, 30)
        curl = np.stack([0.42 * np.cos(angle) - 0.42, 0.42 * np.sin(angle) - 0.45], axis=1)
        stem = np.asarray([(0.0, 0.95), (0.0, -0.45)])
        return [("line", np.concatenate([stem, curl[::-1]]), 0.26, 255)]
    if name == "blob":
        return [
            (
                "poly",
                _radial(lambda t: 0.78 + 0.16 * np.sin(3 * t + 0.5) + 0.09 * np.sin(2 * t + 1.9)),
                255,
            )
        ]
    if name == "leaf":
        x = np.linspace(-1, 1, 72)
        top = np.stack([x, 0.5 * (1 - x**2)], axis=1)
        bottom = np.stack([x[::-1], -0.5 * (1 - x[::-1] ** 2)], axis=1)
        return [("poly", np.concatenate([top, bottom[1:-1]]), 255)]
    if name == "heart":
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return [("poly", np.stack([x, y + 2.5], axis=1) / 17.0, 255)]
    if name == "drop":
        x = np.cos(t)
        y = 0.75 * np.sin(t) * np.abs(np.sin(t / 2.0)) ** 1.6
        return [("poly", np.stack([x, y], axis=1), 255)]
    if name == "bean":
        x = np.cos(t)
        y = 0.62 * np.sin(t)
        y = y - 0.38 * np.exp(-(x**2) / 0.12) * (np.sin(t) > 0)  # the dent of a kidney bean
        return [("poly", np.stack([x, y + 0.1], axis=1), 255)]
    raise InputError(f"unknown demo shape '{name}'", field="shape")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """HSV → RGB for one colour, all in [0, 1]; returns (3,) float64.

    RGB is linear in V for a fixed hue and saturation, so images are rendered as
    ``value_map[..., None] * _hsv_to_rgb(h, s, 1.0)``.
    """
    h6 = (h % 1.0) * 6.0
    i = int(h6) % 6
    f = h6 - int(h6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, dtype=np.float64)


def _dilate3(a: np.ndarray) -> np.ndarray:
    """3x3 grey-level dilation (max filter) of a 2-D array, edges replicated."""
    r = a.copy()
    np.maximum(r[1:], a[:-1], out=r[1:])
    np.maximum(r[:-1], a[1:], out=r[:-1])
    out = r.copy()
    np.maximum(out[:, 1:], r[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], r[:, 1:], out=out[:, :-1])
    return out


def _texture(kind: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pattern in [0, 1] (1 = full base colour, 0 = the darker shade), shape and dtype of ``u``.

    ``u, v`` are object-frame coordinates in object radii, so the pattern moves, turns and
    scales with the object. Soft thresholds (tanh) anti-alias the edges. Scalars are Python
    floats (not numpy float64) so float32 arrays stay float32.
    """
    jitter = rng.uniform(0.85, 1.15)  # frequency ± 15 %
    phi = rng.uniform(0.0, math.pi)
    ph0, ph1 = rng.uniform(0.0, 2.0 * math.pi), rng.uniform(0.0, 2.0 * math.pi)
    a = u * math.cos(phi) + v * math.sin(phi)
    b = v * math.cos(phi) - u * math.sin(phi)
    if kind == "solid":
        return np.ones_like(u)
    if kind == "stripes":
        f = 1.6 * jitter  # stripe periods per object radius
        return 0.5 + 0.5 * np.tanh(4.0 * np.sin(2.0 * math.pi * f * a + ph0))
    if kind == "dots":
        f = 1.2 * jitter
        d = np.sin(math.pi * 2.0 * f * a + ph0) ** 2 + np.sin(math.pi * 2.0 * f * b + ph1) ** 2
        return 0.5 + 0.5 * np.tanh(12.0 * (d - 0.45))
    if kind == "checker":
        f = 1.0 * jitter
        c = np.sin(math.pi * 2.0 * f * a + ph0) * np.sin(math.pi * 2.0 * f * b + ph1)
        return 0.5 + 0.5 * np.tanh(12.0 * c)
    if kind == "speckle":
        # Irregular blotches: a sum of 7 plane waves with random directions and phases,
        # thresholded softly.
        noise = np.zeros_like(u)
        for _ in range(7):
            ang = rng.uniform(0.0, math.pi)
            freq = 2.0 * math.pi * rng.uniform(0.9, 1.6) * jitter
            ph = rng.uniform(0.0, 2.0 * math.pi)
            noise += np.sin(freq * (u * math.cos(ang) + v * math.sin(ang)) + ph)
        return 0.5 + 0.5 * np.tanh(2.0 * noise)
    raise InputError(f"unknown texture '{kind}'", field="texture")


def _render_item(
    shape: str,
    texture: str,
    hue_centre: float,
    image_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, float]]:
    """Draw one exemplar; returns ``(image (S, S, 3) uint8, attributes)``."""
    size = image_size
    # --- exemplar draws (order matters for determinism; do not reorder) ---
    radius = rng.uniform(0.20, 0.36)
    aspect = float(np.exp(rng.uniform(np.log(0.85), np.log(1.18))))
    rotation = rng.uniform(0.0, 360.0)
    cx = rng.uniform(radius + 0.02, 1.0 - radius - 0.02)
    cy = rng.uniform(radius + 0.02, 1.0 - radius - 0.02)
    hue = (hue_centre + rng.uniform(-0.025, 0.025)) % 1.0
    sat = rng.uniform(0.55, 0.90)
    val = rng.uniform(0.60, 0.95)
    contrast = rng.uniform(0.35, 0.60)
    bg_hue = rng.uniform(0.0, 1.0)
    bg_sat = rng.uniform(0.05, 0.45)
    # Background value at least 0.25 from the object's: darker or lighter, whichever fits.
    lo_room, hi_room = max(0.0, val - 0.25 - 0.10), max(0.0, 1.0 - (val + 0.25))
    pick = rng.uniform(0.0, lo_room + hi_room)
    bg_val = 0.10 + pick if pick < lo_room else val + 0.25 + (pick - lo_room)
    grad_dir = rng.uniform(0.0, 2.0 * np.pi)
    grad_amp = rng.uniform(0.0, 0.12)
    light_dir = rng.uniform(0.0, 2.0 * np.pi)
    bg_texture = BG_TEXTURES[int(rng.integers(len(BG_TEXTURES)))]
    bg_contrast = rng.uniform(0.15, 0.35)
    bg_scale = rng.uniform(0.18, 0.35)  # pattern scale, as an object radius would set it

    # --- shape mask, drawn at _SUPERSAMPLE x ---
    ss = size * _SUPERSAMPLE
    mask_img = Image.new("L", (ss, ss), 0)
    draw = ImageDraw.Draw(mask_img)
    theta = math.radians(rotation)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    stretch = np.array([aspect, 1.0 / aspect])
    r_px = radius * ss

    def to_px(pts: np.ndarray) -> list[tuple[float, float]]:
        p = (pts * stretch) @ rot.T * r_px
        # Image y grows downwards; shapes are defined y-up.
        return [(float(x), float(y)) for x, y in zip(cx * ss + p[:, 0], cy * ss - p[:, 1])]

    for op in _shape_ops(shape):
        if op[0] == "poly":
            draw.polygon(to_px(op[1]), fill=op[2])
        else:
            pts = to_px(op[1])
            w = op[2] * r_px
            draw.line(pts, fill=op[3], width=max(1, round(w)), joint="curve")
            for x, y in (pts[0], pts[-1]):  # round caps
                draw.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=op[3])
    # reduce() is a box filter: the mean over each 4x4 block is the pixel's coverage.
    alpha = np.asarray(mask_img.reduce(_SUPERSAMPLE), dtype=np.float32) / 255.0
    # A thin outline (3x3-dilated mask minus mask) in a colour contrasting with the background.
    outline = np.clip(_dilate3(alpha) - alpha, 0.0, 1.0)

    # --- object colour and texture, in the object frame ---
    # float32 and broadcast (1, S) / (S, 1) coordinates: this block dominates the run time.
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    px = (coords - cx)[None, :]
    py = (cy - coords)[:, None]
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    # Inverse rotation, then undo the stretch: (u, v) in object radii, in the object frame.
    u = (px * cos_t + py * sin_t) / np.float32(radius * aspect)
    v = (py * cos_t - px * sin_t) * np.float32(aspect / radius)
    pattern = _texture(texture, u, v, rng)
    shade = 1.0 - contrast * (1.0 - pattern)
    light = 1.0 + (0.12 / radius) * (math.cos(light_dir) * px + math.sin(light_dir) * py)
    obj_val = np.clip(np.float32(val) * shade * light, 0.0, 1.0)
    obj = obj_val[..., None] * _hsv_to_rgb(hue, sat, 1.0).astype(np.float32)

    # --- background: random colour, linear lightness gradient, faint noise ---
    gx, gy = math.cos(grad_dir), math.sin(grad_dir)
    g = 2.0 * (gx * (coords[None, :] - 0.5) + gy * (coords[:, None] - 0.5))
    bg_v = np.float32(bg_val) + np.float32(grad_amp) * g
    if bg_texture != "solid":
        # The same pattern family as object surfaces, at a similar scale: a texture-biased
        # network confuses it with the object's texture, people do not.
        bu = (coords[None, :] - 0.5) / bg_scale + np.zeros_like(g)
        bv = (0.5 - coords[:, None]) / bg_scale + np.zeros_like(g)
        bg_pattern = _texture(bg_texture, bu, bv, rng)
        bg_v = bg_v * (1.0 - bg_contrast * (1.0 - bg_pattern))
    bg_v = np.clip(bg_v, 0.0, 1.0)
    bg = bg_v[..., None] * _hsv_to_rgb(bg_hue, bg_sat, 1.0).astype(np.float32)
    line_rgb = np.float32(0.08 if bg_val > 0.5 else 0.92)

    a3 = alpha[..., None]
    o3 = outline[..., None]
    img = (bg * (1.0 - a3) + obj * a3) * (1.0 - o3) + line_rgb * o3
    # Faint luminance grain (one channel: 3x cheaper and how sensor noise mostly looks).
    img += rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(3.0 / 255.0)
    pixels = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    attrs = {
        "hue": float(hue),
        "saturation": float(sat),
        "value": float(val),
        "size": float(radius),
        "x": float(cx),
        "y": float(cy),
        "rotation": float(rotation),
        "aspect": float(aspect),
        "bg_hue": float(bg_hue),
        "bg_value": float(bg_val),
        "bg_texture": float(TEXTURES.index(bg_texture)),
    }
    return pixels, attrs


# --------------------------------------------------------------------------------------------
# World generation
# --------------------------------------------------------------------------------------------


def _check_args(
    n_families: int, n_categories: int, n_stimuli: int, n_pool: int, image_size: int
) -> None:
    if not 1 <= n_families <= MAX_FAMILIES:
        raise InputError(f"n_families must be 1..{MAX_FAMILIES}, got {n_families}")
    if not 1 <= n_categories <= MAX_CATEGORIES:
        raise InputError(f"n_categories must be 1..{MAX_CATEGORIES}, got {n_categories}")
    if n_stimuli < 2:
        raise InputError(f"n_stimuli must be at least 2 (one fit, one test), got {n_stimuli}")
    if n_pool < 0:
        raise InputError(f"n_pool must be >= 0, got {n_pool}")
    if not 32 <= image_size <= 1024:
        raise InputError(f"image_size must be 32..1024 pixels, got {image_size}")


def n_fit_per_category(n_stimuli: int) -> int:
    """How many of a category's ``n_stimuli`` stimulus exemplars are ``fit`` (60 %, ≥ 1)."""
    return min(max(1, round(0.6 * n_stimuli)), n_stimuli - 1)


def generate_world_job(
    out_dir: Path,
    *,
    seed: int = 0,
    n_families: int = 3,
    n_categories: int = 4,
    n_stimuli: int = 10,
    n_pool: int = 20,
    image_size: int = 128,
    control: JobControl | None = None,
) -> Job[DemoWorld]:
    """:func:`generate_world` as a job: yields ``Progress("demo world", done, total)``."""
    control = control or JobControl()
    _check_args(n_families, n_categories, n_stimuli, n_pool, image_size)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    family_names = tuple(list(FAMILY_LIBRARY)[:n_families])
    category_names: list[str] = []
    n_fit = n_fit_per_category(n_stimuli)
    plan: list[tuple[int, int, int, str, int]] = []  # (family, local cat, global cat, role, k)
    for f, fam in enumerate(family_names):
        for c, cat in enumerate(FAMILY_LIBRARY[fam][:n_categories]):
            g = len(category_names)
            category_names.append(f"{fam}/{cat}")
            counts = {"fit": n_fit, "test": n_stimuli - n_fit, "pool": n_pool}
            plan.extend((f, c, g, role, k) for role in ROLES for k in range(counts[role]))

    rel_paths = [
        f"{family_names[f]}_{FAMILY_LIBRARY[family_names[f]][c]}/{role}_{k:02d}.png"
        for f, c, _, role, k in plan
    ]
    _remove_previous(out_dir, keep=set(rel_paths))

    t0 = time.perf_counter()
    paths: list[str] = []
    attrs: dict[str, list[float]] = {}
    total = len(plan)
    for done, (f, c, _, role, k) in enumerate(plan):
        control.check()
        fam = family_names[f]
        shape = FAMILY_LIBRARY[fam][c]
        # One generator per item, keyed by its identity rather than its position in the plan,
        # so an item's image does not change when n_pool or n_categories change.
        rng = np.random.default_rng([seed, f, c, _ROLE_CODE[role], k])
        pixels, a = _render_item(
            shape,
            TEXTURES[category_texture_index(f, c)],
            HUE_CENTRES[category_hue_index(f, c)],
            image_size,
            rng,
        )
        path = out_dir / rel_paths[done]
        path.parent.mkdir(exist_ok=True)
        # compress_level=1: ~3x faster than the default and still lossless; PNG bytes are a
        # pure function of the pixels and these options (no timestamps are written).
        Image.fromarray(pixels, mode="RGB").save(path, format="PNG", compress_level=1)
        paths.append(str(path))
        for key, val in a.items():
            attrs.setdefault(key, []).append(val)
        if done % 20 == 19 or done == total - 1:
            yield Progress("demo world", done + 1, total)

    world = DemoWorld(
        root=out_dir,
        paths=tuple(paths),
        family=np.asarray([p[0] for p in plan], dtype=np.int64),
        category=np.asarray([p[2] for p in plan], dtype=np.int64),
        family_names=family_names,
        category_names=tuple(category_names),
        role=np.asarray([p[3] for p in plan], dtype="<U4"),
        attributes={k: np.asarray(v, dtype=np.float64) for k, v in attrs.items()},
        seed=seed,
        image_size=image_size,
    )
    _write_manifest(world, rel_paths)
    log.info(
        "demo world: %d images (%d families x %d categories) in %s, %.2f s",
        total,
        n_families,
        n_categories,
        out_dir,
        time.perf_counter() - t0,
    )
    return world


def generate_world(
    out_dir: Path,
    *,
    seed: int = 0,
    n_families: int = 3,
    n_categories: int = 4,
    n_stimuli: int = 10,
    n_pool: int = 20,
    image_size: int = 128,
) -> DemoWorld:
    """Draw the demo world into ``out_dir`` and return its description.

    Parameters
    ----------
    out_dir : folder to write into (created if missing). PNGs of a previous demo world listed
        in its ``world.json`` are removed first; other files are left alone.
    seed : the same seed writes byte-identical PNGs.
    n_families : 1..4 superordinate families (shape classes).
    n_categories : 1..5 basic categories per family.
    n_stimuli : stimulus exemplars per category, split into fit (60 %) and test (40 %).
    n_pool : extra ``pool`` exemplars per category, without judgments (distillation pool).
    image_size : width = height in pixels.

    Returns
    -------
    DemoWorld with ``n_families · n_categories · (n_stimuli + n_pool)`` items.
    """
    return run_job(
        generate_world_job(
            out_dir,
            seed=seed,
            n_families=n_families,
            n_categories=n_categories,
            n_stimuli=n_stimuli,
            n_pool=n_pool,
            image_size=image_size,
        )
    )


def _write_manifest(world: DemoWorld, rel_paths: list[str]) -> None:
    doc = {
        "format": "alignet-demo-world",
        "version": _MANIFEST_VERSION,
        "seed": world.seed,
        "image_size": world.image_size,
        "family_names": list(world.family_names),
        "category_names": list(world.category_names),
        "items": {
            "path": rel_paths,
            "family": world.family.tolist(),
            "category": world.category.tolist(),
            "role": world.role.tolist(),
        },
        "attributes": {k: v.tolist() for k, v in world.attributes.items()},
    }
    (world.root / MANIFEST_NAME).write_text(json.dumps(doc), encoding="utf-8")


def _remove_previous(out_dir: Path, keep: set[str]) -> None:
    """Delete the PNGs a previous demo world listed in ``world.json``, except ``keep``.

    Only files the old manifest names are touched, so user files in ``out_dir`` survive, and
    a smaller new world leaves no stale images behind for a folder importer to pick up.
    """
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return
    try:
        rel_paths = json.loads(manifest.read_text(encoding="utf-8"))["items"]["path"]
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable demo manifest %s", manifest)
        return
    for rel in set(rel_paths) - keep:
        p = (out_dir / rel).resolve()
        if p.suffix == ".png" and out_dir in p.parents:
            p.unlink(missing_ok=True)


def load_world(root: Path) -> DemoWorld:
    """Read back a world written by :func:`generate_world` from ``root/world.json``.

    Raises
    ------
    InputError if the manifest is missing or malformed (regenerate the world to fix it).
    """
    root = Path(root).resolve()
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise InputError("no demo world manifest here; regenerate the demo world", source=manifest)
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        items = doc["items"]
        world = DemoWorld(
            root=root,
            paths=tuple(str(root / p) for p in items["path"]),
            family=np.asarray(items["family"], dtype=np.int64),
            category=np.asarray(items["category"], dtype=np.int64),
            family_names=tuple(doc["family_names"]),
            category_names=tuple(doc["category_names"]),
            role=np.asarray(items["role"], dtype="<U4"),
            attributes={k: np.asarray(v, dtype=np.float64) for k, v in doc["attributes"].items()},
            seed=int(doc["seed"]),
            image_size=int(doc["image_size"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"malformed demo world manifest ({exc})", source=manifest) from exc
    if not (len(world.family) == len(world.category) == len(world.role) == len(world.paths)):
        raise InputError("item arrays differ in length", source=manifest, field="items")
    return world


def n_items(n_families: int, n_categories: int, n_stimuli: int, n_pool: int) -> int:
    """Number of images :func:`generate_world` writes for these arguments."""
    return n_families * n_categories * (n_stimuli + n_pool)


__all__ = [
    "FAMILY_LIBRARY",
    "HUE_CENTRES",
    "HUE_NAMES",
    "MAX_CATEGORIES",
    "MAX_FAMILIES",
    "ROLES",
    "TEXTURES",
    "DemoWorld",
    "category_hue_index",
    "category_texture_index",
    "generate_world",
    "generate_world_job",
    "load_world",
    "n_fit_per_category",
    "n_items",
]
