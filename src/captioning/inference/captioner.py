"""`Captioner`: a loaded release that captions image files and arrays.

Images are decoded and resized by the one loader (`captioning.images`) in a thread pool
while the encoder runs on the previous batch, then the whole batch is decoded by the
compiled search. Bad files are reported per image; the rest are still captioned.

Example:
>>> captioner = Captioner.load()                          # the shipped demo release
>>> [c.caption for c in captioner.caption(["examples/red_circle.jpg"])]  # doctest: +SKIP
['a large red circle']
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

from pathlib import Path

import numpy as np

from captioning.models.search import SequenceDecoder
from captioning.errors import CaptioningError, ConfigError, ImageError


@dataclasses.dataclass
class Caption:
    """One image's result: the caption, or the error that stopped it."""

    image: str
    caption: str | None = None
    score: float | None = None
    alternatives: list | None = None  # [(caption, score), ...] best first, with `top`
    words: list | None = None
    attention: np.ndarray | None = None  # (words, regions) for attention models
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Captioner:
    """Captions images with a release.

    Args:
        release: a loaded `Release` (see `load`).
        batch_size: images per encoder and decoder call.
        max_length: words generated at most; default the release's setting.
    """

    def __init__(self, release, batch_size: int = 32, max_length: int | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.release = release
        self.tokenizer = release.tokenizer
        self.batch_size = int(batch_size)
        config = release.config
        self.search = SequenceDecoder(
            release.decoder, start_id=self.tokenizer.start_id, end_id=self.tokenizer.end_id,
            max_length=max_length or config.max_decode_length)
        self.length_penalty = config.length_penalty
        self.image_size = release.image_size

    @classmethod
    def load(cls, release=None, **kwargs) -> "Captioner":
        """Loads and verifies a release (a run folder or manifest; None: the shipped demo)."""
        from captioning.release.load import load_release

        return cls(load_release(release), **kwargs)

    def caption(self, images, beam: int = 1, top: int = 1, progress: bool = False,
                workers: int | None = None):
        """Captions image paths and/or arrays.

        Args:
            images: one image or several (see `image_list`): a path, an RGB array
                `(H, W, 3)` (or grey `(H, W)`, or RGBA) in 0..255, a batch array
                `(N, H, W, 3)`, or a list of paths and arrays.
            beam: beam width; 1 is greedy.
            top: how many beams to return per image (`Caption.alternatives`), <= beam.
            progress: show a progress bar.
            workers: threads decoding image files.

        Returns:
            A list of `Caption`, one per input, in order.
        """
        from tqdm.auto import tqdm

        if isinstance(beam, bool) or not isinstance(beam, (int, np.integer)) or beam < 1:
            raise ConfigError(f"beam must be a positive integer, got {beam!r}")
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) \
                or not 1 <= top <= beam:
            raise ConfigError(f"top must be between 1 and beam ({beam}), got {top!r}")
        images = image_list(images)
        results = [None] * len(images)
        batches = [list(range(i, i + self.batch_size))[:len(images) - i]
                   for i in range(0, len(images), self.batch_size)]
        bar = tqdm(total=len(images), unit="img", disable=not progress, desc="captioning")
        with concurrent.futures.ThreadPoolExecutor(workers or max(2, os.cpu_count() or 2)) as pool:
            pending = [pool.submit(self._load_batch, images, b) for b in batches[:2]]
            for index, batch in enumerate(batches):
                pixels = pending[index].result()
                if index + 2 < len(batches):
                    pending.append(pool.submit(self._load_batch, images, batches[index + 2]))
                good = [i for i in batch if not isinstance(pixels[i], str)]
                for i in batch:
                    if isinstance(pixels[i], str):
                        results[i] = Caption(image=_name(images[i]), error=pixels[i])
                if good:
                    self._caption_batch(images, good, np.stack([pixels[i] for i in good]),
                                        beam, top, results)
                bar.update(len(batch))
        bar.close()
        return results

    def caption_features(self, features, beam: int = 1):
        """Decodes already encoded features; returns (captions, beams)."""
        beams = self.search.decode(features, beam=beam, length_penalty=self.length_penalty)
        return [" ".join(self.words(ids, int(length))[0])
                for ids, length in zip(beams.ids[:, 0], beams.lengths[:, 0])], beams

    def _load_batch(self, images, batch):
        from captioning.data.images import load_and_resize, resize_image

        out = {}
        for i in batch:
            item = images[i]
            try:
                if isinstance(item, np.ndarray):
                    out[i] = resize_image(_as_rgb(item), self.image_size)
                else:
                    out[i] = load_and_resize(item, self.image_size)
            except CaptioningError as error:
                out[i] = str(error)
        return out

    def words(self, ids, length=None):
        """The words of one generated id sequence and the steps that gave them.

        Padding and markers are skipped, and the words stop at the end token, so
        `attention[steps]` holds the attention rows of exactly these words.

        Args:
            ids: one sequence of generated ids (a `Beams.ids` row).
            length: how many of them were generated (`Beams.lengths`); default all.

        Returns:
            `(words, steps)`: the list of words, and the index of each word's step.
        """
        tokenizer = self.tokenizer
        ids = np.asarray(ids)[:length]
        skip = {tokenizer.pad_id, tokenizer.start_id}
        words, steps = [], []
        for step, index in enumerate(ids.tolist()):
            if index == tokenizer.end_id:
                break
            if index in skip:
                continue
            word = tokenizer.index_word.get(index) if 0 < index < tokenizer.vocab_size else None
            words.append(tokenizer.oov_token if word is None else word)
            steps.append(step)
        return words, steps

    def _caption_batch(self, images, indices, pixels, beam, top, results):
        features = self.release.encoder.predict_on_batch(pixels)
        beams = self.search.decode(features, beam=beam, length_penalty=self.length_penalty)
        for row, i in enumerate(indices):
            words, steps = self.words(beams.ids[row, 0], int(beams.lengths[row, 0]))
            attention = None
            if beams.attention is not None:
                attention = beams.attention[row, 0, steps]  # (words, regions)
            alternatives = [
                (" ".join(self.words(beams.ids[row, k], int(beams.lengths[row, k]))[0]),
                 float(beams.scores[row, k])) for k in range(top)]
            results[i] = Caption(image=_name(images[i]), caption=" ".join(words),
                                 score=float(beams.scores[row, 0]), alternatives=alternatives,
                                 words=words, attention=attention)


def image_list(images) -> list:
    """The images of `Captioner.caption`'s argument, as a list of paths and arrays.

    Args:
        images: a path (`str`, `bytes` or `os.PathLike`); one image array, `(H, W)` grey
            or `(H, W, C)`; a batch array `(N, H, W, C)`; or an iterable of paths and
            image arrays.

    Returns:
        A list with one item per image.

    Raises:
        ConfigError: an array that is not 2-, 3- or 4-dimensional.
    """
    if isinstance(images, (str, bytes, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ConfigError(f"an image array must be (H, W), (H, W, 3) or a batch (N, H, W, 3), "
                          f"got shape {images.shape}")
    return list(images)


def download_image(url: str, cache_dir=None, *, force: bool = False) -> Path:
    """Downloads an image once into the Keras cache and returns its path.

    The file is named after a hash of the whole URL (plus the URL's image extension, if
    it has one), so two URLs that end in the same name, or in `/`, are two files, and the
    same URL is read from the cache the next time.

    Args:
        url: an `http(s)://` (or `file://`) URL of an image.
        cache_dir: the cache root (default `~/.keras`); files go in its `images/` folder.
        force: download again even when the file is cached.

    Returns:
        The `Path` of the downloaded file.

    Raises:
        ImageError: the URL is not a string or the download failed.
    """
    import hashlib
    import urllib.parse

    import keras

    from captioning.data.images import IMAGE_EXTENSIONS

    if not isinstance(url, str) or not url.strip():
        raise ImageError(f"an image URL must be a non-empty string, got {url!r}")
    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
    name = hashlib.sha256(url.encode()).hexdigest()[:20]
    name += suffix if suffix in IMAGE_EXTENSIONS else ""
    try:
        path = keras.utils.get_file(fname=name, origin=url, cache_dir=cache_dir,
                                    cache_subdir="images", force_download=force)
    except Exception as error:  # get_file raises a bare Exception for URL failures
        raise ImageError(f"cannot download {url}: {' '.join(str(error).split())}; check the "
                         "URL, or download the image yourself and give its path") from None
    return Path(path)


def _name(item) -> str:
    return "<array>" if isinstance(item, np.ndarray) else os.fsdecode(item)


def _as_rgb(array: np.ndarray) -> np.ndarray:
    """An image array as `(H, W, 3)`: grey `(H, W)` or `(H, W, 1)` repeated, alpha dropped."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageError(f"an image array must be (H, W, 3) RGB, got shape {array.shape}")
    return array[..., :3]
