"""Helpers shared by the cache tests: manifests, reading a cache back, a killed run."""

from __future__ import annotations

import json
import logging

import numpy as np

from captioning.cache import load_features
from tests.helpers import IMAGE_SIZE

# float16 keeps 11 significant bits: a relative step of about 1e-3.
F16_RTOL = 2e-3


def read_manifest(cache_dir) -> dict:
    return json.loads((cache_dir / "manifest.json").read_text())


def write_manifest(cache_dir, manifest) -> None:
    (cache_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def set_manifest(cache_dir, **changes) -> None:
    manifest = read_manifest(cache_dir)
    manifest.update(changes)
    write_manifest(cache_dir, manifest)


def as_array(cache_dir):
    """`(names, float32 features)` of a cache, loaded whole."""
    names, features = load_features(cache_dir)
    return names, np.asarray(features)


def encode(cache_dir, image_dir, names):
    """What the cache's own saved encoder computes for the images, float32."""
    import keras

    from captioning.data.images import load_and_resize

    model = keras.saving.load_model(cache_dir / "encoder.hdf5", safe_mode=True, compile=False)
    pixels = np.stack([load_and_resize(image_dir / name, IMAGE_SIZE) for name in names])
    return np.asarray(model.predict_on_batch(pixels), np.float32)


def assert_close_f16(actual, expected):
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=F16_RTOL, atol=1e-3 * scale)


def simulate_kill(cache_dir, lost_shard=None) -> dict:
    """Puts a finished cache back into the state a killed `cache` run leaves: not complete,
    no captions.csv/failed.csv, optionally one shard never written."""
    manifest = read_manifest(cache_dir)
    manifest["complete"] = False
    manifest.pop("n_failed", None)
    write_manifest(cache_dir, manifest)
    (cache_dir / "captions.csv").unlink()
    (cache_dir / "failed.csv").unlink()
    if lost_shard is not None:
        (cache_dir / "shards" / manifest["shards"][lost_shard]["file"]).unlink()
    return manifest


def logged(caplog) -> str:
    """The messages of the INFO and higher records the cache logged, one a line."""
    return "\n".join(record.getMessage() for record in caplog.records
                     if record.name.startswith("captioning.cache")
                     and record.levelno >= logging.INFO)


def warned(caplog) -> list:
    """The messages of the WARNING records the cache logged."""
    return [record.getMessage() for record in caplog.records
            if record.name.startswith("captioning.cache") and record.levelno == logging.WARNING]
