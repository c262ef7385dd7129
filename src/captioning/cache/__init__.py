"""The on-disk feature cache: its identity, building (resumable), merging and reading."""

from captioning.cache.build import (  # noqa: F401
    CACHE_FORMAT,
    IDENTITY_KEYS,
    images_fingerprint,
    weights_fingerprint,
    estimate_bytes,
    describe_differences,
    default_workers,
    build_cache,
    merge_caches,
    FeatureCache,
    load_features,
)

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
]
