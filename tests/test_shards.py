"""Sharded caches: slices computed apart (`cache --shard I/N`) and joined (`--merge`)."""

import numpy as np
import pytest

from captioning.errors import CacheError
from captioning.features import FeatureCache, build_cache, load_features, merge_caches
from conftest import CACHE_SETTINGS


def _slice(table, dataset, out, index, count, **changes):
    settings = dict(CACHE_SETTINGS, shard_size=8, progress=False, shard=(index, count))
    settings.update(changes)
    return build_cache(table, dataset / "images", out, **settings)


def test_merged_slices_equal_one_uninterrupted_cache(table, dataset, tmp_path):
    whole = build_cache(table, dataset / "images", tmp_path / "whole", shard_size=8,
                        progress=False, **CACHE_SETTINGS)
    slices = [_slice(table, dataset, tmp_path / f"slice{i}", i, 3) for i in range(3)]
    held = [sorted(p.name for p in (s / "shards").glob("*.npy")) for s in slices]
    assert all(held) and not set(held[0]) & set(held[1])
    merged = merge_caches(slices, tmp_path / "merged")
    names, features = load_features(merged)
    whole_names, whole_features = load_features(whole)
    assert names == whole_names
    np.testing.assert_array_equal(np.asarray(features), np.asarray(whole_features))
    assert len(FeatureCache(merged).captions()) == len(FeatureCache(whole).captions())


def test_a_slice_alone_is_not_a_cache(table, dataset, tmp_path):
    part = _slice(table, dataset, tmp_path / "slice0", 0, 2)
    with pytest.raises(CacheError, match="--merge"):
        FeatureCache(part)


def test_merge_refuses_missing_and_mismatched_slices(table, dataset, tmp_path):
    first = _slice(table, dataset, tmp_path / "a", 0, 2)
    with pytest.raises(CacheError, match="finish every slice"):
        merge_caches([first], tmp_path / "m1")
    other = _slice(table, dataset, tmp_path / "b", 1, 2, image_size=80)
    with pytest.raises(CacheError, match="image_size"):
        merge_caches([first, other], tmp_path / "m2")
