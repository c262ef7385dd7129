"""One batch source for both training phases: `((inputs, tokens_in), tokens_out)` batches.

`CaptionBatches` owns the captions, their order and the batching; what it feeds the model
for each caption comes from an input fetcher: `CachedFeatures` reads the features of the
first phase from the cache's memory maps, `DecodedImages` decodes the images of the
fine-tuning phase in a thread pool. Close the batches (or use them as a context manager)
to shut that pool down.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
from pathlib import Path

import keras
import numpy as np

from captioning.data.images import load_and_resize
from captioning.errors import ConfigError
from captioning.utils.checks import check_bool, check_int

logger = logging.getLogger(__name__)


class CachedFeatures:
    """Input fetcher: float32 features of cache rows, read per batch from the memory maps.

    Only the row numbers live in memory, so memory does not grow with the cache.

    Args:
        cache: an open `FeatureCache`.
        rows: the cache row of each caption.
    """

    def __init__(self, cache, rows):
        self.cache, self.rows = cache, np.asarray(rows)

    def __len__(self):
        return len(self.rows)

    def __call__(self, picked: np.ndarray) -> np.ndarray:
        """The features of the captions at positions `picked`."""
        return self.cache.gather(self.rows[picked])

    def close(self) -> None:
        """Nothing to release: the cache's memory maps belong to the cache."""


class DecodedImages:
    """Input fetcher: float32 pixels of each caption's image, decoded by the one loader
    (`captioning.data.images.load_and_resize`) in a thread pool.

    The pool is shut down by `close()` (or on leaving a `with` block).

    Args:
        images_dir: the folder holding the images.
        names: the image file of each caption (relative to `images_dir`).
        image_size: the encoder's input side in pixels.
        workers: decoding threads; default the CPU count (at least 2).
    """

    def __init__(self, images_dir, names, image_size: int, *, workers: int | None = None):
        check_int("image_size", image_size, 1)
        check_int("workers", workers, 1, allow_none=True)
        self.images_dir, self.names = Path(images_dir), list(names)
        self.image_size = image_size
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers or max(2, os.cpu_count() or 2), thread_name_prefix="captioning-images")

    def __len__(self):
        return len(self.names)

    def __call__(self, picked: np.ndarray) -> np.ndarray:
        """The pixels of the captions' images at positions `picked`."""
        return self.pixels([self.names[i] for i in picked])

    def pixels(self, names) -> np.ndarray:
        """`(len(names), size, size, 3)` float32 pixels of the named images."""
        return load_pixels(self.images_dir, names, self.image_size, self._pool)

    def close(self) -> None:
        """Shuts the decoding threads down (after the decoding under way)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def load_pixels(images_dir, names, size: int, pool=None) -> np.ndarray:
    """`(len(names), size, size, 3)` float32 pixels of the named images, read by the one
    loader, in `pool` (a `concurrent.futures` executor) when one is given."""
    paths = [Path(images_dir) / name for name in names]

    def load(path):
        return load_and_resize(path, size)

    return np.stack(list(pool.map(load, paths) if pool else map(load, paths)))


ENCODE_BATCH = 32
"""Images per eager encoder call outside `fit`: an eager call keeps every layer's activations
of its batch alive at once, about 80 MB per image for MobileNetV2 at 224 px."""


def encode_images(encoder, names, pixels_of, batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """float32 features of the named images by `encoder` (in inference mode), computed
    `batch_size` images at a time; `pixels_of(names)` gives their pixels."""
    check_int("batch_size", batch_size, 1)
    parts = [keras.ops.convert_to_numpy(
                 encoder(pixels_of(names[start:start + batch_size]), training=False))
             for start in range(0, len(names), batch_size)]
    return np.concatenate(parts).astype(np.float32)


class CaptionBatches(keras.utils.PyDataset):
    """`((inputs, tokens_in), tokens_out)` batches: `tokens_in` is each caption without its
    last token, `tokens_out` without its first, and `inputs` what `fetch` gives for them.

    The order depends only on `seed`, `stream` and the epoch, so a resumed run sees the
    batches an uninterrupted one would have.

    Args:
        fetch: the input fetcher, `fetch(positions) -> array` (`CachedFeatures`,
            `DecodedImages`); closed with the batches.
        sequences: int32 `(captions, length)` encoded captions with markers, one per input.
        batch_size: captions per batch (the global batch under a strategy).
        shuffle: reshuffle every epoch.
        seed: shuffling seed.
        epoch: the epoch the first pass counts as (set when resuming).
        drop_remainder: leave out the last, partial batch (static shapes, for TPUs).
        stream: offsets the shuffling seed, so that each phase has an order of its own.

    Use `CaptionBatches.from_cache` and `CaptionBatches.from_images` to make them.
    """

    def __init__(self, fetch, sequences, batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, drop_remainder: bool = False,
                 stream: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        check_int("batch_size", batch_size, 1)
        check_bool("shuffle", shuffle)
        check_bool("drop_remainder", drop_remainder)
        self.fetch, self.sequences = fetch, np.asarray(sequences)
        if len(self.fetch) != len(self.sequences):
            raise ValueError(f"{len(self.fetch)} inputs for {len(self.sequences)} captions; "
                             "give one input per caption")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_remainder, self.stream, self.epoch = drop_remainder, stream, epoch
        self._order = self._make_order()

    @classmethod
    def from_cache(cls, cache, rows, sequences, batch_size: int, **kwargs):
        """Batches of cached features: `rows` are the cache rows of the captions."""
        return cls(CachedFeatures(cache, rows), sequences, batch_size, **kwargs)

    @classmethod
    def from_images(cls, images_dir, names, sequences, batch_size: int, image_size: int, *,
                    workers: int | None = None, **kwargs):
        """Batches of images decoded in a thread pool (close the batches to shut it down):
        `names` are the captions' image files in `images_dir`."""
        return cls(DecodedImages(images_dir, names, image_size, workers=workers), sequences,
                   batch_size, **kwargs)

    def _make_order(self):
        if not self.shuffle:
            return np.arange(len(self.sequences))
        rng = np.random.default_rng([self.seed, self.stream + self.epoch])
        return rng.permutation(len(self.sequences))

    def __len__(self):
        if self.drop_remainder:
            return len(self.sequences) // self.batch_size
        return math.ceil(len(self.sequences) / self.batch_size)

    def __getitem__(self, index):
        picked = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        tokens = self.sequences[picked]
        return (self.fetch(picked), tokens[:, :-1]), tokens[:, 1:]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()

    def close(self) -> None:
        """Releases the fetcher's resources (the image decoding threads)."""
        self.fetch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def check_training_batches(batches: CaptionBatches) -> CaptionBatches:
    """The training batches, refused when they hold no batch at all.

    Raises:
        ConfigError: fewer captions than one global batch with `drop_remainder`.
    """
    if len(batches) == 0:
        raise ConfigError(f"{len(batches.sequences)} training captions make no full batch of "
                          f"{batches.batch_size}; lower --batch-size")
    return batches


def usable_validation(batches: CaptionBatches | None, phase: str):
    """The validation batches, or None (with a warning) when they hold no batch at all.

    With `drop_remainder` (TPUs) a validation split smaller than the global batch gives no
    batch, and Keras refuses to fit on an empty dataset; the phase then goes on without
    validation loss (val_bleu_4 is still measured on the validation images). Batches left
    out are closed.
    """
    if batches is not None and len(batches) == 0:
        logger.warning("%s: the %d validation captions make no full batch of %d (static "
                       "shapes drop the partial one); %s goes on without validation loss, "
                       "val_bleu_4 is still measured; lower --batch-size to get val_loss",
                       phase, len(batches.sequences), batches.batch_size, phase)
        batches.close()
        return None
    return batches
