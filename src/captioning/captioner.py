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

import numpy as np

from captioning.decoding import SequenceDecoder
from captioning.errors import CaptioningError, ConfigError


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
        from captioning.release import load_release

        return cls(load_release(release), **kwargs)

    def caption(self, images, beam: int = 1, top: int = 1, progress: bool = False,
                workers: int | None = None):
        """Captions image paths and/or arrays.

        Args:
            images: a list of paths, or of RGB arrays `(H, W, 3)` in 0..255 (or a mix).
            beam: beam width; 1 is greedy.
            top: how many beams to return per image (`Caption.alternatives`), <= beam.
            progress: show a progress bar.
            workers: threads decoding image files.

        Returns:
            A list of `Caption`, one per input, in order.
        """
        from tqdm.auto import tqdm

        if top < 1 or top > beam:
            raise ConfigError(f"top must be between 1 and beam ({beam}), got {top!r}")
        images = list(images)
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
        return [self.tokenizer.decode(ids) for ids in beams.ids[:, 0]], beams

    def _load_batch(self, images, batch):
        from captioning.images import load_and_resize, resize_image

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

    def _caption_batch(self, images, indices, pixels, beam, top, results):
        features = self.release.encoder.predict_on_batch(pixels)
        beams = self.search.decode(features, beam=beam, length_penalty=self.length_penalty)
        for row, i in enumerate(indices):
            ids = beams.ids[row, 0]
            words = self.tokenizer.decode(ids)
            attention = None
            if beams.attention is not None:
                count = int(beams.lengths[row, 0])
                attention = beams.attention[row, 0, :count]
            alternatives = [(self.tokenizer.decode(beams.ids[row, k]), float(beams.scores[row, k]))
                            for k in range(top)]
            results[i] = Caption(image=_name(images[i]), caption=words,
                                 score=float(beams.scores[row, 0]), alternatives=alternatives,
                                 words=words.split(), attention=attention)


def _name(item) -> str:
    return "<array>" if isinstance(item, np.ndarray) else str(item)


def _as_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise CaptioningError(f"an image array must be (H, W, 3) RGB, got shape {array.shape}")
    return array[..., :3]
