"""Triplet losses of the AligNet student objective (method.md §5).

Every triplet ``(i, j, k)`` carries three pair similarities in the column order
``[s01, s02, s12]`` = ``[sim(i, j), sim(i, k), sim(j, k)]``. A triplet's *odd-one-out
distribution* is the softmax over those three numbers: the most similar pair "wins" and the
remaining image is the odd one out. In AligNet's triplet files the teacher's odd one out is
image 2 (last), so pair (0, 1) — column 0 — is the teacher's most similar pair.

All losses work on logits with ``log_softmax`` / ``logsumexp`` so that large similarities
(dot products of unnormalised 1280-d features reach the hundreds) neither overflow nor lose
the small differences that decide the odd one out.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

# The student's pair similarities are the engine's one torch formula (re-exported here, where
# the losses that take them live).
from alignet_engine.base.similarity import SimilarityKind as SimilarityKind
from alignet_engine.base.similarity import stacked_pair_similarities

Reduction = Literal["mean", "none"]

__all__ = [
    "contrastive_triplet_loss",
    "jsd_triplet_loss",
    "kl_triplet_loss",
    "odd_one_out_agreement",
    "stacked_pair_similarities",
]


def _check_sims(name: str, sims: torch.Tensor) -> None:
    if sims.ndim != 2 or sims.shape[1] != 3:
        raise ValueError(
            f"{name} must have shape (b, 3) = [s01, s02, s12]; got {tuple(sims.shape)}"
        )


def _check_temperature(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def _reduce(per_triplet: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return per_triplet.mean()
    if reduction == "none":
        return per_triplet
    raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")


def _kl_from_logs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(p‖q) from log-probabilities, (b, 3) → (b,); 0·log 0 counts as 0."""
    p = log_p.exp()
    # where p underflowed to exactly 0 the term is 0, even if log_q is -inf (avoid 0·inf = nan)
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1)


def kl_triplet_loss(
    teacher_sims: torch.Tensor,
    student_sims: torch.Tensor,
    *,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """KL divergence of the student's from the teacher's odd-one-out distribution.

    ``p = softmax(teacher_sims / τ_t)``, ``q = softmax(student_sims / τ_s)``,
    ``L = KL(p‖q) = Σ p (log p − log q)`` per triplet (AligNet ``KLDTripletLoss``, the
    objective the paper describes).

    Parameters
    ----------
    teacher_sims : (b, 3) float tensor, ``[s01, s02, s12]`` of the teacher; a target — no
        gradient flows into it.
    student_sims : (b, 3) float tensor, ``[d01, d02, d12]`` of the student.
    teacher_temperature, student_temperature : float > 0, dimensionless divisors of the logits.
    reduction : ``"mean"`` → scalar mean over triplets; ``"none"`` → (b,) per triplet.

    Returns
    -------
    torch.Tensor
        Scalar (or (b,)) loss in nats, ≥ 0, dtype of ``student_sims``.
    """
    _check_sims("teacher_sims", teacher_sims)
    _check_sims("student_sims", student_sims)
    _check_temperature("teacher_temperature", teacher_temperature)
    _check_temperature("student_temperature", student_temperature)
    log_p = F.log_softmax(teacher_sims.detach().to(student_sims.dtype) / teacher_temperature, -1)
    log_q = F.log_softmax(student_sims / student_temperature, dim=-1)
    return _reduce(_kl_from_logs(log_p, log_q), reduction)


def jsd_triplet_loss(
    teacher_sims: torch.Tensor,
    student_sims: torch.Tensor,
    *,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Jensen–Shannon divergence between teacher and student odd-one-out distributions.

    ``L = ½ KL(p‖m) + ½ KL(q‖m)``, ``m = (p + q) / 2`` (AligNet ``JSDTripletLoss``, the loss
    of the released config). Bounded by ``ln 2`` nats, so a few triplets on which teacher and
    student disagree sharply cannot dominate a batch the way they can under KL.

    Parameters
    ----------
    teacher_sims, student_sims : (b, 3) float tensors ``[s01, s02, s12]``; no gradient flows
        into ``teacher_sims``.
    teacher_temperature, student_temperature : float > 0.
    reduction : ``"mean"`` or ``"none"``.

    Returns
    -------
    torch.Tensor
        Scalar (or (b,)) loss in nats, in ``[0, ln 2]``.
    """
    _check_sims("teacher_sims", teacher_sims)
    _check_sims("student_sims", student_sims)
    _check_temperature("teacher_temperature", teacher_temperature)
    _check_temperature("student_temperature", student_temperature)
    log_p = F.log_softmax(teacher_sims.detach().to(student_sims.dtype) / teacher_temperature, -1)
    log_q = F.log_softmax(student_sims / student_temperature, dim=-1)
    # log m = log((p + q) / 2) in log space: stays finite where p or q underflow
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    per_triplet = 0.5 * _kl_from_logs(log_p, log_m) + 0.5 * _kl_from_logs(log_q, log_m)
    return _reduce(per_triplet, reduction)


def contrastive_triplet_loss(
    student_sims: torch.Tensor,
    temperature: float = 1.0,
    *,
    target: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Hard-label triplet loss: cross-entropy of the teacher's most similar pair.

    ``L = −d_target / τ + logsumexp([d01, d02, d12] / τ)`` (AligNet
    ``ContrastiveTripletLoss``, gLocal-style). By the odd-one-last convention the target is
    pair (0, 1), i.e. column 0.

    Parameters
    ----------
    student_sims : (b, 3) float tensor ``[d01, d02, d12]``.
    temperature : float > 0.
    target : (b,) int64 tensor of column indices in {0, 1, 2} of the teacher's most similar
        pair, or None for column 0 for every triplet.
    reduction : ``"mean"`` or ``"none"``.

    Returns
    -------
    torch.Tensor
        Scalar (or (b,)) loss in nats, ≥ 0.
    """
    _check_sims("student_sims", student_sims)
    _check_temperature("temperature", temperature)
    if target is None:
        target = torch.zeros(student_sims.shape[0], dtype=torch.long, device=student_sims.device)
    per_triplet = F.cross_entropy(student_sims / temperature, target, reduction="none")
    return _reduce(per_triplet, reduction)


def odd_one_out_agreement(student_sims: torch.Tensor, teacher_sims: torch.Tensor) -> torch.Tensor:
    """Whether the student picks the teacher's odd one out, per triplet.

    The choice is the argmax pair of each row. A student row whose maximum is tied counts as a
    disagreement (method.md §6: "if all three distances are equal the trial counts as
    wrong"), so a collapsed student scores 0, not chance.

    Parameters
    ----------
    student_sims, teacher_sims : (b, 3) float tensors ``[s01, s02, s12]``.

    Returns
    -------
    torch.Tensor
        (b,) bool.
    """
    _check_sims("student_sims", student_sims)
    _check_sims("teacher_sims", teacher_sims)
    teacher_choice = teacher_sims.argmax(dim=-1)
    top = student_sims.max(dim=-1, keepdim=True).values
    unique_max = (student_sims == top).sum(dim=-1) == 1
    return unique_max & (student_sims.argmax(dim=-1) == teacher_choice.to(student_sims.device))
