"""Sharded caches: slices computed apart (`cache --shard I/N`) and joined (`--merge`)."""

from __future__ import annotations

import collections
import shutil

import numpy as np
import pandas as pd
import pytest

from captioning.cache import FeatureCache, build_cache, load_features, merge_caches
from captioning.cache.space import estimate_bytes, space_needed
from captioning.errors import CacheError
from tests.cache.helpers import as_array, logged, set_manifest
from tests.helpers import CACHE_SETTINGS, ENCODER, FEATURE_DIM, IMAGE_SIZE


def _slice(table, dataset, out, index, count, **changes):
    settings = dict(CACHE_SETTINGS, shard_size=8, progress=False, shard=(index, count))
    settings.update(changes)
    return build_cache(table, dataset / "images", out, **settings)


def _copy(folder, tmp_path, name=None):
    target = tmp_path / (name or folder.name)
    shutil.copytree(folder, target)
    return target


def test_merged_slices_equal_one_uninterrupted_cache(halves, sharded_cache, tmp_path, info):
    held = [sorted(p.name for p in (s / "shards").glob("*.npy")) for s in halves]
    assert held == [[f"features-0000{i}-of-00005.npy" for i in (0, 2, 4)],
                    [f"features-0000{i}-of-00005.npy" for i in (1, 3)]]
    merged = merge_caches(halves, tmp_path / "merged")
    assert f"Merged 2 slices into {merged} (40 images)." in logged(info)
    names, array = as_array(merged)
    # Random encoder weights are seeded, so every run builds the same encoder.
    reference_names, reference = as_array(sharded_cache)
    assert names == reference_names
    np.testing.assert_array_equal(array, reference)
    pd.testing.assert_frame_equal(FeatureCache(merged).captions(),
                                  FeatureCache(sharded_cache).captions())


def test_a_slice_alone_is_not_a_cache_and_a_finished_one_is_not_recomputed(
        halves, table, dataset, tmp_path, info):
    with pytest.raises(CacheError, match="--merge"):
        FeatureCache(halves[0])
    work = _copy(halves[0], tmp_path)
    _slice(table, dataset, work, 0, 2)  # its other shards belong to the other slice
    assert "already complete" in logged(info) and "Resuming" not in logged(info)


def test_three_slices_merge_into_the_whole_cache(table, dataset, sharded_cache, tmp_path):
    slices = [_slice(table, dataset, tmp_path / f"slice{i}", i, 3) for i in range(3)]
    held = [sorted(p.name for p in (s / "shards").glob("*.npy")) for s in slices]
    assert all(held) and not set(held[0]) & set(held[1])
    merged = merge_caches(slices, tmp_path / "merged")
    names, features = load_features(merged)
    whole_names, whole_features = load_features(sharded_cache)
    assert names == whole_names
    np.testing.assert_array_equal(np.asarray(features), np.asarray(whole_features))
    assert len(FeatureCache(merged).captions()) == len(FeatureCache(sharded_cache).captions())


def test_merge_refuses_missing_and_mismatched_slices(halves, table, dataset, tmp_path):
    with pytest.raises(CacheError, match="finish every slice"):
        merge_caches([halves[0]], tmp_path / "m1")
    other = _slice(table, dataset, tmp_path / "b", 1, 2, image_size=80)
    with pytest.raises(CacheError, match="image_size"):
        merge_caches([halves[0], other], tmp_path / "m2")


def test_merging_other_slices_into_an_existing_merge_is_refused(halves, table, dataset,
                                                                tmp_path):
    merged = merge_caches(halves, tmp_path / "merged")
    features = np.asarray(load_features(merged)[1])
    # One slice of one holds every shard: the quickest whole set of 80 px slices.
    wider = _slice(table, dataset, tmp_path / "wide", 0, 1, image_size=80)
    with pytest.raises(CacheError) as caught:
        merge_caches([wider], merged)
    message = str(caught.value)
    assert str(merged) in message and f"image_size: merged {IMAGE_SIZE} vs slices 80" in message
    np.testing.assert_array_equal(np.asarray(load_features(merged)[1]), features)


def test_a_resumed_merge_copies_again_what_is_not_the_slices_bytes(halves, tmp_path, info):
    merged = merge_caches(halves, tmp_path / "merged")
    features = np.asarray(load_features(merged)[1])
    shards = sorted((merged / "shards").glob("*.npy"))
    kept = shards[0].stat().st_mtime_ns
    data = bytearray(shards[1].read_bytes())
    data[-1] ^= 0xFF  # the same size, another byte: a stale or damaged copy
    shards[1].write_bytes(bytes(data))
    shards[2].unlink()
    set_manifest(merged, complete=False)
    info.clear()

    merge_caches(halves, merged)

    assert "2 of 5 shards to copy" in logged(info)
    assert shards[0].stat().st_mtime_ns == kept
    np.testing.assert_array_equal(np.asarray(load_features(merged)[1]), features)


def test_merge_refuses_a_folder_with_shards_but_no_manifest(halves, tmp_path):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "features-00000-of-00005.npy").write_bytes(b"old")
    with pytest.raises(CacheError, match="no manifest.json"):
        merge_caches(halves, out)


def test_merge_names_the_folder_and_the_fix(halves, cache, tmp_path):
    with pytest.raises(CacheError, match="one of the slices being merged") as caught:
        merge_caches(halves, halves[0])
    assert str(halves[0]) in str(caught.value)
    with pytest.raises(CacheError, match="a whole cache, not a slice") as caught:
        merge_caches([halves[0], cache], tmp_path / "m1")
    assert str(cache) in str(caught.value)
    unfinished = _copy(halves[1], tmp_path)
    set_manifest(unfinished, complete=False)
    (unfinished / "captions.all.csv").unlink()
    with pytest.raises(CacheError, match=r"unfinished slice 1/2; run its `cache --shard 1/2`"):
        merge_caches([halves[0], unfinished], tmp_path / "m2")
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_a_slice_folder_is_resumed_only_as_the_same_slice(halves, table, dataset, tmp_path,
                                                          info):
    work = _copy(halves[0], tmp_path)
    with pytest.raises(CacheError, match=r"slice: cache 0/2 vs asked for none.*--shard 0/2"):
        build_cache(table, dataset / "images", work, shard_size=8, progress=False,
                    **CACHE_SETTINGS)
    with pytest.raises(CacheError, match="slice: cache 0/2 vs asked for 1/2"):
        _slice(table, dataset, work, 1, 2)
    # A slice with a lost shard counts its own three shards (0, 2 and 4 of 5).
    (work / "shards" / "features-00002-of-00005.npy").unlink()
    set_manifest(work, complete=False)
    _slice(table, dataset, work, 0, 2)
    printed = logged(info)
    assert "Resuming slice 0/2" in printed and "2 of 3 shards are done" in printed
    assert "Slice 0/2 done" in printed
    assert (work / "shards" / "features-00002-of-00005.npy").is_file()


def test_a_slice_estimates_only_its_own_shards(table, dataset, tmp_path, monkeypatch, info):
    from captioning.models.encoders import build_encoder

    encoder = build_encoder(ENCODER, "none", IMAGE_SIZE, "pooled")
    encoder_bytes = sum(int(np.prod(w.shape)) * 4 for w in encoder.weights)
    # Slice 0/5 of 40 images in shards of 8: one shard, 8 images.
    slice_bytes = estimate_bytes(8, (FEATURE_DIM,), "float16") + encoder_bytes
    free = space_needed(slice_bytes)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free, free))

    part = _slice(table, dataset, tmp_path / "slice0", 0, 5)

    assert "Caching 8 of the 40 images (slice 0/5, 1 of 5 shards)" in logged(info)
    assert len(list((part / "shards").glob("*.npy"))) == 1
    # The whole cache needs more than that.
    with pytest.raises(CacheError, match="free"):
        build_cache(table, dataset / "images", tmp_path / "whole", shard_size=8,
                    progress=False, **CACHE_SETTINGS)
