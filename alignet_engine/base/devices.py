"""Choosing the torch device and the CPU thread count the engine computes on.

Every layer uses these (the GUI's session sets the thread count at start-up, the CLI parses
``--device``), so importing this module does not import torch: each function imports it when
called.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from alignet_engine.errors import AlignetError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEVICE_PREFERENCES = ("auto", "cpu", "cuda", "mps")


class DeviceUnavailableError(AlignetError, ValueError):
    """The device asked for does not exist on this machine (or the name is not a device)."""


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(preference: str | torch.device = "auto") -> torch.device:
    """Resolve a device preference to a usable :class:`torch.device`.

    Parameters
    ----------
    preference : ``"auto"`` (CUDA if available, else Apple MPS, else CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"``, ``"mps"``, or a ``torch.device``.

    Returns
    -------
    torch.device

    Raises
    ------
    DeviceUnavailableError
        An explicit device that this machine does not have, or a string that is not a device.
        We never fall back silently: a user who picked "cuda" and got the CPU would wait hours
        for a run they expected to take minutes.
    """
    import torch

    if isinstance(preference, torch.device):
        spec = str(preference)
    else:
        spec = str(preference).strip().lower()

    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        logger.info("auto device: %s", device)
        return device

    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise DeviceUnavailableError(
            f"'{preference}' is not a device; use one of {', '.join(DEVICE_PREFERENCES)} "
            "(or cuda:N)"
        ) from exc

    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device '{preference}' was asked for but CUDA is not available on this machine "
                "(no NVIDIA GPU, or PyTorch was built without CUDA); use 'auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(
                f"device '{preference}' does not exist: this machine has {count} CUDA "
                f"device(s) (cuda:0 .. cuda:{count - 1})"
            )
        return device
    if device.type == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                f"device '{preference}' was asked for but Apple MPS is not available on this "
                "machine; use 'auto' or 'cpu'"
            )
        return device
    raise DeviceUnavailableError(
        f"device type '{device.type}' is not supported; use one of {', '.join(DEVICE_PREFERENCES)}"
    )


def set_cpu_threads(n: int | None) -> int:
    """Set how many CPU threads PyTorch uses inside one operation (intra-op parallelism).

    Parameters
    ----------
    n : number of threads (>= 1), or ``None`` to leave PyTorch's current setting alone.

    Returns
    -------
    int
        The number of intra-op threads in effect afterwards.

    Notes
    -----
    Only the intra-op pool is touched: ``torch.set_num_interop_threads`` may be called once per
    process and raises afterwards, which would make this helper unsafe to call twice.
    """
    import torch

    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"CPU thread count must be a positive integer or None, got {n!r}")
        torch.set_num_threads(n)
        logger.info("PyTorch CPU threads set to %d", n)
    return torch.get_num_threads()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the old setting.

    ``None`` leaves the setting alone. Small fits run faster on one thread when other work
    shares the cores, and a GUI keeps a core for its event loop.
    """
    import torch

    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
