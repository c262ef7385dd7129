"""The encoder loop: uint8 batches of one shape (the last one padded), the same features as
encoding each image alone, and the optional mixed-precision encoder."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest

from captioning.cache import build_cache
from captioning.errors import ConfigError
from tests.cache.helpers import F16_RTOL, as_array, encode
from tests.helpers import CACHE_SETTINGS


@pytest.fixture
def batches(monkeypatch):
    """The `(shape, dtype)` of every batch a Keras model predicts on."""
    seen = []
    original = keras.Model.predict_on_batch

    def spy(self, x):
        seen.append((tuple(x.shape), str(x.dtype)))
        return original(self, x)

    monkeypatch.setattr(keras.Model, "predict_on_batch", spy)
    return seen


def test_every_batch_is_uint8_of_one_shape(dataset, table, tmp_path, batches):
    # 40 images in batches of 16: 16, 16, then 8 padded to 16 (no second compilation).
    out = build_cache(table, dataset / "images", tmp_path / "cache", batch_size=16,
                      progress=False, **CACHE_SETTINGS)
    size = CACHE_SETTINGS["image_size"]
    assert batches == [((16, size, size, 3), "uint8")] * 3
    names, features = as_array(out)
    assert features.shape[0] == 40
    np.testing.assert_allclose(features, encode(out, dataset / "images", names),
                               rtol=F16_RTOL, atol=1e-6)


def test_fewer_images_than_a_batch_make_one_unpadded_batch(dataset, table, tmp_path, batches):
    few = table[table["image"].isin(sorted(set(table["image"]))[:5])]
    build_cache(few, dataset / "images", tmp_path / "cache", batch_size=32, progress=False,
                **CACHE_SETTINGS)
    assert [shape[0] for shape, _ in batches] == [5]


@pytest.mark.slow
def test_a_mixed_precision_encoder_stays_close_and_saves_float32(cache, dataset, table,
                                                                 tmp_path):
    out = build_cache(table, dataset / "images", tmp_path / "mixed", progress=False,
                      mixed_precision="bfloat16", dtype="float32", **CACHE_SETTINGS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mixed_precision"] == "bfloat16"
    with h5py.File(out / "encoder.hdf5", "r") as file:
        assert "mixed_bfloat16" not in str(file.attrs["model_config"])
    names, mixed = as_array(out)
    reference_names, reference = as_array(cache)
    assert list(names) == list(reference_names)
    cosine = np.sum(mixed * reference, 1) / (np.linalg.norm(mixed, axis=1)
                                             * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.999
    assert not np.array_equal(mixed, reference)  # it did compute in bfloat16


def test_an_unknown_precision_is_refused(dataset, table, tmp_path):
    with pytest.raises(ConfigError, match="'half'"):
        build_cache(table, dataset / "images", tmp_path / "cache", progress=False,
                    mixed_precision="half", **CACHE_SETTINGS)
