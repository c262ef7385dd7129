"""Fixtures of the cache tests (the shared dataset and cache are in tests/conftest.py)."""

from __future__ import annotations

import logging

import pytest

from captioning.cache import build_cache
from tests.helpers import CACHE_SETTINGS


@pytest.fixture(scope="session")
def sharded_cache(tmp_path_factory, dataset, table):
    """The dataset cached in five shards of 8 images."""
    out = tmp_path_factory.mktemp("sharded") / "cache"
    return build_cache(table, dataset / "images", out, shard_size=8, batch_size=8,
                       progress=False, **CACHE_SETTINGS)


@pytest.fixture(scope="session")
def halves(table, dataset, tmp_path_factory):
    """Slices 0/2 (shards 0, 2, 4) and 1/2 (shards 1, 3) of the dataset, 8 images a shard."""
    root = tmp_path_factory.mktemp("halves")
    return [build_cache(table, dataset / "images", root / f"slice{i}", shard_size=8,
                        progress=False, shard=(i, 2), **CACHE_SETTINGS) for i in range(2)]


@pytest.fixture
def info(caplog):
    """`caplog` recording the package's INFO lines."""
    caplog.set_level(logging.INFO, logger="captioning")
    return caplog
