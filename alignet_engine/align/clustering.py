"""k-means of (teacher) embeddings, the first step of AligNet triplet sampling (method.md §4)."""

from __future__ import annotations

import logging

import numpy as np

from alignet_engine.align.metrics import check_features
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

# Above this many rows full-batch Lloyd iterations over the whole matrix get slow (ImageNet
# train is 1.28 M rows of 1152-d features), so mini-batch k-means is used instead.
MINIBATCH_ABOVE = 50_000


def kmeans(
    Z: np.ndarray,
    k: int,
    *,
    random_state: int | None = 0,
    n_init: int = 3,
    max_iter: int = 300,
    minibatch_above: int = MINIBATCH_ABOVE,
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster the rows of ``Z`` into ``k`` groups.

    Parameters
    ----------
    Z : (n, d) float embeddings (float32 stays float32, halving the memory).
    k : number of clusters, 2 <= k <= n (AligNet: 500).
    random_state : seed of the k-means++ initialisations and mini-batches.
    n_init : independent initialisations; the lowest-inertia run is kept.
    max_iter : iteration cap (epochs over the data for the mini-batch variant).
    minibatch_above : use :class:`~sklearn.cluster.MiniBatchKMeans` when n exceeds this.
    batch_size : mini-batch size of the mini-batch variant.

    Returns
    -------
    labels : (n,) int64 in [0, k).
    centroids : (k, d) float32.
    inertia : float, sum of squared distances of the rows to their centroid.

    Notes
    -----
    If ``Z`` has fewer than ``k`` distinct rows some clusters come out empty or duplicated;
    scikit-learn then warns (ConvergenceWarning). We do not check it up front because finding
    distinct rows of a 1.28 M × 1152 matrix costs more than the clustering.
    """
    # imported here: scikit-learn takes ~1.5 s to import and most users of this package never
    # cluster
    from sklearn.cluster import KMeans, MiniBatchKMeans

    feats = check_features(Z, name="Z")
    n = feats.shape[0]
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {k!r}", field="k")
    if k < 2:
        raise InputError(f"k must be at least 2 clusters, got {k}", field="k")
    if k > n:
        raise InputError(f"k = {k} clusters is more than the {n} rows to cluster", field="k")
    if n_init < 1 or max_iter < 1 or batch_size < 1:
        raise InputError("n_init, max_iter and batch_size must be >= 1")
    model: KMeans | MiniBatchKMeans
    if n > minibatch_above:
        model = MiniBatchKMeans(
            n_clusters=int(k),
            n_init=n_init,
            max_iter=max_iter,
            batch_size=max(batch_size, int(k)),
            random_state=random_state,
        )
    else:
        model = KMeans(
            n_clusters=int(k), n_init=n_init, max_iter=max_iter, random_state=random_state
        )
    labels = model.fit_predict(feats)
    logger.info("%s: n=%d, k=%d, inertia %.4g", type(model).__name__, n, k, float(model.inertia_))
    return (
        np.asarray(labels, dtype=np.int64),
        np.asarray(model.cluster_centers_, dtype=np.float32),
        float(model.inertia_),
    )
