"""Fixtures of the model tests."""

from __future__ import annotations

import pytest

from alignet_engine.models import Backbone, load_backbone


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    """The embedded EfficientNet-Lite0 (packaged ImageNet weights), loaded once per module."""
    return load_backbone("efficientnet_lite0")
