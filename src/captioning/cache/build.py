"""The on-disk feature cache: the encoder runs over every image once.

Layout of a cache folder:

    manifest.json     what made it: encoder settings, the encoder's weights fingerprint,
                      dtype, feature shape, the image list's fingerprint, shard table, state
    images.txt        the images in row order (sorted names)
    captions.csv      image, caption, split of the cached images
    encoder.hdf5      the exact encoder that produced the features (random weights too)
    shards/*.npy      features, `shard_size` images each, float16 by default
    failed.csv        images that could not be read (name, reason), skipped

Each shard is written to a temporary name, flushed to disk and renamed when complete, and
its `.npy` header (shape, dtype, length) is checked before it is trusted, so a half-written
shard is never read as data; a killed run, started again with the same command, skips the
finished shards and computes the rest. Reads go through memory maps and never load the
cache whole.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib import format as npy_format

from captioning.errors import CacheError, CaptioningError, ImageError
from captioning.utils.files import sha256_file

logger = logging.getLogger("captioning")

CACHE_FORMAT = "captioning.features"
CACHE_VERSION = 1
_SHARD_BYTES = 256 * 2**20
_ENCODER_FILE = "encoder.hdf5"
# What makes two caches' features interchangeable: `describe_differences` compares these.
IDENTITY_KEYS = ("encoder", "weights", "image_size", "features", "dtype", "feature_shape",
                 "encoder_weights_sha256", "images_fingerprint")
_LABELS = {"images_fingerprint": "image list (fingerprint)",
           "encoder_weights_sha256": "encoder weights (fingerprint)"}
# Slices of one sharded cache agree on these as well.
_SLICE_KEYS = IDENTITY_KEYS + ("shard_size", "n_images")
_PROGRESS_SECONDS = 30.0




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


def estimate_bytes(n_images: int, feature_shape, dtype: str) -> int:
    """Bytes the features of `n_images` take on disk."""
    return int(n_images * int(np.prod(feature_shape)) * np.dtype(dtype).itemsize)


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
        progress: `True` or `"bar"` for a progress bar, `"log"` for a plain line every 10%
            or 30 s (for logs and `nohup` runs), `False` for none.
        shard: `(index, count)` to compute only one slice of the shards (on another machine
            or session); join finished slices with `merge_caches`.
        seed: seeds random encoder weights (`weights="none"`), so every slice of a sharded
            cache builds the same encoder.
        strict: stop at the first unreadable image with a `CacheError` naming it, instead
            of listing it in `failed.csv` and leaving its captions out. The shards finished
            before it are kept, so the same call resumes once the image is fixed.

    Returns:
        The cache folder. Its manifest records the run's speed under `throughput`
        (`images`, `seconds`, `images_per_second`).
    """
    from captioning.models.encoders import build_encoder, encoder_spec
    from captioning.data.images import load_and_resize

    if dtype not in ("float16", "float32"):
        raise CaptioningError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise CaptioningError(f"workers must be a positive int, got {workers!r}")
    if progress not in (True, False, None, "bar", "log"):
        raise CaptioningError(f"progress must be True, False, 'bar' or 'log', got {progress!r}")
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
    part = None
    if shard is not None:
        index, count = shard
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise CaptioningError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        part = [index, count]
    manifest_path = out / "manifest.json"
    encoder_path = out / _ENCODER_FILE

    if manifest_path.exists():
        manifest = _read_manifest(out)
        _check_same(manifest, {**settings, "images_fingerprint": fingerprint, "slice": part},
                    out)
        for stale in (out / "shards").glob("*.tmp"):
            stale.unlink()  # left by a run killed while writing
        mine = _own_shards(manifest)
        todo = []
        for shard_entry in mine:
            problem = _shard_problem(out / "shards" / shard_entry["file"],
                                     shard_entry["stop"] - shard_entry["start"],
                                     manifest["feature_shape"], manifest["dtype"])
            if problem:
                todo.append(shard_entry)
                if problem != "missing":
                    print(f"Recomputing {shard_entry['file']}: {problem}.")
        if manifest.get("complete") and not todo:
            logger.info("%s: cache already complete (%d images)", out, manifest["n_images"])
            return out
        if not encoder_path.exists() or sha256_file(encoder_path) != manifest["encoder_sha256"]:
            raise CacheError(
                f"{encoder_path}: missing or changed since the cache was started; delete "
                f"{out} to start over"
            )
        if manifest.get("complete"):
            # A shard of a finished cache was lost or damaged: FeatureCache tells the user
            # to run the same command again, so recompute it.
            manifest["complete"] = False
            _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        import keras

        from captioning.models import layers  # noqa: F401  (registers the custom layers)

        model = keras.saving.load_model(encoder_path, safe_mode=True, compile=False)
        remaining = sum(estimate_bytes(s["stop"] - s["start"], manifest["feature_shape"],
                                       manifest["dtype"]) for s in todo)
        free = shutil.disk_usage(out).free
        what = f"slice {part[0]}/{part[1]}" if part else "the cache"
        print(f"Resuming {what} in {out}: {len(mine) - len(todo)} of {len(mine)} shards "
              f"are done, computing the rest ({_human(remaining)} still to write, "
              f"{_human(free)} free).")
        _check_space(out, remaining, free)
    else:
        import keras

        keras.utils.set_random_seed(seed)
        model = build_encoder(encoder, weights, size, features)
        feature_shape = tuple(int(d) for d in model.output.shape[1:])
        per_image = estimate_bytes(1, feature_shape, dtype)
        shard_size = shard_size or int(np.clip(_SHARD_BYTES // per_image, 256, 4096))
        count = -(-len(images) // shard_size)
        manifest = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            **settings,
            "encoder_sha256": None,
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
        if part:
            manifest["slice"] = part
        todo = _own_shards(manifest)
        n_todo = sum(s["stop"] - s["start"] for s in todo)
        features_bytes = estimate_bytes(n_todo, feature_shape, dtype)
        total = features_bytes + _weight_bytes(model)
        out.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out).free
        which = (f"{n_todo} of the {len(images)} images (slice {part[0]}/{part[1]}, "
                 f"{len(todo)} of {count} shards)" if part else f"{len(images)} images")
        print(f"Caching {which} from {images_dir} with {encoder} ({features} "
              f"{'x'.join(map(str, feature_shape))}, {dtype}): {_human(total)} to write "
              f"({_human(features_bytes)} of features, the rest the encoder), "
              f"{_human(free)} free in {out}.")
        _check_space(out, total, free)
        (out / "shards").mkdir(exist_ok=True)
        _write_atomic(encoder_path, lambda tmp: model.save(tmp), suffix=".tmp.hdf5")
        _atomic_write_text(out / "images.txt", "\n".join(images) + "\n")
        manifest["encoder_sha256"] = sha256_file(encoder_path)
        _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")

    done, seconds = _encode_shards(model, manifest, out, images, images_dir, load_and_resize,
                                   batch_size, workers or default_workers(), progress, todo,
                                   strict)
    if done:
        rate = done / max(seconds, 1e-9)
        print(f"{done} images in {seconds:.1f} s ({rate:.1f} images/s).")
        manifest["throughput"] = {"images": done, "seconds": round(seconds, 3),
                                  "images_per_second": round(rate, 3)}

    if manifest.get("slice"):
        _write_atomic(out / "captions.all.csv", lambda tmp: table.to_csv(tmp, index=False))
        index, count = manifest["slice"]
        manifest["complete"] = True
        _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        print(f"Slice {index}/{count} done in {out}; join the slices with `cache --merge`.")
        return out
    failed = _collect_failed(out, manifest)
    kept = table[~table["image"].astype(str).isin(set(failed))]
    _write_atomic(out / "captions.csv", lambda tmp: kept.to_csv(tmp, index=False))
    failed_table = pd.DataFrame(sorted(failed.items()), columns=["image", "reason"])
    _write_atomic(out / "failed.csv", lambda tmp: failed_table.to_csv(tmp, index=False))
    if failed:
        logger.warning("%d of %d images could not be read and were skipped (listed in %s)",
                       len(failed), len(images), out / "failed.csv")
    manifest["complete"] = True
    manifest["n_failed"] = len(failed)
    _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return out


def _own_shards(manifest) -> list:
    """The shards a cache folder computes: all of them, or its slice's."""
    part = manifest.get("slice")
    return [s for i, s in enumerate(manifest["shards"])
            if part is None or i % part[1] == part[0]]


def _weight_bytes(model) -> int:
    """About what the saved encoder file takes: its parameters' bytes."""
    return int(sum(int(np.prod(w.shape)) * np.dtype(str(w.dtype)).itemsize
                   for w in model.weights))


def _space_needed(n_bytes: int) -> int:
    """Free bytes that writing `n_bytes` asks for (a margin for file system overhead)."""
    return int(n_bytes * 1.05) + 2**20


def _check_space(out: Path, n_bytes: int, free: int, what="the features") -> None:
    if _space_needed(n_bytes) > free:
        raise CacheError(
            f"{out}: {what} need {_human(n_bytes)} but only {_human(free)} is free; free "
            "some space, cache to a bigger disk (Google Drive in Colab), use --features "
            "pooled, or keep float16"
        )


def _encode_shards(model, manifest, out, images, images_dir, load, batch_size, workers,
                   progress, todo, strict=False) -> tuple:
    """Encodes the `todo` shards; images are decoded by `workers` threads, several batches
    ahead of the encoder and across shard boundaries, and each finished shard is written by
    a background thread while the next one is encoded.

    Returns:
        `(images encoded, seconds)`.
    """
    size = manifest["image_size"]
    feature_shape = tuple(manifest["feature_shape"])
    total = sum(s["stop"] - s["start"] for s in todo)
    ahead = max(4 * batch_size, 2 * workers)  # images decoded or decoding, not yet encoded
    names = iter([name for s in todo for name in images[s["start"]:s["stop"]]])

    def read(name):
        try:
            return load(images_dir / name, size), None
        except ImageError as error:
            return np.zeros((size, size, 3), np.float32), str(error)

    meter = _Progress(total, progress)
    started = time.monotonic()
    decoders = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="write")
    pending = collections.deque()
    writing = None
    checked = False

    def fill():
        while len(pending) < ahead:
            name = next(names, None)
            if name is None:
                return
            pending.append(decoders.submit(read, name))

    try:
        for shard in todo:
            rows = shard["stop"] - shard["start"]
            data = np.zeros((rows,) + feature_shape, manifest["dtype"])
            failed = {}
            for start in range(0, rows, batch_size):
                fill()
                batch = images[shard["start"] + start:shard["start"] + min(start + batch_size,
                                                                            rows)]
                loaded = [pending.popleft().result() for _ in batch]
                bad = next(((name, error) for name, (_, error) in zip(batch, loaded) if error),
                           None)
                if strict and bad:
                    raise CacheError(f"{bad[1]}; fix or remove {images_dir / bad[0]} and run "
                                     "the same command again (it resumes), or drop --strict "
                                     "to list unreadable images in failed.csv and go on")
                fill()
                encoded = np.asarray(model.predict_on_batch(np.stack([p for p, _ in loaded])))
                if not checked:
                    _check_dtype_range(encoded, data.dtype, out)
                    checked = True
                data[start:start + len(batch)] = encoded
                failed.update((name, error) for name, (_, error) in zip(batch, loaded) if error)
                meter.update(len(batch))
            if writing is not None:
                writing.result()  # at most one shard waits to be written
            writing = writer.submit(_write_shard, out, shard, data, failed)
        if writing is not None:
            writing.result()
    finally:
        decoders.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        meter.close()
    return total, time.monotonic() - started


def _write_shard(out: Path, shard: dict, data: np.ndarray, failed: dict) -> None:
    shards = out / "shards"
    _atomic_write_text(shards / (shard["file"][:-4] + ".failed.json"), json.dumps(failed))
    _write_atomic(shards / shard["file"], lambda tmp: _save_npy(tmp, data))


def _save_npy(path: Path, data: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would add ".npy" to the name
        np.save(handle, data)


def _write_atomic(path: Path, write, suffix=".tmp") -> None:
    """Writes a file whole or not at all: `write(tmp_path)`, fsync, rename over `path`.

    A failed write (a full disk) removes the temporary file and raises CacheError."""
    tmp = path.with_name(path.name + suffix)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        advice = ("free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT)
                  else "fix that")
        raise CacheError(f"{path}: could not be written ({reason}); {advice} and run the same "
                         "command again to resume (what is finished is kept)") from None


def _atomic_write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(text))


def _shard_name(index: int, count: int) -> str:
    return f"features-{index:05d}-of-{count:05d}.npy"


def _shard_problem(path: Path, rows: int, feature_shape, dtype) -> str | None:
    """What is wrong with a shard file, from its `.npy` header and size; None if nothing."""
    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            read_header = {(1, 0): npy_format.read_array_header_1_0,
                           (2, 0): npy_format.read_array_header_2_0}.get(version)
            if read_header is None:
                return f"unknown .npy version {version}"
            shape, fortran, found = read_header(handle)
            offset = handle.tell()
        length = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as error:
        return f"not a whole .npy file ({' '.join(str(error).split())[:120]})"
    expected = (rows, *map(int, feature_shape))
    if tuple(shape) != expected or found != np.dtype(dtype) or fortran:
        return (f"holds {found} {'x'.join(map(str, shape))}, expected {np.dtype(dtype)} "
                f"{'x'.join(map(str, expected))}")
    want = offset + int(np.prod(expected)) * np.dtype(dtype).itemsize
    if length != want:
        return f"{length} bytes instead of {want} (cut short)"
    return None


def merge_caches(slices, out_dir) -> Path:
    """Joins finished slices of a sharded cache (`build_cache(..., shard=(i, n))`).

    Every slice must come from the same image list, encoder settings and encoder weights;
    together they must hold every shard. Shard files are copied, never moved. A merge that
    was interrupted is resumed: shards already copied whole are kept.

    Args:
        slices: the slice folders.
        out_dir: the merged cache folder: new, empty, or an unfinished merge of the same
            slices.

    Returns:
        The merged cache folder.
    """
    slices = [Path(s) for s in slices]
    if not slices:
        raise CacheError("give the slice folders to merge")
    out = Path(out_dir)
    for path in slices:
        if out.exists() and path.exists() and os.path.samefile(path, out):
            raise CacheError(f"{out} is one of the slices being merged; merge into a new "
                             "folder (another --out)")
    manifests = []
    for path in slices:
        manifest = _read_manifest(path)
        if not manifest.get("slice"):
            raise CacheError(f"{path} is a whole cache, not a slice (it was made without "
                             "--shard); merge only folders written by `cache --shard I/N`")
        index, count = manifest["slice"]
        if not manifest.get("complete") or not (path / "captions.all.csv").exists():
            raise CacheError(f"{path} is an unfinished slice {index}/{count}; run its "
                             f"`cache --shard {index}/{count}` command again to finish it, "
                             "then merge")
        manifests.append(manifest)
    first = manifests[0]
    for path, manifest in zip(slices[1:], manifests[1:]):
        differences = describe_differences(manifest, first, keys=_SLICE_KEYS,
                                           found_name=path.name, expected_name=slices[0].name)
        if manifest["slice"][1] != first["slice"][1]:
            differences.append(f"slice count: {path.name} {manifest['slice'][1]} vs "
                               f"{slices[0].name} {first['slice'][1]}")
        if differences:
            raise CacheError(f"{path} was made differently from {slices[0]} "
                             f"({'; '.join(differences)}); slices must come from the "
                             "same `cache --shard I/N` command")

    merged = {k: v for k, v in first.items() if k not in ("slice", "throughput", "n_failed")}
    merged.update({"complete": False, "merged_from": len(slices)})
    resuming = (out / "manifest.json").exists()
    if resuming:
        existing = _read_manifest(out)
        differences = describe_differences(existing, merged, keys=_SLICE_KEYS,
                                           found_name=out.name, expected_name="slices")
        if existing.get("slice"):
            differences.append(f"{out.name} is slice {existing['slice'][0]}/"
                               f"{existing['slice'][1]} itself")
        if differences:
            raise CacheError(f"{out} already holds a cache made differently from the slices "
                             f"({'; '.join(differences)}); merge into a new folder or delete "
                             f"{out}")
    elif (out / "shards").is_dir() and any((out / "shards").iterdir()):
        raise CacheError(f"{out / 'shards'} already holds files but {out} has no "
                         "manifest.json; merge into a new or empty folder")

    copies = []
    for shard in first["shards"]:
        rows = shard["stop"] - shard["start"]
        source = next((s / "shards" / shard["file"] for s in slices
                       if _shard_problem(s / "shards" / shard["file"], rows,
                                         first["feature_shape"], first["dtype"]) is None), None)
        if source is None:
            raise CacheError(f"no slice holds {shard['file']} whole; finish every slice (run "
                             "its `cache --shard I/N` command again) before merging")
        target = out / "shards" / shard["file"]
        if not (resuming and _same_file_bytes(source, target)):
            copies.append((source, target))
    need = sum(source.stat().st_size for source, _ in copies)
    need += (slices[0] / _ENCODER_FILE).stat().st_size
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for stale in (out / "shards").glob("*.tmp"):
        stale.unlink()
    free = shutil.disk_usage(out).free
    print(f"Merging {len(slices)} slices into {out}: {len(copies)} of "
          f"{len(first['shards'])} shards to copy, {_human(need)} to write, {_human(free)} "
          "free.")
    _check_space(out, need, free, what="the merged shards")
    _atomic_write_text(out / "manifest.json", json.dumps(merged, indent=2) + "\n")
    for source, target in copies:
        sidecar = source.with_name(source.name[:-4] + ".failed.json")
        _write_atomic(target.with_name(sidecar.name),
                      lambda tmp, s=sidecar: shutil.copyfile(s, tmp))
        _write_atomic(target, lambda tmp, s=source: shutil.copyfile(s, tmp))
    for name in ("images.txt", _ENCODER_FILE):
        _write_atomic(out / name, lambda tmp, n=name: shutil.copyfile(slices[0] / n, tmp))
    merged["encoder_sha256"] = sha256_file(out / _ENCODER_FILE)
    failed = _collect_failed(out, merged)
    table = pd.read_csv(slices[0] / "captions.all.csv", dtype=str, keep_default_na=False)
    kept = table[~table["image"].isin(set(failed))]
    _write_atomic(out / "captions.csv", lambda tmp: kept.to_csv(tmp, index=False))
    failed_table = pd.DataFrame(sorted(failed.items()), columns=["image", "reason"])
    _write_atomic(out / "failed.csv", lambda tmp: failed_table.to_csv(tmp, index=False))
    merged.update({"complete": True, "n_failed": len(failed)})
    _atomic_write_text(out / "manifest.json", json.dumps(merged, indent=2) + "\n")
    print(f"Merged {len(slices)} slices into {out} ({merged['n_images']} images).")
    return out


def _same_file_bytes(a: Path, b: Path, chunk=2**20) -> bool:
    """Whether two files exist and hold the same bytes."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as left, open(b, "rb") as right:
            while True:
                block = left.read(chunk)
                if block != right.read(chunk):
                    return False
                if not block:
                    return True
    except FileNotFoundError:
        return False


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


def _check_same(manifest, requested, out):
    """Refuses to resume a cache folder made with other settings, images or slice."""
    keys = tuple(requested)
    differences = describe_differences(manifest, requested, keys=keys,
                                       expected_name="asked for")
    if not differences:
        return
    if manifest.get("slice") != requested["slice"]:
        part = manifest.get("slice")
        advice = (f"run it with --shard {part[0]}/{part[1]} as it was started (then --merge "
                  "the finished slices), or use another --out folder" if part else
                  "it is a whole cache: run it without --shard, or use another --out folder")
    else:
        advice = "use another --out folder or delete this one"
    raise CacheError(f"{out} was made differently ({'; '.join(differences)}); {advice}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


class _Progress:
    """Images done: a tqdm bar (`"bar"`/True), a plain line every 10% or 30 s (`"log"`, to
    stderr), or nothing."""

    def __init__(self, total: int, mode, desc: str = "caching"):
        self.total, self.done, self.desc = total, 0, desc
        self.mode = "bar" if mode is True else (mode or None)
        self.started = self.last = time.monotonic()
        self.next_mark = 0.1
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc=desc, smoothing=0.1)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "log" and self.total:
            now = time.monotonic()
            if (self.done / self.total >= self.next_mark or now - self.last >= _PROGRESS_SECONDS
                    or self.done == self.total):
                while self.done / self.total >= self.next_mark:
                    self.next_mark += 0.1
                self.last = now
                rate = self.done / max(now - self.started, 1e-9)
                left = (self.total - self.done) / max(rate, 1e-9)
                print(f"{self.desc}: {self.done}/{self.total} images "
                      f"({self.done / self.total:.0%}), {rate:.1f} images/s, "
                      f"{_duration(left)} left", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
            problem = _shard_problem(path, shard["stop"] - shard["start"],
                                     self.feature_shape, self.manifest["dtype"])
            if problem == "missing":
                raise CacheError(f"{path} is missing; run the `cache` command again")
            if problem:
                raise CacheError(f"{path}: {problem}; run the same `cache` command again to "
                                 "recompute it")
            self._shards.append(np.load(path, mmap_mode="r"))
        self._starts = np.array([s["start"] for s in self.manifest["shards"]])

    @property
    def feature_shape(self) -> tuple:
        return tuple(self.manifest["feature_shape"])

    @property
    def settings(self) -> dict:
        keys = ("encoder", "weights", "image_size", "features", "dtype")
        return {key: self.manifest[key] for key in keys}

    @property
    def identity(self) -> dict:
        """What `describe_differences` compares: settings, feature shape, the encoder
        weights' and the image list's fingerprints."""
        return {key: self.manifest.get(key) for key in IDENTITY_KEYS}

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
