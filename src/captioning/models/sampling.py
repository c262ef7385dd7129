"""Sampled and greedy captions for self-critical training, in one compiled call each.

`CaptionSampler` draws K captions per image from the one-step decoder's softmax (multinomial
sampling, optionally at a temperature) and decodes the greedy caption, each as one
`keras.ops.while_loop` compiled like `SequenceDecoder`'s search (`tf.function` on
TensorFlow, `jax.jit` on JAX). The decoder's weights are arguments of the compiled call, so
a sampler made once keeps sampling from the current weights while they train (on JAX a
compiled function would otherwise keep the values it was traced with). Sampling is seeded
by a `keras.random.SeedGenerator`: the same seed gives the same captions, and each call
draws new ones. Neither padding nor the start token is ever generated; a caption stops at
the end token or after `max_length` words, and emits padding after it.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from captioning.errors import ConfigError
from captioning.models.search import SequenceDecoder, compile_search
from captioning.utils.checks import check_int, check_number

_NEG_INF = -1e9


@dataclasses.dataclass
class Samples:
    """Captions of a batch of B images, K per image, image-major (row `b * K + k`).

    Attributes:
        ids: int32 `(B * K, T)` word ids, the end token included, padded with 0.
        lengths: `(B * K,)` generated tokens, the end token included.
        log_probs: `(B * K,)` total log-probability of each caption under the model (at
            temperature 1).
        per_image: K.
    """

    ids: np.ndarray
    lengths: np.ndarray
    log_probs: np.ndarray
    per_image: int = 1


class CaptionSampler(SequenceDecoder):
    """Samples captions from a one-step decoder (`Decoder.hdf5`, or `Decoder.step`).

    Args:
        step_model: the one-step decoder.
        start_id, end_id: the tokenizer's marker ids; the start token is never generated.
        pad_id: the padding id, never generated.
        max_length: words generated at most (the end token included).
        seed: the seed of the sampler's `keras.random.SeedGenerator`; None: drawn from
            Keras' global seed (`keras.utils.set_random_seed`).
        temperature: divides the log-probabilities before sampling; 1 samples the model's
            own distribution.

    Example:
    >>> sampler = CaptionSampler(decoder.step, start_id=2, end_id=3, seed=1)  # doctest: +SKIP
    >>> samples = sampler.sample(features, samples=5)   # ids (B * 5, T)      # doctest: +SKIP
    >>> greedy = sampler.greedy(features)               # ids (B, T)          # doctest: +SKIP
    """

    def __init__(self, step_model, *, start_id: int, end_id: int, pad_id: int = 0,
                 max_length: int = 30, seed: int | None = None, temperature: float = 1.0):
        super().__init__(step_model, start_id=start_id, end_id=end_id, pad_id=pad_id,
                         max_length=max_length)
        check_int("seed", seed, 0, allow_none=True)
        check_number("temperature", temperature, 0, exclusive_minimum=True)
        if not np.isfinite(temperature):
            raise ConfigError(f"temperature must be a finite number, got {temperature!r}")
        self.temperature = float(temperature)
        self.seed_generator = keras.random.SeedGenerator(seed, name="caption_sampler_seed")
        self._loops = {}

    def sample(self, features, samples: int = 5) -> Samples:
        """K sampled captions per image.

        Args:
            features: `(batch, *feature_shape)` array.
            samples: K, captions per image.

        Returns:
            `Samples` with `batch * K` captions, image-major.
        """
        check_int("samples", samples, 1)
        return self._run(features, int(samples), greedy=False)

    def greedy(self, features) -> Samples:
        """The greedy caption of each image (the most likely word at each step), with the
        current weights: what `SequenceDecoder.decode(beam=1)` gives."""
        return self._run(features, 1, greedy=True)

    def _run(self, features, k: int, greedy: bool) -> Samples:
        features = np.asarray(features, np.float32)
        if features.shape[1:] != self.feature_shape:
            raise ConfigError(f"features of shape {features.shape[1:]} do not fit this decoder,"
                              f" which takes {self.feature_shape}")
        key = (k, greedy)
        if key not in self._loops:
            self._loops[key] = compile_search(
                lambda values, f, seed: self._loop(values, f, seed, k, greedy))
        values = [variable.value for variable in self.step_model.variables]
        seed = self.seed_generator.state.value
        ids, lengths, log_probs, seed = self._loops[key](values, features, seed)
        if not greedy:
            self.seed_generator.state.assign(seed)
        return Samples(ids=np.asarray(ids), lengths=np.asarray(lengths),
                       log_probs=np.asarray(log_probs), per_image=k)

    def _loop(self, values, features, seed, k, greedy):
        """The compiled search: the step model's variables read as `values`."""
        mapping = list(zip(self.step_model.variables, values))
        with keras.StatelessScope(state_mapping=mapping):
            return self._decode(features, seed, k, greedy)

    def _decode(self, features, seed, k, greedy):
        features = ops.repeat(features, k, axis=0)  # (batch * k, ...)
        rows = ops.shape(features)[0]
        length, vocab = self.max_length, self.vocab_size
        states = self._initial_states(features)
        token = ops.full((rows, 1), self.start_id, dtype="int32")
        ids = ops.zeros((rows, length), dtype="int32")
        finished = ops.zeros((rows,), dtype="bool")
        log_prob = ops.zeros((rows,))
        lengths = ops.zeros((rows,), dtype="int32")
        banned = self._banned()
        generator = self.seed_generator

        def cond(t, token, states, seed, log_prob, ids, finished, lengths):
            return ops.logical_and(t < length, ops.logical_not(ops.all(finished)))

        def body(t, token, states, seed, log_prob, ids, finished, lengths):
            log_probs, states, _ = self._step(features, token, states)
            log_probs = ops.reshape(ops.cast(log_probs, "float32"), (rows, vocab))
            log_probs = ops.where(banned, _NEG_INF, log_probs)
            if greedy:
                word = ops.argmax(log_probs, axis=-1)
            else:
                with keras.StatelessScope(state_mapping=[(generator.state, seed)]) as scope:
                    word = keras.random.categorical(log_probs / self.temperature, 1,
                                                    seed=generator)[:, 0]
                    seed = scope.get_current_value(generator.state)
            word = ops.where(finished, self.pad_id, ops.cast(word, "int32"))  # (rows,)
            gained = ops.take_along_axis(log_probs, ops.expand_dims(word, -1), axis=1)[:, 0]
            log_prob = log_prob + ops.where(finished, 0.0, gained)
            lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
            ids = ops.slice_update(ids, (0, t), ops.expand_dims(word, -1))
            finished = ops.logical_or(finished, word == self.end_id)
            return (t + 1, ops.expand_dims(word, -1), states, seed, log_prob, ids, finished,
                    lengths)

        loop = (0, token, states, seed, log_prob, ids, finished, lengths)
        _, _, _, seed, log_prob, ids, _, lengths = ops.while_loop(cond, body, loop)
        return ids, lengths, log_prob, seed


def teacher_forcing(samples: Samples, start_id: int, steps: int):
    """`(tokens_in, tokens_out)` int32 `(N, steps)` of sampled captions for a teacher-forcing
    model: the start token then the words, and the words then padding.

    Args:
        samples: the sampled captions (`ids` with at most `steps` columns).
        start_id: the start token's id.
        steps: the training model's input steps.
    """
    ids = np.asarray(samples.ids, np.int32)
    if ids.shape[1] > steps:
        raise ConfigError(f"captions of {ids.shape[1]} tokens do not fit a training model of "
                          f"{steps} steps; sample at most {steps} tokens (max_length)")
    tokens_out = np.zeros((len(ids), steps), np.int32)
    tokens_out[:, :ids.shape[1]] = ids
    tokens_in = np.concatenate([np.full((len(ids), 1), start_id, np.int32),
                                tokens_out[:, :-1]], axis=1)
    return tokens_in, tokens_out
