"""What makes a cache what it is: its manifest, fingerprints and the comparison of two.

Two caches hold interchangeable features when they agree on `IDENTITY_KEYS`: the encoder
settings, the feature shape, the fingerprint of the encoder's weights and the fingerprint of
the image list. `describe_differences` names the keys on which they do not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from captioning.errors import CacheError
from captioning.utils.files import atomic_write_json, sha256_file

CACHE_FORMAT = "captioning.features"
CACHE_VERSION = 1
MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.hdf5"
# How a failed write tells the user to go on: a cache build or merge resumes.
RESUME = "run the same command again to resume (what is finished is kept)"

SETTING_KEYS = ("encoder", "weights", "image_size", "features", "dtype")
# What makes two caches' features interchangeable: `describe_differences` compares these.
IDENTITY_KEYS = SETTING_KEYS + ("feature_shape", "encoder_weights_sha256",
                                "images_fingerprint")
# Slices of one sharded cache agree on these as well.
SLICE_KEYS = IDENTITY_KEYS + ("shard_size", "n_images")
_LABELS = {"images_fingerprint": "image list (fingerprint)",
           "encoder_weights_sha256": "encoder weights (fingerprint)"}


def images_fingerprint(images) -> str:
    """A fingerprint of an image list: the sha256 of the sorted unique names."""
    names = sorted(set(map(str, images)))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def weights_fingerprint(model) -> str:
    """The sha256 of a model's weight values (equal for equal weights, whatever the file)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy())).tobytes())
    return digest.hexdigest()


def weights_identity(weights) -> str:
    """How a manifest records the `weights` argument of `build_encoder`.

    `"none"` and `"imagenet"` stay as they are; a weights file becomes
    `"file:<name>:sha256:<hex>"`, so that a renamed copy of the same file is the same
    weights and an edited file is not.
    """
    if weights is None or str(weights).lower() == "none":
        return "none"
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    return f"file:{path.name}:sha256:{sha256_file(path)}" if path.is_file() else str(weights)


def describe_differences(found: dict, expected: dict, *, keys=IDENTITY_KEYS,
                         found_name: str = "cache", expected_name: str = "expected") -> list:
    """What makes two caches (or a cache and what a run or release expects) differ.

    Only the keys that `expected` records are compared, so older records that lack a key
    are not refused for it.

    Args:
        found: a cache manifest (or any dict of the same keys).
        expected: what it should match: another manifest, a run's record, a release's.
        keys: the keys to compare; by default the settings, feature shape, encoder weights
            fingerprint and image list fingerprint (`IDENTITY_KEYS`).
        found_name, expected_name: how the messages name the two sides.

    Returns:
        One line per differing key, `"key: <found_name> value vs <expected_name> value"`;
        empty when they agree.
    """
    lines = []
    for key in keys:
        if key not in expected:
            continue
        have, want = found.get(key), expected.get(key)
        if _comparable(have) != _comparable(want):
            lines.append(f"{_LABELS.get(key, key)}: {found_name} {_show(key, have)} vs "
                         f"{expected_name} {_show(key, want)}")
    return lines


def _comparable(value):
    return list(value) if isinstance(value, tuple) else value


def _show(key, value) -> str:
    if value is None:
        return "none" if key != "slice" else "none (a whole cache)"
    if key == "slice":
        return f"{value[0]}/{value[1]}"
    if key == "feature_shape":
        return "x".join(map(str, value))
    if key.endswith(("fingerprint", "sha256")):
        return f"{str(value)[:12]}..."
    return repr(value)


def read_manifest(cache_dir) -> dict:
    """The manifest of a cache folder; a `CacheError` naming the folder if it has none."""
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST_FILE
    if not path.exists():
        raise CacheError(f"{cache_dir} is not a feature cache (no {MANIFEST_FILE}); make one "
                         "with `python -m captioning cache`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CacheError(f"{path}: not valid JSON ({error}); delete the cache and run "
                         "`cache` again") from None
    if manifest.get("format") != CACHE_FORMAT:
        raise CacheError(f"{path}: not a captioning feature cache manifest")
    return manifest


def write_manifest(cache_dir, manifest: dict) -> None:
    """Writes a cache folder's manifest whole or not at all."""
    atomic_write_json(Path(cache_dir) / MANIFEST_FILE, manifest, error=CacheError,
                      again=RESUME)


def check_resumable(manifest: dict, requested: dict, cache_dir) -> None:
    """Refuses to resume a cache folder made with other settings, images or slice.

    Args:
        manifest: the folder's manifest.
        requested: the settings asked for, with `images_fingerprint` and `slice` (an
            `[index, count]` pair, or None for a whole cache).
        cache_dir: the folder, named in the message.
    """
    differences = describe_differences(manifest, requested, keys=tuple(requested),
                                       expected_name="asked for")
    if not differences:
        return
    part = manifest.get("slice")
    if part != requested["slice"]:
        advice = (f"run it with --shard {part[0]}/{part[1]} as it was started (then --merge "
                  "the finished slices), or use another --out folder" if part else
                  "it is a whole cache: run it without --shard, or use another --out folder")
    else:
        advice = "use another --out folder or delete this one"
    raise CacheError(f"{cache_dir} was made differently ({'; '.join(differences)}); {advice}")
