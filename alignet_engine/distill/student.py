"""The student as the trainer sees it: the backbone, the optional triplet head, their modes.

``feature_fn`` is any module mapping images (B, C, H, W) to features (B, d); the trainer
wraps it (and the head) in :class:`TrainForward` for the training forward and in
:class:`StudentModel` for validation (images → the embedding whose similarities are trained).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from alignet_engine.errors import InputError

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def set_mode(module: nn.Module, *, train: bool, train_bn: bool) -> None:
    module.train(train)
    if train and not train_bn:
        for sub in module.modules():
            if isinstance(sub, _BN_TYPES):
                sub.eval()


def checked_features(feature_fn: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = feature_fn(images)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"feature_fn must map ({images.shape[0]}, C, H, W) images to "
            f"({images.shape[0]}, d) features; got {shape}",
            field="feature_fn",
        )
    return out


class TrainForward(nn.Module):
    """Training forward: images → (backbone features (B, d), embedding (B, e)).

    One module for both outputs, so that a ``DistributedDataParallel`` wrapper sees every
    trained parameter (backbone and head) in one forward.
    """

    def __init__(self, feature_fn: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.features = feature_fn
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = checked_features(self.features, x)
        return features, features if self.head is None else self.head(features)


class StudentModel(nn.Module):
    """``feature_fn`` followed by the optional triplet head: images → embedding (B, e)."""

    def __init__(self, feature_fn: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.features = feature_fn
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = checked_features(self.features, x)
        return out if self.head is None else self.head(out)


def make_triplet_head(in_dim: int, head_dim: int, seed: int = 0) -> nn.Linear:
    """A new linear triplet head ``in_dim → head_dim`` with a seeded default initialisation.

    The weights follow ``nn.Linear``'s own init (uniform in ±1/√in_dim for weight and bias),
    drawn from a private generator so that creating the head leaves torch's global RNG —
    and therefore dropout in the rest of the run — untouched.
    """
    head = nn.Linear(in_dim, head_dim)
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(in_dim)
    with torch.no_grad():
        head.weight.copy_(torch.empty(head_dim, in_dim).uniform_(-bound, bound, generator=gen))
        head.bias.copy_(torch.empty(head_dim).uniform_(-bound, bound, generator=gen))
    return head
