"""Reading a finished cache: rows gathered from the shards' memory maps, never all at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from captioning.cache.identity import (
    IDENTITY_KEYS,
    SETTING_KEYS,
    images_fingerprint,
    read_manifest,
)
from captioning.cache.shards import SHARDS_DIR, entry_problem
from captioning.errors import CacheError


class FeatureCache:
    """Reads a finished cache through memory maps.

    Args:
        cache_dir: a folder written by `build_cache`.

    Example:
    >>> cache = FeatureCache("cache/")                      # doctest: +SKIP
    >>> cache.gather(cache.rows(["a.jpg"])).shape           # doctest: +SKIP
    (1, 2048)
    """

    def __init__(self, cache_dir):
        self.path = Path(cache_dir)
        self.manifest = read_manifest(self.path)
        if self.manifest.get("slice"):
            index, count = self.manifest["slice"]
            raise CacheError(f"{self.path} is slice {index}/{count} of a sharded cache; join "
                             "the slices with `python -m captioning cache --merge`")
        if not self.manifest.get("complete"):
            raise CacheError(f"{self.path} is unfinished; run the same `cache` command again "
                             "to complete it")
        self.images = (self.path / "images.txt").read_text().splitlines()
        if images_fingerprint(self.images) != self.manifest["images_fingerprint"]:
            raise CacheError(f"{self.path / 'images.txt'} does not match manifest.json")
        self.index = {name: row for row, name in enumerate(self.images)}
        self._shards = []
        for shard in self.manifest["shards"]:
            path = self.path / SHARDS_DIR / shard["file"]
            problem = entry_problem(self.path, shard, self.manifest)
            if problem == "missing":
                raise CacheError(f"{path} is missing; run the `cache` command again")
            if problem:
                raise CacheError(f"{path}: {problem}; run the same `cache` command again to "
                                 "recompute it")
            self._shards.append(np.load(path, mmap_mode="r"))
        self._starts = np.array([s["start"] for s in self.manifest["shards"]])

    @property
    def feature_shape(self) -> tuple:
        """The shape of one image's features."""
        return tuple(self.manifest["feature_shape"])

    @property
    def settings(self) -> dict:
        """The encoder settings the cache was made with (`build_cache`'s arguments)."""
        return {key: self.manifest[key] for key in SETTING_KEYS}

    @property
    def identity(self) -> dict:
        """What `describe_differences` compares: settings, feature shape, the encoder
        weights' and the image list's fingerprints."""
        return {key: self.manifest.get(key) for key in IDENTITY_KEYS}

    def captions(self) -> pd.DataFrame:
        """The cached images' captions: image, caption, split."""
        return pd.read_csv(self.path / "captions.csv", dtype=str, keep_default_na=False)

    def rows(self, images) -> np.ndarray:
        """Row numbers of image names."""
        try:
            return np.array([self.index[str(name)] for name in images], dtype=np.int64)
        except KeyError as error:
            raise CacheError(f"{error.args[0]} is not in the cache {self.path}") from None

    def gather(self, rows) -> np.ndarray:
        """float32 features of the given rows, read from the memory maps."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + self.feature_shape, np.float32)
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.nonzero(shard_of == shard)[0]
            local = rows[where] - self._starts[shard]
            order = np.argsort(local)
            out[where[order]] = self._shards[shard][local[order]]
        return out

    def statistics(self, rows=None, chunk_values: int = 1 << 21):
        """Per-dimension mean and variance of the features (over images and regions),
        streamed in chunks of about `chunk_values` feature values (16 MiB as float64), so
        the memory it needs does not grow with the cache."""
        rows = np.arange(len(self)) if rows is None else np.unique(np.asarray(rows))
        dim = self.feature_shape[-1]
        chunk = max(1, chunk_values // int(np.prod(self.feature_shape)))
        total, total_sq, count = np.zeros(dim), np.zeros(dim), 0
        for start in range(0, len(rows), chunk):
            block = self.gather(rows[start:start + chunk]).reshape(-1, dim).astype(np.float64)
            total += block.sum(0)
            total_sq += np.einsum("ij,ij->j", block, block)
            count += len(block)
        mean = total / max(count, 1)
        variance = np.maximum(total_sq / max(count, 1) - mean ** 2, 1e-12)
        return mean.astype(np.float32), variance.astype(np.float32)

    def __len__(self):
        return len(self.images)


class _ShardedArray:
    """A read-only float32 array view over the cache's shard memory maps (stored as the
    cache's dtype, read as float32). Indexing takes what a NumPy array takes on its first
    axis (int, slice, list, boolean mask), followed by any index of the feature axes."""

    def __init__(self, cache: FeatureCache):
        self._cache = cache
        self.shape = (len(cache),) + cache.feature_shape
        self.dtype = np.dtype(np.float32)
        self.stored_dtype = np.dtype(cache.manifest["dtype"])
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            if not key or key[0] is Ellipsis:
                return np.asarray(self)[key]
            key, rest = key[0], key[1:]
        if key is None:
            raise IndexError("features[None, ...] (a new first axis) is not supported; "
                             "index np.asarray(features) instead")
        rows = np.arange(self.shape[0])[key]
        if np.ndim(rows) == 0:
            return self._cache.gather([int(rows)])[(0,) + rest]
        if isinstance(key, slice):
            return self._cache.gather(rows)[(slice(None),) + rest]
        # An index array (or mask) on the rows: positions in the gathered rows, so that it
        # combines with index arrays on the feature axes as NumPy combines them.
        local = np.arange(rows.size).reshape(rows.shape)
        return self._cache.gather(rows.ravel())[(local,) + rest]

    def __array__(self, dtype=None, copy=None):
        data = self._cache.gather(np.arange(self.shape[0]))
        return data if dtype is None else data.astype(dtype)


def load_features(cache_dir):
    """Reads a cache back for scripts and tests.

    Returns:
        `(image_names, features)`: the names in row order and a float32 array-like of shape
        `(n_images, *feature_shape)` that reads rows lazily from the shards' memory maps
        (index it as a NumPy array, or `numpy.asarray` it to load everything). Its `dtype`
        is float32, what indexing returns; `stored_dtype` is the cache's.
    """
    cache = FeatureCache(cache_dir)
    return list(cache.images), _ShardedArray(cache)
