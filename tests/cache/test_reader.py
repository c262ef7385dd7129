"""`FeatureCache` and `load_features`: a finished cache read back from its memory maps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from captioning.cache import FeatureCache, load_features
from captioning.errors import CacheError
from tests.cache.helpers import as_array, assert_close_f16, encode, read_manifest, simulate_kill
from tests.helpers import FEATURE_DIM


def test_load_features_equal_the_saved_encoder_on_the_images(cache, dataset, table):
    names, features = load_features(cache)
    assert names == sorted(set(table["image"]))
    assert features.shape == (40, FEATURE_DIM) and len(features) == 40
    array = np.asarray(features)
    assert array.dtype == np.float32
    assert np.isfinite(array).all() and array.std() > 0
    assert_close_f16(array, encode(cache, dataset / "images", names))
    # Lazy indexing reads the same rows.
    np.testing.assert_array_equal(features[3], array[3])
    np.testing.assert_array_equal(features[5:17:3], array[5:17:3])


def test_captions_csv_holds_the_cached_captions(cache, table):
    captions = FeatureCache(cache).captions()
    assert list(captions.columns) == ["image", "caption", "split"]
    assert len(captions) == len(table)
    assert set(captions["split"]) == {"train", "val", "test"}


def test_several_shards_read_back_in_order(sharded_cache, cache, dataset):
    manifest = read_manifest(sharded_cache)
    shards = manifest["shards"]
    assert len(shards) == 5
    assert [(s["start"], s["stop"]) for s in shards] == [(i, i + 8) for i in range(0, 40, 8)]
    names, array = as_array(sharded_cache)
    assert names == as_array(cache)[0]
    assert_close_f16(array, encode(sharded_cache, dataset / "images", names))
    for shard in shards:
        stored = np.load(sharded_cache / "shards" / shard["file"])
        np.testing.assert_array_equal(stored.astype(np.float32),
                                      array[shard["start"]:shard["stop"]])
    # Rows gathered across shards in any order come back in the order asked for.
    reader = FeatureCache(sharded_cache)
    rows = np.random.default_rng(0).permutation(40)[:23]
    np.testing.assert_array_equal(reader.gather(rows), array[rows])
    np.testing.assert_array_equal(reader.gather(reader.rows([names[9], names[2]])),
                                  array[[9, 2]])


def test_statistics_match_numpy(sharded_cache):
    reader = FeatureCache(sharded_cache)
    array = np.asarray(load_features(sharded_cache)[1]).astype(np.float64)
    mean, variance = reader.statistics(chunk_values=7 * FEATURE_DIM)  # chunks of 7 images
    assert mean.shape == variance.shape == (FEATURE_DIM,)
    np.testing.assert_allclose(mean, array.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, array.var(0), rtol=1e-4, atol=1e-6)
    rows = [3, 17, 17, 30, 8]
    mean, variance = reader.statistics(rows)
    subset = array[np.unique(rows)]
    np.testing.assert_allclose(mean, subset.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, subset.var(0), rtol=1e-4, atol=1e-6)


def test_feature_cache_refuses_an_unfinished_cache(cache, tmp_path):
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    simulate_kill(work)
    with pytest.raises(CacheError, match="unfinished"):
        FeatureCache(work)
    with pytest.raises(CacheError, match="unfinished"):
        load_features(work)


def test_feature_cache_refuses_a_folder_without_manifest(tmp_path):
    with pytest.raises(CacheError, match="not a feature cache"):
        FeatureCache(tmp_path)


def test_unknown_image_names_are_reported(cache):
    with pytest.raises(CacheError, match="nope.jpg"):
        FeatureCache(cache).rows(["nope.jpg"])


def test_features_index_like_a_numpy_array(sharded_cache):
    _, features = load_features(sharded_cache)
    array = np.asarray(features)
    assert features.dtype == array.dtype == features[0].dtype == np.float32
    assert features.stored_dtype == np.float16
    mask = np.zeros(40, bool)
    mask[[1, 9, 30]] = True
    for key in [(0, slice(None, 3)), (slice(None), 0), (slice(5, 20, 4), slice(1, 3)),
                ([3, 12, 3], [0, 2, 4]), ([[1, 2], [30, 39]],), (mask,), (mask, 7),
                (Ellipsis, 5), (-1,), (np.int64(17), -1)]:
        np.testing.assert_array_equal(features[key], array[key], err_msg=str(key))
    with pytest.raises(IndexError):
        features[40]
