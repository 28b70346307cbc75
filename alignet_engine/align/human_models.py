"""Models of human odd-one-out choices: VICE, imported embeddings, and soft targets from them.

A *human model* gives, for any triplet, the probability of each of its three items being picked
as the odd one out. AligNet's uncertainty distillation (method.md §3) fits the teacher's affine
transform to such probabilities (the VICE posterior predictive) on triplets that no human ever
saw. Every model here has ``predict_proba(triplets) -> (t, 3)`` with the columns in the logit
order of :class:`~alignet_engine.align.transform.AffineTransform`:

    row (i, j, k)  ->  [p(pair ij most similar), p(pair ik), p(pair jk)]
                    =  [p(odd = k),             p(odd = j), p(odd = i)]

i.e. column 0 is the probability that the LAST item is the odd one. For rows stored with the odd
one last (the judgments convention) column 0 is the probability of the stored answer.

Contents
--------
VICE                     variational sparse non-negative embedding fitted to triplets
                         (Muttenthaler et al. 2022; method.md §3.1)
EmbeddingHumanModel      a fixed, imported embedding (e.g. the shipped THINGS VICE embedding)
sample_random_triplets   uniform triplets of three distinct items, vectorised
soft_targets_from_model  reorder rows so the model's most likely odd one is last, with the
                         matching soft targets for ``AffineTransform(objective="soft")``

``torch`` is imported only when a VICE model is fitted, so this module stays cheap to import.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from scipy.special import ndtr
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from alignet_engine.align.fitloop import (
    append_history,
    check_param_table,
    fit_from_iter,
    new_history,
    run_epochs,
    shuffled_batches,
    torch_generator,
)
from alignet_engine.align.metrics import check_features, check_triplets
from alignet_engine.base.devices import torch_threads
from alignet_engine.errors import AlignetError, InputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Prior = Literal["spike_slab", "laplace", "gaussian"]

# Rows gathered per chunk when predicting: bounds the (chunk, 3, d) temporary.
_PREDICT_CHUNK = 65_536
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class HumanModel(Protocol):
    """Anything that predicts odd-one-out probabilities in the transform's logit order."""

    def predict_proba(self, triplets: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _softmax_rows(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def _triplet_dots(Z: np.ndarray, trip: np.ndarray) -> np.ndarray:
    """``[z_i·z_j, z_i·z_k, z_j·z_k]`` per row, (t, 3) float64; ``Z`` (n, d) float64."""
    g = Z[trip]  # (t, 3, d)
    return np.stack(
        [
            np.einsum("td,td->t", g[:, 0], g[:, 1]),
            np.einsum("td,td->t", g[:, 0], g[:, 2]),
            np.einsum("td,td->t", g[:, 1], g[:, 2]),
        ],
        axis=1,
    )


def _bh_rejections(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini–Hochberg rejections per column.

    Parameters
    ----------
    p : (n, d) float p-values; each column is one family of n tests.
    alpha : FDR level.

    Returns
    -------
    (d,) int64, number of rejected hypotheses per column (the BH step-up count: the largest r
    with p_(r) <= alpha * r / n; all r smallest p-values are rejected).
    """
    n = p.shape[0]
    ps = np.sort(p, axis=0)
    ranks = np.arange(1, n + 1, dtype=np.float64)[:, None]
    below = ps <= alpha * ranks / n
    return np.where(below, ranks, 0.0).max(axis=0).astype(np.int64)


# --------------------------------------------------------------------------------------------
# VICE
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VICEEpoch:
    """Per-epoch report yielded by :meth:`VICE.iter_fit`.

    epoch : 1-based epoch number.
    loss : mean training objective (NLL + complexity) over the epoch's batches.
    nll : mean triplet negative log-likelihood (one posterior sample per batch).
    complexity : mean (1/n_train)(log q(X) − log p(X)) over the epoch's batches.
    train_acc : fraction of training rows whose stored pair had strictly the largest dot
        product under the sampled embeddings.
    n_dims : dimensions that survive pruning after the epoch (see :class:`VICE`).
    converged : the dimension count was stable for ``ws`` epochs after ``burnin``; this is the
        last epoch.
    """

    epoch: int
    loss: float
    nll: float
    complexity: float
    train_acc: float
    n_dims: int
    converged: bool


class _VICEFit:
    """One fit of a :class:`VICE` posterior: the (n, d) parameters μ and log σ, their Adam
    optimiser, the torch random stream and the history. :meth:`VICE.iter_fit` runs
    :meth:`epoch` in :func:`~alignet_engine.align.fitloop.run_epochs`.

    Attributes
    ----------
    n, d, t : items, initial dimensions, triplet rows; trip_t : (t, 3) int64 tensor;
    mu, log_sigma : (n, d) float32 leaf tensors; history : ``history_`` so far;
    converged : the last epoch met the stability criterion.
    """

    def __init__(self, est: VICE, triplets: np.ndarray, n_items: int | None) -> None:
        import torch

        est._check_params()
        self.est = est
        trip = check_triplets(triplets, n_items)
        n = int(trip.max()) + 1 if n_items is None else int(n_items)
        if n < 3:
            raise InputError(f"needs at least 3 items, got n_items={n}")
        self.n, self.t, self.d = n, trip.shape[0], int(est.n_dims)
        d = self.d
        rng = np.random.default_rng(est.random_state)
        self.gen = torch_generator(rng)

        # Init as the reference: μ ~ Kaiming-normal of an (d, n) nn.Linear weight in fan_out
        # mode with relu gain, i.e. N(0, 2/d); log σ = −1/std(μ), so σ starts tiny
        # (d = 100: σ ≈ 8.5e-4) and the posterior begins close to a point estimate.
        mu0 = rng.normal(0.0, math.sqrt(2.0 / d), size=(n, d)).astype(np.float32)
        log_sigma0 = np.full((n, d), -1.0 / float(mu0.std()), dtype=np.float32)
        self.mu = torch.from_numpy(mu0).requires_grad_(True)
        self.log_sigma = torch.from_numpy(log_sigma0).requires_grad_(True)
        # fused: one kernel per parameter instead of ~10 full (n, d) passes (same update rule)
        self.opt = torch.optim.Adam(
            [self.mu, self.log_sigma], lr=float(est.lr), eps=1e-8, fused=True
        )
        self.trip_t = torch.from_numpy(trip)
        self.history = new_history("loss", "nll", "complexity", "train_acc", "n_dims")
        self.converged = False
        logger.info("VICE: %d triplets over %d items, d_init %d, prior %s", self.t, n, d, est.prior)

    def gradients(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw one posterior sample X = μ + σε and set ∂loss/∂μ, ∂loss/∂log σ of the batch
        ``rows`` (B, 3). Returns (NLL, complexity — scalar tensors, nats per triplet —, the
        (B, 3) pair dot products of the sample)."""
        import torch
        import torch.nn.functional as F

        n, d, t = self.n, self.d, self.t
        mu, log_sigma = self.mu, self.log_sigma
        # The complexity term touches all n·d entries at every step, the likelihood only the
        # batch's items: the former's gradient is written out (below), autograd runs on the
        # batch's rows only.
        with torch.no_grad():
            eps = torch.randn(n, d, generator=self.gen)
            sigma = log_sigma.exp()
            X = torch.addcmul(mu, sigma, eps)
        items, inverse = torch.unique(rows, return_inverse=True)
        Xb = X[items].requires_grad_(True)
        z = F.relu(Xb)[inverse]  # (B, 3, d)
        dots = torch.stack(
            [
                (z[:, 0] * z[:, 1]).sum(-1),
                (z[:, 0] * z[:, 2]).sum(-1),
                (z[:, 1] * z[:, 2]).sum(-1),
            ],
            dim=1,
        )
        nll = -F.log_softmax(dots, dim=1)[:, 0].mean()
        nll.backward()
        with torch.no_grad():
            log_p, score = self.est._log_prior_and_score(X)
            # log q(X) at X = μ + σε is −ε²/2 − log σ − log √2π; written with ε it has the same
            # (path) gradient as the reference's density of (X − μ)/σ: ∂/∂log σ = −1 per entry,
            # nothing through X.
            log_q = (eps * eps).sum() * -0.5 - log_sigma.sum() - n * d * _LOG_SQRT_2PI
            complexity = (log_q - log_p.sum()) / t
            # ∂loss/∂X: −score/t from the prior, plus the batch's likelihood rows
            assert Xb.grad is not None  # set by nll.backward() just above
            grad_X = score.mul_(-1.0 / t).index_add_(0, items, Xb.grad)
            mu.grad = grad_X
            # X = μ + σε: ∂X/∂log σ = σε
            log_sigma.grad = (grad_X * sigma).mul_(eps).sub_(1.0 / t)
        return nll, complexity, dots

    def epoch(self, epoch: int) -> VICEEpoch:
        """One pass of Adam steps over the triplets in a random order, then the pruned
        dimension count and the convergence test: epoch ``epoch``."""
        import torch

        est, t = self.est, self.t
        loss_sum = nll_sum = comp_sum = 0.0
        correct = 0
        with torch_threads(est.n_threads):
            for idx in shuffled_batches(t, int(est.batch_size), self.gen):
                rows = self.trip_t[idx]
                nll, complexity, dots = self.gradients(rows)
                loss_value = float(nll.detach()) + float(complexity)
                if not math.isfinite(loss_value):
                    raise AlignetError(
                        f"the VICE loss became {loss_value} in epoch {epoch}; lower the "
                        f"learning rate (now {est.lr:g})"
                    )
                self.opt.step()
                b = rows.shape[0]
                with torch.no_grad():
                    correct += int(((dots[:, 0] > dots[:, 1]) & (dots[:, 0] > dots[:, 2])).sum())
                loss_sum += loss_value * b
                nll_sum += float(nll.detach()) * b
                comp_sum += float(complexity.detach()) * b
        with torch.no_grad():
            loc = self.mu.detach().numpy()
            scale = self.log_sigma.detach().exp().numpy()
        n_kept = int(est._prune(loc, scale).size)
        record = VICEEpoch(
            epoch, loss_sum / t, nll_sum / t, comp_sum / t, correct / t, n_kept, False
        )
        append_history(self.history, record)
        self.converged = self._stable(epoch)
        logger.debug(
            "VICE epoch %d loss %.4f nll %.4f complexity %.4f acc %.3f dims %d",
            epoch,
            record.loss,
            record.nll,
            record.complexity,
            record.train_acc,
            n_kept,
        )
        return dataclasses.replace(record, converged=self.converged)

    def _stable(self, epoch: int) -> bool:
        """After ``burnin`` epochs, the kept-dimension count of the last ``ws`` epochs is one
        non-zero value."""
        ws = int(self.est.ws)
        window = self.history["n_dims"][-ws:]
        return (
            epoch > int(self.est.burnin)
            and len(window) == ws
            and window[0] != 0
            and all(v == window[0] for v in window)
        )


class VICE(BaseEstimator):
    """Variational Interpretable Concept Embeddings (Muttenthaler et al. 2022; method.md §3.1).

    A mean-field Gaussian posterior q(X) = Π N(μ_od, σ_od) over an (n, d) embedding; item o is
    represented by relu(X_o) and the probability that the pair (a, b) of a triplet is the most
    similar is softmax over the three dot products (temperature 1). Fitted by maximising the
    ELBO with one reparameterised posterior sample per mini-batch:

        loss = mean_batch −log softmax([s_ij, s_ik, s_jk])_0  +  (1/n_train)(log q(X) − log p(X))

    where X = μ + σ·ε is the FULL (n, d) sample (the complexity term is the usual per-triplet
    share of the KL divergence, estimated with the same sample).

    Dimension pruning (VICE §3.3.4): for every entry, p_od = q(X_od <= 0) = Φ(−μ_od/σ_od); per
    dimension, a Benjamini–Hochberg test at FDR ``alpha`` over the n items counts the items whose
    weight is significantly positive; a dimension is kept when that count is > ``k``. As in the
    reference implementation, all ``n_dims`` dimensions keep being optimised; the count is only
    monitored, and the final parameters are pruned once, at the end. Optimisation stops when
    the count has been the same (and non-zero) for the last ``ws`` epochs, checked only after
    ``burnin`` epochs, or after ``max_epochs``.

    Parameters
    ----------
    n_dims : initial dimensionality d (VICE ``init_dim``).
    prior : ``"spike_slab"`` — Gaussian spike-and-slab π·N(0, spike²) + (1−π)·N(0, slab²)
        (VICE default); ``"laplace"`` — the same mixture of Laplace densities with scales spike,
        slab (VICE ``--mixture laplace``); ``"gaussian"`` — a single N(0, slab²) (no sparsity
        pressure; ``pi`` and ``spike`` are ignored).
    pi : mixture weight of the spike, in (0, 1).
    spike, slab : scales of the two prior components, 0 < spike < slab.
    lr : Adam learning rate.
    batch_size : triplets per optimisation step.
    max_epochs : upper bound on passes over the triplets.
    burnin : epochs before convergence is checked.
    ws : stability window (epochs) of the pruned dimension count.
    k : a dimension is kept when more than ``k`` items are significantly positive in it.
    alpha : FDR level of the per-dimension Benjamini–Hochberg test.
    mc_samples : posterior samples averaged by :meth:`predict_proba` (VICE inference: 25).
    n_threads : torch intra-op threads while fitting, or ``None`` (default) to use torch's
        setting — the threads the user allows (the app's preference, the CLI's ``--threads``).
        Each step samples and scores the whole (n, d) posterior, which threads do speed up.
    random_state : seed of the initialisation, the batch order, the posterior samples drawn in
        training, and (independently) of the samples drawn by :meth:`predict_proba`.

    Attributes
    ----------
    loc_ : (n, d_kept) float32 posterior means μ of the kept dimensions, ordered by decreasing
        L1 norm (as VICE's ``pruned_loc``).
    scale_ : (n, d_kept) float32 posterior standard deviations σ, same columns.
    embedding_ : (n, d_kept) float32 relu(loc_), the point embedding (non-negative, sparse).
    n_dims_ : int, d_kept.
    kept_dims_ : (d_kept,) int64 indices of the kept columns among the initial ``n_dims``.
    n_items_ : int, n.
    n_epochs_ : int, epochs run; ``converged_`` : bool, stopped by the stability criterion.
    history_ : dict of per-epoch lists ``"loss"``, ``"nll"``, ``"complexity"``,
        ``"train_acc"``, ``"n_dims"``.

    Notes
    -----
    Choices where method.md §3.1 leaves room, all following LukasMut/VICE (5f80103):

    * Initialisation: μ is the Kaiming-normal init of the reference's (d, n) ``nn.Linear``
      weight in ``fan_out`` mode, i.e. N(0, 2/d); log σ = −1/std(μ) everywhere.
    * Pruning never removes a dimension from the optimisation; it is evaluated after every
      epoch for the convergence test and applied once at the end. Prediction uses the pruned
      posterior, as the reference's ``main_inference.py`` does.
    * Convergence: after ``burnin`` epochs, the kept-dimension count of the last ``ws`` epochs
      is one non-zero value.
    * The complexity term uses the same full posterior sample X as the likelihood of the batch
      (one sample per step), and correct log densities (the reference multiplies its Gaussian
      density by √2π instead of dividing — a constant that does not change the gradients).
    * There is no validation split inside :meth:`fit` (the reference evaluates a validation
      set every few epochs only for logging); use :meth:`score` / :meth:`predict_proba` on
      held-out rows.
    """

    def __init__(
        self,
        n_dims: int = 100,
        *,
        prior: Prior = "spike_slab",
        pi: float = 0.6,
        spike: float = 0.25,
        slab: float = 1.0,
        lr: float = 1e-3,
        batch_size: int = 128,
        max_epochs: int = 2000,
        burnin: int = 500,
        ws: int = 200,
        k: int = 5,
        alpha: float = 0.05,
        mc_samples: int = 25,
        n_threads: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.n_dims = n_dims
        self.prior = prior
        self.pi = pi
        self.spike = spike
        self.slab = slab
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.burnin = burnin
        self.ws = ws
        self.k = k
        self.alpha = alpha
        self.mc_samples = mc_samples
        self.n_threads = n_threads
        self.random_state = random_state

    # ----------------------------------------------------------------------------------------
    # validation
    # ----------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.prior not in ("spike_slab", "laplace", "gaussian"):
            raise InputError(
                f"prior must be 'spike_slab', 'laplace' or 'gaussian', got {self.prior!r}",
                field="prior",
            )
        checks = [
            ("n_dims", self.n_dims, int(self.n_dims) >= 1),
            ("pi", self.pi, 0 < self.pi < 1),
            ("spike", self.spike, self.spike > 0),
            ("slab", self.slab, self.slab > 0),
            ("lr", self.lr, self.lr > 0),
            ("batch_size", self.batch_size, int(self.batch_size) >= 1),
            ("max_epochs", self.max_epochs, int(self.max_epochs) >= 1),
            ("burnin", self.burnin, int(self.burnin) >= 0),
            ("ws", self.ws, int(self.ws) >= 1),
            ("k", self.k, int(self.k) >= 0),
            ("alpha", self.alpha, 0 < self.alpha < 1),
            ("mc_samples", self.mc_samples, int(self.mc_samples) >= 1),
            ("n_threads", self.n_threads or 1, int(self.n_threads or 1) >= 1),
        ]
        check_param_table(checks)
        if self.prior != "gaussian" and not self.spike < self.slab:
            raise InputError(
                f"spike ({self.spike}) must be smaller than slab ({self.slab})", field="spike"
            )

    def _log_prior_and_score(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise log p(X) and its derivative ∂ log p / ∂X, both (n, d) (no autograd).

        For the mixture, ∂/∂x log(π p₁ + (1−π) p₂) = r·∂log p₁ + (1−r)·∂log p₂ with the
        responsibility r = σ(log π p₁ − log (1−π) p₂); Gaussian ∂log N(x; 0, s²) = −x/s²,
        Laplace ∂log L(x; 0, s) = −sign(x)/s (0 at 0, as autograd's |x|).
        """
        import torch

        gaussian = self.prior != "laplace"
        base = X * X if gaussian else X.abs()
        slope = X if gaussian else torch.sign(X)

        def component(s: float, log_weight: float = 0.0) -> tuple[torch.Tensor, float]:
            """(log density, −∂/∂x divided by ``slope``): Gaussian 1/s², Laplace 1/s."""
            if gaussian:
                value = base * (-0.5 / (s * s)) + (log_weight - math.log(s) - _LOG_SQRT_2PI)
                return value, 1.0 / (s * s)
            return base * (-1.0 / s) + (log_weight - math.log(2.0 * s)), 1.0 / s

        if self.prior == "gaussian":
            value, c = component(float(self.slab))
            return value, slope * -c
        a, c1 = component(float(self.spike), math.log(self.pi))
        b, c2 = component(float(self.slab), math.log1p(-self.pi))
        r = torch.sigmoid(a - b)
        value = torch.logaddexp(a, b)
        # −(r·c1 + (1 − r)·c2)·slope
        return value, r.mul_(c1 - c2).add_(c2).mul_(slope).neg_()

    def _prune(self, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Indices of the dimensions with more than ``k`` significantly positive items."""
        p = ndtr(-loc.astype(np.float64) / scale.astype(np.float64))  # q(X_od <= 0)
        counts = _bh_rejections(p, float(self.alpha))
        return np.flatnonzero(counts > int(self.k))

    # ----------------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------------
    def iter_fit(
        self, triplets: np.ndarray, n_items: int | None = None
    ) -> Generator[VICEEpoch, None, VICE]:
        """Fit epoch by epoch, yielding a :class:`VICEEpoch` after each (for progress/cancel).

        The fitted attributes are set only when the generator finishes; a consumer that stops
        iterating early leaves the estimator unfitted. The input checks run at the first
        ``next()``.

        Parameters
        ----------
        triplets : (t, 3) int, 0-based item ids, one response per row with the odd one LAST
            (``(i, j, odd)``: the pair (i, j) was judged most similar). Repeated rows are
            repeated observations.
        n_items : number of items n (ids lie in ``[0, n)``); default ``max id + 1``. Items that
            occur in no triplet keep (roughly) their prior/initial values.
        """
        run = _VICEFit(self, triplets, n_items)
        n_epochs = yield from run_epochs(int(self.max_epochs), run.epoch, lambda e: e.converged)
        self._store_fit(run, n_epochs)
        return self

    fit = fit_from_iter(iter_fit)

    def _store_fit(self, run: _VICEFit, n_epochs: int) -> None:
        """Prune the final posterior of a finished run, set the fitted attributes, log."""
        loc = run.mu.detach().numpy().copy()
        scale = run.log_sigma.detach().exp().numpy().copy()
        kept = self._prune(loc, scale)
        # order the kept dimensions by decreasing L1 norm of μ, as VICE's final latents
        kept = kept[np.argsort(-np.abs(loc[:, kept]).sum(axis=0), kind="stable")]
        self.loc_ = loc[:, kept].astype(np.float32)
        self.scale_ = scale[:, kept].astype(np.float32)
        self.embedding_ = np.maximum(self.loc_, 0.0)
        self.n_dims_ = int(kept.size)
        self.kept_dims_ = kept.astype(np.int64)
        self.n_items_ = run.n
        self.n_epochs_ = n_epochs
        self.converged_ = run.converged
        self.history_ = run.history
        if kept.size == 0:
            logger.warning(
                "VICE: no dimension survived pruning (k=%d, alpha=%g); predictions are uniform. "
                "More triplets, more epochs or a smaller k may help.",
                self.k,
                self.alpha,
            )
        logger.info(
            "VICE: %d epochs (%s), %d of %d dimensions kept, final NLL %.4f",
            n_epochs,
            "converged" if run.converged else "max_epochs reached",
            kept.size,
            run.d,
            run.history["nll"][-1],
        )

    # ----------------------------------------------------------------------------------------
    # predicting
    # ----------------------------------------------------------------------------------------
    def predict_proba(self, triplets: np.ndarray, mc_samples: int | None = None) -> np.ndarray:
        """Posterior predictive choice probabilities (VICE inference).

        The mean over ``mc_samples`` draws X ~ q of softmax([z_i·z_j, z_i·z_k, z_j·z_k]) with
        z = relu(X) restricted to the kept dimensions. With a ``random_state`` the result is
        deterministic (every call draws the same samples).

        Parameters
        ----------
        triplets : (t, 3) int rows (i, j, k), ids in ``[0, n_items_)``.
        mc_samples : posterior samples M (default ``self.mc_samples``).

        Returns
        -------
        (t, 3) float64, rows sum to 1: ``[p(odd = k), p(odd = j), p(odd = i)]`` (the logit
        order of :class:`~alignet_engine.align.transform.AffineTransform`).
        """
        check_is_fitted(self, "loc_")
        trip = check_triplets(triplets, self.n_items_)
        m = int(self.mc_samples if mc_samples is None else mc_samples)
        if m < 1:
            raise InputError(f"mc_samples must be >= 1, got {mc_samples}", field="mc_samples")
        # A stream separate from the fitting one (seed sequence [seed, 1]).
        seed = None if self.random_state is None else [int(self.random_state), 1]
        rng = np.random.default_rng(seed)
        loc = self.loc_.astype(np.float64)
        scale = self.scale_.astype(np.float64)
        out = np.zeros((trip.shape[0], 3), dtype=np.float64)
        for _ in range(m):
            Z = np.maximum(loc + scale * rng.standard_normal(loc.shape), 0.0)
            for s in range(0, trip.shape[0], _PREDICT_CHUNK):
                rows = trip[s : s + _PREDICT_CHUNK]
                out[s : s + rows.shape[0]] += _softmax_rows(_triplet_dots(Z, rows))
        return out / m

    def score(self, triplets: np.ndarray, mc_samples: int | None = None) -> float:
        """Accuracy on rows with the odd one LAST: column 0 of :meth:`predict_proba` is the
        strict maximum (ties count as wrong)."""
        p = self.predict_proba(triplets, mc_samples)
        return float(np.mean((p[:, 0] > p[:, 1]) & (p[:, 0] > p[:, 2])))

    # ----------------------------------------------------------------------------------------
    # storage
    # ----------------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted posterior: ``{"loc": (n, d) float32, "scale": (n, d) float32}`` (VICE's
        ``pruned_params.npz`` keys are ``pruned_loc`` / ``pruned_scale``)."""
        check_is_fitted(self, "loc_")
        return {"loc": self.loc_.copy(), "scale": self.scale_.copy()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], **params: object) -> VICE:
        """A fitted model from :meth:`to_arrays` output or VICE's ``pruned_params.npz``
        (``pruned_loc`` / ``pruned_scale``); ``params`` go to the constructor. ``history_`` is
        empty and ``kept_dims_`` is ``arange(d)``."""
        loc_key = "loc" if "loc" in arrays else "pruned_loc"
        scale_key = "scale" if "scale" in arrays else "pruned_scale"
        if loc_key not in arrays or scale_key not in arrays:
            raise InputError("needs 'loc' and 'scale' (or 'pruned_loc' and 'pruned_scale')")
        loc = check_features(np.asarray(arrays[loc_key]), name=loc_key).astype(np.float32)
        scale = np.asarray(arrays[scale_key], dtype=np.float32)
        if scale.shape != loc.shape:
            raise InputError(f"must have shape {loc.shape}, got {scale.shape}", field=scale_key)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise InputError("must be finite and > 0", field=scale_key)
        est = cls(**params)  # type: ignore[arg-type]
        est.loc_ = loc
        est.scale_ = scale
        est.embedding_ = np.maximum(loc, 0.0)
        est.n_dims_ = int(loc.shape[1])
        est.kept_dims_ = np.arange(loc.shape[1], dtype=np.int64)
        est.n_items_ = int(loc.shape[0])
        est.n_epochs_ = 0
        est.converged_ = False
        est.history_ = {"loss": [], "nll": [], "complexity": [], "train_acc": [], "n_dims": []}
        return est


# --------------------------------------------------------------------------------------------
# imported embedding
# --------------------------------------------------------------------------------------------
class EmbeddingHumanModel:
    """A fixed embedding used as a model of human choices (e.g. the published VICE embedding).

    p(pair (a, b) most similar) = softmax over the three pair dot products times
    ``temperature`` (VICE and SPoSE use dot products with temperature 1).

    Parameters
    ----------
    embedding : (n, d) float, one row per item (the item id is the row index). Typically
        non-negative (VICE/SPoSE), but any real matrix works.
    temperature : T > 0 multiplying the dot products before the softmax.

    Attributes
    ----------
    embedding : (n, d) float64 validated copy.
    temperature : float.
    n_items : int, n.
    """

    def __init__(self, embedding: np.ndarray, *, temperature: float = 1.0) -> None:
        if not (np.isfinite(temperature) and temperature > 0):
            raise InputError(f"must be a finite number > 0, got {temperature}", field="temperature")
        self.embedding = check_features(embedding, name="embedding").astype(np.float64)
        self.temperature = float(temperature)
        self.n_items = int(self.embedding.shape[0])

    @classmethod
    def from_npy(cls, path: str | Path, *, temperature: float = 1.0) -> EmbeddingHumanModel:
        """Load an (n, d) embedding from a ``.npy`` file (e.g. ``vice_embedding_things.npy``)."""
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable .npy array ({exc})", source=path) from exc
        try:
            return cls(arr, temperature=temperature)
        except InputError as exc:
            raise InputError(exc.reason, source=path, field=exc.field) from exc

    def predict_proba(self, triplets: np.ndarray) -> np.ndarray:
        """Choice probabilities of rows (i, j, k).

        Returns
        -------
        (t, 3) float64, rows sum to 1: ``[p(odd = k), p(odd = j), p(odd = i)]``.
        """
        trip = check_triplets(triplets, self.n_items)
        out = np.empty((trip.shape[0], 3), dtype=np.float64)
        for s in range(0, trip.shape[0], _PREDICT_CHUNK):
            rows = trip[s : s + _PREDICT_CHUNK]
            out[s : s + rows.shape[0]] = _softmax_rows(
                self.temperature * _triplet_dots(self.embedding, rows)
            )
        return out

    def score(self, triplets: np.ndarray) -> float:
        """Accuracy on rows with the odd one LAST (strict argmax; ties count as wrong)."""
        p = self.predict_proba(triplets)
        return float(np.mean((p[:, 0] > p[:, 1]) & (p[:, 0] > p[:, 2])))


# --------------------------------------------------------------------------------------------
# triplets and soft targets
# --------------------------------------------------------------------------------------------
def sample_random_triplets(
    n_items: int,
    n: int,
    random_state: int | np.random.Generator | None = None,
    *,
    replace: bool = True,
) -> np.ndarray:
    """Uniformly random triplets of three distinct items.

    Parameters
    ----------
    n_items : number of items (ids ``0 .. n_items−1``), >= 3.
    n : number of rows, >= 1.
    random_state : seed or Generator.
    replace : True — rows are independent draws, so the same set of three items can occur
        more than once (rare when C(n_items, 3) >> n). False — every row is a different
        unordered set (needs n <= C(n_items, 3)); drawn by rejection, so it gets slow only
        when n approaches C(n_items, 3).

    Returns
    -------
    (n, 3) int64. Each row is a uniformly random ORDERED triple of distinct items, so the
    position of any item within a row is uniform too.
    """
    n_items, n = int(n_items), int(n)
    if n_items < 3:
        raise InputError(f"n_items must be >= 3, got {n_items}")
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    total = math.comb(n_items, 3)
    if not replace and n > total:
        raise InputError(f"only {total} distinct triplets exist over {n_items} items, asked {n}")
    rng = np.random.default_rng(random_state)

    def draw(m: int) -> np.ndarray:
        # Ordered sampling without replacement: a uniform, b uniform over the other n−1 ids,
        # c uniform over the remaining n−2 ids (shifted past the two taken ones, low first).
        a = rng.integers(0, n_items, size=m)
        b = rng.integers(0, n_items - 1, size=m)
        b += b >= a
        c = rng.integers(0, n_items - 2, size=m)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        c += c >= lo
        c += c >= hi
        return np.stack([a, b, c], axis=1).astype(np.int64)

    if replace:
        return draw(n)
    out = np.empty((0, 3), dtype=np.int64)
    while out.shape[0] < n:
        need = n - out.shape[0]
        cand = np.concatenate([out, draw(need + need // 4 + 16)])
        # keep the first occurrence of every unordered set, in draw order
        _, first = np.unique(np.sort(cand, axis=1), axis=0, return_index=True)
        out = cand[np.sort(first)]
    return out[:n]


def soft_targets_from_model(
    model: HumanModel, triplets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher soft targets from a human model, with each row's most likely odd one LAST.

    Parameters
    ----------
    model : anything with ``predict_proba(triplets) -> (t, 3)`` in the logit order
        ``[p(odd = col 2), p(odd = col 1), p(odd = col 0)]`` (:class:`VICE`,
        :class:`EmbeddingHumanModel`, a fitted ``AffineTransform`` wrapped in a lambda...).
    triplets : (t, 3) int rows in any order.

    Returns
    -------
    triplets : (t, 3) int64, the same item sets; the model's most likely odd one is moved to
        column 2 and the other two keep their relative order. A tie for the most likely odd
        one goes to the latest column (a row already in this form is left unchanged, so the
        function is idempotent). The rows are thus valid hard labels (the model's argmax
        answer), e.g. for ``AffineTransform(objective="hard")``.
    probabilities : (t, 3) float64, the model's probabilities for the REORDERED rows in the
        logit order — ready for ``AffineTransform(objective="soft").fit(X, triplets,
        targets=probabilities)``; column 0 is the largest of each row.
    """
    trip = check_triplets(triplets)
    p = np.asarray(model.predict_proba(trip), dtype=np.float64)
    if p.shape != (trip.shape[0], 3):
        raise InputError(
            f"model.predict_proba returned shape {p.shape}, expected {(trip.shape[0], 3)}"
        )
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise InputError("model.predict_proba must return finite probabilities summing to 1")
    odd_p = p[:, ::-1]  # p(odd = col 0), p(odd = col 1), p(odd = col 2)
    # argmax over p (logit order) takes the first maximum = the LATEST odd column on ties, so a
    # row whose last item is already (jointly) most likely stays as it is: idempotent.
    odd = 2 - np.argmax(p, axis=1)
    rest = np.array([[1, 2], [0, 2], [0, 1]], dtype=np.int64)[odd]
    order = np.column_stack([rest, odd])  # new column c <- old column order[:, c]
    new_trip = np.take_along_axis(trip, order, axis=1)
    new_odd_p = np.take_along_axis(odd_p, order, axis=1)
    return new_trip, np.ascontiguousarray(new_odd_p[:, ::-1])
