"""The on-disk feature cache: its identity, building (resumable), merging and reading.

    identity.py   the manifest, fingerprints, `describe_differences`
    space.py      what a cache takes on disk, the refusal to start what would not fit
    shards.py     shard files (names, checks, writing), failed images, captions.csv
    progress.py   the progress bar or log lines of a build
    encode.py     the encoder over the shards (decode threads ahead, a writer behind)
    build.py      `build_cache`: a new cache, or the resume of an unfinished one
    merge.py      `merge_caches`: the slices of a sharded cache joined
    reader.py     `FeatureCache`, `load_features`: rows read from memory maps
"""

from captioning.cache.build import build_cache, default_workers
from captioning.cache.identity import (
    CACHE_FORMAT,
    IDENTITY_KEYS,
    describe_differences,
    images_fingerprint,
    weights_fingerprint,
    weights_identity,
)
from captioning.cache.merge import merge_caches
from captioning.cache.reader import FeatureCache, load_features
from captioning.cache.space import estimate_bytes

__all__ = [
    "CACHE_FORMAT",
    "FeatureCache",
    "IDENTITY_KEYS",
    "build_cache",
    "default_workers",
    "describe_differences",
    "estimate_bytes",
    "images_fingerprint",
    "load_features",
    "merge_caches",
    "weights_fingerprint",
    "weights_identity",
]
