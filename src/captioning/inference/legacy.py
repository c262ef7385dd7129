"""Captioning with the release files of the earlier Keras project, and `caption_with_files`.

The earlier TensorFlow 2 / Keras project (`Abdalrahman112/Image-captioning`, TF 2.2) released
`Encoder.hdf5`, `Decoder.hdf5` and `tokenizer.pickle`; `captioning.release.legacy` describes
them and checks them against allow-lists before tf-keras loads them. `LegacyCaptioner` is the
captioning side: a `CaptionModel` that `caption_images` (the one captioner loop) drives.

The notebook's prediction (`without attention/Image_captioning.ipynb`): read the image,
resize to 299x299, `preprocess_input`, encode; `h = c = zeros(768)`; the first token is
`word_index['<sos>']`; then at most `max_cap_len + 1 = 16` decoder steps, each taking the
argmax of the softmax as the next word (`index_word[idx]`) and stopping after `<eos>`; the
words between the markers, joined by spaces, are the caption. `LegacyCaptioner` does the same
for a whole batch of images at once (one decoder call per step for all of them). Where it
differs, on purpose:

- images are read by `captioning.data.images.load_and_resize` (the one loader of this
  toolkit: any JPEG/PNG/..., EXIF orientation, antialiased bilinear resize) rather than
  `tf.image.decode_jpeg` + `tf.image.resize`, so pixels can differ by a few levels;
- the padding id 0 is never chosen: the notebook would crash on the next step if it were
  (`index_word` has no 0), here the best real word is taken instead.

`caption_with_files` also takes this project's own three files (Keras 3 `Encoder.hdf5` with
its preprocessing inside, `Decoder.hdf5` one-step model, `tokenizer.pickle`) and captions
them with `Captioner` (compiled greedy or beam search), so one call serves both kinds of
release.

Example:
>>> captions = caption_with_files(["dog.jpg"], "Encoder.hdf5", "Decoder.hdf5",
...                               "tokenizer.pickle")                    # doctest: +SKIP
>>> captions[0].caption                                                   # doctest: +SKIP
'dog running through grass'
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from captioning.errors import ConfigError, ReleaseError
from captioning.inference.captioner import Caption, Captioner, caption_images, image_list
from captioning.release.legacy import (  # noqa: F401  (re-exported: the legacy API)
    ALLOWED_ACTIVATIONS,
    ALLOWED_LAYERS,
    ALLOWED_MODULES,
    ALLOWED_OBJECTS,
    ALLOWED_TF_FUNCTIONS,
    ALLOWED_TF_OPS,
    TF_KERAS_MISSING,
    check_legacy_model,
    is_legacy_model,
    load_legacy_model,
    load_legacy_models,
)
from captioning.utils.checks import check_int

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "ALLOWED_LAYERS",
    "ALLOWED_MODULES",
    "ALLOWED_OBJECTS",
    "ALLOWED_TF_FUNCTIONS",
    "ALLOWED_TF_OPS",
    "LegacyCaptioner",
    "MAX_WORDS",
    "TF_KERAS_MISSING",
    "caption_with_files",
    "check_legacy_model",
    "is_legacy_model",
    "load_legacy_model",
    "preprocess_input",
]

MAX_WORDS = 16
"""Decoder steps of the earlier project's notebook (`max_cap_len + 1`), `<eos>` included."""


def preprocess_input(pixels) -> np.ndarray:
    """InceptionV3's `preprocess_input` ('tf' mode): 0..255 pixels to -1..1, float32."""
    return np.asarray(pixels, np.float32) / np.float32(127.5) - np.float32(1.0)


class LegacyCaptioner:
    """Captions images with the earlier Keras project's encoder, decoder and tokenizer.

    A `CaptionModel` (greedy only: `max_beam` 1) that `caption` runs through the one
    captioner loop.

    Args:
        encoder: the loaded `Encoder.hdf5` (a tf-keras model: 0..255 pixels already put
            through `preprocess_input` -> encodings).
        decoder: the loaded `Decoder.hdf5` (`[encodings, h, c, token] -> [probs, h, c]`).
        tokenizer: a `CaptionTokenizer` (e.g. the legacy `tokenizer.pickle` as
            `load_tokenizer` reads it).
        max_words: decoder steps at most, `<eos>` included (the notebook's 16).
        batch_size: images per encoder call and per decoder batch.
        names: the file names to use in error messages (encoder, decoder).
    """

    max_beam = 1

    def __init__(self, encoder, decoder, tokenizer, *, max_words: int = MAX_WORDS,
                 batch_size: int = 32, names=("Encoder.hdf5", "Decoder.hdf5")):
        check_int("max_words", max_words, 1)
        check_int("batch_size", batch_size, 1)
        self.encoder, self.decoder, self.tokenizer = encoder, decoder, tokenizer
        self.max_words, self.batch_size = int(max_words), int(batch_size)
        encoder_name, decoder_name = names
        if len(decoder.inputs) != 4 or len(decoder.outputs) != 3:
            raise ReleaseError(
                f"{decoder_name}: takes {len(decoder.inputs)} inputs and gives "
                f"{len(decoder.outputs)} outputs; the earlier project's decoder takes "
                "[encodings, h, c, previous token] and gives [probabilities, h, c]")
        features, h, c, token = (tuple(t.shape) for t in decoder.inputs)
        if len(h) != 2 or h != c or token[1:] != (1,):
            raise ReleaseError(
                f"{decoder_name}: inputs of shapes {features}, {h}, {c}, {token} are not "
                "[encodings, h, c, previous token (1,)]")
        self.units = int(h[-1])
        self.vocab_size = int(decoder.outputs[0].shape[-1])
        if len(encoder.inputs) != 1 or len(encoder.inputs[0].shape) != 4:
            raise ReleaseError(f"{encoder_name}: does not take one batch of RGB images")
        encoded = tuple(encoder.outputs[0].shape[1:])
        if encoded != features[1:]:
            raise ReleaseError(
                f"{encoder_name} gives encodings of shape {encoded} but {decoder_name} takes "
                f"{features[1:]}: the two files come from different releases")
        size = tuple(encoder.inputs[0].shape[1:3])
        self.image_size = size if None not in size else (299, 299)
        word_index = tokenizer.word_index
        if "<sos>" in word_index and "<eos>" in word_index:
            self.start_id, self.end_id = int(word_index["<sos>"]), int(word_index["<eos>"])
        else:
            self.start_id, self.end_id = int(tokenizer.start_id), int(tokenizer.end_id)
        if max(self.start_id, self.end_id) >= self.vocab_size:
            raise ReleaseError(
                f"the tokenizer's markers have ids {self.start_id} and {self.end_id} but "
                f"{decoder_name} predicts only {self.vocab_size} words: the tokenizer comes "
                "from a different release")
        self._token_dtype = _numpy_dtype(decoder.inputs[3].dtype)

    @classmethod
    def load(cls, encoder, decoder, tokenizer, **kwargs) -> "LegacyCaptioner":
        """Checks and loads the three release files (paths), then builds the captioner.

        Both models' configs are checked against the allow-lists before either is loaded.
        """
        from captioning.text import load_tokenizer

        models = load_legacy_models(encoder, decoder)
        tokens = load_tokenizer(tokenizer)
        names = (Path(os.fspath(encoder)).name, Path(os.fspath(decoder)).name)
        return cls(*models, tokens, names=names, **kwargs)

    def caption(self, images, progress: bool = False, workers: int | None = None) -> list:
        """Captions image paths and/or image arrays in 0..255, as `Captioner.caption` takes
        them (one path, one `(H, W, 3)`, grey or RGBA array, a batch array, or a list).

        Returns:
            A list of `Caption`, one per input in order: `caption` (the words joined by
            spaces), `words`, `score` (total log-probability of the chosen words, `<eos>`
            included) and `alternatives` (just that one); or `error` for an unreadable image.
        """
        return caption_images(self, images, batch_size=self.batch_size, progress=progress,
                              workers=workers)

    def encode(self, pixels) -> np.ndarray:
        """Encodes a batch of `(H, W, 3)` 0..255 pixels (preprocessing applied here)."""
        return np.asarray(self.encoder(preprocess_input(pixels), training=False))

    def captions(self, features, beam: int = 1, top: int = 1) -> list:
        """Greedy captions of a batch of encodings, one `Caption` each (`image` left empty)."""
        if beam != 1 or top != 1:
            raise ConfigError(f"the earlier project's releases caption greedily: beam and top "
                              f"must be 1, got beam {beam!r}, top {top!r}")
        ids, log_probs = self.decode(features)
        results = []
        for row_ids, log_prob in zip(ids, log_probs):
            words = self.words(row_ids)
            text = " ".join(words)
            results.append(Caption(image="", caption=text, score=float(log_prob), words=words,
                                   alternatives=[(text, float(log_prob))]))
        return results

    def decode(self, encodings):
        """Greedy decoding of a batch of encodings, as the notebook did per image.

        The decoder runs eagerly, one call per step for the whole batch: no tracing, and
        batches of any size (a traced `predict` would retrace on the last, smaller batch).

        Returns:
            `(ids, log_probs)`: per image the chosen ids (`<eos>` included when reached) and
            the total log-probability of those choices.
        """
        encodings = np.asarray(encodings, np.float32)
        n = len(encodings)
        h = np.zeros((n, self.units), np.float32)
        c = np.zeros((n, self.units), np.float32)
        token = np.full((n, 1), self.start_id, self._token_dtype)
        ids = [[] for _ in range(n)]
        log_probs = np.zeros(n)
        finished = np.zeros(n, bool)
        for _ in range(self.max_words):
            if finished.all():
                break
            probs, h, c = self.decoder([encodings, h, c, token], training=False)
            probs = np.asarray(probs, np.float64).reshape(n, -1)
            scores = probs.copy()
            scores[:, 0] = -np.inf  # padding: never a word
            chosen = np.argmax(scores, axis=1)
            logs = _log_probs(probs)[np.arange(n), chosen]
            for row in np.flatnonzero(~finished):
                ids[row].append(int(chosen[row]))
                log_probs[row] += logs[row]
                if chosen[row] == self.end_id:
                    finished[row] = True
            h, c = np.asarray(h, np.float32), np.asarray(c, np.float32)
            token = chosen.reshape(n, 1).astype(self._token_dtype)
        return ids, log_probs

    def words(self, ids) -> list:
        """The words of decoded ids, up to `<eos>` (excluded), as the notebook printed them."""
        out = []
        for index in ids:
            if index == self.end_id:
                break
            word = self.tokenizer.index_word.get(int(index))
            out.append(self.tokenizer.oov_token if word is None else word)
        return out


def _numpy_dtype(dtype):
    name = getattr(dtype, "name", None) or str(dtype)
    return np.dtype(name) if name in ("float16", "float32", "float64", "int32", "int64") \
        else np.float32


def _log_probs(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities of a decoder's output rows: probabilities, or logits if not."""
    sums = probs.sum(axis=1)
    if probs.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3):
        return np.log(np.maximum(probs, 1e-30))
    shifted = probs - probs.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# One entry point for both kinds of release.


def _own_captioner(encoder, decoder, tokenizer, max_words, batch_size) -> Captioner:
    """A `Captioner` over this project's own (Keras 3) three files, without a manifest.

    With `max_words` None it decodes up to `CaptionConfig.max_decode_length` words."""
    from captioning.release.load import check_fit, load_model_file, load_release_tokenizer

    tokens = load_release_tokenizer(tokenizer)
    models = [load_model_file(path) for path in (encoder, decoder)]
    names = tuple(Path(os.fspath(path)).name for path in (encoder, decoder, tokenizer))
    check_fit(*models, tokens, names=names)
    return Captioner.from_models(*models, tokens, batch_size=batch_size, max_length=max_words)


def caption_with_files(images, encoder, decoder, tokenizer, *, max_words: int | None = None,
                       beam: int = 1, top: int = 1, batch_size: int = 32,
                       progress: bool = False) -> list:
    """Captions images with three release files, of the earlier Keras project or this one.

    The two model files are told apart with `is_legacy_model` (h5py only). The earlier
    project's files are checked against the allow-lists, loaded with tf-keras and captioned
    greedily as its notebook did (`LegacyCaptioner`); this project's Keras 3 files are
    loaded with `keras.saving.load_model(safe_mode=True)` and captioned by `Captioner`
    (greedy or beam search).

    Args:
        images: image paths and/or arrays, as `Captioner.caption` takes them.
        encoder, decoder, tokenizer: paths of `Encoder.hdf5`, `Decoder.hdf5`,
            `tokenizer.pickle`.
        max_words: words generated at most, the end marker included; default the
            notebook's `MAX_WORDS` (16) for the earlier project's files and
            `CaptionConfig.max_decode_length` for this project's.
        beam: beam width (this project's files only; the earlier project's take 1).
        top: beams returned per image (`Caption.alternatives`), at most `beam`.
        batch_size: images per batch.
        progress: show a progress bar.

    Returns:
        A list of `Caption`, one per image in order; unreadable images get `error` and the
        others are still captioned.

    Raises:
        ConfigError: a bad setting, or `beam`/`top` above 1 for the earlier project's files
            (checked before any model is loaded).
        UnsafeFileError: a model file names something not allowed; nothing was loaded.
        ReleaseError: a file is missing or unreadable, or the files do not fit together.
        CaptioningError: the files are the earlier project's and tf-keras is not installed.
    """
    check_int("max_words", max_words, 1, allow_none=True)
    check_int("beam", beam, 1)
    check_int("top", top, 1, beam)
    check_int("batch_size", batch_size, 1)
    names = {role: Path(os.fspath(path)).name
             for role, path in (("encoder", encoder), ("decoder", decoder))}
    legacy = {"encoder": is_legacy_model(encoder), "decoder": is_legacy_model(decoder)}
    if legacy["encoder"] != legacy["decoder"]:
        old = "encoder" if legacy["encoder"] else "decoder"
        new = "decoder" if old == "encoder" else "encoder"
        raise ReleaseError(
            f"{names[old]} is a Keras 2 file of the earlier project but {names[new]} was saved "
            "by Keras 3: the two files come from different releases")
    images = image_list(images)
    if legacy["decoder"]:
        if beam > 1 or top > 1:
            raise ConfigError(
                f"{names['decoder']} is a release of the earlier Keras project, and those "
                "releases caption greedily as its notebook did, so beam and top must be 1 "
                f"(got beam {beam}, top {top}): drop --beam/--top, or use a release trained "
                "with this project")
        captioner = LegacyCaptioner.load(encoder, decoder, tokenizer,
                                         max_words=max_words or MAX_WORDS,
                                         batch_size=batch_size)
        return captioner.caption(images, progress=progress)
    captioner = _own_captioner(encoder, decoder, tokenizer, max_words, batch_size)
    return captioner.caption(images, beam=beam, top=top, progress=progress)
