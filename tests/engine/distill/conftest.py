"""Fixtures of the trainer's tests."""

from __future__ import annotations

import pytest

from tests.engine.distill.toys import Toy, toy_problem


@pytest.fixture(scope="module")
def toy() -> Toy:
    """The learnable toy problem (:func:`toy_problem` with its defaults), once per module.

    test_distill_long, _resume and _stream define their own ``toy`` (other sizes).
    """
    return toy_problem()
