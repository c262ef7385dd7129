"""Fixtures of the release tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def image(dataset):
    """One image of the shared synthetic dataset."""
    return next((dataset / "images").glob("*.jpg"))
