"""The encoder over a cache's shards: images decoded ahead on threads, shards written behind.

Images are decoded by a pool of threads, up to `AHEAD_BYTES` of pixels ahead of the encoder
and across shard boundaries, and each finished shard is written by a background thread while
the next one is encoded, so that the encoder rarely waits for the disk or the JPEG decoder.

Pixels travel as `uint8` (the encoder casts them on its device): a quarter of the memory and
of the host-to-device traffic of float32, so the read-ahead is four times deeper and covers
the encoder's compilation. Every batch has the same shape (the last one is padded), so the
encoder compiles once: a new batch shape would compile it again (seconds on XLA).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import time
from pathlib import Path

import numpy as np

from captioning.cache.progress import Progress
from captioning.cache.shards import write_shard
from captioning.errors import CacheError, ImageError

logger = logging.getLogger(__name__)

# Decoded pixels waiting for the encoder at most (uint8), besides 4 batches and 2 per thread.
AHEAD_BYTES = 512 * 2**20


class _Decoder:
    """Decodes images on `workers` threads to `uint8`, up to `ahead` images before they are
    taken.

    An image that cannot be read comes back as black pixels with the reason.
    """

    def __init__(self, paths, load, size: int, workers: int, ahead: int):
        self._paths = iter(paths)
        self._load, self._size, self._ahead = load, size, ahead
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self._pending = collections.deque()

    def _read(self, path):
        try:
            # The loader's float32 pixels are whole numbers in 0..255: exact as uint8.
            return self._load(path, self._size).astype(np.uint8), None
        except ImageError as error:
            return np.zeros((self._size, self._size, 3), np.uint8), str(error)

    def _fill(self) -> None:
        while len(self._pending) < self._ahead:
            path = next(self._paths, None)
            if path is None:
                return
            self._pending.append(self._pool.submit(self._read, path))

    def take(self, n: int) -> list:
        """The next `n` images as `(pixels, error or None)`; more are decoding meanwhile."""
        self._fill()
        taken = [self._pending.popleft().result() for _ in range(n)]
        self._fill()
        return taken

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def encode_shards(model, manifest: dict, out: Path, images: list, images_dir: Path, load, *,
                  batch_size: int, workers: int, progress, todo: list,
                  strict: bool = False) -> tuple:
    """Encodes the `todo` shards of a cache folder and writes them.

    Args:
        model: the encoder.
        manifest: the cache's manifest (image size, feature shape, dtype).
        out: the cache folder.
        images: every image name of the cache, in row order.
        images_dir: the folder holding the images.
        load: `load(path, size)` decodes an image to pixels (whole numbers in 0..255), or
            raises `ImageError`.
        batch_size, workers, progress, strict: as `build_cache`.
        todo: the manifest's entries of the shards to compute.

    Returns:
        `(images encoded, seconds)`.
    """
    total = sum(s["stop"] - s["start"] for s in todo)
    batch_size = max(1, min(batch_size, total))  # a few images: one batch of them, unpadded
    paths = (images_dir / name for s in todo for name in images[s["start"]:s["stop"]])
    size = manifest["image_size"]
    decoder = _Decoder(paths, load, size, workers,
                       ahead=max(4 * batch_size, 2 * workers, AHEAD_BYTES // (size * size * 3)))
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="write")
    meter = Progress(total, progress)
    shard_encoder = _ShardEncoder(model, manifest, out, images, images_dir, decoder,
                                  batch_size, meter, strict)
    started = time.monotonic()
    writing = None
    try:
        for entry in todo:
            data, failed = shard_encoder.encode(entry)
            if writing is not None:
                writing.result()  # at most one shard waits to be written
            writing = writer.submit(write_shard, out, entry, data, failed)
        if writing is not None:
            writing.result()
    finally:
        decoder.close()
        writer.shutdown(wait=True)
        meter.close()
    seconds = time.monotonic() - started
    first = shard_encoder.first_batch_seconds
    if first is not None and total > batch_size:
        logger.info("The first batch took %.1f s (the encoder compiles on it); the other %d "
                    "images ran at %.1f images/s.", first, total - batch_size,
                    (total - batch_size) / max(seconds - first, 1e-9))
    return total, seconds


class _ShardEncoder:
    """Encodes one shard after another from the images a `_Decoder` delivers in order."""

    def __init__(self, model, manifest, out, images, images_dir, decoder, batch_size, meter,
                 strict):
        self.model, self.manifest, self.out = model, manifest, out
        self.images, self.images_dir = images, images_dir
        self.decoder, self.batch_size, self.meter, self.strict = (decoder, batch_size, meter,
                                                                  strict)
        self._checked = False
        self.first_batch_seconds = None
        self._started = time.monotonic()

    def encode(self, entry: dict) -> tuple:
        """The features of one shard and its unreadable images (name: reason)."""
        rows = entry["stop"] - entry["start"]
        data = np.zeros((rows,) + tuple(self.manifest["feature_shape"]),
                        self.manifest["dtype"])
        failed = {}
        for start in range(0, rows, self.batch_size):
            stop = min(start + self.batch_size, rows)
            batch = self.images[entry["start"] + start:entry["start"] + stop]
            loaded = self.decoder.take(len(batch))
            errors = {name: error for name, (_, error) in zip(batch, loaded) if error}
            if self.strict and errors:
                self._refuse(*next(iter(errors.items())))
            encoded = self._encode(np.stack([p for p, _ in loaded]))
            if self.first_batch_seconds is None:
                self.first_batch_seconds = time.monotonic() - self._started
            if not self._checked:
                check_dtype_range(encoded, data.dtype, self.out)
                self._checked = True
            data[start:stop] = encoded
            failed.update(errors)
            self.meter.update(len(batch))
        return data, failed

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        """The features of a uint8 batch, run at the full batch shape (zeros padding it)."""
        count = len(pixels)
        if count < self.batch_size:
            pixels = np.concatenate(
                [pixels, np.zeros((self.batch_size - count,) + pixels.shape[1:], pixels.dtype)])
        return np.asarray(self.model.predict_on_batch(pixels))[:count]

    def _refuse(self, name: str, error: str):
        raise CacheError(f"{error}; fix or remove {self.images_dir / name} and run the same "
                         "command again (it resumes), or drop --strict to list unreadable "
                         "images in failed.csv and go on")


def check_dtype_range(encoded: np.ndarray, dtype, out: Path) -> None:
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
