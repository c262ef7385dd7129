"""A cache's identity: its manifest, fingerprints, and what a run or release checks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from captioning.cache import describe_differences, images_fingerprint, weights_identity
from captioning.errors import CacheError
from captioning.utils.files import sha256_file
from tests.cache.helpers import read_manifest, write_manifest
from tests.helpers import ENCODER, FEATURE_DIM, IMAGE_SIZE


def test_manifest_records_how_the_cache_was_made(cache, table):
    manifest = read_manifest(cache)
    assert manifest["format"] == "captioning.features"
    assert manifest["encoder"] == ENCODER
    assert manifest["weights"] == "none"
    assert manifest["image_size"] == IMAGE_SIZE
    assert manifest["features"] == "pooled"
    assert manifest["dtype"] == "float16"
    assert manifest["feature_shape"] == [FEATURE_DIM]
    assert manifest["n_images"] == 40
    assert manifest["complete"] is True
    assert manifest["n_failed"] == 0
    assert manifest["images_fingerprint"] == images_fingerprint(table["image"])
    assert manifest["encoder_sha256"] == sha256_file(cache / "encoder.hdf5")
    for name in ("images.txt", "captions.csv", "failed.csv", "encoder.hdf5"):
        assert (cache / name).is_file(), name
    shard = np.load(cache / "shards" / manifest["shards"][0]["file"], mmap_mode="r")
    assert shard.dtype == np.float16 and shard.shape == (40, FEATURE_DIM)


def test_weights_identity_is_the_file_content_not_its_folder(tmp_path):
    assert weights_identity(None) == weights_identity("None") == "none"
    assert weights_identity("imagenet") == "imagenet"
    first, second = tmp_path / "a" / "w.h5", tmp_path / "b" / "w.h5"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"weights")
    assert weights_identity(first) == weights_identity(second)
    assert weights_identity(first) == f"file:w.h5:sha256:{sha256_file(first)}"
    second.write_bytes(b"other weights")
    assert weights_identity(first) != weights_identity(second)


def test_describe_differences_names_each_key_with_both_values():
    cache = {"encoder": "inception_v3", "image_size": 75, "feature_shape": [2048],
             "images_fingerprint": "a" * 64, "dtype": "float16"}
    expected = {"encoder": "inception_v3", "image_size": 80, "feature_shape": (64, 2048),
                "images_fingerprint": "b" * 64}
    lines = describe_differences(cache, expected, expected_name="run")
    assert lines == ["image_size: cache 75 vs run 80",
                     "feature_shape: cache 2048 vs run 64x2048",
                     f"image list (fingerprint): cache {'a' * 12}... vs run {'b' * 12}..."]
    # A key the expected side does not record is not compared; tuples equal lists.
    assert describe_differences(cache, {"feature_shape": (2048,), "encoder": "inception_v3"}
                                ) == []


def test_training_resumed_on_another_cache_says_what_differs(copy_run, cache, tmp_path):
    from captioning.errors import ConfigError
    from captioning.training.train import train

    from tests.helpers import tiny_config

    other = tmp_path / "other"
    shutil.copytree(cache, other)
    manifest = read_manifest(other)
    manifest["image_size"] = 80
    manifest["encoder_weights_sha256"] = "0" * 64
    write_manifest(other, manifest)
    with pytest.raises(ConfigError) as caught:
        train(other, copy_run, tiny_config(), progress=False)
    message = str(caught.value)
    assert f"image_size: cache 80 vs run {IMAGE_SIZE}" in message
    assert "encoder weights (fingerprint): cache 000000000000..." in message


def test_evaluation_checks_the_encoder_weights_not_the_file(run, cache, sharded_cache,
                                                            tmp_path):
    from captioning.evaluation import evaluate_release

    # Built again with the same seed: the same weights in another encoder.hdf5 file.
    assert (read_manifest(sharded_cache)["encoder_weights_sha256"]
            == read_manifest(cache)["encoder_weights_sha256"])
    with pytest.raises(CacheError, match="no images in split 'nope'"):
        evaluate_release(run, sharded_cache, split="nope")  # the encoder check passed
    other = tmp_path / "other"
    shutil.copytree(cache, other)
    manifest = read_manifest(other)
    manifest["features"] = "grid"
    write_manifest(other, manifest)
    with pytest.raises(CacheError, match="features: cache 'grid' vs release 'pooled'"):
        evaluate_release(run, other, split="test")
