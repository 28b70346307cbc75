"""The three pair similarities of a triplet, one formula per backend (numpy, torch).

A triplet row ``(i, j, k)`` has the pair similarities ``[s01, s02, s12]`` =
``[sim(i, j), sim(i, k), sim(j, k)]`` (method.md §1), also the logit order of every triplet
softmax in the engine. ``sim`` is one of :data:`SIMILARITY_METRICS`:

* ``"dot"``: the plain dot product (AligNet's teacher and student);
* ``"cosine"``: the dot product of the L2-normalised rows; an all-zero row has no direction
  and gets similarity 0 to everything;
* ``"euclidean"``: minus the Euclidean distance (so larger is more similar).

The kernels here do not validate (the entry points do) and live in the bottom layer so that
``align`` and ``distill``, which may not import each other, share them:

=================================================  ==========================================
entry point                                        what it is for
=================================================  ==========================================
:func:`alignet_engine.align.metrics.pair_similarities`
                                                   evaluation: checked, float64, so a tie
                                                   is a real tie (numpy kernel on
                                                   normalised rows for cosine)
:func:`alignet_engine.align.triplet_sampling.triplet_similarities`
                                                   teacher labels of millions of pool
                                                   triplets: the features' dtype, any row
                                                   array, CPU (numpy) or GPU (torch)
:func:`stacked_pair_similarities`                  the student in training: (b, 3, d)
                                                   tensors, differentiable
=================================================  ==========================================

Cosine comes in two arithmetics on purpose, and each entry keeps its own so that results stay
bit for bit what they were: the gathering kernels multiply the dot products by the two
inverse norms (no normalised (n, d) copy of a pool that may be a memory map of gigabytes);
evaluation and the student normalise the rows first (float64 evaluation; ``F.normalize``
with an ``eps`` floor, whose gradient training relies on). They agree to round-off.

torch is imported inside the torch kernels only: this layer is torch-free at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from alignet_engine.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "SIMILARITY_METRICS",
    "SimilarityKind",
    "SimilarityMetric",
    "check_metric",
    "gathered_pairs_numpy",
    "gathered_pairs_torch",
    "stacked_pair_similarities",
]

SimilarityMetric = Literal["cosine", "dot", "euclidean"]
#: The metrics of :data:`SimilarityMetric`, for checks and messages.
SIMILARITY_METRICS = ("cosine", "dot", "euclidean")
#: The metrics a student is trained with (no Euclidean distance there).
SimilarityKind = Literal["dot", "cosine"]


def check_metric(metric: str) -> None:
    """Refuse a metric that is not one of :data:`SIMILARITY_METRICS` (InputError)."""
    if metric not in SIMILARITY_METRICS:
        raise InputError(f"unknown similarity metric {metric!r}; use one of {SIMILARITY_METRICS}")


def inverse_norms(feats: np.ndarray) -> np.ndarray:
    """(n,) ``1 / ||row||`` in ``feats``' dtype, 1 for an all-zero row (so its cosine is 0).

    einsum, not ``np.linalg.norm``: no (n, d) temporary, and ``feats`` may be a memory map.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", feats, feats))
    return (1.0 / np.where(norms > 0, norms, 1.0)).astype(feats.dtype)


def gathered_pairs_numpy(
    feats: np.ndarray, trip: np.ndarray, metric: str, chunk: int
) -> np.ndarray:
    """``[s01, s02, s12]`` of rows ``trip`` of ``feats``, gathering ``chunk`` triplets at once.

    Parameters
    ----------
    feats : (n, d) float32 or float64 (an ndarray or a read-only memmap: only the rows used
        are read).
    trip : (m, 3) int64 valid item ids (unchecked).
    metric : one of :data:`SIMILARITY_METRICS`; cosine scales the dot products by
        :func:`inverse_norms`.
    chunk : triplet rows per gather: the temporaries are about ``3 * chunk * d`` values. The
        result does not depend on it (each row is summed on its own).

    Returns
    -------
    (m, 3) in ``feats``' dtype (sums accumulated in it: float32 halves the memory traffic).
    """
    m = trip.shape[0]
    out = np.empty((m, 3), dtype=feats.dtype)
    inv_norm = inverse_norms(feats) if metric == "cosine" else None
    for start in range(0, m, chunk):
        t = trip[start : start + chunk]
        o = out[start : start + chunk]
        a, b, c = feats[t[:, 0]], feats[t[:, 1]], feats[t[:, 2]]
        if metric == "euclidean":
            o[:, 0] = np.linalg.norm(a - b, axis=1)
            o[:, 1] = np.linalg.norm(a - c, axis=1)
            o[:, 2] = np.linalg.norm(b - c, axis=1)
            np.negative(o, out=o)
        else:
            o[:, 0] = np.einsum("td,td->t", a, b)
            o[:, 1] = np.einsum("td,td->t", a, c)
            o[:, 2] = np.einsum("td,td->t", b, c)
            if inv_norm is not None:
                ia, ib, ic = inv_norm[t[:, 0]], inv_norm[t[:, 1]], inv_norm[t[:, 2]]
                o[:, 0] *= ia * ib
                o[:, 1] *= ia * ic
                o[:, 2] *= ib * ic
    return out


def _dot_pairs(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(k, 3) ``[a·b, a·c, b·c]`` of three (k, d) tensors: the one torch dot-pair formula."""
    import torch

    return torch.stack([(a * b).sum(-1), (a * c).sum(-1), (b * c).sum(-1)], dim=-1)


def gathered_pairs_torch(
    feats: np.ndarray, trip: np.ndarray, metric: str, chunk: int, device: torch.device | str
) -> np.ndarray:
    """Same as :func:`gathered_pairs_numpy` with torch on ``device`` (any torch device;
    tested on CPU): ``feats`` is copied there once, the triplets ``chunk`` rows at a time."""
    import torch

    m = trip.shape[0]
    out = np.empty((m, 3), dtype=feats.dtype)
    with torch.inference_mode():
        X = torch.from_numpy(feats).to(device)
        inv_norm = None
        if metric == "cosine":
            norms = torch.linalg.vector_norm(X, dim=1)
            inv_norm = 1.0 / torch.where(norms > 0, norms, torch.ones_like(norms))
        T = torch.from_numpy(trip)
        for start in range(0, m, chunk):
            t = T[start : start + chunk].to(device)
            a, b, c = X[t[:, 0]], X[t[:, 1]], X[t[:, 2]]
            if metric == "euclidean":
                r = -torch.stack(
                    [
                        torch.linalg.vector_norm(a - b, dim=1),
                        torch.linalg.vector_norm(a - c, dim=1),
                        torch.linalg.vector_norm(b - c, dim=1),
                    ],
                    dim=1,
                )
            else:
                r = _dot_pairs(a, b, c)
                if inv_norm is not None:
                    ia, ib, ic = inv_norm[t[:, 0]], inv_norm[t[:, 1]], inv_norm[t[:, 2]]
                    r *= torch.stack([ia * ib, ia * ic, ib * ic], dim=1)
            out[start : start + chunk] = r.cpu().numpy()
    return out


def stacked_pair_similarities(
    features: torch.Tensor, kind: SimilarityKind = "cosine", *, eps: float = 1e-8
) -> torch.Tensor:
    """Pair similarities ``[d01, d02, d12]`` of the three images of each triplet.

    Parameters
    ----------
    features : (b, 3, d) float tensor, the features of images 0, 1, 2 of each triplet.
    kind : ``"dot"`` — raw dot products (AligNet's choice, on a trained head's output);
        ``"cosine"`` — dot products of L2-normalised features, in [-1, 1].
    eps : lower bound of a feature norm for ``"cosine"`` (an all-zero feature gives 0).

    Returns
    -------
    torch.Tensor
        (b, 3) similarities, same dtype and device as ``features``; differentiable.
    """
    import torch.nn.functional as F

    if features.ndim != 3 or features.shape[1] != 3:
        raise ValueError(f"features must have shape (b, 3, d); got {tuple(features.shape)}")
    if kind == "cosine":
        features = F.normalize(features, dim=-1, eps=eps)
    elif kind != "dot":
        raise ValueError(f"similarity must be 'dot' or 'cosine'; got {kind!r}")
    f0, f1, f2 = features.unbind(dim=1)
    return _dot_pairs(f0, f1, f2)
