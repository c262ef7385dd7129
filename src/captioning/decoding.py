"""Greedy and beam search over the one-step decoder, batched and compiled.

The whole search (every step, every image, every beam) is one `keras.ops.while_loop`,
compiled with `tf.function` on the TensorFlow backend (`jax.jit` on JAX), so a caption
costs one compiled call rather than a `model.predict` per word. Greedy decoding is beam
search of width 1. Finished beams carry their score unchanged and emit padding; the loop
stops when every beam has emitted the end token or after `max_length` words.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from captioning.decoders import STEP_OUTPUT_ATTENTION, STEP_OUTPUT_LOG_PROBS
from captioning.errors import ConfigError

_NEG_INF = -1e9


@dataclasses.dataclass
class Beams:
    """What a search returns for a batch of B images and K beams, best first.

    Attributes:
        ids: int `(B, K, T)` word ids, the end token included, padded with 0.
        scores: `(B, K)` length-normalised log-probabilities (what ranks the beams).
        log_probs: `(B, K)` total log-probabilities.
        lengths: `(B, K)` generated tokens, the end token included.
        attention: `(B, K, T, regions)` attention weights per word, or None.
    """

    ids: np.ndarray
    scores: np.ndarray
    log_probs: np.ndarray
    lengths: np.ndarray
    attention: np.ndarray | None = None


class SequenceDecoder:
    """Runs the search over a one-step decoder model (`Decoder.hdf5`).

    Args:
        step_model: the Functional one-step model built by `build_decoder` (or loaded).
        start_id, end_id: the tokenizer's marker ids.
        pad_id: the padding id, never generated.
        max_length: words generated at most (the end token included).

    Example:
    >>> search = SequenceDecoder(step, start_id=2, end_id=3)   # doctest: +SKIP
    >>> beams = search.decode(features, beam=3)                # doctest: +SKIP
    """

    def __init__(self, step_model, *, start_id: int, end_id: int, pad_id: int = 0,
                 max_length: int = 30):
        if max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length!r}")
        self.step_model = step_model
        self.start_id, self.end_id, self.pad_id = int(start_id), int(end_id), int(pad_id)
        self.max_length = int(max_length)
        names = [tensor.name for tensor in step_model.inputs]
        self.state_names = [name for name in names if name not in ("features", "token")]
        self._input_order = names
        outputs = step_model.output_names
        self._log_probs = outputs.index(STEP_OUTPUT_LOG_PROBS)
        self._next = [outputs.index(f"next_{name}") for name in self.state_names]
        self._initial = [outputs.index(f"initial_{name}") for name in self.state_names]
        self._attention = (outputs.index(STEP_OUTPUT_ATTENTION)
                           if STEP_OUTPUT_ATTENTION in outputs else None)
        features_input = step_model.inputs[names.index("features")]
        self.feature_shape = tuple(features_input.shape[1:])
        self.vocab_size = int(step_model.outputs[self._log_probs].shape[-1])
        self.initial_model = keras.Model(
            features_input, [step_model.outputs[i] for i in self._initial],
            name="initial_states")
        self._compiled = {}

    def decode(self, features, beam: int = 1, length_penalty: float = 0.7) -> Beams:
        """Captions a batch of features.

        Args:
            features: `(batch, *feature_shape)` array.
            beam: beam width K; 1 is greedy.
            length_penalty: final scores are `log_prob / length ** length_penalty`.

        Returns:
            `Beams` with K beams per image, best first.
        """
        if not isinstance(beam, (int, np.integer)) or beam < 1:
            raise ConfigError(f"beam must be a positive integer, got {beam!r}")
        features = np.asarray(features, np.float32)
        if features.shape[1:] != self.feature_shape:
            raise ConfigError(f"features of shape {features.shape[1:]} do not fit this decoder,"
                              f" which takes {self.feature_shape}")
        key = int(beam)
        if key not in self._compiled:
            self._compiled[key] = _compile(lambda f: self._search(f, key))
        ids, log_probs, lengths, attention = self._compiled[key](features)
        ids, log_probs = np.asarray(ids), np.asarray(log_probs)
        lengths = np.asarray(lengths)
        scores = log_probs / np.maximum(lengths, 1) ** float(length_penalty)
        order = np.argsort(-scores, axis=1, kind="stable")
        take = lambda a: np.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)),
                                            axis=1)
        attention = take(np.asarray(attention)) if self._attention is not None else None
        return Beams(ids=take(ids), scores=take(scores), log_probs=take(log_probs),
                     lengths=take(lengths), attention=attention)

    def _step(self, features, token, states):
        inputs = {"features": features, "token": token}
        inputs.update(zip(self.state_names, states))
        outputs = self.step_model([inputs[name] for name in self._input_order], training=False)
        attention = outputs[self._attention] if self._attention is not None else None
        return outputs[self._log_probs], [outputs[i] for i in self._next], attention

    def _search(self, features, k):
        batch = ops.shape(features)[0]
        length, vocab = self.max_length, self.vocab_size
        regions = self.feature_shape[0] if self._attention is not None else 1
        features = ops.repeat(features, k, axis=0)  # (batch * k, ...)
        states = self.initial_model(features, training=False)
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        token = ops.full((batch * k, 1), self.start_id, dtype="int32")
        first = ops.concatenate([ops.zeros((1,)), ops.full((k - 1,), _NEG_INF)])
        scores = ops.tile(ops.expand_dims(first, 0), (batch, 1))  # (batch, k)
        ids = ops.zeros((batch, k, length), dtype="int32")
        attention = ops.zeros((batch, k, length, regions))
        finished = ops.zeros((batch, k), dtype="bool")
        lengths = ops.zeros((batch, k), dtype="int32")
        pad_row = ops.where(ops.arange(vocab) == self.pad_id, 0.0, _NEG_INF)  # (vocab,)

        def cond(t, token, states, scores, ids, attention, finished, lengths):
            return ops.logical_and(t < length, ops.logical_not(ops.all(finished)))

        def body(t, token, states, scores, ids, attention, finished, lengths):
            log_probs, states, weights = self._step(features, token, states)
            log_probs = ops.reshape(ops.cast(log_probs, "float32"), (batch, k, vocab))
            log_probs = ops.where(ops.arange(vocab) == self.pad_id, _NEG_INF, log_probs)
            log_probs = ops.where(ops.expand_dims(finished, -1), pad_row, log_probs)
            candidates = ops.reshape(ops.expand_dims(scores, -1) + log_probs, (batch, k * vocab))
            scores, flat = ops.top_k(candidates, k)  # (batch, k)
            parent = flat // vocab
            word = ops.cast(flat % vocab, "int32")
            gather = lambda x: ops.take_along_axis(
                x, ops.reshape(parent, (batch, k) + (1,) * (len(x.shape) - 2)), axis=1)
            ids, attention = gather(ids), gather(attention)
            finished, lengths = gather(finished), gather(lengths)
            states = [ops.reshape(gather(ops.reshape(s, (batch, k, s.shape[-1]))),
                                  (batch * k, s.shape[-1])) for s in states]
            lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
            ids = ops.slice_update(ids, (0, 0, t), ops.reshape(word, (batch, k, 1)))
            if weights is not None:
                weights = gather(ops.reshape(ops.cast(weights, "float32"), (batch, k, regions)))
                weights = ops.where(ops.expand_dims(finished, -1), 0.0, weights)
                attention = ops.slice_update(attention, (0, 0, t, 0),
                                             ops.reshape(weights, (batch, k, 1, regions)))
            finished = ops.logical_or(finished, word == self.end_id)
            return (t + 1, ops.reshape(word, (batch * k, 1)), states, scores, ids, attention,
                    finished, lengths)

        loop = (0, token, states, scores, ids, attention, finished, lengths)
        _, _, _, scores, ids, attention, _, lengths = ops.while_loop(cond, body, loop)
        return ids, scores, lengths, attention


def _compile(function):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function
