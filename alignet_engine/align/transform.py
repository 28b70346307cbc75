"""Affine alignment transform fitted to human triplet judgments (gLocal / uncertainty distillation).

Model (method.md §2, §3)::

    x̃ = (x − μ) / σ            ``standardize``: scalar μ, σ over the whole matrix (gLocal),
                                per-dimension μ, σ vectors ("perdim"), or none
    z = x̃ W + b                row-vector convention, W (d, d), b (d,)
    S_ab = z_a · z_b           ``similarity="dot"`` (gLocal), or
    S_ab = cos(z_a, z_b)       ``similarity="cosine"``
    logits = T · [S_ij, S_ik, S_jk]   odd-one-out row (i, j, k)  — pair NOT containing k first
    logits = T · [S_ac, S_ao]         two-alternative row (a, c, o)
    q = softmax(logits)

* ``objective="hard"`` (gLocal global term): cross-entropy of the row's own answer, which is
  always class 0 (odd one last / chosen second), i.e. −log q_0.
* ``objective="soft"`` (uncertainty distillation): KL(p ‖ q) with ``targets`` p per row, columns
  in the SAME order as the logits: oddone ``[p(odd = k), p(odd = j), p(odd = i)]``, twoafc
  ``[p(c), p(o)]`` (:func:`~alignet_engine.align.soft_targets.choice_distributions` returns
  them in this order).
* Regulariser (gLocal ``eye``): λ‖W − mean(diag W)·I‖²_F, applied to the effective map (see
  "Temperature" below).
* Local term (gLocal §2.4, when ``alpha > 0``): on a random batch of ``pool`` features, teacher
  p_a = softmax_b(cos(x_a, x_b)/τ), student q_a = softmax_b(cos(z_a, z_b)/τ), diagonal dropped;
  L_loc = mean_a CE(p_a, q_a). Total L = (1−α)·L_glob + α·L_loc + λ·R.

Standardisation
---------------
``"scalar"`` (gLocal) stores ``mean_``/``std_`` as floats; ``"perdim"`` stores (d,) float64
vectors. Both are written to ``transform.npz`` under ``mean``/``std`` and applied elementwise,
``(x − mean) / std`` — exactly what thingsvision's ``gLocal.apply_transform`` does, so a
per-dimension file is still a valid thingsvision transform. A dimension that is constant over
the items (std 0, e.g. a dead ReLU unit) gets ``std = 1`` in "perdim" (as sklearn's
``StandardScaler``): it centres to 0 and carries no information, and dividing by 0 would make
every later input non-finite. Features that are identical for every item (nothing to learn),
a constant matrix under "scalar", and NaN/inf raise :class:`~alignet_engine.errors.InputError`.

Cosine similarity
-----------------
With ``similarity="cosine"`` the logits are ``temperature_ · cos(z_a, z_b)``: they are bounded
by ±T, so the learned temperature is what sets how peaked the choice probabilities are, and the
overall scale of (W, b) no longer changes any prediction. Because that scale is free, the
regulariser is applied to W rescaled to the Frobenius norm of the identity,
R = ‖Ŵ − mean(diag Ŵ)·I‖²_F with Ŵ = √d·W/‖W‖_F (otherwise shrinking W and b together would
drive R to 0 without changing the fit), and it is NOT multiplied by T (T is not redundant with
the scale here). The geometry consumers should use is then the cosine of ``transform()``
outputs; the choice is saved with the transform (``to_arrays()["similarity"]``).

Temperature
-----------
A scalar temperature T is learned (as log T) jointly with W and b. It is exactly redundant with
the scale of (W, b) — T·(x̃W+b)·(x̃W+b) = (x̃√T W+√T b)·(x̃√T W+√T b) — but it lets the optimiser
change the overall logit scale multiplicatively instead of walking every entry of W. To keep
the regulariser from being dodged along that redundant direction (shrink W, grow T) it is
applied to the effective map √T·W, i.e. λ·T·‖W − mean(diag W)·I‖²_F.

``W_``/``b_`` do NOT include T: the model's triplet logits (what AligNet stores as teacher
similarities) are ``temperature_ * (z_a · z_b)`` with z = :meth:`AffineTransform.transform`
output; :meth:`AffineTransform.predict_proba` applies it. Accuracy, clustering and cosine-based
metrics are unaffected by T. The gLocal-equivalent map (T = 1) is √T·W_, √T·b_.

Initialisation
--------------
W = I, b = 0 and T set by a 1-D search that minimises the training loss of the untransformed
(standardised) features: the fit starts from the calibrated zero-shot solution, and because the
initial state is the first early-stopping checkpoint, a fit never ends with a worse validation
loss than zero-shot. (gLocal initialises W = b = 1e-3 with T = 1, which starts from near-uniform
predictions and must first learn the scale.)

Speed
-----
A training step transforms whichever is fewer (the results agree up to float round-off):

* the 3·B feature rows of the batch (B <= n/3, gLocal's way): 3·B·d² multiply-adds;
* all n items once, Z = X̃W + b (B > n/3): n·d², after which the batch's pair similarities are
  read off the Gram matrix ZZᵀ (many pairs, n <= 4096) or gathered, and the gradient flows
  back through a sparse (n, n) matrix of the pairs' loss gradients (:class:`_PairSims`).

So large batches (``batch_size`` in the thousands, with a larger ``lr``) cost nearly the same per
step as small ones; with the calibrated start they reach the held-out accuracy of gLocal's
256-row batches in a fraction of the time (``benchmarks/bench_transform.py``).

Validation losses follow the same rule for their t rows: Z of all items then k·d per row when
3·t > n, else only the rows' features (chunked, so huge item sets stay cheap).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from alignet_engine.align.fitloop import (
    EarlyStopping,
    append_history,
    check_param_table,
    fit_from_iter,
    new_history,
    run_epochs,
    shuffled_batches,
    torch_generator,
)
from alignet_engine.align.metrics import check_features, check_triplets, pair_similarities
from alignet_engine.base.devices import torch_threads
from alignet_engine.data._io_common import check_file
from alignet_engine.data.arrays_io import npz_get, open_npz
from alignet_engine.errors import InputError
from alignet_engine.files import atomic_output

logger = logging.getLogger(__name__)

TripletKind = Literal["oddone", "twoafc"]

# Rows per chunk when evaluating (no gradient): bounds the (chunk, 3) index and logit arrays.
_EVAL_CHUNK = 65_536
# Floats of the (chunk, 3, d) features when evaluating few rows of many items (64 MiB).
_EVAL_FLOATS = 2**24
# Rows used to calibrate the initial temperature (a 1-D search; more rows add nothing).
_INIT_ROWS = 50_000
# Largest item count for computing batch logits from the full Gram matrix ZZᵀ: it is a transient
# (n, n) float32 array, 64 MiB at 4096 items; beyond that the logits are gathered row by row.
_GRAM_MAX_ITEMS = 4096
# Forward of the all-items step: the Gram matrix costs n²·d multiply-adds at BLAS speed, the
# gather 3·B·d memory-bound reads. Measured on CPU (1 thread), a gathered element costs about
# _GATHER_COST·√d Gram multiply-adds (≈30 at d = 64, ≈60 at d = 512). Only decides which of two
# exact computations runs.
_GATHER_COST = 3.0
# Pairs gathered per chunk: keeps the (chunk, d) temporaries in cache (measured fastest).
_GATHER_CHUNK = 1024
# Backward of the all-items step: below this width, scattering gathered rows with index_add_
# is faster than the sparse (n, n) product; above it, the sparse product (measured on CPU).
_SPARSE_MIN_DIM = 128

# Automatic settings (``None`` parameters), from the number t of TRAINING rows; see
# :meth:`AffineTransform.resolved_settings` and ``benchmarks/bench_transform_default.py``.
# Batch: about _AUTO_STEPS_PER_EPOCH steps per epoch, a power of two in [256, 8192]; 256 is
# gLocal's, 8192 the large batch whose steps cost little more than small ones ("Speed").
_AUTO_STEPS_PER_EPOCH = 32
_AUTO_BATCH_RANGE = (256, 8192)
# Learning rate: gLocal's 1e-3 at batch 256, growing with the square root of the batch (the
# gradient noise falls as 1/√B); capped where the calibrated start still trains stably.
_AUTO_LR_BASE = 1e-3
_AUTO_LR_MAX = 1e-2
# Patience: enough epochs to cover about _AUTO_PATIENCE_STEPS optimiser steps, in [2, 15]
# (15 = gLocal's); tolerance: an improvement smaller than this fraction of the starting loss
# is noise-level (≪ 0.001 in accuracy) and does not reset the patience.
_AUTO_PATIENCE_STEPS = 100
_AUTO_PATIENCE_RANGE = (2, 15)
_AUTO_REL_TOL = 1e-3
# λ without cross-validation: the penalty counts d² entries against t data rows, so the weight
# that keeps the fit from overfitting falls as d²/t; _AUTO_LAM_SCALE puts THINGS-size problems
# (d = 384, 450k training rows, d²/t ≈ 0.33) at 1e-3, the value that matched an independent
# script there (issue 11); clipped to [1e-4, 1].
_AUTO_LAM_SCALE = 3e-3
_AUTO_LAM_RANGE = (1e-4, 1.0)
# Threads: a step smaller than this many multiply-adds (min(n, 3·B)·d²) runs on ONE thread —
# splitting such small ops costs more in synchronisation than it gains (a 2k-triplet, 64-d fit
# took 455 s with 2 threads on the loaded 2-core machine, benchmarks/bench_transform_default.py);
# larger steps (THINGS-size: 1854·384² ≈ 2.7e8) use every thread the user allows.
_AUTO_THREADS_MIN_WORK = 5e7


@dataclass(frozen=True)
class FitSettings:
    """The optimisation settings a fit runs with, automatic ones (``None``) resolved.

    batch_size : triplets per step; lr : Adam learning rate; lam : λ; max_epochs : epoch limit;
    patience : epochs without improvement before stopping; tol : minimum improvement of the
    monitored loss (nats) that resets the patience; n_threads : torch threads (None = torch's
    setting); auto : the names that were chosen automatically.
    """

    batch_size: int
    lr: float
    lam: float
    max_epochs: int
    patience: int
    tol: float
    n_threads: int | None
    auto: tuple[str, ...] = ()


#: Named parameter sets for :class:`AffineTransform` (``AffineTransform(**PRESETS[name])``).
#: ``"glocal"``: gLocal's probing settings exactly (method.md §2.7: batch 256, Adam lr 1e-3,
#: ≤ 100 epochs, patience 15, min_delta 1e-4; λ = 0.1 of the ``final`` script) — about 20
#: minutes for THINGS-size problems on one CPU thread. ``"auto"``: every optimisation setting
#: chosen from the problem size (the estimator's default).
PRESETS: dict[str, dict[str, object]] = {
    "glocal": {
        "batch_size": 256,
        "lr": 1e-3,
        "lam": 0.1,
        "max_epochs": 100,
        "patience": 15,
        "tol": 1e-4,
    },
    "auto": {
        "batch_size": None,
        "lr": None,
        "lam": None,
        "max_epochs": 100,
        "patience": None,
        "tol": None,
    },
}


def _use_gram(n: int, d: int, n_pairs: int) -> bool:
    """Whether ``n_pairs`` similarities of ``n`` items are cheaper to read off the Gram matrix."""
    return n <= _GRAM_MAX_ITEMS and n_pairs * _GATHER_COST * math.sqrt(d) > n * n


def _gather_dots(Z: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """(m,) dot products ``Z[ia_m] · Z[ib_m]``, gathered in cache-sized chunks (no autograd)."""
    out = torch.empty(ia.shape[0], dtype=Z.dtype)
    for s in range(0, ia.shape[0], _GATHER_CHUNK):
        e = s + _GATHER_CHUNK
        # index_select + in-place multiply: about 2x faster than advanced indexing
        rows = Z.index_select(0, ia[s:e]).mul_(Z.index_select(0, ib[s:e]))
        torch.sum(rows, dim=1, out=out[s:e])
    return out


def _pair_index(tr: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ids of the k pairs of triplet rows ``tr`` (B, 3), pair-major: (k·B,) each.

    Pair c of row r is at ``c·B + r``; the pairs are (0, 1), (0, 2), (1, 2) (the logit order).
    """
    i, j, o = tr.unbind(1)
    return torch.cat([i, i, j][:k]), torch.cat([j, o, o][:k])


class _PairSims(torch.autograd.Function):
    """``s_m = z[ia_m] · z[ib_m]`` for index pairs into the rows of Z (n, d), with a cheap backward.

    Forward: read off the Gram matrix ZZᵀ (``gram=True``; n²·d at BLAS speed) or gathered rows
    (chunked; ∝ m·d memory-bound reads), see :func:`_use_gram`. Backward:
    ∂L/∂Z = (S + Sᵀ) Z with S the sparse (n, n) matrix holding ∂L/∂s_m at (ia_m, ib_m) — 2·m·d
    multiply-adds (for narrow Z: the same sum by scattering gathered rows). Autograd would form
    a dense (n, n) gradient and two n²·d matmuls (Gram) or go through its slow indexing
    backward (gather), both several times slower.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        Z: torch.Tensor,
        ia: torch.Tensor,
        ib: torch.Tensor,
        gram: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(Z, ia, ib)
        n = Z.shape[0]
        if gram:
            return (Z @ Z.T).reshape(-1)[ia * n + ib]
        return _gather_dots(Z, ia, ib)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor
    ) -> tuple[torch.Tensor, None, None, None]:
        Z, ia, ib = ctx.saved_tensors  # type: ignore[attr-defined]
        n, d = Z.shape
        if d < _SPARSE_MIN_DIM:
            # narrow rows: scattering the gathered rows directly beats building S
            dZ = torch.zeros_like(Z)
            for s in range(0, ia.shape[0], _GATHER_CHUNK):
                a, b, gs = (
                    ia[s : s + _GATHER_CHUNK],
                    ib[s : s + _GATHER_CHUNK],
                    g[s : s + _GATHER_CHUNK, None],
                )
                dZ.index_add_(0, a, Z.index_select(0, b).mul_(gs))
                dZ.index_add_(0, b, Z.index_select(0, a).mul_(gs))
            return dZ, None, None, None
        # S + Sᵀ as one coalesced COO matrix: sort the flat keys (stable, so the sums of
        # repeated pairs are deterministic) and add up duplicates.
        keys = torch.cat([ia * n + ib, ib * n + ia])
        if n * n < 2**31:
            keys = keys.to(torch.int32)  # sorts faster
        keys, order = torch.sort(keys, stable=True)
        uniq, inv = torch.unique_consecutive(keys, return_inverse=True)
        uniq = uniq.to(torch.int64)
        vals = torch.zeros(uniq.shape[0], dtype=g.dtype).index_add_(
            0, inv, torch.cat([g, g])[order]
        )
        S = torch.sparse_coo_tensor(
            torch.stack([uniq // n, uniq % n]),
            vals,
            (n, n),
            check_invariants=False,
            is_coalesced=True,
        )
        return torch.sparse.mm(S, Z), None, None, None


class _Objective:
    """The fit's loss as a function of the parameters (W, b, log T), with its data.

    Built once per fit by :class:`_FitRun`; the training loop only asks it for the loss of a
    batch (:meth:`step_loss`) and of the validation rows (:meth:`eval_loss`).

    Xs : (n, d) float32 standardised features; trip : (t, 3) int64 rows; k : logits per row
    (3 oddone, 2 twoafc); targets : (t, k) float64 soft targets or None (hard); log_t0 : the
    calibrated initial log temperature; pool : (m, d) float features of the local term or None.
    """

    def __init__(
        self,
        est: AffineTransform,
        Xs: np.ndarray,
        trip: np.ndarray,
        k: int,
        targets: np.ndarray | None,
        log_t0: float,
        pool: np.ndarray | None,
        mu: float | np.ndarray,
        sd: float | np.ndarray,
        gen: torch.Generator,
    ) -> None:
        n, d = Xs.shape
        self.n, self.d, self.k = n, d, k
        self.cosine = est.similarity == "cosine"
        self.alpha, self.tau = float(est.alpha), float(est.tau)
        self.pool_batch_size = int(est.pool_batch_size)
        self.gen = gen
        self.Xt = torch.from_numpy(Xs)
        self.trip_t = torch.from_numpy(trip)
        # targets stored (k, t): the losses work on (k, B) logits, see loss_of
        self.tg_t = (
            torch.from_numpy(np.ascontiguousarray(targets.T, dtype=np.float32))
            if targets is not None
            else None
        )
        # Σ_c p log p of each row: the constant part of KL(p ‖ q), computed once, not per step.
        self.neg_ent_t = (
            torch.from_numpy(
                (targets * np.log(np.where(targets > 0, targets, 1.0))).sum(1).astype(np.float32)
            )
            if targets is not None
            else None
        )
        self.W = torch.eye(d, dtype=torch.float32, requires_grad=True)
        self.b = torch.zeros(d, dtype=torch.float32, requires_grad=True)
        self.log_t = torch.tensor(log_t0, dtype=torch.float32, requires_grad=True)
        self.eye = torch.eye(d, dtype=torch.float32)
        self.use_local = pool is not None
        if pool is not None:
            self.pool_std = torch.from_numpy(((pool - mu) / sd).astype(np.float32))
            # Teacher = cosine of the RAW pool features (cosine ignores the scale σ but not the
            # shift μ, and the local term is meant to preserve the original geometry).
            self.pool_unit = F.normalize(torch.from_numpy(pool.astype(np.float32)), dim=1)

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.W, self.b, self.log_t]

    def pair_dots(self, z0: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """(k, B) similarities [S01, S02(, S12)] of (B, d) rows (already normalised)."""
        cols = [(z0 * z1).sum(-1), (z0 * z2).sum(-1)]
        if self.k == 3:
            cols.append((z1 * z2).sum(-1))
        return torch.stack(cols, dim=0)

    def all_items(self) -> torch.Tensor:
        """(n, d) transformed (and, for cosine, unit-length) features of every item."""
        Z = torch.addmm(self.b, self.Xt, self.W)
        return F.normalize(Z, dim=1) if self.cosine else Z

    def batch_sims(self, tr: torch.Tensor) -> torch.Tensor:
        """(k, B) similarities of triplet rows ``tr`` (B, 3), differentiable.

        Transforms whichever is fewer: the 3·B rows of the batch (gLocal) or all n items
        (module docstring, "Speed").
        """
        B, n, k = tr.shape[0], self.n, self.k
        if n < 3 * B:
            ia, ib = _pair_index(tr, k)
            sims = _PairSims.apply(self.all_items(), ia, ib, _use_gram(n, self.d, k * B))
            return sims.view(k, B)
        z = self.Xt[tr] @ self.W + self.b  # (B, 3, d): only the batch's items are transformed
        if self.cosine:
            z = F.normalize(z, dim=-1)
        return self.pair_dots(z[:, 0], z[:, 1], z[:, 2])

    def loss_of(self, sims: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Mean loss of (k, B) similarities of triplet rows ``rows``.

        Logits are pair-major (k, B), not (B, k): a softmax over the short first axis runs
        vectorised along B, about 6x faster than over a last axis of length 3.
        """
        logq = F.log_softmax(sims * self.log_t.exp(), dim=0)
        if self.tg_t is None or self.neg_ent_t is None:
            return -logq[0].mean()
        return (self.neg_ent_t[rows] - (self.tg_t[:, rows] * logq).sum(0)).mean()

    def penalty(self) -> torch.Tensor:
        """R (without λ): ‖W − mean(diag W)·I‖²_F (cosine: of W rescaled to the identity's norm)."""
        W = self.W
        # cosine: the scale of W is free, so measure the shape of W at the identity's norm
        Wn = W * (math.sqrt(self.d) / W.norm()) if self.cosine else W
        return ((Wn - Wn.diagonal().mean() * self.eye) ** 2).sum()

    def penalty_scale(self) -> torch.Tensor | float:
        """dot: T (R acts on the effective map √T·W); cosine: 1 (T is not a scale of W there)."""
        return 1.0 if self.cosine else self.log_t.exp()

    def local_loss(self) -> torch.Tensor:
        """gLocal's local-structure term on a random batch of pool rows (scalar tensor)."""
        m = self.pool_std.shape[0]
        bsz = min(self.pool_batch_size, m)
        idx = torch.randperm(m, generator=self.gen)[:bsz]
        diag = torch.eye(bsz, dtype=torch.bool)
        teacher = (self.pool_unit[idx] @ self.pool_unit[idx].T) / self.tau
        zs = F.normalize(self.pool_std[idx] @ self.W + self.b, dim=1)
        student = (zs @ zs.T) / self.tau
        p = F.softmax(teacher.masked_fill(diag, -math.inf), dim=1)
        logq = F.log_softmax(student.masked_fill(diag, -math.inf), dim=1)
        # the diagonal has p = 0 and log q = −inf; zero it to avoid 0·(−inf) = NaN
        return -(p * logq.masked_fill(diag, 0.0)).sum(1).mean()

    def step_loss(
        self, rows: torch.Tensor, lam: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(total loss to minimise, human-term loss, local-term loss or None) of a batch."""
        glob = self.loss_of(self.batch_sims(self.trip_t[rows]), rows)
        loss, loc = glob, None
        if self.use_local:
            loc = self.local_loss()
            loss = (1 - self.alpha) * glob + self.alpha * loc
        if lam > 0:
            loss = loss + lam * self.penalty_scale() * self.penalty()
        return loss, glob, loc

    def eval_loss(self, rows: np.ndarray) -> float:
        """Mean human-term loss of the rows ``rows`` (int64 indices), no gradient."""
        n, d, k = self.n, self.d, self.k
        trip_t = self.trip_t
        total = 0.0
        with torch.no_grad():
            if n < 3 * rows.size:  # transform all items once (n·d²), then k·d per row
                Z = self.all_items()
                for s in range(0, rows.size, _EVAL_CHUNK):
                    r = torch.from_numpy(rows[s : s + _EVAL_CHUNK])
                    sims = _gather_dots(Z, *_pair_index(trip_t[r], k)).view(k, -1)
                    total += float(self.loss_of(sims, r)) * r.numel()
                return total / rows.size
            # few rows of many items: transform only theirs, (chunk, 3, d) at a time
            chunk = max(1, _EVAL_FLOATS // (3 * d))
            for s in range(0, rows.size, chunk):
                r = torch.from_numpy(rows[s : s + chunk])
                z = self.Xt[trip_t[r]] @ self.W + self.b
                if self.cosine:
                    z = F.normalize(z, dim=-1)
                total += (
                    float(self.loss_of(self.pair_dots(z[:, 0], z[:, 1], z[:, 2]), r)) * r.numel()
                )
        return total / rows.size


@dataclass(frozen=True)
class FitEpoch:
    """Per-epoch report yielded by :meth:`AffineTransform.iter_fit`.

    epoch : 1-based epoch number.
    train_loss : mean human-term loss over the epoch's training batches.
    val_loss : human-term loss on the validation rows after the epoch (NaN without validation).
    local_loss : mean local-structure loss over the epoch (NaN when ``alpha == 0``).
    penalty : regulariser value R (without λ) at the end of the epoch.
    improved : this epoch set a new best monitored loss (its weights are kept so far).
    max_epochs : the fit's epoch limit after resolving automatic settings (for progress).
    """

    epoch: int
    train_loss: float
    val_loss: float
    local_loss: float
    penalty: float
    improved: bool
    max_epochs: int = 0


@dataclass(frozen=True)
class _FitData:
    """The checked inputs of :meth:`AffineTransform.iter_fit`.

    X : (n, d) float64 features; trip : (t, 3) int64 rows; kind : ``"oddone"`` or
    ``"twoafc"``; k : logits per row (3 or 2); tg : (t, k) float64 soft targets with rows
    summing to 1, or None (hard objective); pool : (m, d) float64 local-term features, or None
    when ``alpha == 0``.
    """

    X: np.ndarray
    trip: np.ndarray
    kind: TripletKind
    k: int
    tg: np.ndarray | None
    pool: np.ndarray | None

    @classmethod
    def checked(
        cls,
        est: AffineTransform,
        X: np.ndarray,
        triplets: np.ndarray,
        kind: TripletKind,
        targets: np.ndarray | None,
        pool: np.ndarray | None,
    ) -> _FitData:
        """Validate ``est``'s parameters and the data (raising :class:`InputError`)."""
        est._check_params()
        if kind not in ("oddone", "twoafc"):
            raise InputError(f"kind must be 'oddone' or 'twoafc', got {kind!r}")
        X = check_features(X, name="X")
        n, d = X.shape
        trip = check_triplets(triplets, n)
        k = 3 if kind == "oddone" else 2
        tg = est._check_targets(targets, trip.shape[0], k)
        if est.objective == "soft" and tg is None:
            raise InputError(
                "objective='soft' needs targets (per-row human choice probabilities); "
                "choice_distributions() computes them from repeated judgments"
            )
        if est.objective == "hard" and tg is not None:
            raise InputError("targets are only used by objective='soft'", field="targets")
        if est.alpha > 0:
            if pool is None:
                raise InputError("alpha > 0 needs pool features for the local term", field="pool")
            pool = check_features(pool, name="pool")
            if pool.shape[1] != d or pool.shape[0] < 3:
                raise InputError(
                    f"must be (m >= 3, {d}) to match X, got {pool.shape}", field="pool"
                )
        elif pool is not None:
            logger.info("pool features ignored: alpha == 0 switches the local term off")
            pool = None
        return cls(X, trip, kind, k, tg, pool)


class _FitRun:
    """One fit of an :class:`AffineTransform`: its :class:`_Objective`, Adam optimiser, early
    stopping and history. :meth:`AffineTransform.iter_fit` runs :meth:`epoch` in
    :func:`~alignet_engine.align.fitloop.run_epochs`.

    Building it does everything before the first epoch, in this order (the random draws depend
    on it): standardise, split off the validation rows, seed the torch stream, resolve the
    settings, calibrate the temperature, measure the starting loss.

    Attributes
    ----------
    data : the checked inputs; mu, sd : the standardisation; val_mask : (t,) bool; train_rows,
    val_rows : int64 row indices; cfg : the resolved :class:`FitSettings` (``tol`` final);
    obj : the objective; init_loss : monitored loss of the calibrated start; stopping : the
    :class:`~alignet_engine.align.fitloop.EarlyStopping` state; history : ``history_`` so far.
    """

    def __init__(self, est: AffineTransform, data: _FitData) -> None:
        self.data = data
        self.mu, self.sd = est._standardisation(data.X)
        Xs = ((data.X - self.mu) / self.sd).astype(np.float32)
        n, d = data.X.shape

        rng = np.random.default_rng(est.random_state)
        self.val_mask = est._split(data.trip, rng)
        self.train_rows = np.flatnonzero(~self.val_mask)
        self.val_rows = np.flatnonzero(self.val_mask)
        self.gen = torch_generator(rng)
        cfg = est.resolved_settings(self.train_rows.size, n, d)

        with torch_threads(cfg.n_threads):
            Z0 = torch.from_numpy(Xs)
            Z0 = F.normalize(Z0, dim=1) if est.similarity == "cosine" else Z0
            log_t0 = est._init_log_temperature(
                Z0, torch.from_numpy(data.trip), data.k, data.tg, self.train_rows
            )
        self.obj = _Objective(
            est, Xs, data.trip, data.k, data.tg, log_t0, data.pool, self.mu, self.sd, self.gen
        )
        self.opt = torch.optim.Adam(self.obj.params, lr=cfg.lr)

        self.monitor_val = self.val_rows.size > 0
        with torch_threads(cfg.n_threads):
            self.init_loss = self.obj.eval_loss(
                self.val_rows if self.monitor_val else self.train_rows
            )
        if "tol" in cfg.auto:
            cfg = dataclasses.replace(cfg, tol=_AUTO_REL_TOL * abs(self.init_loss))
        self.cfg = cfg
        self.stopping = EarlyStopping(self.init_loss, self.obj.params, cfg.patience, cfg.tol)
        self.history = new_history("train_loss", "val_loss", "local_loss", "penalty")
        self.train_t = torch.from_numpy(self.train_rows)

    def train_pass(self) -> tuple[float, float]:
        """One pass of Adam steps over the training rows in a random order, batch by batch.

        Returns (mean human-term loss per training row, mean local-term loss per step or NaN
        without the local term), both nats.
        """
        obj, opt, params, lam = self.obj, self.opt, self.obj.params, self.cfg.lam
        tr_sum, loc_sum, n_steps = 0.0, 0.0, 0
        for idx in shuffled_batches(self.train_t.numel(), self.cfg.batch_size, self.gen):
            rows = self.train_t[idx]
            loss, glob, loc = obj.step_loss(rows, lam)
            if loc is not None:
                loc_sum += float(loc.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            tr_sum += float(glob.detach()) * rows.numel()
            n_steps += 1
        local_mean = loc_sum / n_steps if obj.use_local else float("nan")
        return tr_sum / self.train_t.numel(), local_mean

    def epoch(self, epoch: int) -> FitEpoch:
        """Train one pass, validate, update early stopping and the history: epoch ``epoch``."""
        cfg, obj = self.cfg, self.obj
        with torch_threads(cfg.n_threads):
            train_loss, local_mean = self.train_pass()
            val_loss = obj.eval_loss(self.val_rows) if self.monitor_val else float("nan")
            with torch.no_grad():
                pen = float(obj.penalty())
        monitored = val_loss if self.monitor_val else train_loss
        improved = self.stopping.update(epoch, monitored, obj.params)
        record = FitEpoch(epoch, train_loss, val_loss, local_mean, pen, improved, cfg.max_epochs)
        append_history(self.history, record)
        logger.debug(
            "epoch %d train %.5f val %.5f local %.5f pen %.3g",
            epoch,
            train_loss,
            val_loss,
            local_mean,
            pen,
        )
        return record


class AffineTransform(BaseEstimator):
    """Affine map of frozen features fitted to human triplet judgments.

    Parameters
    ----------
    objective : ``"hard"`` (gLocal triplet cross-entropy on each row's answer) or ``"soft"``
        (KL from per-row human choice probabilities ``targets``, uncertainty distillation).
    lam : λ, weight of ‖W − mean(diag W)·I‖²_F, applied to the effective map √T·W, >= 0;
        ``None`` (default): from the problem size, see :meth:`resolved_settings` (the transform
        stage cross-validates it instead when the problem is small enough).
    alpha : weight α of gLocal's local-structure term in [0, 1); 0 switches it off. Needs
        ``pool`` features in :meth:`fit` when > 0.
    tau : temperature τ of the local term's softmaxes over cosine similarities.
    lr : Adam learning rate; ``None`` (default): from the batch size.
    max_epochs : upper bound on passes over the training triplets.
    batch_size : triplets per optimisation step; ``None`` (default): from the number of
        training rows (large problems get large batches, whose steps cost little more).
    pool_batch_size : pool rows per step for the local term.
    patience : stop after this many epochs without an improvement of the monitored loss by more
        than ``tol``; the best weights are restored. ``None`` (default): from the steps per
        epoch.
    tol : minimum improvement that resets the patience counter; ``None`` (default): 1e-3 of
        the starting loss. :data:`PRESETS` ``["glocal"]`` gives gLocal's exact settings.
    val_fraction : fraction of the judgments held out for early stopping, in [0, 1). With 0 the
        (noisier) training loss is monitored instead.
    validation : ``"triplets"`` — hold out a random ``val_fraction`` of the UNIQUE unordered
        triplets (repeated responses to one triplet never straddle the split); ``"objects"`` —
        hold out a random set of objects sized so that about ``val_fraction`` of the rows touch
        one of them; those rows validate, the rest (which never contain a held-out object)
        train. No row is discarded either way.
    standardize : ``"scalar"`` (one μ, σ over the whole matrix, as gLocal), ``"perdim"`` (a
        μ, σ per feature dimension; constant dimensions get σ = 1) or ``"none"``.
    similarity : ``"dot"`` (dot product of transformed features, gLocal) or ``"cosine"``
        (cosine of transformed features); the logits are ``temperature_`` times it. See the
        module docstring, "Cosine similarity".
    n_threads : torch intra-op threads while fitting (restored between epochs), or ``None``
        (default) to use torch's setting — all the threads the user allows (the app's
        preference, the CLI's ``--threads``). Small batches (256) gain little from threads;
        the automatic large batches of big problems do. The setting is process-wide while an
        epoch runs.
    random_state : seed for the split, the batch order and the pool batches.

    Attributes
    ----------
    W_ : (d, d) float32 weights (z = x̃ W_ + b_), temperature NOT included.
    b_ : (d,) float32 bias, temperature NOT included.
    mean_, std_ : float (``standardize="scalar"``; 0 and 1 for ``"none"``) or (d,) float64
        (``"perdim"``), the standardisation ``(x − mean_) / std_``.
    temperature_ : float, the learned T > 0: logits = temperature_ · S(z_a, z_b).
    n_features_in_ : int, d.
    history_ : dict of per-epoch lists ``"train_loss"``, ``"val_loss"``, ``"local_loss"``,
        ``"penalty"``.
    init_loss_ : float, monitored loss of the calibrated zero-shot start.
    n_epochs_ : int, epochs run; ``best_epoch_`` : int, epoch whose weights were kept (0 = the
        zero-shot start).
    val_mask_ : (t,) bool, rows of the fitted ``triplets`` used for validation.
    """

    def __init__(
        self,
        objective: Literal["hard", "soft"] = "hard",
        *,
        lam: float | None = None,
        alpha: float = 0.0,
        tau: float = 0.1,
        lr: float | None = None,
        max_epochs: int = 100,
        batch_size: int | None = None,
        pool_batch_size: int = 1024,
        patience: int | None = None,
        tol: float | None = None,
        val_fraction: float = 0.1,
        validation: Literal["triplets", "objects"] = "triplets",
        standardize: Literal["scalar", "perdim", "none"] = "scalar",
        similarity: Literal["dot", "cosine"] = "dot",
        n_threads: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.objective = objective
        self.lam = lam
        self.alpha = alpha
        self.tau = tau
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.pool_batch_size = pool_batch_size
        self.patience = patience
        self.tol = tol
        self.val_fraction = val_fraction
        self.validation = validation
        self.standardize = standardize
        self.similarity = similarity
        self.n_threads = n_threads
        self.random_state = random_state

    # ----------------------------------------------------------------------------------------
    # validation
    # ----------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.objective not in ("hard", "soft"):
            raise InputError(f"objective must be 'hard' or 'soft', got {self.objective!r}")
        if self.standardize not in ("scalar", "perdim", "none"):
            raise InputError(
                f"standardize must be 'scalar', 'perdim' or 'none', got {self.standardize!r}"
            )
        if self.similarity not in ("dot", "cosine"):
            raise InputError(f"similarity must be 'dot' or 'cosine', got {self.similarity!r}")
        if self.validation not in ("triplets", "objects"):
            raise InputError(f"validation must be 'triplets' or 'objects', got {self.validation!r}")
        # (name, value, ok); None = automatic for the optional ones
        checks = [
            ("lam", self.lam, self.lam is None or self.lam >= 0),
            ("alpha", self.alpha, 0 <= self.alpha < 1),
            ("tau", self.tau, self.tau > 0),
            ("lr", self.lr, self.lr is None or self.lr > 0),
            ("max_epochs", self.max_epochs, int(self.max_epochs) >= 1),
            ("batch_size", self.batch_size, self.batch_size is None or int(self.batch_size) >= 1),
            ("pool_batch_size", self.pool_batch_size, int(self.pool_batch_size) >= 3),
            ("patience", self.patience, self.patience is None or int(self.patience) >= 1),
            ("n_threads", self.n_threads, self.n_threads is None or int(self.n_threads) >= 1),
            ("tol", self.tol, self.tol is None or self.tol >= 0),
            ("val_fraction", self.val_fraction, 0 <= self.val_fraction < 1),
        ]
        check_param_table(checks)

    def resolved_settings(self, n_train: int, n_items: int, n_dims: int) -> FitSettings:
        """The settings a fit on ``n_train`` training rows of (``n_items``, ``n_dims``)
        features uses: explicit parameters as given, ``None`` ones from the problem size.

        * ``batch_size``: about 32 steps per epoch, a power of two in [256, 8192];
        * ``lr``: 1e-3·√(batch/256), at most 1e-2;
        * ``patience``: epochs covering about 100 steps, in [2, 15];
        * ``tol``: 0 here; :meth:`iter_fit` sets it to 1e-3 × the starting loss;
        * ``lam``: 3e-3·d²/t in [1e-4, 1] (the penalty has d² entries against t rows);
        * ``n_threads``: torch's current setting (what the app or ``--threads`` allows), but
          one thread when a step is too small to gain from more (< 5e7 multiply-adds).

        The constants and their reasons are at the top of this module.
        """
        t = max(int(n_train), 1)
        auto: list[str] = []
        bs = self.batch_size
        if bs is None:
            lo, hi = _AUTO_BATCH_RANGE
            bs = int(
                min(hi, max(lo, 2 ** math.floor(math.log2(max(t / _AUTO_STEPS_PER_EPOCH, 1)))))
            )
            auto.append("batch_size")
        lr = self.lr
        if lr is None:
            lr = min(_AUTO_LR_MAX, _AUTO_LR_BASE * math.sqrt(bs / _AUTO_BATCH_RANGE[0]))
            auto.append("lr")
        patience = self.patience
        if patience is None:
            steps = max(1, math.ceil(t / bs))
            lo, hi = _AUTO_PATIENCE_RANGE
            patience = int(min(hi, max(lo, math.ceil(_AUTO_PATIENCE_STEPS / steps))))
            auto.append("patience")
        tol = self.tol
        if tol is None:
            tol = 0.0
            auto.append("tol")
        lam = self.lam
        if lam is None:
            lam_lo, lam_hi = _AUTO_LAM_RANGE
            lam = float(min(lam_hi, max(lam_lo, _AUTO_LAM_SCALE * n_dims**2 / t)))
            auto.append("lam")
        threads = None if self.n_threads is None else int(self.n_threads)
        if threads is None and min(n_items, 3 * bs) * n_dims**2 < _AUTO_THREADS_MIN_WORK:
            threads = 1
            auto.append("n_threads")
        return FitSettings(
            batch_size=int(bs),
            lr=float(lr),
            lam=float(lam),
            max_epochs=int(self.max_epochs),
            patience=int(patience),
            tol=float(tol),
            n_threads=threads,
            auto=tuple(auto),
        )

    @staticmethod
    def _check_targets(targets: np.ndarray | None, t: int, k: int) -> np.ndarray | None:
        if targets is None:
            return None
        tg = np.asarray(targets, dtype=np.float64)
        if tg.shape != (t, k):
            raise InputError(
                f"must have shape ({t}, {k}) — one probability per logit of each row — got "
                f"{tg.shape}",
                field="targets",
            )
        if not np.isfinite(tg).all() or (tg < 0).any():
            raise InputError("must be finite, non-negative probabilities", field="targets")
        sums = tg.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            row = int(np.argmax(np.abs(sums - 1.0)))
            raise InputError(
                f"rows must sum to 1, 0-based row {row} sums to {sums[row]:.4f}", field="targets"
            )
        return tg / sums[:, None]

    def _split(self, trip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Boolean (t,) mask of validation rows (see ``validation``)."""
        t = trip.shape[0]
        if self.val_fraction == 0:
            return np.zeros(t, dtype=bool)
        if self.validation == "triplets":
            _, inv = np.unique(np.sort(trip, axis=1), axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            u = int(inv.max()) + 1
            n_val = round(self.val_fraction * u)
            if n_val < 1 or n_val >= u:
                raise InputError(
                    f"cannot hold out val_fraction={self.val_fraction} of {u} unique triplets; "
                    "give more triplets or set val_fraction=0"
                )
            val_groups = np.zeros(u, dtype=bool)
            val_groups[rng.permutation(u)[:n_val]] = True
            return val_groups[inv]
        # "objects": a row touches a held-out object with prob 1 − (1 − f)^3 under uniform
        # sampling, so f = 1 − (1 − val_fraction)^(1/3) makes about val_fraction of rows validate.
        objects = np.unique(trip)
        f = 1.0 - (1.0 - self.val_fraction) ** (1.0 / 3.0)
        n_obj = max(1, round(f * objects.size))
        held = np.zeros(int(objects.max()) + 1, dtype=bool)
        held[rng.choice(objects, size=n_obj, replace=False)] = True
        mask = held[trip].any(axis=1)
        if mask.all() or not mask.any():
            raise InputError(
                "object-disjoint validation left no training or no validation rows; "
                "use validation='triplets' or change val_fraction"
            )
        return mask

    # ----------------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------------
    def iter_fit(
        self,
        X: np.ndarray,
        triplets: np.ndarray,
        *,
        kind: TripletKind = "oddone",
        targets: np.ndarray | None = None,
        pool: np.ndarray | None = None,
    ) -> Generator[FitEpoch, None, AffineTransform]:
        """Fit epoch by epoch, yielding a :class:`FitEpoch` after each (for progress/cancel).

        The fitted attributes are set only when the generator finishes; a consumer that stops
        iterating early leaves the estimator unfitted. As with any generator, the input checks
        run at the first ``next()``, not at the call.

        Parameters
        ----------
        X : (n, d) float features of the judged items (row = 0-based item id).
        triplets : (t, 3) int rows, ``kind="oddone"``: ``(i, j, odd)`` (odd one LAST);
            ``kind="twoafc"``: ``(anchor, chosen, other)``.
        kind : judgment kind, decides the logits (see the module docstring).
        targets : ``objective="soft"`` only: (t, 3) (oddone) or (t, 2) (twoafc) float
            probabilities in the logit order ``[S01, S02, S12]`` / ``[S_ac, S_ao]``.
        pool : (m, d) float, unlabeled features for the local term (``alpha > 0`` only; m >= 3).

        Returns
        -------
        ``self`` (as the generator's return value).
        """
        run = _FitRun(self, _FitData.checked(self, X, triplets, kind, targets, pool))
        n_epochs = yield from run_epochs(run.cfg.max_epochs, run.epoch, lambda _: run.stopping.stop)
        self._store_fit(run, n_epochs)
        return self

    fit = fit_from_iter(iter_fit)

    def _store_fit(self, run: _FitRun, n_epochs: int) -> None:
        """Set the fitted attributes from a finished run (its best state) and log a summary."""
        W_best, b_best, log_t_best = (p.numpy().astype(np.float64) for p in run.stopping.best_state)
        temperature = float(np.exp(log_t_best))
        self.W_ = W_best.astype(np.float32)
        self.b_ = b_best.astype(np.float32)
        self.mean_ = run.mu
        self.std_ = run.sd
        self.temperature_ = temperature
        self.n_features_in_ = run.data.X.shape[1]
        self.history_ = run.history
        self.init_loss_ = run.init_loss
        self.n_epochs_ = n_epochs
        self.best_epoch_ = run.stopping.best_epoch
        self.val_mask_ = run.val_mask
        self.settings_ = run.cfg
        logger.info(
            "affine transform (%s, %s, %s): %d epochs, best epoch %d, monitored loss %.4f -> "
            "%.4f, T = %.4g; %s",
            self.objective,
            run.data.kind,
            self.similarity,
            n_epochs,
            run.stopping.best_epoch,
            run.init_loss,
            run.stopping.best,
            temperature,
            run.cfg,
        )

    def _standardisation(self, X: np.ndarray) -> tuple[float | np.ndarray, float | np.ndarray]:
        """μ, σ of ``standardize`` for the (n, d) finite features ``X``.

        Returns floats (``"scalar"``, ``"none"``) or (d,) float64 vectors (``"perdim"``, with
        σ = 1 for constant dimensions). Raises :class:`InputError` when every item has the same
        features (no triplet could be predicted) or, for ``"scalar"``, when all values are equal.
        """
        if X.shape[0] < 2 or not (X[0] != X).any():
            raise InputError(
                "every item has identical features, so no triplet can be told apart "
                "(constant or degenerate features?)",
                field="X",
            )
        if self.standardize == "scalar":
            mu, sd = float(X.mean(dtype=np.float64)), float(X.std(dtype=np.float64))
            if not sd > 0:
                raise InputError("all feature values are equal; cannot standardise", field="X")
            return mu, sd
        if self.standardize == "perdim":
            mu_v = X.mean(axis=0, dtype=np.float64)
            sd_v = X.std(axis=0, dtype=np.float64)
            # exactly constant columns (dead units); a tiny float std of such a column would
            # otherwise turn round-off into unit-variance noise
            const = np.ptp(X, axis=0) == 0
            if const.any():
                logger.warning(
                    "%d of %d feature dimensions are constant over the items; they get std 1 "
                    "(centred to 0, no information)",
                    int(const.sum()),
                    X.shape[1],
                )
                sd_v = np.where(const, 1.0, sd_v)
            return mu_v, sd_v
        return 0.0, 1.0

    @staticmethod
    def _init_log_temperature(
        Z: torch.Tensor,
        trip_t: torch.Tensor,
        k: int,
        tg: np.ndarray | None,
        train_rows: np.ndarray,
    ) -> float:
        """log T minimising the training loss of the untransformed features.

        Z : (n, d) float32 standardised features (unit rows for cosine); trip_t : (t, 3) int64;
        k : logits per row; tg : (t, k) soft targets or None; train_rows : rows to use.
        """
        rows = train_rows
        if rows.size > _INIT_ROWS:  # a 1-D search: a subsample is as good and much cheaper
            rows = np.random.default_rng(0).choice(rows, size=_INIT_ROWS, replace=False)
        r = torch.from_numpy(rows)
        s = _gather_dots(Z, *_pair_index(trip_t[r], k)).view(k, -1).T.double().numpy()
        p = tg[rows] if tg is not None else None
        scale = float(np.std(s))
        if not scale > 0:
            return 0.0

        def loss(log_t: float) -> float:
            logits = s * math.exp(log_t)
            logits = logits - logits.max(axis=1, keepdims=True)
            logq = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            if p is None:
                return float(-logq[:, 0].mean())
            return float(-(p * logq).sum(axis=1).mean())

        # Search a wide bracket around the scale that gives unit-variance logits; 1e-3 in log T
        # is far finer than the optimiser's first steps move it.
        centre = -math.log(scale)
        res = minimize_scalar(
            loss,
            bounds=(centre - 12.0, centre + 6.0),
            method="bounded",
            options={"xatol": 1e-3},
        )
        return float(res.x)

    # ----------------------------------------------------------------------------------------
    # applying
    # ----------------------------------------------------------------------------------------
    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the fitted map.

        Parameters
        ----------
        X : (n, d) float features, same d as in fit.

        Returns
        -------
        (n, d) float32 ``((X − mean_) / std_) @ W_ + b_`` (``mean_``/``std_`` scalars or (d,)
        vectors, elementwise); ``temperature_`` times the dot product (``similarity="dot"``) or
        the cosine (``"cosine"``) of two rows is the model's triplet logit for that pair.
        """
        check_is_fitted(self, "W_")
        X = check_features(X, name="X")
        if X.shape[1] != self.n_features_in_:
            raise InputError(
                f"has {X.shape[1]} features, the transform was fitted on {self.n_features_in_}",
                field="X",
            )
        mean = np.asarray(self.mean_, dtype=np.float32)
        std = np.asarray(self.std_, dtype=np.float32)
        Xs = (X.astype(np.float32) - mean) / std
        return (Xs @ self.W_ + self.b_).astype(np.float32, copy=False)

    def predict_log_proba(
        self, X: np.ndarray, triplets: np.ndarray, *, kind: TripletKind = "oddone"
    ) -> np.ndarray:
        """Log of :meth:`predict_proba`, computed stably (log-softmax of the logits).

        Returns
        -------
        (t, 3) or (t, 2) float64, columns as in :meth:`predict_proba`.
        """
        if kind not in ("oddone", "twoafc"):
            raise InputError(f"kind must be 'oddone' or 'twoafc', got {kind!r}")
        s = pair_similarities(self.transform(X), triplets, metric=self.similarity)
        if kind == "twoafc":
            s = s[:, :2]
        s = s * self.temperature_
        s = s - s.max(axis=1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True))

    def predict_proba(
        self, X: np.ndarray, triplets: np.ndarray, *, kind: TripletKind = "oddone"
    ) -> np.ndarray:
        """Model choice probabilities per row: softmax of ``temperature_ ·`` pair similarities.

        The similarity is the estimator's ``similarity`` (dot product or cosine of
        :meth:`transform` outputs), exactly the logits the fit optimised.

        Parameters
        ----------
        X : (n, d) float features.
        triplets : (t, 3) int rows, as in :meth:`iter_fit`.
        kind : ``"oddone"`` or ``"twoafc"``.

        Returns
        -------
        (t, 3) float64 for ``kind="oddone"`` (``[p(odd = col 2), p(odd = col 1), p(odd = col 0)]``)
        or (t, 2) for ``"twoafc"`` (``[p(col 1 chosen), p(col 2 chosen)]``).
        """
        return np.exp(self.predict_log_proba(X, triplets, kind=kind))

    def score(self, X: np.ndarray, triplets: np.ndarray, *, kind: TripletKind = "oddone") -> float:
        """Accuracy of the transformed features on ``triplets`` under ``similarity``; ties are
        wrong (a positive temperature does not change the argmax)."""
        from alignet_engine.align.metrics import oddone_correct, twoafc_correct

        if kind not in ("oddone", "twoafc"):
            raise InputError(f"kind must be 'oddone' or 'twoafc', got {kind!r}")
        fn = oddone_correct if kind == "oddone" else twoafc_correct
        return float(fn(self.transform(X), triplets, self.similarity).mean())

    # ----------------------------------------------------------------------------------------
    # storage
    # ----------------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted transform as arrays, in the gLocal/thingsvision ``transform.npz`` keys.

        Returns
        -------
        ``{"weights": (d, d) float32, "bias": (d,) float32, "mean": () or (d,) float64,
        "std": () or (d,) float64, "temperature": () float64, "similarity": () str}``.
        ``mean``/``std`` are 0-d for ``standardize="scalar"``/``"none"`` and (d,) for
        ``"perdim"``; thingsvision applies ``(x − mean) / std`` elementwise, so both load
        there. ``temperature`` and ``similarity`` (``"dot"`` or ``"cosine"``) are extra keys
        thingsvision ignores: they only define the logits, not the map.
        """
        check_is_fitted(self, "W_")
        return {
            "weights": np.asarray(self.W_, dtype=np.float32),
            "bias": np.asarray(self.b_, dtype=np.float32),
            "mean": np.asarray(self.mean_, dtype=np.float64),
            "std": np.asarray(self.std_, dtype=np.float64),
            "temperature": np.asarray(self.temperature_, dtype=np.float64),
            "similarity": np.asarray(self.similarity),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **params: object) -> AffineTransform:
        """A fitted transform from :meth:`to_arrays` output or a released gLocal transform.

        ``bias`` (zeros), ``temperature`` (1.0) and ``similarity`` (``"dot"``) are optional, as
        in gLocal's released files. ``mean``/``std`` may be scalars or (d,) vectors; a vector
        sets ``standardize="perdim"``. ``params`` are passed to the constructor; a
        ``similarity`` or ``standardize`` that contradicts the arrays raises
        :class:`InputError`. ``history_`` is empty.
        """
        for key in ("weights", "mean", "std"):
            if key not in arrays:
                raise InputError(f"missing key {key!r}", field=key)
        for key in ("weights", "bias", "mean", "std", "temperature"):
            # numbers stored as text ("0.5") are a broken file, not something to parse
            if key in arrays and np.asarray(arrays[key]).dtype.kind not in "iuf":
                raise InputError(
                    f"has dtype {np.asarray(arrays[key]).dtype}; it must hold numbers", field=key
                )
        W = np.asarray(arrays["weights"], dtype=np.float32)
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            raise InputError(f"must be a square (d, d) matrix, got {W.shape}", field="weights")
        d = W.shape[0]
        b = np.asarray(arrays["bias"], dtype=np.float32) if "bias" in arrays else np.zeros(d)
        if b.shape != (d,):
            raise InputError(f"must have shape ({d},), got {b.shape}", field="bias")

        def stat(key: str) -> float | np.ndarray:
            a = np.asarray(arrays[key], dtype=np.float64)
            if a.size == 1:
                return float(a.reshape(-1)[0])
            if a.shape != (d,):
                raise InputError(
                    f"must be a scalar or a ({d},) vector to match the weights, got shape "
                    f"{a.shape}",
                    field=key,
                )
            return a

        mean, std = stat("mean"), stat("std")
        temp_arr = np.asarray(arrays.get("temperature", 1.0), dtype=np.float64)
        if temp_arr.size != 1:
            raise InputError(f"must be a scalar, got shape {temp_arr.shape}", field="temperature")
        temp = float(temp_arr.reshape(-1)[0])
        finite = np.isfinite(W).all() and np.isfinite(b).all()
        if not (finite and np.isfinite(mean).all() and np.isfinite(std).all()):
            raise InputError("transform arrays contain NaN or inf")
        if not np.all(np.asarray(std) > 0):
            raise InputError(f"must be > 0, got min {np.min(std)}", field="std")
        if not (np.isfinite(temp) and temp > 0):
            raise InputError(f"must be a finite number > 0, got {temp}", field="temperature")

        stored_sim = "dot"
        if "similarity" in arrays:
            stored_sim = str(np.asarray(arrays["similarity"]).reshape(-1)[0])
            if stored_sim not in ("dot", "cosine"):
                raise InputError(
                    f"must be 'dot' or 'cosine', got {stored_sim!r}", field="similarity"
                )
        if params.setdefault("similarity", stored_sim) != stored_sim:
            raise InputError(
                f"the transform was fitted with similarity={stored_sim!r}, not "
                f"{params['similarity']!r}",
                field="similarity",
            )
        vector = isinstance(mean, np.ndarray) or isinstance(std, np.ndarray)
        if vector:
            mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (d,)).copy()
            std = np.broadcast_to(np.asarray(std, dtype=np.float64), (d,)).copy()
            if params.setdefault("standardize", "perdim") != "perdim":
                raise InputError(
                    f"per-dimension mean/std cannot be standardize={params['standardize']!r}",
                    field="standardize",
                )
        est = cls(**params)  # type: ignore[arg-type]
        est.W_ = W
        est.b_ = b.astype(np.float32)
        est.mean_ = mean
        est.std_ = std
        est.temperature_ = temp
        est.n_features_in_ = d
        est.history_ = {"train_loss": [], "val_loss": [], "local_loss": [], "penalty": []}
        est.n_epochs_ = 0
        return est

    def save_npz(self, path: str | Path) -> None:
        """Write ``transform.npz`` (gLocal layout, see :meth:`to_arrays`) atomically to ``path``
        (the exact path: no ``.npz`` is appended)."""
        arrays = self.to_arrays()
        with atomic_output(path) as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load_npz(cls, path: str | Path, **params: object) -> AffineTransform:
        """Read a transform written by :meth:`save_npz` or released by gLocal."""
        # the engine's npz reader: a non-zip, truncated, empty or pickled file, or a header
        # declaring more than the file holds, is an InputError naming the file and array
        p = check_file(path)
        with open_npz(p) as data:
            arrays = {key: npz_get(data, key, p) for key in data.files}
        try:
            return cls.from_arrays(arrays, **params)
        except InputError as exc:
            raise InputError(exc.reason, source=path, field=exc.field) from exc
