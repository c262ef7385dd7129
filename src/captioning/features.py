"""The on-disk feature cache: the encoder runs over every image once.

Layout of a cache folder:

    manifest.json     what made it: encoder settings, the encoder file's sha256, dtype,
                      feature shape, the image list's fingerprint, shard table, state
    images.txt        the images in row order (sorted names)
    captions.csv      image, caption, split of the cached images
    encoder.hdf5      the exact encoder that produced the features (random weights too)
    shards/*.npy      features, `shard_size` images each, float16 by default
    failed.csv        images that could not be read (name, reason), skipped

Each shard is written to a temporary name and renamed when complete, so a shard file that
exists is whole; a killed run, started again with the same command, skips the finished
shards and computes the rest. Reads go through memory maps and never load the cache whole.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from captioning.errors import CacheError, CaptioningError, ImageError

logger = logging.getLogger("captioning")

CACHE_FORMAT = "captioning.features"
CACHE_VERSION = 1
_SHARD_BYTES = 256 * 2**20
_ENCODER_FILE = "encoder.hdf5"


def sha256_file(path, chunk=2**20) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def images_fingerprint(images) -> str:
    """A fingerprint of an image list: the sha256 of the sorted unique names."""
    names = sorted(set(map(str, images)))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _shard_name(index: int, count: int) -> str:
    return f"features-{index:05d}-of-{count:05d}.npy"


def weights_fingerprint(model) -> str:
    """The sha256 of a model's weight values (equal for equal weights, whatever the file)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy())).tobytes())
    return digest.hexdigest()


def estimate_bytes(n_images: int, feature_shape, dtype: str) -> int:
    """Bytes the features of `n_images` take on disk."""
    return int(n_images * int(np.prod(feature_shape)) * np.dtype(dtype).itemsize)


def build_cache(
    table: pd.DataFrame,
    images_dir,
    out_dir,
    *,
    encoder: str = "inception_v3",
    weights: str = "imagenet",
    image_size: int | None = None,
    features: str = "pooled",
    dtype: str = "float16",
    batch_size: int = 32,
    shard_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    seed: int = 0,
) -> Path:
    """Runs the encoder over every image of a captions table and stores the features.

    Args:
        table: captions, columns `image`, `caption`, `split` (from `read_captions`), image
            names relative to `images_dir`.
        images_dir: the folder holding the images.
        out_dir: the cache folder; an unfinished cache made the same way is resumed.
        encoder, weights, image_size, features: as `build_encoder`.
        dtype: `"float16"` (default, half the disk) or `"float32"`.
        batch_size: images per encoder call.
        shard_size: images per shard file; None sizes shards to about 256 MiB.
        workers: threads decoding images while the encoder runs; None for the CPU count.
        progress: show a progress bar.
        shard: `(index, count)` to compute only one slice of the shards (on another machine
            or session); join finished slices with `merge_caches`.
        seed: seeds random encoder weights (`weights="none"`), so every slice of a sharded
            cache builds the same encoder.

    Returns:
        The cache folder.
    """
    from captioning.encoders import build_encoder, encoder_spec
    from captioning.images import load_and_resize

    if dtype not in ("float16", "float32"):
        raise CaptioningError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    out = Path(out_dir)
    images_dir = Path(images_dir)
    images = sorted(set(table["image"].astype(str)))
    if not images:
        raise CacheError(f"no images to cache into {out}: the captions table is empty")
    size = image_size or encoder_spec(encoder).default_size
    settings = {
        "encoder": encoder,
        "weights": _weights_identity(weights),
        "image_size": size,
        "features": features,
        "dtype": dtype,
    }
    fingerprint = images_fingerprint(images)
    if shard is not None:
        index, count = shard
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise CaptioningError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        settings["slice"] = [index, count]
    manifest_path = out / "manifest.json"
    encoder_path = out / _ENCODER_FILE

    if manifest_path.exists():
        manifest = _read_manifest(out)
        _check_same(manifest, settings, fingerprint, out)
        part = manifest.get("slice")
        lost = [s["file"] for i, s in enumerate(manifest["shards"])
                if (part is None or i % part[1] == part[0])
                and not (out / "shards" / s["file"]).exists()]
        if manifest.get("complete") and not lost:
            logger.info("%s: cache already complete (%d images)", out, manifest["n_images"])
            return out
        if manifest.get("complete"):
            # A shard of a finished cache was lost: FeatureCache tells the user to run the
            # same command again, so recompute the missing shards.
            manifest["complete"] = False
            _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        if not encoder_path.exists() or sha256_file(encoder_path) != manifest["encoder_sha256"]:
            raise CacheError(
                f"{encoder_path}: missing or changed since the cache was started; delete "
                f"{out} to start over"
            )
        import keras

        model = keras.saving.load_model(encoder_path, safe_mode=True, compile=False)
        done = sum((out / "shards" / s["file"]).exists() for s in manifest["shards"])
        print(f"Resuming the cache in {out}: {done} of {len(manifest['shards'])} shards "
              "are done, computing the rest.")
    else:
        import keras

        keras.utils.set_random_seed(seed)
        model = build_encoder(encoder, weights, size, features)
        feature_shape = tuple(int(d) for d in model.output.shape[1:])
        per_image = estimate_bytes(1, feature_shape, dtype)
        shard_size = shard_size or int(np.clip(_SHARD_BYTES // per_image, 256, 4096))
        count = -(-len(images) // shard_size)
        total = estimate_bytes(len(images), feature_shape, dtype)
        out.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out).free
        print(f"Caching {len(images)} images from {images_dir} with {encoder} ({features} "
              f"{'x'.join(map(str, feature_shape))}, {dtype}): {_human(total)} to write, "
              f"{_human(free)} free in {out}.")
        if total * 1.05 + 2**20 > free:
            raise CacheError(
                f"{out}: the features need {_human(total)} but only {_human(free)} is free; "
                "free some space, cache to a bigger disk (Google Drive in Colab), use "
                "--features pooled, or keep float16"
            )
        (out / "shards").mkdir(exist_ok=True)
        model.save(encoder_path)
        _atomic_write_text(out / "images.txt", "\n".join(images) + "\n")
        manifest = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            **settings,
            "encoder_sha256": sha256_file(encoder_path),
            "encoder_weights_sha256": weights_fingerprint(model),
            "feature_shape": list(feature_shape),
            "n_images": len(images),
            "images_fingerprint": fingerprint,
            "images_dir": str(images_dir.resolve()),
            "shard_size": shard_size,
            "shards": [
                {"file": _shard_name(i, count), "start": i * shard_size,
                 "stop": min((i + 1) * shard_size, len(images))}
                for i in range(count)
            ],
            "complete": False,
        }
        _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")

    _encode_shards(model, manifest, out, images, images_dir, load_and_resize, batch_size,
                   workers, progress, manifest.get("slice"))

    if manifest.get("slice"):
        table.to_csv(out / "captions.all.csv", index=False)
        index, count = manifest["slice"]
        manifest["complete"] = True
        _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        print(f"Slice {index}/{count} done in {out}; join the slices with `cache --merge`.")
        return out
    failed = _collect_failed(out, manifest)
    kept = table[~table["image"].astype(str).isin(set(failed))]
    kept.to_csv(out / "captions.csv", index=False)
    pd.DataFrame(sorted(failed.items()), columns=["image", "reason"]).to_csv(
        out / "failed.csv", index=False)
    if failed:
        logger.warning("%d of %d images could not be read and were skipped (listed in %s)",
                       len(failed), len(images), out / "failed.csv")
    manifest["complete"] = True
    manifest["n_failed"] = len(failed)
    _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return out


def _encode_shards(model, manifest, out, images, images_dir, load, batch_size, workers,
                   progress, part=None):
    from tqdm.auto import tqdm

    size = manifest["image_size"]
    todo = [s for i, s in enumerate(manifest["shards"])
            if not (out / "shards" / s["file"]).exists()
            and (part is None or i % part[1] == part[0])]
    total = sum(s["stop"] - s["start"] for s in todo)
    workers = workers or max(2, os.cpu_count() or 2)
    feature_shape = tuple(manifest["feature_shape"])

    def read(name):
        try:
            return load(images_dir / name, size), None
        except ImageError as error:
            return np.zeros((size, size, 3), np.float32), str(error)

    bar = tqdm(total=total, unit="img", disable=not progress, desc="caching", smoothing=0.1)
    checked = False
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for shard in todo:
            names = images[shard["start"]:shard["stop"]]
            data = np.zeros((len(names),) + feature_shape, manifest["dtype"])
            failed = {}
            batches = [names[i:i + batch_size] for i in range(0, len(names), batch_size)]
            pending = [pool.submit(lambda b=b: [read(n) for n in b]) for b in batches[:2]]
            for b, batch in enumerate(batches):
                loaded = pending[b].result()
                if b + 2 < len(batches):
                    pending.append(pool.submit(lambda x=batches[b + 2]: [read(n) for n in x]))
                pixels = np.stack([p for p, _ in loaded])
                start = b * batch_size
                encoded = np.asarray(model.predict_on_batch(pixels))
                if not checked:
                    _check_dtype_range(encoded, data.dtype, out)
                    checked = True
                data[start:start + len(batch)] = encoded
                for name, (_, error) in zip(batch, loaded):
                    if error:
                        failed[name] = error
                bar.update(len(batch))
            sidecar = out / "shards" / (shard["file"][:-4] + ".failed.json")
            _atomic_write_text(sidecar, json.dumps(failed))
            tmp = out / "shards" / (shard["file"] + ".tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, data)
            os.replace(tmp, out / "shards" / shard["file"])
    bar.close()


def merge_caches(slices, out_dir) -> Path:
    """Joins finished slices of a sharded cache (`build_cache(..., shard=(i, n))`).

    Every slice must come from the same image list, encoder settings and encoder weights;
    together they must hold every shard. Shard files are copied, never moved.

    Returns:
        The merged cache folder.
    """
    slices = [Path(s) for s in slices]
    if not slices:
        raise CacheError("give the slice folders to merge")
    manifests = [_read_manifest(s) for s in slices]
    first = manifests[0]
    keys = ("encoder", "weights", "image_size", "features", "dtype", "feature_shape",
            "images_fingerprint", "shard_size", "encoder_weights_sha256")
    for path, manifest in zip(slices[1:], manifests[1:]):
        differences = [k for k in keys if manifest.get(k) != first.get(k)]
        if differences:
            raise CacheError(f"{path} was made differently from {slices[0]} "
                             f"({', '.join(differences)} differ); slices must come from the "
                             "same `cache --shard I/N` command")
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for shard in first["shards"]:
        target = out / "shards" / shard["file"]
        if target.exists():
            continue
        source = next((s / "shards" / shard["file"] for s in slices
                       if (s / "shards" / shard["file"]).exists()), None)
        if source is None:
            raise CacheError(f"no slice holds {shard['file']}; finish every slice (run its "
                             "`cache --shard I/N` command again) before merging")
        sidecar = source.with_name(source.name[:-4] + ".failed.json")
        shutil.copyfile(sidecar, target.with_name(sidecar.name))
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    for name in ("images.txt", _ENCODER_FILE):
        shutil.copyfile(slices[0] / name, out / name)
    manifest = {k: v for k, v in first.items() if k != "slice"}
    manifest["encoder_sha256"] = sha256_file(out / _ENCODER_FILE)
    failed = _collect_failed(out, manifest)
    table = pd.read_csv(slices[0] / "captions.all.csv", dtype=str, keep_default_na=False)
    table[~table["image"].isin(set(failed))].to_csv(out / "captions.csv", index=False)
    pd.DataFrame(sorted(failed.items()), columns=["image", "reason"]).to_csv(
        out / "failed.csv", index=False)
    manifest.update({"complete": True, "n_failed": len(failed), "merged_from": len(slices)})
    _atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(f"Merged {len(slices)} slices into {out} ({manifest['n_images']} images).")
    return out


def _check_dtype_range(encoded: np.ndarray, dtype, out: Path) -> None:
    """Refuses a dtype that would wipe the features out (a random-weight CNN can give
    values far below float16's smallest normal number)."""
    if np.dtype(dtype) != np.float16:
        return
    nonzero = np.abs(encoded[encoded != 0])
    if nonzero.size == 0:
        return
    lost = float(np.mean(nonzero < np.finfo(np.float16).tiny))
    if lost > 0.5 or not np.isfinite(encoded.astype(np.float16)).all():
        raise CacheError(
            f"{out}: {lost:.0%} of the features are below float16's range (median "
            f"{np.median(nonzero):.2e}) or beyond it; cache with --dtype float32"
        )


def _collect_failed(out, manifest) -> dict:
    failed = {}
    for shard in manifest["shards"]:
        sidecar = out / "shards" / (shard["file"][:-4] + ".failed.json")
        if sidecar.exists():
            failed.update(json.loads(sidecar.read_text()))
    return failed


def _weights_identity(weights):
    if weights is None or str(weights).lower() == "none":
        return "none"
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    return f"file:{path.name}:sha256:{sha256_file(path)}" if path.is_file() else str(weights)


def _read_manifest(cache_dir: Path) -> dict:
    path = cache_dir / "manifest.json"
    if not path.exists():
        raise CacheError(f"{cache_dir} is not a feature cache (no manifest.json); make one "
                         "with `python -m captioning cache`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CacheError(f"{path}: not valid JSON ({error}); delete the cache and run "
                         "`cache` again") from None
    if manifest.get("format") != CACHE_FORMAT:
        raise CacheError(f"{path}: not a captioning feature cache manifest")
    return manifest


def _check_same(manifest, settings, fingerprint, out):
    differences = [
        f"{key}: cache has {manifest.get(key)!r}, asked for {value!r}"
        for key, value in settings.items()
        if manifest.get(key) != value
    ]
    if manifest.get("images_fingerprint") != fingerprint:
        differences.append("the image list differs")
    if differences:
        raise CacheError(
            f"{out} was made differently ({'; '.join(differences)}); use another --out "
            "folder or delete this one"
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


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
        self.manifest = _read_manifest(self.path)
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
            path = self.path / "shards" / shard["file"]
            if not path.exists():
                raise CacheError(f"{path} is missing; run the `cache` command again")
            self._shards.append(np.load(path, mmap_mode="r"))
        self._starts = np.array([s["start"] for s in self.manifest["shards"]])

    @property
    def feature_shape(self) -> tuple:
        return tuple(self.manifest["feature_shape"])

    @property
    def settings(self) -> dict:
        keys = ("encoder", "weights", "image_size", "features", "dtype")
        return {key: self.manifest[key] for key in keys}

    def captions(self) -> pd.DataFrame:
        """The cached images' captions: image, caption, split."""
        table = pd.read_csv(self.path / "captions.csv", dtype=str, keep_default_na=False)
        return table

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

    def statistics(self, rows=None, chunk: int = 1024):
        """Per-dimension mean and variance of the features (over images and regions),
        streamed in chunks."""
        rows = np.arange(len(self)) if rows is None else np.unique(np.asarray(rows))
        dim = self.feature_shape[-1]
        total, total_sq, count = np.zeros(dim), np.zeros(dim), 0
        for start in range(0, len(rows), chunk):
            block = self.gather(rows[start:start + chunk]).reshape(-1, dim).astype(np.float64)
            total += block.sum(0)
            total_sq += (block ** 2).sum(0)
            count += len(block)
        mean = total / max(count, 1)
        variance = np.maximum(total_sq / max(count, 1) - mean ** 2, 1e-12)
        return mean.astype(np.float32), variance.astype(np.float32)

    def __len__(self):
        return len(self.images)


class _ShardedArray:
    """A read-only array view over the cache's shard memory maps."""

    def __init__(self, cache: FeatureCache):
        self._cache = cache
        self.shape = (len(cache),) + cache.feature_shape
        self.dtype = np.dtype(cache.manifest["dtype"])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        rows = np.arange(self.shape[0])[key]
        if np.ndim(rows) == 0:
            return self._cache.gather([int(rows)])[0]
        return self._cache.gather(rows)

    def __array__(self, dtype=None, copy=None):
        data = self._cache.gather(np.arange(self.shape[0]))
        return data if dtype is None else data.astype(dtype)


def load_features(cache_dir):
    """Reads a cache back for scripts and tests.

    Returns:
        `(image_names, features)`: the names in row order and an array-like of shape
        `(n_images, *feature_shape)` that reads rows lazily from the shards' memory maps
        (index it, or `numpy.asarray` it to load everything).
    """
    cache = FeatureCache(cache_dir)
    return list(cache.images), _ShardedArray(cache)
