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


@pytest.fixture(scope="module")
def float32_cache(dataset, table, tmp_path_factory):
    """The test dataset's cache with float32 features from the float32 encoder."""
    return build_cache(table, dataset / "images", tmp_path_factory.mktemp("f32") / "cache",
                       progress=False, dtype="float32", **CACHE_SETTINGS)


# The largest relative L2 difference from the float32 features allowed per image. Measured on
# the test encoder (random-weight InceptionV3 to mixed2, 75 px), Keras 3.15, CPU: bfloat16
# 0.0090 (TensorFlow) / 0.0047 (JAX), float16 0.0020 / 0.0024; cosine >= 0.99998.
MIXED_TOLERANCE = {"bfloat16": 0.03, "float16": 0.01}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_a_mixed_precision_encoder_stays_close_and_saves_float32(float32_cache, dataset, table,
                                                                 tmp_path, precision):
    out = build_cache(table, dataset / "images", tmp_path / "mixed", progress=False,
                      mixed_precision=precision, dtype="float32", **CACHE_SETTINGS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mixed_precision"] == precision
    with h5py.File(out / "encoder.hdf5", "r") as file:
        assert f"mixed_{precision}" not in str(file.attrs["model_config"])
    names, mixed = as_array(out)
    reference_names, reference = as_array(float32_cache)
    assert list(names) == list(reference_names)
    difference = (np.linalg.norm(mixed - reference, axis=1)
                  / np.linalg.norm(reference, axis=1))
    cosine = np.sum(mixed * reference, 1) / (np.linalg.norm(mixed, axis=1)
                                             * np.linalg.norm(reference, axis=1))
    print(f"{precision}: relative L2 difference max {difference.max():.4f} mean "
          f"{difference.mean():.4f}, cosine min {cosine.min():.6f}")
    assert difference.max() < MIXED_TOLERANCE[precision]
    assert cosine.min() > 0.999
    assert not np.array_equal(mixed, reference)  # it did compute in the lower precision


def test_an_unknown_precision_is_refused(dataset, table, tmp_path):
    with pytest.raises(ConfigError, match="'half'"):
        build_cache(table, dataset / "images", tmp_path / "cache", progress=False,
                    mixed_precision="half", **CACHE_SETTINGS)
