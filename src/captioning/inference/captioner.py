"""One captioner loop, and `Captioner`: a loaded release that captions image files and arrays.

`caption_images` is the loop every captioner runs: images are decoded and resized by the one
loader (`captioning.data.images`) in a thread pool, up to two batches ahead of the model; each
batch is encoded and decoded by a `CaptionModel`; unreadable images get an error each and the
rest are still captioned. Two models plug into it: `Captioner` (this project's release: the
Keras 3 encoder and the compiled greedy or beam search) and `LegacyCaptioner`
(`captioning.inference.legacy`: the earlier project's tf-keras files, captioned greedily).

Example:
>>> captioner = Captioner.load()                          # the shipped demo release
>>> [c.caption for c in captioner.caption(["examples/red_circle.jpg"])]  # doctest: +SKIP
['a large red circle']
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import dataclasses
import os
from typing import Protocol, runtime_checkable

import numpy as np

from captioning.config import CaptionConfig
from captioning.errors import ConfigError
from captioning.inference.inputs import (  # noqa: F401  (image_list, download_image: API)
    download_image,
    image_list,
    image_name,
    load_pixels,
)
from captioning.models.search import SequenceDecoder
from captioning.utils.checks import check_int, check_number


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


@runtime_checkable
class CaptionModel(Protocol):
    """What `caption_images` needs from a release.

    Attributes:
        image_size: the encoder's input side in pixels, or `(height, width)`.
        max_beam: the widest beam it searches, or None for any.
    """

    image_size: int | tuple
    max_beam: int | None

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Features of a batch of `(N, H, W, 3)` RGB pixels in 0..255."""

    def captions(self, features, beam: int = 1, top: int = 1) -> list:
        """One `Caption` per row of `features` (with `image` left empty), `top` alternatives
        each."""


def caption_images(model: CaptionModel, images, *, beam: int = 1, top: int = 1,
                   batch_size: int = 32, progress: bool = False,
                   workers: int | None = None) -> list:
    """Captions image paths and/or arrays with `model`, batch by batch.

    Args:
        model: a `CaptionModel` (`Captioner`, `LegacyCaptioner`).
        images: what `image_list` takes: a path, an RGB array, a batch array, or a list.
        beam: beam width; 1 is greedy.
        top: alternatives per image, at most `beam`.
        batch_size: images per encoder and decoder call.
        progress: show a progress bar.
        workers: threads decoding image files; default one per CPU (at least 2).

    Returns:
        A list of `Caption`, one per input, in order; an unreadable image gets `error`.
    """
    from tqdm.auto import tqdm

    check_int("beam", beam, 1)
    if model.max_beam is not None and beam > model.max_beam:
        raise ConfigError(f"beam must be at most {model.max_beam} for this model (it "
                          f"captions greedily), got {beam!r}")
    check_int("top", top, 1, beam)
    check_int("batch_size", batch_size, 1)
    check_int("workers", workers, 1, allow_none=True)
    images = image_list(images)
    results = [None] * len(images)
    batches = [range(i, min(i + batch_size, len(images)))
               for i in range(0, len(images), batch_size)]
    pool = concurrent.futures.ThreadPoolExecutor(workers or max(2, os.cpu_count() or 2),
                                                 thread_name_prefix="caption-images")
    pending = collections.deque()

    def submit(batch):
        pending.append([pool.submit(load_pixels, images[i], model.image_size) for i in batch])

    try:
        for batch in batches[:2]:
            submit(batch)
        with tqdm(total=len(images), unit="img", disable=not progress,
                  desc="captioning") as bar:
            for index, batch in enumerate(batches):
                pixels = [future.result() for future in pending.popleft()]
                if index + 2 < len(batches):
                    submit(batches[index + 2])
                good = []
                for i, item in zip(batch, pixels):
                    if isinstance(item, str):
                        results[i] = Caption(image=image_name(images[i]), error=item)
                    else:
                        good.append((i, item))
                if good:
                    features = model.encode(np.stack([item for _, item in good]))
                    found = model.captions(features, beam=beam, top=top)
                    for (i, _), caption in zip(good, found):
                        results[i] = dataclasses.replace(caption, image=image_name(images[i]))
                bar.update(len(batch))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


class Captioner:
    """Captions images with a release: its encoder, then the compiled greedy or beam search.

    Args:
        release: a loaded `Release` (see `load`).
        batch_size: images per encoder and decoder call.
        max_length: words generated at most; default the release's setting.
        length_penalty: beam search ranks finished captions by `log_prob / length **
            length_penalty` (GNMT); default the release's setting (`config.length_penalty`).
        block_ngram_repeat: N: no N consecutive words twice in a caption (0: repeats
            allowed); default the release's setting (`config.block_ngram_repeat`).

    Example:
    >>> captioner = Captioner.load("runs/flickr8k", block_ngram_repeat=2)  # doctest: +SKIP
    >>> result = captioner.caption(rgb_array, beam=3, top=3)[0]            # doctest: +SKIP
    >>> result.caption, result.alternatives                                # doctest: +SKIP
    """

    max_beam = None

    def __init__(self, release, batch_size: int = 32, max_length: int | None = None, *,
                 length_penalty: float | None = None, block_ngram_repeat: int | None = None):
        config = release.config
        self._setup(release.encoder, release.decoder, release.tokenizer,
                    batch_size=batch_size, max_length=max_length or config.max_decode_length)
        self._set_options(config, length_penalty, block_ngram_repeat)
        self.release = release

    @classmethod
    def load(cls, release=None, **kwargs) -> "Captioner":
        """Loads and verifies a release (a run folder or manifest; None: the shipped demo);
        `kwargs` go to `Captioner` (`batch_size`, `length_penalty`, ...)."""
        from captioning.release.load import load_release

        return cls(load_release(release), **kwargs)

    @classmethod
    def from_models(cls, encoder, step_model, tokenizer, *, config: CaptionConfig | None = None,
                    batch_size: int = 32, max_length: int | None = None) -> "Captioner":
        """A captioner over loaded models and a tokenizer that come without a manifest.

        Args:
            encoder, step_model: this project's encoder and one-step decoder models, checked
                to fit (`captioning.release.check_fit`).
            tokenizer: their `CaptionTokenizer`.
            config: the decoding settings (`max_decode_length`, `length_penalty`,
                `block_ngram_repeat`); default `CaptionConfig()`'s.
            batch_size, max_length: as for `Captioner`.
        """
        config = config or CaptionConfig()
        captioner = cls.__new__(cls)
        captioner._setup(encoder, step_model, tokenizer, batch_size=batch_size,
                         max_length=max_length or config.max_decode_length)
        captioner._set_options(config, None, None)
        captioner.release = None
        return captioner

    def _setup(self, encoder, step_model, tokenizer, *, batch_size, max_length):
        check_int("batch_size", batch_size, 1)
        self.encoder, self.tokenizer = encoder, tokenizer
        self.batch_size = int(batch_size)
        self.search = SequenceDecoder(step_model, start_id=tokenizer.start_id,
                                      end_id=tokenizer.end_id, max_length=max_length)
        self.image_size = int(encoder.inputs[0].shape[1])

    def _set_options(self, config, length_penalty, block_ngram_repeat):
        """The decoding options: those given, else those of `config` (a `CaptionConfig`,
        or another captioner)."""
        self.length_penalty = _length_penalty(
            config.length_penalty if length_penalty is None else length_penalty)
        if block_ngram_repeat is None:
            block_ngram_repeat = config.block_ngram_repeat
        check_int("block_ngram_repeat", block_ngram_repeat, 0)
        self.block_ngram_repeat = int(block_ngram_repeat)

    def with_options(self, *, length_penalty: float | None = None,
                     block_ngram_repeat: int | None = None) -> "Captioner":
        """This captioner with other decoding options (None keeps one); it shares the
        models and the compiled searches."""
        changed = copy.copy(self)
        changed._set_options(self, length_penalty, block_ngram_repeat)
        return changed

    def caption(self, images, beam: int = 1, top: int = 1, progress: bool = False,
                workers: int | None = None, *, length_penalty: float | None = None,
                block_ngram_repeat: int | None = None) -> list:
        """Captions image paths and/or arrays.

        Args:
            images: one image or several (see `image_list`): a path, an RGB array
                `(H, W, 3)` (or grey `(H, W)`, or RGBA) in 0..255, a batch array
                `(N, H, W, 3)`, or a list of paths and arrays.
            beam: beam width; 1 is greedy.
            top: how many beams to return per image (`Caption.alternatives`), <= beam.
            progress: show a progress bar.
            workers: threads decoding image files.
            length_penalty: the beam search's GNMT length penalty for this call (a
                finished caption scores `log_prob / length ** length_penalty`); default the
                captioner's.
            block_ngram_repeat: N: no N consecutive words twice in a caption, for this
                call (0: repeats allowed); default the captioner's.

        Returns:
            A list of `Caption`, one per input, in order.
        """
        model = self
        if length_penalty is not None or block_ngram_repeat is not None:
            model = self.with_options(length_penalty=length_penalty,
                                      block_ngram_repeat=block_ngram_repeat)
        return caption_images(model, images, beam=beam, top=top, batch_size=self.batch_size,
                              progress=progress, workers=workers)

    def encode(self, pixels) -> np.ndarray:
        """Features of a batch of `(N, size, size, 3)` RGB pixels in 0..255."""
        return np.asarray(self.encoder.predict_on_batch(pixels))

    def captions(self, features, beam: int = 1, top: int = 1) -> list:
        """Searches captions for a batch of features.

        Returns:
            One `Caption` per row (`image` left empty): the best caption, its score, words
            and attention rows, and the `top` best beams as `alternatives`.
        """
        beams = self._decode(features, beam)
        results = []
        for row in range(len(beams.ids)):
            words, steps = self.words(beams.ids[row, 0], int(beams.lengths[row, 0]))
            attention = None
            if beams.attention is not None:
                attention = beams.attention[row, 0, steps]  # (words, regions)
            alternatives = [
                (" ".join(self.words(beams.ids[row, k], int(beams.lengths[row, k]))[0]),
                 float(beams.scores[row, k])) for k in range(top)]
            results.append(Caption(image="", caption=" ".join(words),
                                   score=float(beams.scores[row, 0]),
                                   alternatives=alternatives, words=words,
                                   attention=attention))
        return results

    def caption_features(self, features, beam: int = 1):
        """Decodes already encoded features; returns (captions, beams)."""
        beams = self._decode(features, beam)
        return [" ".join(self.words(ids, int(length))[0])
                for ids, length in zip(beams.ids[:, 0], beams.lengths[:, 0])], beams

    def _decode(self, features, beam):
        return self.search.decode(features, beam=beam, length_penalty=self.length_penalty,
                                  block_ngram_repeat=self.block_ngram_repeat)

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


def _length_penalty(value) -> float:
    check_number("length_penalty", value, 0)
    if not np.isfinite(value):
        raise ConfigError(f"length_penalty must be a finite number, got {value!r}")
    return float(value)
