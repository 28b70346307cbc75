"""Affine alignment transform fitted to human triplet judgments (gLocal / uncertainty distillation).

Model (method.md §2, §3)::

    x̃ = (x − μ) / σ            scalar μ, σ over the whole feature matrix (gLocal), or none
    z = x̃ W + b                row-vector convention, W (d, d), b (d,)
    S_ab = z_a · z_b           similarity = dot product of transformed features
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
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from alignet_engine.align.metrics import check_features, check_triplets, pair_similarities
from alignet_engine.errors import InputError

logger = logging.getLogger(__name__)

TripletKind = Literal["oddone", "twoafc"]

# Rows per forward pass when evaluating (no gradient): bounds the (chunk, 3, d) temporary.
_EVAL_CHUNK = 65_536
# Rows used to calibrate the initial temperature (a 1-D search; more rows add nothing).
_INIT_ROWS = 200_000


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave the setting alone)."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class FitEpoch:
    """Per-epoch report yielded by :meth:`AffineTransform.iter_fit`.

    epoch : 1-based epoch number.
    train_loss : mean human-term loss over the epoch's training batches.
    val_loss : human-term loss on the validation rows after the epoch (NaN without validation).
    local_loss : mean local-structure loss over the epoch (NaN when ``alpha == 0``).
    penalty : regulariser value R (without λ) at the end of the epoch.
    improved : this epoch set a new best monitored loss (its weights are kept so far).
    """

    epoch: int
    train_loss: float
    val_loss: float
    local_loss: float
    penalty: float
    improved: bool


class AffineTransform(BaseEstimator):
    """Affine map of frozen features fitted to human triplet judgments.

    Parameters
    ----------
    objective : ``"hard"`` (gLocal triplet cross-entropy on each row's answer) or ``"soft"``
        (KL from per-row human choice probabilities ``targets``, uncertainty distillation).
    lam : λ, weight of ‖W − mean(diag W)·I‖²_F, applied to the effective map √T·W, >= 0.
    alpha : weight α of gLocal's local-structure term in [0, 1); 0 switches it off. Needs
        ``pool`` features in :meth:`fit` when > 0.
    tau : temperature τ of the local term's softmaxes over cosine similarities.
    lr : Adam learning rate.
    max_epochs : upper bound on passes over the training triplets.
    batch_size : triplets per optimisation step.
    pool_batch_size : pool rows per step for the local term.
    patience : stop after this many epochs without an improvement of the monitored loss by more
        than ``tol``; the best weights are restored.
    tol : minimum improvement that resets the patience counter.
    val_fraction : fraction of the judgments held out for early stopping, in [0, 1). With 0 the
        (noisier) training loss is monitored instead.
    validation : ``"triplets"`` — hold out a random ``val_fraction`` of the UNIQUE unordered
        triplets (repeated responses to one triplet never straddle the split); ``"objects"`` —
        hold out a random set of objects sized so that about ``val_fraction`` of the rows touch
        one of them; those rows validate, the rest (which never contain a held-out object)
        train. No row is discarded either way.
    standardize : ``"scalar"`` (one μ, σ over the whole matrix, as gLocal) or ``"none"``.
    n_threads : torch intra-op threads while fitting (restored between epochs), or ``None`` to
        keep torch's setting. The default 1 is deliberate: each step works on a small batch, and
        splitting such ops across threads costs more in synchronisation than it gains (measured
        5-20x slower with 2 threads on a busy 2-core machine). Note the setting is process-wide
        while an epoch runs.
    random_state : seed for the split, the batch order and the pool batches.

    Attributes
    ----------
    W_ : (d, d) float32 weights (z = x̃ W_ + b_), temperature NOT included.
    b_ : (d,) float32 bias, temperature NOT included.
    mean_, std_ : float, the scalar standardisation (0 and 1 for ``standardize="none"``).
    temperature_ : float, the learned T > 0: logits = temperature_ · (z_a · z_b).
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
        lam: float = 0.1,
        alpha: float = 0.0,
        tau: float = 0.1,
        lr: float = 1e-3,
        max_epochs: int = 100,
        batch_size: int = 256,
        pool_batch_size: int = 1024,
        patience: int = 15,
        tol: float = 1e-4,
        val_fraction: float = 0.1,
        validation: Literal["triplets", "objects"] = "triplets",
        standardize: Literal["scalar", "none"] = "scalar",
        n_threads: int | None = 1,
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
        self.n_threads = n_threads
        self.random_state = random_state

    # ----------------------------------------------------------------------------------------
    # validation
    # ----------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.objective not in ("hard", "soft"):
            raise InputError(f"objective must be 'hard' or 'soft', got {self.objective!r}")
        if self.standardize not in ("scalar", "none"):
            raise InputError(f"standardize must be 'scalar' or 'none', got {self.standardize!r}")
        if self.validation not in ("triplets", "objects"):
            raise InputError(f"validation must be 'triplets' or 'objects', got {self.validation!r}")
        checks = [
            ("lam", self.lam, self.lam >= 0),
            ("alpha", self.alpha, 0 <= self.alpha < 1),
            ("tau", self.tau, self.tau > 0),
            ("lr", self.lr, self.lr > 0),
            ("max_epochs", self.max_epochs, int(self.max_epochs) >= 1),
            ("batch_size", self.batch_size, int(self.batch_size) >= 1),
            ("pool_batch_size", self.pool_batch_size, int(self.pool_batch_size) >= 3),
            ("patience", self.patience, int(self.patience) >= 1),
            ("n_threads", self.n_threads or 1, int(self.n_threads or 1) >= 1),
            ("tol", self.tol, self.tol >= 0),
            ("val_fraction", self.val_fraction, 0 <= self.val_fraction < 1),
        ]
        for name, value, ok in checks:
            if not (ok and np.isfinite(value)):
                raise InputError(f"invalid {name}={value!r}", field=name)

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
    def fit(
        self,
        X: np.ndarray,
        triplets: np.ndarray,
        *,
        kind: TripletKind = "oddone",
        targets: np.ndarray | None = None,
        pool: np.ndarray | None = None,
    ) -> AffineTransform:
        """Fit the transform; see :meth:`iter_fit` for the parameters. Returns ``self``."""
        for _ in self.iter_fit(X, triplets, kind=kind, targets=targets, pool=pool):
            pass
        return self

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
        self._check_params()
        if kind not in ("oddone", "twoafc"):
            raise InputError(f"kind must be 'oddone' or 'twoafc', got {kind!r}")
        X = check_features(X, name="X")
        n, d = X.shape
        trip = check_triplets(triplets, n)
        k = 3 if kind == "oddone" else 2
        tg = self._check_targets(targets, trip.shape[0], k)
        if self.objective == "soft" and tg is None:
            raise InputError(
                "objective='soft' needs targets (per-row human choice probabilities); "
                "choice_distributions() computes them from repeated judgments"
            )
        if self.objective == "hard" and tg is not None:
            raise InputError("targets are only used by objective='soft'", field="targets")
        use_local = self.alpha > 0
        if use_local:
            if pool is None:
                raise InputError("alpha > 0 needs pool features for the local term", field="pool")
            pool_arr = check_features(pool, name="pool")
            if pool_arr.shape[1] != d or pool_arr.shape[0] < 3:
                raise InputError(
                    f"must be (m >= 3, {d}) to match X, got {pool_arr.shape}", field="pool"
                )
        elif pool is not None:
            logger.info("pool features ignored: alpha == 0 switches the local term off")

        if self.standardize == "scalar":
            mu, sd = float(X.mean(dtype=np.float64)), float(X.std(dtype=np.float64))
            if not sd > 0:
                raise InputError("all feature values are equal; cannot standardise", field="X")
        else:
            mu, sd = 0.0, 1.0
        Xs = ((X - mu) / sd).astype(np.float32)

        rng = np.random.default_rng(self.random_state)
        val_mask = self._split(trip, rng)
        train_rows = np.flatnonzero(~val_mask)
        val_rows = np.flatnonzero(val_mask)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))

        log_t0 = self._init_log_temperature(Xs, trip[train_rows], kind, tg, train_rows)

        Xt = torch.from_numpy(Xs)
        trip_t = torch.from_numpy(trip)
        tg_t = torch.from_numpy(tg.astype(np.float32)) if tg is not None else None
        W = torch.eye(d, dtype=torch.float32, requires_grad=True)
        b = torch.zeros(d, dtype=torch.float32, requires_grad=True)
        log_t = torch.tensor(log_t0, dtype=torch.float32, requires_grad=True)
        params = [W, b, log_t]
        opt = torch.optim.Adam(params, lr=float(self.lr))
        eye = torch.eye(d, dtype=torch.float32)

        if use_local:
            pool_std = torch.from_numpy(((pool_arr - mu) / sd).astype(np.float32))
            # Teacher = cosine of the RAW pool features (cosine ignores the scale σ but not the
            # shift μ, and the local term is meant to preserve the original geometry).
            pool_unit = F.normalize(torch.from_numpy(pool_arr.astype(np.float32)), dim=1)

        def data_loss(rows: torch.Tensor) -> torch.Tensor:
            z = Xt[trip_t[rows]] @ W + b  # (B, 3, d)
            s01 = (z[:, 0] * z[:, 1]).sum(-1)
            s02 = (z[:, 0] * z[:, 2]).sum(-1)
            cols = [s01, s02] if k == 2 else [s01, s02, (z[:, 1] * z[:, 2]).sum(-1)]
            logq = F.log_softmax(torch.stack(cols, dim=1) * log_t.exp(), dim=1)
            if tg_t is None:
                return -logq[:, 0].mean()
            p = tg_t[rows]
            return (torch.xlogy(p, p) - p * logq).sum(1).mean()

        def penalty() -> torch.Tensor:
            return ((W - W.diagonal().mean() * eye) ** 2).sum()

        def local_loss() -> torch.Tensor:
            m = pool_std.shape[0]
            bsz = min(int(self.pool_batch_size), m)
            idx = torch.randperm(m, generator=gen)[:bsz]
            diag = torch.eye(bsz, dtype=torch.bool)
            teacher = (pool_unit[idx] @ pool_unit[idx].T) / self.tau
            zs = F.normalize(pool_std[idx] @ W + b, dim=1)
            student = (zs @ zs.T) / self.tau
            p = F.softmax(teacher.masked_fill(diag, -math.inf), dim=1)
            logq = F.log_softmax(student.masked_fill(diag, -math.inf), dim=1)
            # the diagonal has p = 0 and log q = −inf; zero it to avoid 0·(−inf) = NaN
            return -(p * logq.masked_fill(diag, 0.0)).sum(1).mean()

        def eval_loss(rows: np.ndarray) -> float:
            total = 0.0
            with torch.no_grad():
                for s in range(0, rows.size, _EVAL_CHUNK):
                    r = torch.from_numpy(rows[s : s + _EVAL_CHUNK])
                    total += float(data_loss(r)) * r.numel()
            return total / rows.size

        monitor_val = val_rows.size > 0
        with _torch_threads(self.n_threads):
            best = eval_loss(val_rows if monitor_val else train_rows)
        init_loss = best
        best_state = [p.detach().clone() for p in params]
        best_epoch, wait = 0, 0
        history: dict[str, list[float]] = {
            "train_loss": [],
            "val_loss": [],
            "local_loss": [],
            "penalty": [],
        }
        train_t = torch.from_numpy(train_rows)
        bs = int(self.batch_size)
        epoch = 0
        for epoch in range(1, int(self.max_epochs) + 1):
            with _torch_threads(self.n_threads):
                order = train_t[torch.randperm(train_t.numel(), generator=gen)]
                tr_sum, loc_sum, n_steps = 0.0, 0.0, 0
                for s in range(0, order.numel(), bs):
                    rows = order[s : s + bs]
                    glob = data_loss(rows)
                    loss = glob
                    if use_local:
                        loc = local_loss()
                        loss = (1 - self.alpha) * glob + self.alpha * loc
                        loc_sum += float(loc.detach())
                    if self.lam > 0:
                        loss = loss + self.lam * log_t.exp() * penalty()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    tr_sum += float(glob.detach()) * rows.numel()
                    n_steps += 1
                train_loss = tr_sum / order.numel()
                val_loss = eval_loss(val_rows) if monitor_val else float("nan")
                with torch.no_grad():
                    pen = float(penalty())
            monitored = val_loss if monitor_val else train_loss
            improved = monitored < best - self.tol
            if improved:
                best, best_epoch, wait = monitored, epoch, 0
                best_state = [p.detach().clone() for p in params]
            else:
                wait += 1
            local_mean = loc_sum / n_steps if use_local else float("nan")
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            history["local_loss"].append(local_mean)
            history["penalty"].append(pen)
            logger.debug(
                "epoch %d train %.5f val %.5f local %.5f pen %.3g",
                epoch,
                train_loss,
                val_loss,
                local_mean,
                pen,
            )
            yield FitEpoch(epoch, train_loss, val_loss, local_mean, pen, improved)
            if wait >= int(self.patience):
                break

        W_best, b_best, log_t_best = (p.numpy().astype(np.float64) for p in best_state)
        temperature = float(np.exp(log_t_best))
        self.W_ = W_best.astype(np.float32)
        self.b_ = b_best.astype(np.float32)
        self.mean_ = mu
        self.std_ = sd
        self.temperature_ = temperature
        self.n_features_in_ = d
        self.history_ = history
        self.init_loss_ = init_loss
        self.n_epochs_ = epoch
        self.best_epoch_ = best_epoch
        self.val_mask_ = val_mask
        logger.info(
            "affine transform (%s, %s): %d epochs, best epoch %d, monitored loss %.4f -> %.4f, "
            "T = %.4g",
            self.objective,
            kind,
            epoch,
            best_epoch,
            init_loss,
            best,
            temperature,
        )
        return self

    def _init_log_temperature(
        self,
        Xs: np.ndarray,
        trip: np.ndarray,
        kind: str,
        tg: np.ndarray | None,
        train_rows: np.ndarray,
    ) -> float:
        """log T minimising the training loss of the untransformed standardised features."""
        rows = np.arange(trip.shape[0])
        if rows.size > _INIT_ROWS:
            rows = np.random.default_rng(0).choice(rows.size, size=_INIT_ROWS, replace=False)
        s = pair_similarities(Xs, trip[rows], metric="dot")
        if kind == "twoafc":
            s = s[:, :2]
        p = tg[train_rows[rows]] if tg is not None else None
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

        # Search a wide bracket around the scale that gives unit-variance logits.
        centre = -math.log(scale)
        res = minimize_scalar(loss, bounds=(centre - 12.0, centre + 6.0), method="bounded")
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
        (n, d) float32 ``((X − mean_) / std_) @ W_ + b_``; ``temperature_`` times the dot
        product of two rows is the model's triplet logit for that pair.
        """
        check_is_fitted(self, "W_")
        X = check_features(X, name="X")
        if X.shape[1] != self.n_features_in_:
            raise InputError(
                f"has {X.shape[1]} features, the transform was fitted on {self.n_features_in_}",
                field="X",
            )
        Xs = (X.astype(np.float32) - np.float32(self.mean_)) / np.float32(self.std_)
        return (Xs @ self.W_ + self.b_).astype(np.float32, copy=False)

    def predict_proba(
        self, X: np.ndarray, triplets: np.ndarray, *, kind: TripletKind = "oddone"
    ) -> np.ndarray:
        """Model choice probabilities per row: softmax of ``temperature_ ·`` pair dot products.

        Returns
        -------
        (t, 3) float64 for ``kind="oddone"`` (``[p(odd = col 2), p(odd = col 1), p(odd = col 0)]``)
        or (t, 2) for ``"twoafc"`` (``[p(col 1 chosen), p(col 2 chosen)]``).
        """
        if kind not in ("oddone", "twoafc"):
            raise InputError(f"kind must be 'oddone' or 'twoafc', got {kind!r}")
        s = pair_similarities(self.transform(X), triplets, metric="dot")
        if kind == "twoafc":
            s = s[:, :2]
        s = s * self.temperature_
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def score(self, X: np.ndarray, triplets: np.ndarray, *, kind: TripletKind = "oddone") -> float:
        """Accuracy of the transformed features (dot product) on ``triplets``; ties are wrong."""
        from alignet_engine.align.metrics import oddone_correct, twoafc_correct

        if kind not in ("oddone", "twoafc"):
            raise InputError(f"kind must be 'oddone' or 'twoafc', got {kind!r}")
        fn = oddone_correct if kind == "oddone" else twoafc_correct
        return float(fn(self.transform(X), triplets, "dot").mean())

    # ----------------------------------------------------------------------------------------
    # storage
    # ----------------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted transform as arrays, in the gLocal/thingsvision ``transform.npz`` keys.

        Returns
        -------
        ``{"weights": (d, d) float32, "bias": (d,) float32, "mean": () float64,
        "std": () float64, "temperature": () float64}``. ``temperature`` is an extra key that
        thingsvision ignores (it only scales the logits, not the geometry).
        """
        check_is_fitted(self, "W_")
        return {
            "weights": np.asarray(self.W_, dtype=np.float32),
            "bias": np.asarray(self.b_, dtype=np.float32),
            "mean": np.asarray(self.mean_, dtype=np.float64),
            "std": np.asarray(self.std_, dtype=np.float64),
            "temperature": np.asarray(self.temperature_, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **params: object) -> AffineTransform:
        """A fitted transform from :meth:`to_arrays` output or a released gLocal transform.

        ``bias`` (zeros) and ``temperature`` (1.0) are optional, as in gLocal's released files;
        ``params`` are passed to the constructor. ``history_`` is empty.
        """
        for key in ("weights", "mean", "std"):
            if key not in arrays:
                raise InputError(f"missing key {key!r}", field=key)
        W = np.asarray(arrays["weights"], dtype=np.float32)
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            raise InputError(f"must be a square (d, d) matrix, got {W.shape}", field="weights")
        d = W.shape[0]
        b = np.asarray(arrays["bias"], dtype=np.float32) if "bias" in arrays else np.zeros(d)
        if b.shape != (d,):
            raise InputError(f"must have shape ({d},), got {b.shape}", field="bias")

        def scalar(key: str, default: float) -> float:
            if key not in arrays:
                return default
            a = np.asarray(arrays[key], dtype=np.float64)
            if a.size != 1:
                raise InputError(f"must be a scalar, got shape {a.shape}", field=key)
            return float(a.reshape(-1)[0])

        mean, std, temp = scalar("mean", 0.0), scalar("std", 1.0), scalar("temperature", 1.0)
        if not (np.isfinite(W).all() and np.isfinite(b).all() and np.isfinite([mean, std]).all()):
            raise InputError("transform arrays contain NaN or inf")
        if std <= 0:
            raise InputError(f"must be > 0, got {std}", field="std")
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
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load_npz(cls, path: str | Path, **params: object) -> AffineTransform:
        """Read a transform written by :meth:`save_npz` or released by gLocal."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable .npz transform ({exc})", source=path) from exc
        try:
            return cls.from_arrays(arrays, **params)
        except InputError as exc:
            raise InputError(exc.reason, source=path, field=exc.field) from exc
