"""AligNet triplet generation: cluster-boundary sampling, teacher odd-one-out labels, npz files.

method.md §4: two items from one k-means cluster and one from another (``cluster_border_500``);
the teacher's three pair similarities decide the odd one out; rows are stored so that the
teacher's most similar pair is ``(0, 1)`` and the odd one is last. Everything here is vectorised
numpy (no Python loop per triplet) because the official set has 10 M triplets.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alignet_engine.align.metrics import SimilarityMetric, check_triplets, pair_similarities
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)


def sample_cluster_boundary(
    labels: np.ndarray,
    n_triplets: int,
    *,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Sample cluster-boundary triplets ``(a, b, o)``: a, b from one cluster, o from another.

    Parameters
    ----------
    labels : (n,) int cluster label per item (any integers; e.g. :func:`kmeans` output).
    n_triplets : number of rows m to draw (>= 1).
    random_state : seed or Generator.

    Returns
    -------
    (m, 3) int64 item ids. Per row: the first cluster c1 is drawn uniformly among the clusters
    with at least two items, ``a != b`` are drawn uniformly from c1 without replacement, the
    second cluster c2 is drawn uniformly among ALL other clusters (a singleton may be c2) and
    ``o`` uniformly from c2. Rows are independent, so the same triplet can occur twice (at
    10 M draws over 1.28 M images repeats are rare). Column 2 is the cluster outsider, NOT yet
    the teacher's odd one: pass the rows through :func:`teacher_odd_one_out`.

    Raises
    ------
    InputError
        fewer than two clusters, or no cluster with two items (no valid first cluster).
    """
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.size == 0:
        raise InputError(f"must be a non-empty 1-D array, got shape {lab.shape}", field="labels")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"must hold integer cluster ids, got dtype {lab.dtype}", field="labels")
    m = int(n_triplets)
    if m < 1:
        raise InputError(f"n_triplets must be >= 1, got {n_triplets}")
    clusters, inv, sizes = np.unique(lab, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    n_clusters = clusters.size
    if n_clusters < 2:
        raise InputError("needs at least two clusters to sample cluster-boundary triplets")
    eligible = np.flatnonzero(sizes >= 2)
    if eligible.size == 0:
        raise InputError("no cluster has two items, so no triplet can take a pair from one")
    if eligible.size < n_clusters:
        logger.info(
            "%d singleton cluster(s) can only supply the third item",
            n_clusters - eligible.size,
        )
    # Items grouped by cluster: members[offsets[c] : offsets[c] + sizes[c]] are cluster c.
    members = np.argsort(inv, kind="stable").astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    rng = np.random.default_rng(random_state)
    c1 = eligible[rng.integers(0, eligible.size, size=m)]
    # c2 uniform over the other n_clusters − 1 clusters: draw from a range one shorter and
    # step over c1.
    c2 = rng.integers(0, n_clusters - 1, size=m)
    c2 += c2 >= c1
    s1 = sizes[c1]
    i = rng.integers(0, s1)
    j = rng.integers(0, s1 - 1)
    j += j >= i  # distinct from i, uniform over the rest
    o = rng.integers(0, sizes[c2])
    out = np.empty((m, 3), dtype=np.int64)
    out[:, 0] = members[offsets[c1] + i]
    out[:, 1] = members[offsets[c1] + j]
    out[:, 2] = members[offsets[c2] + o]
    return out


def teacher_odd_one_out(
    Z: np.ndarray,
    triplets: np.ndarray,
    *,
    similarity: SimilarityMetric = "dot",
) -> tuple[np.ndarray, np.ndarray]:
    """Label triplets with the teacher's odd one out, in the published AligNet order.

    Parameters
    ----------
    Z : (n, d) float teacher embeddings (e.g. the aligned transform's output).
    triplets : (m, 3) int rows in any order.
    similarity : ``"dot"`` (AligNet), ``"cosine"`` or ``"euclidean"`` (minus distance).

    Returns
    -------
    triplets_sorted : (m, 3) int64, each row permuted so that the similarities come out sorted
        DESCENDING: the teacher's most similar pair is ``(0, 1)`` (odd one last) and, within that
        pair, item 0 is the one closer to the odd one. This meets both statements of method.md:
        §4 "most similar pair first, odd one last" and §1.2 "s12 < s01 and s12 < s02".
    sims : (m, 3) float32 ``[s01, s02, s12]`` of the sorted rows, so ``s01 >= s02 >= s12``.
        Exact ties keep the input order (stable sort), so an all-equal row is left as is.
    """
    s = pair_similarities(Z, triplets, metric=similarity)  # validates Z and triplets
    trip = np.asarray(triplets, dtype=np.int64)
    order = np.argsort(-s, axis=1, kind="stable")  # pair indices, most similar first
    top, bottom = order[:, 0], order[:, 2]
    # Pair p in [s01, s02, s12] leaves out column 2 − p. The odd one is outside the top pair;
    # item 1 is the odd one's partner in the bottom pair (pair members sum to 3 − (2 − p)).
    odd = 2 - top
    second = 1 + bottom - odd
    first = 3 - odd - second
    cols = np.column_stack([first, second, odd])
    sorted_trip = np.take_along_axis(trip, cols, axis=1)
    sims = np.take_along_axis(s, order, axis=1).astype(np.float32)
    return sorted_trip, sims


def _check_alignet_arrays(triplets: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    trip = check_triplets(triplets)
    s = np.asarray(sims)
    if s.shape != trip.shape:
        raise InputError(
            f"must have shape {trip.shape} to match the triplets, got {s.shape}",
            field="similarities",
        )
    s = s.astype(np.float32)
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
        (m, 3) str, the names of each row's items already (``names[triplets]``).

    The file holds ``filenames`` (m, 3) unicode str (no pickled objects), ``similarities``
    (m, 3) float32 and ``indices`` (m, 3) int64 (= ``triplets``).
    """
    trip, s = _check_alignet_arrays(triplets, sims)
    # unicode, never object dtype: the file must load with allow_pickle=False
    names = np.asarray(filenames).astype(str)
    if names.ndim == 1:
        if int(trip.max()) >= names.size:
            raise InputError(
                f"item id {int(trip.max())} has no file name ({names.size} names given)",
                field="filenames",
            )
        names = names[trip]
    elif names.shape != trip.shape:
        raise InputError(
            f"must be (n,) names per item or {trip.shape} names per row, got {names.shape}",
            field="filenames",
        )
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, filenames=names, similarities=s, indices=trip)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %d AligNet triplets to %s", trip.shape[0], path)


def load_alignet_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an AligNet triplet file (ours or the published ``*_cluster_border_500.npz``).

    Returns
    -------
    filenames : (m, 3) str (unicode; bytes are decoded as UTF-8).
    similarities : (m, 3) float32 ``[s01, s02, s12]``.
    indices : (m, 3) int64.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"filenames", "similarities", "indices"} - set(data.files)
            if missing:
                raise InputError(f"missing key(s) {sorted(missing)}", source=path)
            names = data["filenames"]
            sims = data["similarities"].astype(np.float32)
            idx = data["indices"].astype(np.int64)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"not a readable AligNet .npz file ({exc})", source=path) from exc
    if names.dtype.kind == "S":
        names = np.char.decode(names, "utf-8")
    m = idx.shape[0]
    for key, arr in (("filenames", names), ("similarities", sims), ("indices", idx)):
        if arr.shape != (m, 3):
            raise InputError(f"must have shape ({m}, 3), got {arr.shape}", source=path, field=key)
    return names.astype(str), sims, idx
