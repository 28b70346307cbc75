"""k-means of (teacher) embeddings, the first step of AligNet triplet sampling (method.md §4).

Two back ends compute the same thing (Lloyd's algorithm from greedy k-means++ seeds):

* on the CPU, scikit-learn's exact :class:`~sklearn.cluster.KMeans` for pools of up to
  ``minibatch_above`` rows, and above that a mini-batch k-means (:func:`minibatch_kmeans`,
  Sculley 2010 with scikit-learn's per-centre learning rates, early stopping and
  reassignment of starved centres) that reads the rows in chunks from any row-sliceable
  array (ndarray, memmap, ``h5py.Dataset``), so its memory is set by ``memory_budget_mb``,
  not by the pool (1.28 M × 1280 float32 is 6.5 GB);
* a torch implementation used on a CUDA GPU: full-batch Lloyd with the distance matrix built in
  row chunks, so a 1.28 M × 1152 ImageNet pool clusters in seconds instead of minutes.

``device="auto"`` picks CUDA when torch sees a GPU and scikit-learn otherwise. The two back ends
draw different random numbers, so the same ``random_state`` gives a different (equally valid)
partition on a GPU machine than on a CPU-only one.

Also here: :func:`kmeans_diagnostics` (inertia and silhouette per k, to choose k) and
:func:`cluster_summaries` (size and most central items per cluster, to inspect clusters).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from alignet_engine.align.chunked import (
    DEFAULT_MEMORY_BUDGET_MB,
    RowArray,
    as_float,
    check_row_array,
    is_in_memory,
    iter_row_chunks,
    rows_for_budget,
)
from alignet_engine.align.metrics import check_features
from alignet_engine.base.devices import pick_device
from alignet_engine.errors import InputError

if TYPE_CHECKING:  # torch costs ~1.5 s to import; only the GPU path needs it
    import torch

logger = logging.getLogger(__name__)

# Above this many rows full-batch Lloyd iterations over the whole matrix get slow on the CPU
# (ImageNet train is 1.28 M rows of 1152-d features), so mini-batch k-means is used instead.
# The GPU path always runs full-batch Lloyd: one pass over 1.28 M × 1152 is a few matmuls.
MINIBATCH_ABOVE = 50_000

# Bytes of the (rows, k) distance block the torch path materialises at once.
_TORCH_BLOCK_BYTES = 256 * 2**20


# --------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device | None:
    """Map a device preference to a CUDA :class:`torch.device`, or ``None`` for the CPU.

    Parameters
    ----------
    device : ``"auto"`` (CUDA if torch sees a GPU, else the CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``.

    Returns
    -------
    ``torch.device`` of type cuda, or ``None`` meaning "use the numpy / scikit-learn code".

    Raises
    ------
    InputError
        ``device`` is not one of the names above.
    DeviceUnavailableError
        ``"cuda"`` was asked for explicitly and this machine has none (never a silent CPU
        fallback: the user would wait hours for a run they expected to take minutes).
    """
    spec = str(device).strip().lower()
    if spec == "cpu":
        return None  # no torch import: the CPU path is numpy / scikit-learn only
    if spec == "auto":
        import torch

        return torch.device("cuda") if torch.cuda.is_available() else None
    if spec == "cuda" or spec.startswith("cuda:"):
        return pick_device(spec)
    raise InputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def fits_on_device(nbytes: int, device: torch.device, *, fraction: float = 0.6) -> bool:
    """True if ``nbytes`` fit in ``fraction`` of the free memory of CUDA ``device``."""
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError):  # pragma: no cover - driver trouble: do not risk it
        return False
    return nbytes <= fraction * free


# --------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------
def _check_k(k: object, n: int, *, field: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {k!r}", field=field)
    if k < 2:
        raise InputError(f"k must be at least 2 clusters, got {k}", field=field)
    if k > n:
        raise InputError(f"k = {k} clusters is more than the {n} rows to cluster", field=field)
    return int(k)


def _check_not_constant(feats: np.ndarray) -> None:
    # max and min per column stream over Z without an (n, d) temporary (unlike Z == Z[0]).
    if np.array_equal(feats.max(axis=0), feats.min(axis=0)):
        _constant(feats.shape[0])


def _constant(n: int) -> None:
    raise InputError(
        f"all {n} rows are identical, so k-means has nothing to split; check "
        "that the features were extracted (an all-zero or constant matrix usually means a "
        "failed extraction)",
        field="Z",
    )


def _features(Z: RowArray, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> RowArray:
    """An in-memory ``Z`` checked by :func:`check_features`; a lazy one (memmap, HDF5)
    checked chunk by chunk and returned as is (no (n, d) temporary)."""
    if is_in_memory(Z):
        return check_features(Z, name="Z")
    check_row_array(Z, rows_for_budget(int(Z.shape[1]) * 8, int(memory_budget_mb * 2**20)))
    return Z


def kmeans(
    Z: RowArray,
    k: int,
    *,
    random_state: int | None = 0,
    n_init: int = 3,
    max_iter: int = 300,
    minibatch_above: int = MINIBATCH_ABOVE,
    batch_size: int = 4096,
    tol: float = 1e-4,
    device: str = "auto",
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster the rows of ``Z`` into ``k`` groups.

    Parameters
    ----------
    Z : (n, d) float embeddings (float32 stays float32, halving the memory): an ndarray, or
        any array-like read by row slices ``Z[a:b]`` (np.memmap, h5py.Dataset), which is
        never loaded whole unless it fits in ``memory_budget_mb`` and has at most
        ``minibatch_above`` rows.
    k : number of clusters, 2 <= k <= n (AligNet: 500).
    random_state : seed of the k-means++ initialisations and mini-batches.
    n_init : independent initialisations; the lowest-inertia run is kept.
    max_iter : iteration cap (epochs over the data for the mini-batch variant).
    minibatch_above : on the CPU, use :func:`minibatch_kmeans` when n exceeds this (ignored on
        a GPU, which always runs full-batch Lloyd).
    batch_size : mini-batch size of the mini-batch variant.
    memory_budget_mb : working memory of the chunked paths, MiB (chunks of rows, distance
        blocks); the result does not depend on it.
    tol : convergence tolerance on the squared centre shift, relative to the mean per-feature
        variance of ``Z`` (scikit-learn's definition).
    device : ``"auto"`` (CUDA when available, else scikit-learn on the CPU), ``"cpu"``,
        ``"cuda"`` or ``"cuda:N"``. See :func:`resolve_device`. If ``Z`` does not fit in the
        GPU's free memory the CPU path is used and a warning is logged.

    Returns
    -------
    labels : (n,) int64 in [0, k).
    centroids : (k, d) float32.
    inertia : float, sum of squared distances of the rows to their centroid.

    Raises
    ------
    InputError
        k not an integer in [2, n], NaN/inf in ``Z``, all rows of ``Z`` identical, or a
        non-positive ``n_init`` / ``max_iter`` / ``batch_size``.

    Notes
    -----
    If ``Z`` has fewer than ``k`` distinct rows (but more than one) some clusters come out
    empty (exact and GPU paths; a warning is logged) or duplicated (mini-batch path). We
    do not check it up front because finding distinct rows of a 1.28 M × 1152 matrix costs
    more than the clustering. The GPU path
    computes in float32, and CUDA's atomic float additions make it reproducible only up to
    round-off.
    """
    budget = _check_settings(n_init, max_iter, batch_size, tol, memory_budget_mb)
    feats, n, d, k = _checked_input(Z, k, budget)
    dev = _fitting_device(device, n, d)
    # the settings both full-batch Lloyd back ends take
    lloyd: dict[str, Any] = {
        "random_state": random_state,
        "n_init": n_init,
        "max_iter": max_iter,
        "tol": tol,
    }
    if dev is not None:
        kind = f"torch k-means on {dev}"
        labels, centroids, inertia = _kmeans_torch(
            feats, k, **lloyd, device=dev, budget_bytes=budget
        )
    elif n <= minibatch_above and (is_in_memory(feats) or n * d * 8 <= budget):
        kind = "KMeans"
        labels, centroids, inertia = _kmeans_sklearn(as_float(np.asarray(feats[0:n])), k, **lloyd)
    else:
        kind = "mini-batch k-means"
        labels, centroids, inertia = minibatch_kmeans(
            feats,
            k,
            random_state=random_state,
            n_init=n_init,
            max_epochs=max_iter,
            batch_size=batch_size,
            memory_budget_mb=memory_budget_mb,
            validated=True,
        )
    used = int(np.unique(labels).size)
    if used < k:
        logger.warning(
            "k-means found only %d non-empty clusters of the %d asked for (Z has too few "
            "distinct rows?)",
            used,
            k,
        )
    logger.info("%s: n=%d, k=%d, inertia %.4g", kind, n, k, inertia)
    return labels, centroids, inertia


def _check_settings(
    n_init: int, max_iter: int, batch_size: int, tol: float, memory_budget_mb: float
) -> int:
    """Raise :class:`InputError` for settings :func:`kmeans` cannot run with; the memory
    budget in bytes."""
    if n_init < 1 or max_iter < 1 or batch_size < 1:
        raise InputError("n_init, max_iter and batch_size must be >= 1")
    if not (tol >= 0 and math.isfinite(tol)):
        raise InputError(f"tol must be a finite number >= 0, got {tol}", field="tol")
    if not memory_budget_mb > 0:
        raise InputError(f"must be > 0, got {memory_budget_mb}", field="memory_budget_mb")
    return int(memory_budget_mb * 2**20)


def _checked_input(Z: RowArray, k: int, budget: int) -> tuple[RowArray, int, int, int]:
    """``(features, n, d, k)``: an in-memory ``Z`` checked whole (:func:`check_features`), a
    lazy one chunk by chunk in ``budget`` bytes and returned as is; ``k`` checked against n."""
    if is_in_memory(Z):
        feats = check_features(Z, name="Z")
        n, d = feats.shape
        k = _check_k(k, n)
        _check_not_constant(feats)
        return feats, n, d, k
    n, d, constant = check_row_array(Z, rows_for_budget(int(Z.shape[1]) * 8, budget), name="Z")
    k = _check_k(k, n)
    if constant:
        _constant(n)
    return Z, n, d, k


def _fitting_device(device: str, n: int, d: int) -> torch.device | None:
    """The CUDA device of :func:`resolve_device` if an (n, d) float32 ``Z`` and one distance
    block fit in its free memory, else ``None`` (the CPU, with a warning)."""
    dev = resolve_device(device)
    if dev is not None and not fits_on_device(n * d * 4 + _TORCH_BLOCK_BYTES, dev):
        logger.warning("k-means: Z (%d × %d) does not fit on %s; using the CPU", n, d, dev)
        return None
    return dev


def _kmeans_sklearn(
    feats: np.ndarray,
    k: int,
    *,
    random_state: int | None,
    n_init: int,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    # imported here: scikit-learn takes ~1.5 s to import and most users of this package never
    # cluster
    from sklearn.cluster import KMeans

    model = KMeans(
        n_clusters=k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=random_state
    )
    labels = model.fit_predict(feats)
    return (
        np.asarray(labels, dtype=np.int64),
        np.asarray(model.cluster_centers_, dtype=np.float32),
        float(model.inertia_),
    )


# Lloyd iterations of the exact k-means on the sample that seeds the mini-batches.
_SEED_ITERATIONS = 10
# Batches without improvement of the smoothed batch inertia before stopping (scikit-learn's
# max_no_improvement default).
_MAX_NO_IMPROVEMENT = 10
# A centre whose accumulated count is below this fraction of the largest is starved and
# moved to a random row of the batch (scikit-learn's reassignment_ratio default).
_REASSIGNMENT_RATIO = 0.01


class _Assigner:
    """Nearest centre of rows in blocks whose (rows, k) distance matrix fits the budget."""

    def __init__(self, C: np.ndarray, budget_bytes: int) -> None:
        self.C = C
        self.c_sq = np.einsum("ij,ij->i", C, C)
        self.rows = rows_for_budget(C.shape[0] * 8 + C.shape[1] * 8, budget_bytes, lo=64)

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels (r,) int64, squared distances (r,) float64)`` of the rows of ``X``."""
        r = X.shape[0]
        labels = np.empty(r, dtype=np.int64)
        mind = np.empty(r, dtype=np.float64)
        C = self.C.astype(X.dtype, copy=False)
        for s in range(0, r, self.rows):
            x = X[s : s + self.rows]
            d = x @ C.T
            d *= -2.0
            d += self.c_sq
            lab = np.argmin(d, axis=1)
            labels[s : s + self.rows] = lab
            val = d[np.arange(x.shape[0]), lab].astype(np.float64)
            val += np.einsum("ij,ij->i", x, x)
            mind[s : s + self.rows] = np.maximum(val, 0.0)
        return labels, mind


def _read_rows(X: RowArray, n: int, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n_rows`` distinct rows of ``X`` drawn uniformly, read in increasing order.

    Single rows, not runs of consecutive rows: a pool stored in class order (ImageNet's) read
    in runs of 16 gave samples whose class sizes varied like 768 draws, not 12 288, and k-means
    on them merged small classes (inertia +12 % on class-ordered blobs, every seed). A sorted
    index list is a fast read for an ndarray or memmap and a valid h5py selection.
    """
    idx = np.unique(rng.integers(0, n, size=min(n, n_rows)))
    return as_float(np.asarray(X[idx]))


def minibatch_kmeans(
    Z: RowArray,
    k: int,
    *,
    random_state: int | None = 0,
    n_init: int = 3,
    max_epochs: int = 100,
    batch_size: int = 4096,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    validated: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Mini-batch k-means over a row-sliceable array, with memory bounded by a budget.

    The algorithm is scikit-learn's :class:`~sklearn.cluster.MiniBatchKMeans` (Sculley 2010):
    exact k-means (``n_init`` greedy k-means++ seedings) on a sample of
    ``max(3 * batch_size, 3 * k)`` rows, 10 Lloyd steps, gives the starting centres; then each
    batch moves every centre towards the mean of its batch members with learning rate
    ``batch count / total count``;
    a centre whose total count stays below 1 % of the largest is moved to a random batch row;
    it stops when the exponentially smoothed batch inertia has not improved for 10 batches (or
    after ``max_epochs`` passes' worth of batches). A final pass over all rows, in chunks,
    gives the labels and the inertia; a centre it leaves without rows moves to a far row
    and the rows are labelled again (:func:`_fill_empty`), so no cluster comes out empty.
    Sample and batches are uniformly drawn rows read in increasing order, so only those
    reads touch ``Z``.

    Parameters
    ----------
    Z : (n, d) array-like with row slicing (ndarray, np.memmap, h5py.Dataset).
    k : clusters, 2 <= k <= n.
    random_state : seed of the sample, the seedings and the batches (same seed, same result
        on the same machine).
    n_init : seedings compared on the sample.
    max_epochs : cap on the batches drawn, in passes over n rows.
    batch_size : rows per batch (at least k are used).
    memory_budget_mb : MiB for one chunk of the final pass plus its (rows, k) distances.
    validated : skip the finiteness / shape check (the caller did it).

    Returns
    -------
    labels : (n,) int64; centroids : (k, d) float32; inertia : float, the sum of squared
    distances of all n rows to their centroid (exact, float64 accumulation).

    Memory: the sample ``(max(3 * batch_size, 3k), d)``, one batch, one chunk of the final
    pass (set by the budget), the labels (8n bytes); never (n, d).
    """
    budget = int(memory_budget_mb * 2**20)
    if validated:
        n = int(Z.shape[0])
    else:
        n, _, constant = check_row_array(Z, rows_for_budget(int(Z.shape[1]) * 8, budget), name="Z")
        if constant:
            _constant(n)
    k = _check_k(k, n)
    rng = np.random.default_rng(random_state)
    batch = min(n, max(int(batch_size), k))
    C = _seed_centres(Z, n, k, batch=batch, n_init=n_init, rng=rng)
    steps = _minibatch_descent(Z, C, batch=batch, max_epochs=max_epochs, budget=budget, rng=rng)
    logger.debug("mini-batch k-means: %d batches of %d rows", steps, batch)
    centroids = C.astype(np.float32)
    labels_all, mind_all = _label_all(Z, centroids, budget)
    labels_all, mind_all = _fill_empty(Z, centroids, labels_all, mind_all, budget)
    return labels_all, centroids, float(mind_all.sum())


def _seed_centres(
    Z: RowArray, n: int, k: int, *, batch: int, n_init: int, rng: np.random.Generator
) -> np.ndarray:
    """Starting centres of the mini-batches, (k, d) float64: exact k-means on a sample of
    ``max(3 * batch, 3k)`` rows of ``Z``."""
    from sklearn.cluster import KMeans

    sample = _read_rows(Z, n, min(n, max(3 * batch, 3 * k)), rng)
    # Exact k-means (n_init k-means++ seedings, Lloyd) on the sample, not bare seeds: on class-
    # ordered blobs bare k-means++ seeds left ~1 seed in 3 with two blobs merged (inertia
    # +12 %), which the small late learning rates of the batches cannot undo.
    # Ten Lloyd steps suffice for seeds (the batches refine them) and bound this step's cost:
    # 3 × 10 × 12 288 × 500 × 1280 × 2 flop ≈ 0.5 Tflop for AligNet's k = 500.
    seeded = KMeans(
        n_clusters=k,
        n_init=n_init,
        max_iter=_SEED_ITERATIONS,
        random_state=int(rng.integers(2**31)),
    )
    return np.asarray(seeded.fit(sample).cluster_centers_, dtype=np.float64)


def _minibatch_descent(
    Z: RowArray,
    C: np.ndarray,
    *,
    batch: int,
    max_epochs: int,
    budget: int,
    rng: np.random.Generator,
) -> int:
    """Move the centres ``C`` (k, d) float64 in place over batches of ``batch`` rows of
    ``Z`` (see :func:`minibatch_kmeans`) until the batch inertia stops improving or
    ``max_epochs`` passes' worth of batches are drawn; returns the number of batches."""
    n = int(Z.shape[0])
    counts = np.zeros(C.shape[0], dtype=np.float64)  # rows each centre has absorbed
    stop = _EarlyStop(alpha=min(1.0, 2.0 * batch / n))
    n_steps = max(1, max_epochs * (-(-n // batch)))
    step = 0
    for step in range(n_steps):
        X = _read_rows(Z, n, batch, rng)
        labels, mind = _Assigner(C, budget)(X)
        batch_inertia = float(mind.sum()) / X.shape[0]
        _move_centres(C, counts, X, labels)
        if (step + 1) % 10 == 0 and counts.max() > 0:
            _reassign_starved(C, counts, X, rng)
        # the first batch's inertia is that of the seeds
        if step > 0 and stop(batch_inertia):
            break
    return step + 1


def _move_centres(C: np.ndarray, counts: np.ndarray, X: np.ndarray, labels: np.ndarray) -> None:
    """Move each centre of ``C`` towards the mean of its members in batch ``X`` (``labels``),
    with learning rate ``members / total count``: c += (sum − m·c) / (count + m). ``C`` and
    ``counts`` (k,) float64 are updated in place."""
    order = np.argsort(labels, kind="stable")
    present, first = np.unique(labels[order], return_index=True)
    sums = np.add.reduceat(X[order].astype(np.float64), first, axis=0)
    m = np.diff(np.append(first, X.shape[0])).astype(np.float64)
    counts[present] += m
    C[present] += (sums - m[:, None] * C[present]) / counts[present][:, None]


def _reassign_starved(
    C: np.ndarray, counts: np.ndarray, X: np.ndarray, rng: np.random.Generator
) -> None:
    """Move the centres whose count is below :data:`_REASSIGNMENT_RATIO` of the largest onto
    random rows of batch ``X``, with the smallest count of the others (in place)."""
    starved = np.flatnonzero(counts < _REASSIGNMENT_RATIO * counts.max())
    if starved.size:
        take = rng.choice(X.shape[0], size=min(starved.size, X.shape[0]), replace=False)
        starved = starved[: take.size]
        C[starved] = X[take]
        counts[starved] = counts[counts >= _REASSIGNMENT_RATIO * counts.max()].min()


class _EarlyStop:
    """scikit-learn's mini-batch stopping rule: the batch inertia, exponentially smoothed with
    weight ``alpha``, has not improved for :data:`_MAX_NO_IMPROVEMENT` batches."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.ewa: float | None = None
        self.best = math.inf
        self.no_improvement = 0

    def __call__(self, batch_inertia: float) -> bool:
        """Take one batch's mean squared distance; True when it is time to stop."""
        a = self.alpha
        self.ewa = batch_inertia if self.ewa is None else self.ewa * (1.0 - a) + batch_inertia * a
        if self.ewa < self.best:
            self.best, self.no_improvement = self.ewa, 0
            return False
        self.no_improvement += 1
        return self.no_improvement >= _MAX_NO_IMPROVEMENT


def _label_all(Z: RowArray, C: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every row of ``Z`` (n, d), read in chunks set by ``budget`` bytes:
    ``(labels (n,) int64, squared distances (n,) float64)``."""
    n, d = int(Z.shape[0]), int(Z.shape[1])
    assign = _Assigner(C, budget)
    labels = np.empty(n, dtype=np.int64)
    mind = np.empty(n, dtype=np.float64)
    for start, block in iter_row_chunks(Z, rows_for_budget(d * 8, budget // 2)):
        lab, dist = assign(block)
        labels[start : start + lab.size] = lab
        mind[start : start + lab.size] = dist
    return labels, mind


#: relocate-and-relabel rounds before the remaining empty clusters get rows by force
_FILL_ROUNDS = 3


def _fill_empty(
    Z: RowArray, C: np.ndarray, labels: np.ndarray, mind: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """Give every centre of ``C`` (k, d) at least one row: ``(labels, squared distances)``.

    The batches' reassignment of starved centres does not guarantee that the final pass
    over all rows finds a member for every centre (k = 500 on the full 1.28 M × 1280 pool
    left one empty). As scikit-learn's ``KMeans`` does (``_relocate_empty_clusters``), each
    empty centre moves onto a row far from its own centre — the rows with the largest
    squared distance, taken only from clusters that keep at least one other member — and
    every row is labelled again (nearest centre). A relocated centre is a row, so it wins
    that row unless another centre lies exactly as close (duplicated rows); after
    :data:`_FILL_ROUNDS` rounds the rows chosen for the clusters still empty are assigned
    to them directly. ``C`` is changed in place; needs ``Z`` to have at least k rows.
    """
    k = C.shape[0]
    for round_ in range(_FILL_ROUNDS + 1):
        counts = np.bincount(labels, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if not empty.size:
            break
        rows = _far_rows(labels, mind, counts, empty.size)
        picked = np.asarray(Z[np.sort(rows)], dtype=np.float32)
        order = np.argsort(rows)  # Z was read in increasing row order
        C[empty[order]] = picked
        logger.info("k-means: %d empty cluster(s) moved to far rows", empty.size)
        if round_ < _FILL_ROUNDS:
            labels, mind = _label_all(Z, C, budget)
        else:  # duplicated rows tie with another centre: assign the rows outright
            labels[rows] = empty
            mind[rows] = 0.0
    return labels, mind


def _far_rows(labels: np.ndarray, mind: np.ndarray, counts: np.ndarray, m: int) -> np.ndarray:
    """``m`` rows farthest from their centre whose clusters keep another member each."""
    left = counts.copy()
    chosen: list[int] = []
    for row in np.argsort(-mind, kind="stable"):
        if left[labels[row]] > 1:
            left[labels[row]] -= 1
            chosen.append(int(row))
            if len(chosen) == m:
                break
    return np.asarray(chosen, dtype=np.int64)


def _kmeans_torch(
    feats: RowArray,
    k: int,
    *,
    random_state: int | np.random.Generator | None,
    n_init: int,
    max_iter: int,
    tol: float,
    device: torch.device | str,
    budget_bytes: int = DEFAULT_MEMORY_BUDGET_MB * 2**20,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Full-batch Lloyd k-means in torch (float32) on ``device``; see :func:`kmeans`.

    ``feats`` may be any row-sliceable array-like: it is copied to the device in chunks of
    ``budget_bytes``, so the host never holds all of it.

    Random numbers come from a numpy Generator on the host (not a device generator), so the
    seeds do not depend on the device; only float round-off does. Runs on the CPU too (the
    tests check it there), but scikit-learn is faster on a CPU.
    """
    import torch

    rng = np.random.default_rng(random_state)
    dev = torch.device(device)
    lloyd = _TorchLloyd(_rows_on_device(feats, dev, budget_bytes), k, tol=tol, rng=rng, device=dev)
    best: tuple[torch.Tensor, torch.Tensor, float] | None = None
    for run in range(n_init):
        labels, C, inertia, n_iter = lloyd.fit_once(max_iter)
        logger.debug("torch k-means run %d: %d iterations, inertia %.6g", run, n_iter, inertia)
        # On CUDA, index_add_ sums in a non-deterministic order, so two restarts that find the
        # same partition differ in the last bits of their inertia; only a clear improvement may
        # replace the earlier run, or the same seed could return differently numbered labels.
        if best is None or inertia < best[2] * (1.0 - 1e-6):
            best = (labels, C, inertia)
    assert best is not None
    labels, C, inertia = best
    labels, C = _number_by_first_member(labels, C, dev)
    return (
        labels.cpu().numpy().astype(np.int64),
        C.cpu().numpy().astype(np.float32),
        inertia,
    )


def _rows_on_device(feats: RowArray, dev: torch.device, budget_bytes: int) -> torch.Tensor:
    """(n, d) float32 copy of row-sliceable ``feats`` on ``dev``, moved over in chunks of
    ``budget_bytes`` (the host never holds all of it)."""
    import torch

    n_rows, d = int(feats.shape[0]), int(feats.shape[1])
    X = torch.empty((n_rows, d), dtype=torch.float32, device=dev)
    for s, block in iter_row_chunks(feats, rows_for_budget(d * 8, budget_bytes)):
        X[s : s + block.shape[0]] = torch.from_numpy(block.astype(np.float32, copy=False)).to(dev)
    return X


class _TorchLloyd:
    """Full-batch Lloyd k-means of the rows of ``X`` (n, d) float32 on ``device``.

    Holds what every run and step shares: the rows, their squared norms, the convergence
    threshold, the rows of one (rows, k) distance block (:data:`_TORCH_BLOCK_BYTES`) and the
    host random generator of the seedings.
    """

    def __init__(
        self,
        X: torch.Tensor,
        k: int,
        *,
        tol: float,
        rng: np.random.Generator,
        device: torch.device,
    ) -> None:
        self.X, self.k, self.rng, self.dev = X, k, rng, device
        self.x_sq = (X * X).sum(dim=1)
        # sklearn's tolerance: relative to the mean per-feature variance
        self.tol_abs = float(tol) * float(X.var(dim=0, unbiased=False).mean())
        self.rows = max(1024, _TORCH_BLOCK_BYTES // (4 * max(k, 1)))

    def fit_once(self, max_iter: int) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """One seeding and its Lloyd iterations: (labels (n,) int64, centres (k, d) float32,
        inertia, iterations run)."""
        C = self.init_pp()
        n_iter = 0
        for _ in range(max_iter):
            n_iter += 1
            labels, mind = self.assign(C)
            new_c = self.centres(C, labels, mind)
            shift = float(((new_c - C) ** 2).sum())
            C = new_c
            if shift <= self.tol_abs:
                break
        # final E-step so that labels, centroids and inertia agree
        labels, mind = self.assign(C)
        return labels, C, float(mind.double().sum()), n_iter

    def assign(self, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest centre of every row: (labels (n,) int64, squared distance (n,) float32)."""
        import torch

        X, x_sq, rows = self.X, self.x_sq, self.rows
        c_sq = (C * C).sum(dim=1)
        labels = torch.empty(X.shape[0], dtype=torch.int64, device=self.dev)
        mind = torch.empty(X.shape[0], dtype=X.dtype, device=self.dev)
        for s in range(0, X.shape[0], rows):
            d = torch.addmm(c_sq[None, :], X[s : s + rows], C.T, alpha=-2.0)
            d += x_sq[s : s + rows, None]
            val, idx = d.min(dim=1)
            mind[s : s + rows] = val.clamp_min_(0.0)
            labels[s : s + rows] = idx
        return labels, mind

    def centres(self, C: torch.Tensor, labels: torch.Tensor, mind: torch.Tensor) -> torch.Tensor:
        """The means of the clusters of ``labels``; an empty cluster's centre moves to one of
        the rows farthest from their centre (``mind``, squared distances)."""
        import torch

        counts = torch.bincount(labels, minlength=self.k)
        sums = torch.zeros_like(C).index_add_(0, labels, self.X)
        new_c = sums / counts.clamp(min=1)[:, None].to(self.X.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            # relocate empty clusters to the rows farthest from their centre (scikit-learn
            # does the same), instead of leaving dead centres
            far = torch.topk(mind, int(empty.numel())).indices
            new_c[empty] = self.X[far]
        return new_c

    def sq_dist_to(self, P: torch.Tensor) -> torch.Tensor:
        """(p, n) squared distances of every row to the p points ``P``."""
        import torch

        d = torch.addmm(self.x_sq[None, :], P, self.X.T, alpha=-2.0)
        d += (P * P).sum(dim=1)[:, None]
        return d.clamp_min_(0.0)

    def init_pp(self) -> torch.Tensor:
        """k starting centres (k, d) by greedy k-means++ (as scikit-learn): each new centre
        is the best of 2 + log k candidates drawn with probability proportional to the
        squared distance to the nearest centre."""
        import torch

        X, k, rng = self.X, self.k, self.rng
        n_local = 2 + int(math.log(k))
        C = torch.empty((k, X.shape[1]), dtype=X.dtype, device=self.dev)
        first = int(rng.integers(0, X.shape[0]))
        C[0] = X[first]
        closest = self.sq_dist_to(X[first : first + 1])[0]
        for c in range(1, k):
            # float64 cumsum: a float32 running sum over a million rows loses the small terms
            cum = torch.cumsum(closest.double(), dim=0)
            u = torch.from_numpy(rng.random(n_local) * float(cum[-1])).to(self.dev)
            cand = torch.searchsorted(cum, u).clamp_(max=X.shape[0] - 1)
            new = torch.minimum(closest[None, :], self.sq_dist_to(X[cand]))
            best = int(torch.argmin(new.double().sum(dim=1)))
            closest = new[best]
            C[c] = X[cand[best]]
        return C


def _number_by_first_member(
    labels: torch.Tensor, C: torch.Tensor, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Renumber the clusters by their first member (the unused ids last), so equal
    partitions get equal labels: (labels (n,), centres (k, d) in the new order)."""
    import torch

    k = C.shape[0]
    _, first = np.unique(labels.cpu().numpy(), return_index=True)
    order = torch.as_tensor(np.argsort(np.argsort(first)), device=dev)
    present = torch.as_tensor(np.unique(labels.cpu().numpy()), device=dev)
    relabel = torch.arange(k, device=dev)
    relabel[present] = order
    unused = sorted(set(range(k)) - set(present.tolist()))
    relabel[torch.as_tensor(unused, dtype=torch.int64, device=dev)] = torch.arange(
        len(present), k, device=dev
    )
    inverse = torch.empty_like(relabel)
    inverse[relabel] = torch.arange(k, device=dev)
    return relabel[labels], C[inverse]


# --------------------------------------------------------------------------------------------
# choosing k and inspecting clusters
# --------------------------------------------------------------------------------------------
def kmeans_diagnostics(
    Z: RowArray,
    ks: Sequence[int],
    *,
    random_state: int | None = 0,
    silhouette_sample: int = 2000,
    n_init: int = 3,
    device: str = "auto",
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
) -> dict[str, Any]:
    """Inertia and silhouette score of k-means for several k, to help choose k.

    Parameters
    ----------
    Z : (n, d) float embeddings (an array-like read in row chunks, as for :func:`kmeans`).
    ks : candidate numbers of clusters, each an integer in [2, n]; duplicates are dropped and
        the result is sorted by k.
    random_state : seed of every k-means fit and of the silhouette sample.
    silhouette_sample : the silhouette needs all pairwise distances of the rows it scores
        (O(s²)), so it is computed on one random sample of ``min(n, silhouette_sample)`` rows,
        the same rows for every k, using the labels from the fit on all of ``Z``.
    n_init, device, memory_budget_mb : passed to :func:`kmeans`.

    Returns
    -------
    dict, JSON-serialisable (plain ints, floats, lists and None):
      * ``"k"`` : list[int], the sorted distinct ks.
      * ``"inertia"`` : list[float], within-cluster sum of squares per k (always decreases
        with k; look for the elbow).
      * ``"silhouette"`` : list[float | None], mean silhouette coefficient in [-1, 1] on the
        sample (higher is better); ``None`` where it is undefined (the sample holds only one
        cluster, or every sampled row is its own cluster).
      * ``"best_k"`` : int | None, the k with the highest silhouette.
      * ``"n"`` : int, rows of Z; ``"silhouette_sample"`` : int, rows scored.
    """
    from sklearn.metrics import silhouette_score

    feats = _features(Z)
    n = feats.shape[0]
    try:
        ks_list = sorted({_check_k(k, n, field="ks") for k in ks})
    except TypeError:
        raise InputError(f"ks must be a sequence of integers, got {ks!r}", field="ks") from None
    if not ks_list:
        raise InputError("give at least one k", field="ks")
    if isinstance(silhouette_sample, bool) or int(silhouette_sample) < 2:
        raise InputError(
            f"must be an integer >= 2, got {silhouette_sample!r}", field="silhouette_sample"
        )
    rng = np.random.default_rng(random_state)
    s = min(n, int(silhouette_sample))
    sample = np.sort(rng.choice(n, size=s, replace=False)) if s < n else np.arange(n)
    Xs = as_float(np.asarray(feats[sample]))  # sorted rows: a valid memmap / HDF5 read
    inertias: list[float] = []
    silhouettes: list[float | None] = []
    for k in ks_list:
        labels, _, inertia = kmeans(
            feats,
            k,
            random_state=random_state,
            n_init=n_init,
            device=device,
            memory_budget_mb=memory_budget_mb,
        )
        inertias.append(float(inertia))
        ls = labels[sample]
        n_lab = int(np.unique(ls).size)
        # silhouette_score raises unless 2 <= distinct labels <= samples - 1
        if 2 <= n_lab <= s - 1:
            silhouettes.append(float(silhouette_score(Xs, ls, metric="euclidean")))
        else:
            silhouettes.append(None)
        logger.info("k=%d: inertia %.4g, silhouette %s", k, inertia, silhouettes[-1])
    scored = [(sil, k) for sil, k in zip(silhouettes, ks_list) if sil is not None]
    return {
        "k": ks_list,
        "inertia": inertias,
        "silhouette": silhouettes,
        "best_k": max(scored)[1] if scored else None,
        "n": n,
        "silhouette_sample": s,
    }


def cluster_summaries(
    Z: RowArray,
    labels: np.ndarray,
    centroids: np.ndarray,
    *,
    n_nearest: int = 8,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
) -> list[dict[str, Any]]:
    """Size and most central items of every cluster (e.g. to show example images per cluster).

    Parameters
    ----------
    Z : (n, d) float embeddings that were clustered (an array-like read in row chunks).
    labels : (n,) int cluster id per row, in [0, k).
    centroids : (k, d) float cluster centres.
    n_nearest : how many of each cluster's items to list (fewer if the cluster is smaller).
    memory_budget_mb : working memory for the rows of a lazy ``Z`` read at once (MiB).

    Returns
    -------
    list of k dicts, one per cluster in id order, JSON-serialisable:
      * ``"cluster"`` : int id.
      * ``"size"`` : int number of items.
      * ``"nearest"`` : list[int] row ids of the cluster's members closest (Euclidean) to the
        centroid, closest first (ties by row id).
      * ``"mean_distance"`` : float mean Euclidean distance of the members to the centroid,
        ``None`` for an empty cluster.
    """
    feats = _features(Z, memory_budget_mb)
    cents = check_features(centroids, name="centroids")
    n, d = feats.shape
    k = cents.shape[0]
    if cents.shape[1] != d:
        raise InputError(f"has {cents.shape[1]} columns but Z has {d}", field="centroids")
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise InputError(f"must have shape ({n},) to match Z, got {lab.shape}", field="labels")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"must hold integer cluster ids, got dtype {lab.dtype}", field="labels")
    if lab.min() < 0 or lab.max() >= k:
        raise InputError(
            f"cluster ids must be in [0, {k}) for {k} centroids, found {lab.min()}..{lab.max()}",
            field="labels",
        )
    if isinstance(n_nearest, bool) or int(n_nearest) < 0:
        raise InputError(f"must be an integer >= 0, got {n_nearest!r}", field="n_nearest")
    lab = lab.astype(np.int64)
    # distance of every row to its own centroid, in row chunks (bounded (rows, d) temporaries)
    dist = np.empty(n, dtype=np.float64)
    step = max(1, 2**24 // (8 * d))
    for s in range(0, n, step):
        diff = np.asarray(feats[s : s + step], dtype=np.float64) - cents[lab[s : s + step]]
        dist[s : s + step] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    # group rows by cluster, closest first inside a cluster (lexsort: last key is primary)
    order = np.lexsort((np.arange(n), dist, lab))
    sizes = np.bincount(lab, minlength=k)
    sums = np.bincount(lab, weights=dist, minlength=k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out: list[dict[str, Any]] = []
    for c in range(k):  # one dict per cluster: k is small (hundreds), never per item
        size = int(sizes[c])
        top = order[starts[c] : starts[c] + min(size, int(n_nearest))]
        out.append(
            {
                "cluster": c,
                "size": size,
                "nearest": [int(i) for i in top],
                "mean_distance": float(sums[c] / size) if size else None,
            }
        )
    return out
