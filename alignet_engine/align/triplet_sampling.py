"""AligNet triplet generation: sampling strategies, teacher odd-one-out labels, npz files.

method.md §4: the official set (``cluster_border_500``) takes two items from one k-means
cluster and one from another; the evaluation splits use ImageNet classes instead
(``class_border``, ``within_class``, ``between_class``). The teacher's three pair similarities
decide the odd one out; rows are stored so that the teacher's most similar pair is ``(0, 1)``
and the odd one is last. Everything here is vectorised numpy (no Python loop per triplet)
because the official set has 10 M triplets: sampling draws whole blocks of rows at once, and
the teacher similarities gather feature rows in small chunks so memory stays bounded.

Strategies (:func:`sample_triplets` dispatches on the name)
-----------------------------------------------------------
``cluster_boundary`` / ``class_boundary``
    a, b from one group, o from another group.
``within_cluster`` / ``within_class``
    three items of one group.
``between_clusters`` / ``between_classes``
    one item from each of three different groups.
``random``
    three distinct items of the pool.

In every strategy the group(s) are drawn uniformly among the groups that can supply them
(not in proportion to their size), then items uniformly inside a group; rows are independent
(the same triplet can occur twice) and no row holds an item twice.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from alignet_engine.align.chunked import (
    DEFAULT_MEMORY_BUDGET_MB,
    RowArray,
    as_float,
    check_row_array,
    is_in_memory,
    map_rows,
    rows_for_budget,
)
from alignet_engine.align.clustering import fits_on_device, resolve_device
from alignet_engine.align.metrics import check_features, check_triplets
from alignet_engine.base.similarity import (
    SimilarityMetric,
    check_metric,
    gathered_pairs_numpy,
    gathered_pairs_torch,
)
from alignet_engine.config import STRATEGIES
from alignet_engine.data.alignet_npz import load_alignet_npz as load_alignet_npz  # public name
from alignet_engine.errors import InputError
from alignet_engine.files import atomic_output

logger = logging.getLogger(__name__)


# Rows drawn per block by the samplers: bounds the (block,) int64 temporaries to a few MB each
# instead of ~80 MB per temporary at 10 M rows.
_SAMPLE_BLOCK = 1 << 20
# Rows ordered per block by teacher_odd_one_out (argsort / take_along_axis temporaries).
_ORDER_BLOCK = 1 << 20
# Gathered feature bytes per chunk of triplets. On the CPU a chunk that stays in cache is
# fastest (measured: 64 rows of 1280-d float32 beat 16 k rows by ~2x); a GPU wants big chunks.
_CPU_CHUNK_BYTES = 1 << 20
_GPU_CHUNK_BYTES = 1 << 28
# Rows of filenames written per block by save_alignet_npz.
_WRITE_BLOCK = 1 << 18


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------
class _Groups(NamedTuple):
    """Items grouped by label: ``members[offsets[g] : offsets[g] + sizes[g]]`` are group g."""

    sizes: np.ndarray  # (g,) int64
    members: np.ndarray  # (n,) int64 item ids
    offsets: np.ndarray  # (g,) int64


def _groups(labels: np.ndarray, field: str, *, allow_strings: bool) -> _Groups:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.size == 0:
        raise InputError(f"must be a non-empty 1-D array, got shape {lab.shape}", field=field)
    if allow_strings and lab.dtype.kind == "O":
        lab = lab.astype(str)  # category names as Python strings
    ok = "iub" + ("US" if allow_strings else "")
    if lab.dtype.kind not in ok:
        what = "integer ids or names" if allow_strings else "integer cluster ids"
        raise InputError(f"must hold {what}, got dtype {lab.dtype}", field=field)
    _, inv, sizes = np.unique(lab, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    members = np.argsort(inv, kind="stable").astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return _Groups(sizes.astype(np.int64), members, offsets)


def _check_count(n_triplets: object) -> int:
    if isinstance(n_triplets, bool):
        raise InputError(f"n_triplets must be an integer >= 1, got {n_triplets!r}")
    try:
        m = int(n_triplets)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InputError(f"n_triplets must be an integer >= 1, got {n_triplets!r}") from None
    if m < 1 or m != n_triplets:
        raise InputError(f"n_triplets must be an integer >= 1, got {n_triplets!r}")
    return m


def _blocks(
    m: int,
    random_state: int | np.random.Generator | None,
    fill: Callable[[np.random.Generator, np.ndarray], None],
) -> np.ndarray:
    """(m, 3) int64 filled block by block by ``fill(rng, out_block)``."""
    rng = np.random.default_rng(random_state)
    out = np.empty((m, 3), dtype=np.int64)
    for start in range(0, m, _SAMPLE_BLOCK):
        fill(rng, out[start : start + _SAMPLE_BLOCK])
    return out


def _skip1(draw: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Map ``draw`` uniform on [0, s − 1) to uniform on [0, s) minus ``taken`` (in place)."""
    draw += draw >= taken
    return draw


def _skip2(draw: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Map ``draw`` uniform on [0, s − 2) to uniform on [0, s) minus {a, b}, a != b (in place).

    Stepping over the smaller excluded value first, then the larger, is a bijection onto the
    allowed values, so the result stays uniform.
    """
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    draw += draw >= lo
    draw += draw >= hi
    return draw


def _plural(what: str) -> str:
    return what + ("es" if what.endswith("s") else "s")


def _boundary(
    groups: _Groups, m: int, random_state: int | np.random.Generator | None, what: str
) -> np.ndarray:
    sizes, members, offsets = groups
    n_groups = sizes.size
    if n_groups < 2:
        raise InputError(f"needs at least two {_plural(what)} to sample {what}-boundary triplets")
    eligible = np.flatnonzero(sizes >= 2)
    if eligible.size == 0:
        raise InputError(f"no {what} has two items, so no triplet can take a pair from one")
    if eligible.size < n_groups:
        logger.info(
            "%d singleton %s(s) can only supply the third item", n_groups - eligible.size, what
        )

    def fill(rng: np.random.Generator, out: np.ndarray) -> None:
        k: int = out.shape[0]
        c1 = eligible[rng.integers(0, eligible.size, size=k)]
        # c2 uniform over the other n_groups − 1 groups: draw from a range one shorter and
        # step over c1.
        c2 = _skip1(rng.integers(0, n_groups - 1, size=k), c1)
        s1: np.ndarray = sizes[c1]  # typed: else numpy sees a scalar draw
        i = rng.integers(0, s1)
        j = _skip1(rng.integers(0, s1 - 1), i)  # distinct from i, uniform over the rest
        size2: np.ndarray = sizes[c2]  # typed: else numpy sees a scalar draw
        o = rng.integers(0, size2)
        base = offsets[c1]
        out[:, 0] = members[base + i]
        out[:, 1] = members[base + j]
        out[:, 2] = members[offsets[c2] + o]

    return _blocks(m, random_state, fill)


def _within(
    groups: _Groups, m: int, random_state: int | np.random.Generator | None, what: str
) -> np.ndarray:
    sizes, members, offsets = groups
    eligible = np.flatnonzero(sizes >= 3)
    if eligible.size == 0:
        raise InputError(f"no {what} has three items, so no triplet can come from one {what}")
    if eligible.size < sizes.size:
        logger.info(
            "%d %s(s) with fewer than 3 items are never used", sizes.size - eligible.size, what
        )

    def fill(rng: np.random.Generator, out: np.ndarray) -> None:
        k: int = out.shape[0]
        g = eligible[rng.integers(0, eligible.size, size=k)]
        s: np.ndarray = sizes[g]  # typed: else numpy sees a scalar draw
        i = rng.integers(0, s)
        j = _skip1(rng.integers(0, s - 1), i)
        t = _skip2(rng.integers(0, s - 2), i, j)
        base = offsets[g]
        out[:, 0] = members[base + i]
        out[:, 1] = members[base + j]
        out[:, 2] = members[base + t]

    return _blocks(m, random_state, fill)


def _between(
    groups: _Groups, m: int, random_state: int | np.random.Generator | None, what: str
) -> np.ndarray:
    sizes, members, offsets = groups
    n_groups = sizes.size
    if n_groups < 3:
        raise InputError(
            f"needs at least three {_plural(what)} to take each item from a different one"
        )

    def fill(rng: np.random.Generator, out: np.ndarray) -> None:
        k: int = out.shape[0]
        g0 = rng.integers(0, n_groups, size=k)
        g1 = _skip1(rng.integers(0, n_groups - 1, size=k), g0)
        g2 = _skip2(rng.integers(0, n_groups - 2, size=k), g0, g1)
        for col, g in enumerate((g0, g1, g2)):  # 3 columns, not a loop over triplets
            size: np.ndarray = sizes[g]  # typed: else numpy sees a scalar draw
            out[:, col] = members[offsets[g] + rng.integers(0, size)]

    return _blocks(m, random_state, fill)


def _random(n_items: object, m: int, random_state: int | np.random.Generator | None) -> np.ndarray:
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer):
        raise InputError(f"n_items must be an integer, got {n_items!r}", field="n_items")
    n = int(n_items)
    if n < 3:
        raise InputError(f"needs at least 3 items to form a triplet, got {n}", field="n_items")

    def fill(rng: np.random.Generator, out: np.ndarray) -> None:
        k: int = out.shape[0]
        i = rng.integers(0, n, size=k)
        j = _skip1(rng.integers(0, n - 1, size=k), i)
        out[:, 0] = i
        out[:, 1] = j
        out[:, 2] = _skip2(rng.integers(0, n - 2, size=k), i, j)

    return _blocks(m, random_state, fill)


#: strategy → (sampler over groups, the argument holding the groups, what a group is called)
_GROUPED = {
    "cluster_boundary": (_boundary, "labels", "cluster"),
    "within_cluster": (_within, "labels", "cluster"),
    "between_clusters": (_between, "labels", "cluster"),
    "class_boundary": (_boundary, "classes", "class"),
    "within_class": (_within, "classes", "class"),
    "between_classes": (_between, "classes", "class"),
}


def sample_triplets(
    strategy: str,
    n_triplets: int,
    *,
    labels: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    n_items: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Sample triplets with a named strategy (one of :data:`STRATEGIES`), the one entry point.

    Parameters
    ----------
    strategy : one of

        - ``"cluster_boundary"`` (AligNet's ``cluster_border``) / ``"class_boundary"``
          (``class_border``): per row the first group is drawn uniformly among the groups
          with at least two items, ``a != b`` uniformly from it without replacement, the
          second group uniformly among ALL other groups (a singleton may supply ``o``) and
          ``o`` uniformly from it; a group with fewer than two items is never the pair's
          (logged). Column 2 is the group outsider, NOT yet the teacher's odd one: pass the
          rows through :func:`teacher_odd_one_out`.
        - ``"within_cluster"`` / ``"within_class"``: a group drawn uniformly among those with
          at least three items (smaller ones never used; logged), then three distinct
          members.
        - ``"between_clusters"`` / ``"between_classes"``: three distinct groups (an ordered
          triple without replacement), one member uniformly from each.
        - ``"random"``: three distinct items uniformly from ``range(n_items)``.

    n_triplets : number of rows m to draw (>= 1).
    labels : (n,) int cluster id per item (any integers, e.g. from :func:`kmeans`): the
        groups of the ``*cluster*`` strategies.
    classes : (n,) category per item, integer ids or names (str), e.g. ImageNet classes or an
        image set's categories: the groups of the ``*class*`` strategies.
    n_items : pool size (>= 3) for ``"random"``; default: the length of ``labels`` /
        ``classes``.
    random_state : seed or Generator.

    Returns
    -------
    (m, 3) int64 item ids, three distinct items per row. Rows are independent, so the same
    triplet can occur twice (at 10 M draws over 1.28 M images repeats are rare).

    Raises
    ------
    InputError
        unknown strategy; the groups the strategy needs are missing, malformed, or too few
        (e.g. fewer than two clusters for a boundary, three for ``between_*``).
    """
    if strategy not in STRATEGIES:
        raise InputError(
            f"unknown sampling strategy {strategy!r}; use one of {', '.join(STRATEGIES)}",
            field="strategy",
        )
    m = _check_count(n_triplets)
    if strategy == "random":
        if n_items is None:
            given = labels if labels is not None else classes
            if given is None:
                raise InputError(
                    "strategy 'random' needs n_items= (the pool size), or labels= / classes= "
                    "to take it from",
                    field="n_items",
                )
            n_items = int(np.asarray(given).shape[0])
        return _random(n_items, m, random_state)
    sampler, key, what = _GROUPED[strategy]
    groups = labels if key == "labels" else classes
    if groups is None:
        if key == "labels":
            hint = "a cluster id per item, e.g. from kmeans()); for given categories use the "
            hint += "class_* strategies with classes="
        else:
            hint = "a category per item, e.g. ImageNet classes); for k-means clusters use the "
            hint += "cluster strategies with labels="
        raise InputError(f"strategy {strategy!r} needs {key}= ({hint}", field=key)
    return sampler(_groups(groups, key, allow_strings=key == "classes"), m, random_state, what)


# --------------------------------------------------------------------------------------------
# teacher similarities and odd-one-out labels
# --------------------------------------------------------------------------------------------
def _check_chunk(chunk_size: object) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise InputError(f"must be an integer >= 1 or None, got {chunk_size!r}", field="chunk_size")
    if chunk_size < 1:
        raise InputError(f"must be >= 1, got {chunk_size}", field="chunk_size")
    return int(chunk_size)


def _auto_chunk(d: int, itemsize: int, budget: int) -> int:
    """Triplet rows whose three gathered feature rows take about ``budget`` bytes."""
    return int(max(16, min(1 << 16, budget // (3 * d * itemsize))))


def triplet_similarities(
    Z: RowArray,
    triplets: np.ndarray,
    *,
    similarity: SimilarityMetric = "dot",
    chunk_size: int | None = None,
    device: str = "auto",
) -> np.ndarray:
    """Pair similarities ``[s01, s02, s12]`` of every triplet, in chunks of rows: the teacher
    labels' entry to :mod:`alignet_engine.base.similarity` (``Z``'s dtype, CPU or GPU).

    Parameters
    ----------
    Z : (n, d) float features, one row per item: an ndarray, a read-only np.memmap (gathered
        from in place: only the pages of the rows used are read) or another row-sliceable
        array-like such as an h5py.Dataset (copied once to a temporary memmap, since HDF5 has
        no fast random row gather).
    triplets : (m, 3) int item ids, three distinct items per row.
    similarity : ``"dot"`` (AligNet), ``"cosine"`` (an all-zero row has similarity 0 to
        everything) or ``"euclidean"`` (minus the Euclidean distance).
    chunk_size : triplet rows whose features are gathered at once; the temporary memory is
        about ``3 * chunk_size * d * Z.itemsize`` bytes. ``None``: about 1 MiB of features on
        the CPU (cache-sized chunks are fastest there) and 256 MiB on a GPU. The result does
        not depend on it.
    device : ``"auto"`` (CUDA when available and ``Z`` fits in its free memory, else numpy on
        the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    (m, 3) float32 if ``Z`` is float32 (the sums are accumulated in float32, which halves the
    memory traffic, the bottleneck here), else float64. Besides the result, memory use is
    ``Z`` plus one chunk, whatever m is.
    """
    check_metric(similarity)
    chunk = _check_chunk(chunk_size)
    feats = _gatherable(Z)
    trip = check_triplets(triplets, feats.shape[0])
    d, itemsize = feats.shape[1], feats.dtype.itemsize
    dev = resolve_device(device)
    if dev is not None:
        c = chunk or _auto_chunk(d, itemsize, _GPU_CHUNK_BYTES)
        if fits_on_device(feats.nbytes + 6 * c * d * itemsize, dev):
            return gathered_pairs_torch(feats, trip, similarity, c, dev)
        logger.warning("Z (%d × %d) does not fit on %s; computing on the CPU", *feats.shape, dev)
    c = chunk or _auto_chunk(d, itemsize, _CPU_CHUNK_BYTES)
    return gathered_pairs_numpy(feats, trip, similarity, c)


def _gatherable(Z: RowArray) -> np.ndarray:
    """``Z`` checked and ready for random row gathers, with no (n, d) temporary in memory."""
    if is_in_memory(Z):
        return check_features(Z, name="Z")
    budget = DEFAULT_MEMORY_BUDGET_MB * 2**20
    check_row_array(Z, rows_for_budget(int(Z.shape[1]) * 8, budget), name="Z")
    if isinstance(Z, np.memmap) and Z.dtype in (np.float32, np.float64):
        return Z
    return map_rows(Z, as_float, budget_bytes=budget, in_memory_max_bytes=0)


def _order_rows(trip: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute rows so the similarities come out sorted descending (see teacher_odd_one_out)."""
    order = np.argsort(-s, axis=1, kind="stable")  # pair indices, most similar first
    top, bottom = order[:, 0], order[:, 2]
    # Pair p in [s01, s02, s12] leaves out column 2 − p. The odd one is outside the top pair;
    # item 1 is the odd one's partner in the bottom pair (pair members sum to 3 − (2 − p)).
    odd = 2 - top
    second = 1 + bottom - odd
    first = 3 - odd - second
    cols = np.column_stack([first, second, odd])
    return np.take_along_axis(trip, cols, axis=1), np.take_along_axis(s, order, axis=1)


def teacher_odd_one_out(
    Z: RowArray,
    triplets: np.ndarray,
    *,
    similarity: SimilarityMetric = "dot",
    chunk_size: int | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Label triplets with the teacher's odd one out, in the published AligNet order.

    Parameters
    ----------
    Z : (n, d) float teacher embeddings (e.g. the aligned transform's output): an array or a
        row-sliceable array-like, as for :func:`triplet_similarities`.
    triplets : (m, 3) int rows in any order.
    similarity : ``"dot"`` (AligNet), ``"cosine"`` or ``"euclidean"`` (minus distance).
    chunk_size, device : see :func:`triplet_similarities` (memory stays bounded for any m:
        10 M triplets over a 100 k × 1280 float32 pool need ~0.7 GB besides ``Z``, for
        the input and output arrays).

    Returns
    -------
    triplets_sorted : (m, 3) int64, each row permuted so that the similarities come out sorted
        DESCENDING: the teacher's most similar pair is ``(0, 1)`` (odd one last) and, within that
        pair, item 0 is the one closer to the odd one. This meets both statements of method.md:
        §4 "most similar pair first, odd one last" and §1.2 "s12 < s01 and s12 < s02".
    sims : (m, 3) float32 ``[s01, s02, s12]`` of the sorted rows, so ``s01 >= s02 >= s12``.
        Exact ties keep the input order (stable sort), so an all-equal row is left as is.
        Computed (and ordered) in float32 for a float32 ``Z``, in float64 otherwise, so
        near-ties of a float32 teacher may order differently than an exact computation would,
        and a GPU may order them differently than the CPU.
    """
    s = triplet_similarities(
        Z, triplets, similarity=similarity, chunk_size=chunk_size, device=device
    )  # validates Z and triplets
    trip = np.asarray(triplets).astype(np.int64, copy=False)
    m = trip.shape[0]
    sorted_trip = np.empty((m, 3), dtype=np.int64)
    sims = np.empty((m, 3), dtype=np.float32)
    # in blocks: the argsort / take_along_axis temporaries are several (m, 3) int64 arrays
    for start in range(0, m, _ORDER_BLOCK):
        stop = start + _ORDER_BLOCK
        sorted_trip[start:stop], sims[start:stop] = _order_rows(trip[start:stop], s[start:stop])
    return sorted_trip, sims


def teacher_probabilities(sims: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The teacher's choice distribution over the three pairs: ``softmax(sims / temperature)``.

    Parameters
    ----------
    sims : (m, 3) float pair similarities ``[s01, s02, s12]`` (e.g. from
        :func:`teacher_odd_one_out`, or an AligNet file's ``similarities``).
    temperature : > 0; smaller is more confident. AligNet stores similarities that are already
        temperature-scaled logits, so use 1 for its files.

    Returns
    -------
    (m, 3) float32 for float32 input, else float64; rows sum to 1. ``p[:, 0]`` is the
    probability that the pair (0, 1) is the most similar, i.e. that item 2 is the odd one.
    """
    s = np.asarray(sims)
    if s.ndim != 2 or s.shape[1] != 3:
        raise InputError(f"must be an (m, 3) array, got shape {s.shape}", field="sims")
    if not np.issubdtype(s.dtype, np.floating) and not np.issubdtype(s.dtype, np.integer):
        raise InputError(f"must be numeric, got dtype {s.dtype}", field="sims")
    if not np.isfinite(s).all():
        raise InputError("contains NaN or inf", field="sims")
    t = float(temperature)
    if not (t > 0 and np.isfinite(t)):
        raise InputError(f"must be a finite number > 0, got {temperature!r}", field="temperature")
    dtype: type[np.floating] = np.float32 if s.dtype == np.float32 else np.float64
    z = s.astype(dtype) / dtype(t)  # the one (m, 3) array; all steps below are in place
    z -= z.max(axis=1, keepdims=True)  # exp of a non-positive number cannot overflow
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


# --------------------------------------------------------------------------------------------
# AligNet npz files
# --------------------------------------------------------------------------------------------
def _check_alignet_arrays(triplets: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    trip = check_triplets(triplets)
    s = np.asarray(sims)
    if s.shape != trip.shape:
        raise InputError(
            f"must have shape {trip.shape} to match the triplets, got {s.shape}",
            field="similarities",
        )
    s = s.astype(np.float32, copy=False)
    if not np.isfinite(s).all():
        raise InputError("contains NaN or inf", field="similarities")
    bad = ~((s[:, 2] <= s[:, 0]) & (s[:, 2] <= s[:, 1]) & (s[:, 0] >= s[:, 1]))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum())} row(s) are not in AligNet order [s01 >= s02 >= s12] (first 0-based "
            f"row {row}: {s[row].tolist()}); pass the rows through teacher_odd_one_out()",
            field="similarities",
        )
    return trip, s


def _unicode(names: np.ndarray) -> np.ndarray:
    """``names`` as a fixed-width unicode array (no copy if it already is one)."""
    if names.dtype.kind == "U":
        return names
    if names.dtype.kind == "S":
        try:
            return names.astype(str)  # C-speed ASCII decoding
        except UnicodeDecodeError:
            return np.char.decode(names, "utf-8")
    # object arrays of str (and anything else): one Python-level conversion
    return names.astype(str)


def _write_npy_member(
    zf: zipfile.ZipFile,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    blocks: Iterable[np.ndarray],
) -> None:
    """Write one ``name.npy`` into ``zf`` from C-ordered ``blocks`` (no full array in memory)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": shape,
    }
    with zf.open(name + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for block in blocks:
            arr = np.ascontiguousarray(block, dtype=dtype)
            fh.write(arr.reshape(-1).view(np.uint8).data)


def save_alignet_npz(
    path: str | Path,
    triplets: np.ndarray,
    sims: np.ndarray,
    filenames: Sequence[str] | np.ndarray,
) -> None:
    """Write triplets in the published AligNet npz layout (method.md §1.2), atomically.

    Parameters
    ----------
    path : output file (written exactly there, no ``.npz`` appended).
    triplets : (m, 3) int item ids, as returned by :func:`teacher_odd_one_out`.
    sims : (m, 3) float ``[s01, s02, s12]``, sorted so ``s01 >= s02 >= s12`` (checked).
    filenames : (n,) str, one file name per item id (indexed with ``triplets`` here), or
        (m, 3) str, the names of each row's items already (``names[triplets]``). Prefer the
        (n,) form for large m: the (m, 3) names are then built and written block by block,
        whereas an (m, 3) object array costs a Python string conversion per entry (10 M rows of
        ImageNet paths: ~3.6 GB as fixed-width unicode).

    The file is an uncompressed zip (``np.savez`` layout; :func:`numpy.load` and
    :func:`~alignet_engine.data.alignet_npz.load_alignet_npz` read it) holding ``filenames``
    (m, 3) fixed-width unicode str (no pickled objects), ``similarities`` (m, 3) float32
    and ``indices`` (m, 3) int64 (= ``triplets``).
    """
    trip, s = _check_alignet_arrays(triplets, sims)
    m = trip.shape[0]
    # unicode, never object dtype: the file must load with allow_pickle=False
    names = _unicode(np.asarray(filenames))
    if names.ndim == 1:
        if int(trip.max()) >= names.size:
            raise InputError(
                f"item id {int(trip.max())} has no file name ({names.size} names given)",
                field="filenames",
            )
        # fancy-index the per-item names block by block: never all (m, 3) names at once
        name_blocks: Iterator[np.ndarray] = (
            names[trip[i : i + _WRITE_BLOCK]] for i in range(0, m, _WRITE_BLOCK)
        )
    elif names.shape == trip.shape:
        name_blocks = (names[i : i + _WRITE_BLOCK] for i in range(0, m, _WRITE_BLOCK))
    else:
        raise InputError(
            f"must be (n,) names per item or {trip.shape} names per row, got {names.shape}",
            field="filenames",
        )
    with (
        atomic_output(path) as fh,
        zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        _write_npy_member(zf, "filenames", (m, 3), names.dtype, name_blocks)
        _write_npy_member(zf, "similarities", (m, 3), np.dtype(np.float32), [s])
        _write_npy_member(zf, "indices", (m, 3), np.dtype(np.int64), [trip])
    logger.info("wrote %d AligNet triplets to %s", m, path)
