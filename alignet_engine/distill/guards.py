"""Device guards of the distillation job: out-of-memory and divergence errors, mixed precision.

A device that runs out of memory (CUDA, MPS) raises a backend error deep inside a step; the
job turns it into :class:`DistillOutOfMemoryError`, whose message says which setting to
lower, after returning the cached memory so the GUI (or the next attempt) starts clean.
"""

from __future__ import annotations

import torch

from alignet_engine.config.distill import DistillConfig
from alignet_engine.errors import AlignetError


class DistillDivergedError(AlignetError):
    """The training loss became NaN or infinite."""


class DistillOutOfMemoryError(AlignetError):
    """The device ran out of memory; the message says which settings to lower."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory error (CUDA's typed one or a backend's text)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(device: torch.device) -> None:
    """Return cached blocks to the driver so the next attempt (or the GUI) starts clean."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def oom_error(
    config: DistillConfig, device: torch.device, where: str, image_shape: tuple[int, ...]
) -> DistillOutOfMemoryError:
    size = f"{image_shape[-2]}×{image_shape[-1]} px" if len(image_shape) >= 2 else "unknown"
    half = max(1, config.batch_size // 2)
    keep = config.effective_batch_size // half if config.effective_batch_size % half == 0 else 0
    accumulate = (
        f"accumulation_steps={keep} keeps the effective batch of "
        f"{config.effective_batch_size} triplets"
        if keep
        else "raise accumulation_steps to keep the effective batch"
    )
    tips = [
        f"a smaller batch_size (now {config.batch_size}; e.g. {half} — {accumulate})",
        f"a smaller eval_batch_size (now {config.eval_batch_size}) if it failed in validation",
    ]
    if device.type == "cuda" and not config.amp:
        tips.append("amp=True (mixed precision roughly halves activation memory)")
    tips.append(f"a smaller image_size (images are {size})")
    return DistillOutOfMemoryError(
        f"{device} ran out of memory during {where}; try " + "; ".join(tips) + "."
    )


def amp_dtype(config: DistillConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32 training."""
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
