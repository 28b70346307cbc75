"""Fixtures the engine's tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for a whole test module, then the old count back.

    The machine's cores are shared: one thread avoids oversubscription, and runs compared
    bitwise (resume, a second process) need the same thread count and so the same order of
    float reductions. Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
