"""Building a feature cache: the encoder runs over every image once.

Layout of a cache folder:

    manifest.json     what made it: encoder settings, the encoder's weights fingerprint,
                      dtype, feature shape, the image list's fingerprint, shard table, state
    images.txt        the images in row order (sorted names)
    captions.csv      image, caption, split of the cached images
    encoder.hdf5      the exact encoder that produced the features (random weights too)
    shards/*.npy      features, `shard_size` images each, float16 by default
    failed.csv        images that could not be read (name, reason), skipped

A new folder is started (`_start`); a folder made the same way is resumed (`_resume`): a
killed run, started again with the same command, skips the finished shards and computes
the rest. A slice of a sharded cache (`shard=(i, n)`) computes only its own shards.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from captioning.cache.encode import encode_shards
from captioning.cache.identity import (
    CACHE_FORMAT,
    CACHE_VERSION,
    ENCODER_FILE,
    MANIFEST_FILE,
    RESUME,
    check_resumable,
    images_fingerprint,
    read_manifest,
    weights_fingerprint,
    weights_identity,
    write_manifest,
)
from captioning.cache.progress import check_progress
from captioning.cache.shards import (
    SHARDS_DIR,
    collect_failed,
    entry_problem,
    own_shards,
    remove_temporary,
    shard_table,
    write_captions,
    write_file,
)
from captioning.cache.space import check_space, estimate_bytes, human_bytes, weight_bytes
from captioning.config import DTYPES, FEATURES, PRECISIONS
from captioning.errors import CacheError, ConfigError
from captioning.utils.checks import check_bool, check_choice, check_int, is_int
from captioning.utils.files import atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

_SHARD_BYTES = 256 * 2**20


def default_workers() -> int:
    """Threads decoding images by default: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


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
    progress: bool | str = True,
    shard: tuple[int, int] | None = None,
    seed: int = 0,
    strict: bool = False,
    mixed_precision: str = "none",
    dataset: str | None = None,
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
        workers: threads decoding images while the encoder runs; None for
            `default_workers()` (the CPU count, at most 8).
        progress: `True` or `"bar"` for a progress bar, `"log"` for an INFO line every 10%
            or 30 s (for logs and `nohup` runs), `False` for none.
        shard: `(index, count)` to compute only one slice of the shards (on another machine
            or session); join finished slices with `merge_caches`.
        seed: seeds random encoder weights (`weights="none"`), so every slice of a sharded
            cache builds the same encoder.
        strict: stop at the first unreadable image with a `CacheError` naming it, instead
            of listing it in `failed.csv` and leaving its captions out. The shards finished
            before it are kept, so the same call resumes once the image is fixed.
        mixed_precision: `"none"`, or `"bfloat16"`/`"float16"` to run the encoder in that
            precision (its file, `encoder.hdf5`, stays float32); recorded in the manifest.
        dataset: a note on where the captions come from (`"flickr8k: Flickr8k.token.txt"`),
            recorded in the manifest; `train` copies it into the release manifest.

    Returns:
        The cache folder. Its manifest records the run's speed under `throughput`
        (`images`, `seconds`, `images_per_second`).
    """
    from captioning.data.images import load_and_resize
    from captioning.models.encoders import encoder_spec

    _check_arguments(features, dtype, batch_size, shard_size, workers, progress, seed, strict)
    check_choice("mixed_precision", mixed_precision, PRECISIONS)
    part = _slice(shard)
    out, images_dir = Path(out_dir), Path(images_dir)
    images = sorted(set(table["image"].astype(str)))
    if not images:
        raise CacheError(f"no images to cache into {out}: the captions table is empty")
    settings = {"encoder": encoder, "weights": weights_identity(weights),
                "image_size": image_size or encoder_spec(encoder).default_size,
                "features": features, "dtype": dtype}
    if (out / MANIFEST_FILE).exists():
        requested = {**settings, "images_fingerprint": images_fingerprint(images),
                     "slice": part}
        work = _resume(out, requested)
        if work is None:
            return out
    else:
        work = _start(out, images, images_dir, settings, weights, shard_size, part, seed)
    model, manifest, todo = work
    if mixed_precision != "none":
        from captioning.models.precision import with_precision

        model = with_precision(model, mixed_precision)
        manifest["mixed_precision"] = mixed_precision
    if dataset is not None:
        manifest["dataset"] = str(dataset)
    done, seconds = encode_shards(model, manifest, out, images, images_dir, load_and_resize,
                                  batch_size=batch_size, workers=workers or default_workers(),
                                  progress=progress, todo=todo, strict=strict)
    if done:
        rate = done / max(seconds, 1e-9)
        logger.info("%d images in %.1f s (%.1f images/s).", done, seconds, rate)
        manifest["throughput"] = {"images": done, "seconds": round(seconds, 3),
                                  "images_per_second": round(rate, 3)}
    _finish(out, manifest, table, len(images))
    return out


def _check_arguments(features, dtype, batch_size, shard_size, workers, progress, seed,
                     strict) -> None:
    check_choice("features", features, FEATURES)
    check_choice("dtype", dtype, DTYPES)
    check_int("batch_size", batch_size, 1)
    check_int("shard_size", shard_size, 1, allow_none=True)
    check_int("workers", workers, 1, allow_none=True)
    check_progress(progress)
    check_int("seed", seed)
    check_bool("strict", strict)


def _slice(shard) -> list | None:
    """The manifest's `slice`, `[index, count]`, of a `shard` argument (None for None)."""
    if shard is None:
        return None
    try:
        index, count = shard
    except (TypeError, ValueError):
        raise ConfigError(f"shard must be a pair (index, count), got {shard!r}") from None
    if not (is_int(index) and is_int(count) and 0 <= index < count):
        raise ConfigError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
    return [int(index), int(count)]


def _start(out: Path, images: list, images_dir: Path, settings: dict, weights, shard_size,
           part, seed: int) -> tuple:
    """Starts a new cache folder: the encoder, its file, the image list and the manifest.

    Returns:
        `(encoder, manifest, entries of the shards to compute)`.
    """
    import keras

    from captioning.models.encoders import build_encoder

    keras.utils.set_random_seed(seed)
    model = build_encoder(settings["encoder"], weights, settings["image_size"],
                          settings["features"])
    manifest = _new_manifest(model, images, images_dir, settings, shard_size, part)
    todo = own_shards(manifest)
    n_todo = sum(s["stop"] - s["start"] for s in todo)
    features_bytes = estimate_bytes(n_todo, manifest["feature_shape"], settings["dtype"])
    total = features_bytes + weight_bytes(model)
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    count = len(manifest["shards"])
    which = (f"{n_todo} of the {len(images)} images (slice {part[0]}/{part[1]}, "
             f"{len(todo)} of {count} shards)" if part else f"{len(images)} images")
    logger.info("Caching %s from %s with %s (%s %s, %s): %s to write (%s of features, the rest "
                "the encoder), %s free in %s.", which, images_dir, settings["encoder"],
                settings["features"], "x".join(map(str, manifest["feature_shape"])),
                settings["dtype"], human_bytes(total), human_bytes(features_bytes),
                human_bytes(free), out)
    check_space(out, total, free)
    (out / SHARDS_DIR).mkdir(exist_ok=True)
    encoder_path = out / ENCODER_FILE
    write_file(encoder_path, lambda tmp: model.save(tmp), suffix=".tmp.hdf5")
    atomic_write_text(out / "images.txt", "\n".join(images) + "\n", error=CacheError,
                      again=RESUME)
    manifest["encoder_sha256"] = sha256_file(encoder_path)
    write_manifest(out, manifest)
    return model, manifest, todo


def _new_manifest(model, images: list, images_dir: Path, settings: dict, shard_size,
                  part) -> dict:
    """The manifest of a new cache folder (its `encoder_sha256` still to be filled in)."""
    feature_shape = [int(d) for d in model.output.shape[1:]]
    per_image = estimate_bytes(1, feature_shape, settings["dtype"])
    shard_size = shard_size or int(np.clip(_SHARD_BYTES // per_image, 256, 4096))
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        **settings,
        "encoder_sha256": None,
        "encoder_weights_sha256": weights_fingerprint(model),
        "feature_shape": feature_shape,
        "n_images": len(images),
        "images_fingerprint": images_fingerprint(images),
        "images_dir": str(images_dir.resolve()),
        "shard_size": shard_size,
        "shards": shard_table(len(images), shard_size),
        "complete": False,
    }
    if part:
        manifest["slice"] = part
    return manifest


def _resume(out: Path, requested: dict) -> tuple | None:
    """Resumes a cache folder made the same way: finds the shards still to compute and
    loads the folder's own encoder.

    Returns:
        `(encoder, manifest, entries of the shards to compute)`, or None when the cache
        is complete.
    """
    manifest = read_manifest(out)
    check_resumable(manifest, requested, out)
    remove_temporary(out)
    mine = own_shards(manifest)
    todo = _shards_to_compute(out, manifest, mine)
    if manifest.get("complete") and not todo:
        logger.info("%s: cache already complete (%d images)", out, manifest["n_images"])
        return None
    model = _load_encoder(out, manifest)
    if manifest.get("complete"):
        # A shard of a finished cache was lost or damaged: FeatureCache tells the user to
        # run the same command again, so recompute it.
        manifest["complete"] = False
        write_manifest(out, manifest)
    remaining = sum(estimate_bytes(s["stop"] - s["start"], manifest["feature_shape"],
                                   manifest["dtype"]) for s in todo)
    free = shutil.disk_usage(out).free
    part = manifest.get("slice")
    logger.info("Resuming %s in %s: %d of %d shards are done, computing the rest (%s still to "
                "write, %s free).", f"slice {part[0]}/{part[1]}" if part else "the cache",
                out, len(mine) - len(todo), len(mine), human_bytes(remaining),
                human_bytes(free))
    check_space(out, remaining, free)
    return model, manifest, todo


def _shards_to_compute(out: Path, manifest: dict, mine: list) -> list:
    """The entries of `mine` whose shard file is missing or damaged (named in a warning)."""
    todo = []
    for entry in mine:
        problem = entry_problem(out, entry, manifest)
        if problem:
            todo.append(entry)
            if problem != "missing":
                logger.warning("Recomputing %s: %s.", entry["file"], problem)
    return todo


def _load_encoder(out: Path, manifest: dict):
    """The encoder a cache folder was started with, if its file is unchanged."""
    encoder_path = out / ENCODER_FILE
    if not encoder_path.exists() or sha256_file(encoder_path) != manifest["encoder_sha256"]:
        raise CacheError(f"{encoder_path}: missing or changed since the cache was started; "
                         f"delete {out} to start over")
    from captioning.release.load import load_model_file

    return load_model_file(encoder_path)


def _finish(out: Path, manifest: dict, table: pd.DataFrame, n_images: int) -> None:
    """Marks a cache (or a slice) complete, with its captions and failed images."""
    part = manifest.get("slice")
    if part:
        write_file(out / "captions.all.csv", lambda tmp: table.to_csv(tmp, index=False))
        manifest["complete"] = True
        write_manifest(out, manifest)
        logger.info("Slice %d/%d done in %s; join the slices with `cache --merge`.",
                    part[0], part[1], out)
        return
    failed = collect_failed(out, manifest)
    write_captions(out, table, failed)
    if failed:
        logger.warning("%d of %d images could not be read and were skipped (listed in %s)",
                       len(failed), n_images, out / "failed.csv")
    manifest["complete"] = True
    manifest["n_failed"] = len(failed)
    write_manifest(out, manifest)
