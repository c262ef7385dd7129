"""Greedy and beam search over the one-step decoder, batched and compiled.

The whole search (every step, every image, every beam) is one `keras.ops.while_loop`,
compiled with `tf.function` on the TensorFlow backend (`jax.jit` on JAX), so a caption
costs one compiled call rather than a `model.predict` per word. Neither padding nor the
start token is ever generated; every caption stops at the end token or after `max_length`
words.

- Greedy (`beam=1`) takes the most likely word at each step; a finished caption emits
  padding, and the loop stops when every caption has ended.
- Beam search (`beam=K > 1`) keeps K alive captions ranked by total log-probability and a
  pool of the K best finished ones ranked by the length-normalised score
  `log_prob / length ** length_penalty` (as in GNMT), so a short caption that ended early
  is weighed against longer ones by that score, not dropped for its lower raw sum. It
  stops when no alive caption can still beat the pool.

With `block_ngram_repeat=N` (both searches) no caption holds the same N words twice: at each
step the words that would complete an N-gram already in the caption are banned, computed in
the loop from the caption so far. The step model's weights are an argument of the compiled
call, so a decoder made once (the validation BLEU of every epoch) searches with the current
weights on every backend (on JAX a compiled function would otherwise keep the values it was
traced with).
"""

from __future__ import annotations

import dataclasses
import functools

import keras
import numpy as np
from keras import ops

from captioning.errors import ConfigError
from captioning.models.step import StepSignature
from captioning.utils.checks import check_int, check_number

_NEG_INF = -1e9


@dataclasses.dataclass
class Beams:
    """What a search returns for a batch of B images and K beams, best first.

    Attributes:
        ids: int `(B, K, T)` word ids, the end token included, padded with 0.
        scores: `(B, K)` length-normalised log-probabilities, `log_probs / lengths **
            length_penalty` (what ranks the beams).
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
        start_id, end_id: the tokenizer's marker ids; the start token is never generated.
        pad_id: the padding id, never generated.
        max_length: words generated at most (the end token included).

    Example:
    >>> search = SequenceDecoder(step, start_id=2, end_id=3)   # doctest: +SKIP
    >>> beams = search.decode(features, beam=3)                # doctest: +SKIP
    """

    def __init__(self, step_model, *, start_id: int, end_id: int, pad_id: int = 0,
                 max_length: int = 30):
        check_int("max_length", max_length, 1)
        self.step_model = step_model
        self.start_id, self.end_id, self.pad_id = int(start_id), int(end_id), int(pad_id)
        self.max_length = int(max_length)
        self.signature = StepSignature.from_model(step_model)
        self.state_names = list(self.signature.state_names)
        self.feature_shape = self.signature.feature_shape(step_model)
        self.vocab_size = self.signature.vocab_size(step_model)
        self.initial_model = keras.Model(
            step_model.inputs[self.signature.features_index],
            [step_model.outputs[i] for i in self.signature.initial_indices],
            name="initial_states")
        self._compiled = {}

    def decode(self, features, beam: int = 1, length_penalty: float = 0.7,
               block_ngram_repeat: int = 0) -> Beams:
        """Captions a batch of features.

        Args:
            features: `(batch, *feature_shape)` array.
            beam: beam width K; 1 is greedy.
            length_penalty: the exponent `a` of the length normalisation: a finished
                caption scores `log_prob / length ** a` (the end token counted). It ranks
                the finished captions against each other; 0 ranks by total log-probability.
            block_ngram_repeat: N: no N consecutive words occur twice in a caption (the
                word that would repeat an N-gram is never chosen); 0 allows repeats.

        Returns:
            `Beams` with K beams per image, best (highest normalised score) first.
        """
        check_int("beam", beam, 1)
        check_int("block_ngram_repeat", block_ngram_repeat, 0)
        check_number("length_penalty", length_penalty, 0)
        if not np.isfinite(length_penalty):
            raise ConfigError(f"length_penalty must be a finite number, got {length_penalty!r}")
        features = np.asarray(features, np.float32)
        if features.shape[1:] != self.feature_shape:
            raise ConfigError(f"features of shape {features.shape[1:]} do not fit this decoder,"
                              f" which takes {self.feature_shape}")
        k, penalty, block = int(beam), float(length_penalty), int(block_ngram_repeat)
        key = (k, 0.0 if k == 1 else penalty, block)
        if key not in self._compiled:
            search = (functools.partial(self._greedy, block=block) if k == 1
                      else functools.partial(self._beam_search, k=k, penalty=penalty,
                                             block=block))
            self._compiled[key] = compile_search(
                functools.partial(self._with_weights, search))
        values = [variable.value for variable in self.step_model.variables]
        ids, log_probs, lengths, attention = self._compiled[key](values, features)
        ids, log_probs = np.asarray(ids), np.asarray(log_probs)
        lengths = np.asarray(lengths)
        scores = log_probs / np.maximum(lengths, 1).astype(np.float32) ** penalty
        order = np.argsort(-scores, axis=1, kind="stable")
        take = lambda a: np.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)),
                                            axis=1)
        attention = take(np.asarray(attention)) if self.signature.has_attention else None
        return Beams(ids=take(ids), scores=take(scores), log_probs=take(log_probs),
                     lengths=take(lengths), attention=attention)

    def _with_weights(self, search, values, features):
        """Runs `search(features)` with the step model's variables read as `values`."""
        mapping = list(zip(self.step_model.variables, values))
        with keras.StatelessScope(state_mapping=mapping):
            return search(features)

    def _step(self, features, token, states):
        outputs = self.signature.split(self.step_model(
            self.signature.arrange(features, token, states), training=False))
        return outputs.log_probs, outputs.next_states, outputs.attention

    def _banned(self):
        """`(vocab,)` True for the ids never generated: padding and the start token."""
        ids = ops.arange(self.vocab_size)
        return ops.logical_or(ids == self.pad_id, ids == self.start_id)

    def _repeats(self, ids, t, n):
        """`(rows, vocab)` True for the words that would repeat an n-gram of the captions
        `ids (rows, max_length)`, whose first `t` words are generated; None for n = 0."""
        windows = self.max_length - n + 1  # n-grams that fit in a caption
        if n == 0 or windows < 2:
            return None
        starts = np.arange(windows)
        following = ops.take(ids, starts + n - 1, axis=1)  # (rows, windows)
        # An n-gram starting at j is complete before step t when j + n <= t.
        match = ops.logical_and(ops.ones_like(following, dtype="bool"),
                                ops.expand_dims(ops.arange(windows) <= t - n, 0))
        if n > 1:
            prefixes = ops.take(ids, (starts[:, None] + np.arange(n - 1)).reshape(-1), axis=1)
            prefixes = ops.reshape(prefixes, (-1, windows, n - 1))  # (rows, windows, n - 1)
            last = ops.take(ids, ops.maximum(t - n + 1, 0) + ops.arange(n - 1), axis=1)
            same = ops.all(prefixes == ops.expand_dims(last, 1), axis=-1)
            match = ops.logical_and(match, same)  # (rows, windows)
        rows = ops.shape(ids)[0]
        row = ops.repeat(ops.expand_dims(ops.arange(rows), 1), windows, axis=1)
        indices = ops.reshape(ops.stack([row, ops.cast(following, row.dtype)], axis=-1),
                              (-1, 2))
        hits = ops.scatter(indices, ops.reshape(ops.cast(match, "float32"), (-1,)),
                           (rows, self.vocab_size))
        return hits > 0

    def _initial_states(self, features):
        states = self.initial_model(features, training=False)
        return list(states) if isinstance(states, (list, tuple)) else [states]

    def _greedy(self, features, block=0):
        """The most likely word at each step (of those that repeat no `block`-gram); a
        finished caption emits padding."""
        batch = ops.shape(features)[0]
        length = self.max_length
        regions = self.feature_shape[0] if self.signature.has_attention else 1
        states = self._initial_states(features)
        token = ops.full((batch, 1), self.start_id, dtype="int32")
        ids = ops.zeros((batch, length), dtype="int32")
        attention = ops.zeros((batch, length, regions))
        finished = ops.zeros((batch,), dtype="bool")
        log_prob = ops.zeros((batch,))
        lengths = ops.zeros((batch,), dtype="int32")
        banned = self._banned()

        def cond(t, token, states, log_prob, ids, attention, finished, lengths):
            return ops.logical_and(t < length, ops.logical_not(ops.all(finished)))

        def body(t, token, states, log_prob, ids, attention, finished, lengths):
            log_probs, states, weights = self._step(features, token, states)
            log_probs = ops.reshape(ops.cast(log_probs, "float32"), (batch, self.vocab_size))
            log_probs = ops.where(banned, _NEG_INF, log_probs)
            repeats = self._repeats(ids, t, block)
            if repeats is not None:
                log_probs = ops.where(repeats, _NEG_INF, log_probs)
            word = ops.cast(ops.argmax(log_probs, axis=-1), "int32")  # (batch,)
            word = ops.where(finished, self.pad_id, word)
            gained = ops.take_along_axis(log_probs, ops.expand_dims(word, -1), axis=1)[:, 0]
            log_prob = log_prob + ops.where(finished, 0.0, gained)
            lengths = lengths + ops.cast(ops.logical_not(finished), "int32")
            ids = ops.slice_update(ids, (0, t), ops.expand_dims(word, -1))
            if weights is not None:
                weights = ops.reshape(ops.cast(weights, "float32"), (batch, regions))
                weights = ops.where(ops.expand_dims(finished, -1), 0.0, weights)
                attention = ops.slice_update(attention, (0, t, 0),
                                             ops.expand_dims(weights, 1))
            finished = ops.logical_or(finished, word == self.end_id)
            return (t + 1, ops.expand_dims(word, -1), states, log_prob, ids, attention,
                    finished, lengths)

        loop = (0, token, states, log_prob, ids, attention, finished, lengths)
        _, _, _, log_prob, ids, attention, _, lengths = ops.while_loop(cond, body, loop)
        one = lambda x: ops.expand_dims(x, 1)
        return one(ids), one(log_prob), one(lengths), one(attention)

    def _beam_search(self, features, k, penalty, block=0):
        """Beam search with a pool of finished captions ranked by normalised score.

        K captions stay alive, ranked by total log-probability. At each step the 2K best
        expansions are taken: those that end go to the pool of finished captions, scored
        `log_prob / length ** penalty`, which keeps the K best; the K best of the others
        stay alive. The search stops when no alive caption can beat the pool's worst: its
        log-probability only falls, so `log_prob / max_length ** penalty` bounds what it
        can reach. Alive captions that reach `max_length` join the pool at the end. With
        `block`, an expansion that repeats a `block`-gram of its caption is never taken.
        """
        batch = ops.shape(features)[0]
        length, vocab = self.max_length, self.vocab_size
        regions = self.feature_shape[0] if self.signature.has_attention else 1
        features = ops.repeat(features, k, axis=0)  # (batch * k, ...)
        states = self._initial_states(features)
        token = ops.full((batch * k, 1), self.start_id, dtype="int32")
        first = ops.concatenate([ops.zeros((1,)), ops.full((k - 1,), _NEG_INF)])
        alive = ops.tile(ops.expand_dims(first, 0), (batch, 1))  # (batch, k) log-probs
        alive_ids = ops.zeros((batch, k, length), dtype="int32")
        alive_attention = ops.zeros((batch, k, length, regions))
        pool_scores = ops.full((batch, k), _NEG_INF)  # normalised, best first
        pool_log_probs = ops.full((batch, k), _NEG_INF)
        pool_ids = ops.zeros((batch, k, length), dtype="int32")
        pool_attention = ops.zeros((batch, k, length, regions))
        pool_lengths = ops.ones((batch, k), dtype="int32")
        banned = self._banned()
        bound = float(length) ** penalty

        def take(x, index):
            return ops.take_along_axis(
                x, ops.reshape(index, (batch, index.shape[1]) + (1,) * (len(x.shape) - 2)),
                axis=1)

        def cond(t, token, states, alive, alive_ids, alive_attention, pool_scores,
                 pool_log_probs, pool_ids, pool_attention, pool_lengths):
            settled = ops.all(pool_scores[:, -1] >= alive[:, 0] / bound)
            return ops.logical_and(t < length, ops.logical_not(settled))

        def body(t, token, states, alive, alive_ids, alive_attention, pool_scores,
                 pool_log_probs, pool_ids, pool_attention, pool_lengths):
            log_probs, states, weights = self._step(features, token, states)
            log_probs = ops.reshape(ops.cast(log_probs, "float32"), (batch, k, vocab))
            log_probs = ops.where(banned, _NEG_INF, log_probs)
            repeats = self._repeats(ops.reshape(alive_ids, (-1, length)), t, block)
            if repeats is not None:
                log_probs = ops.where(ops.reshape(repeats, (batch, k, vocab)), _NEG_INF,
                                      log_probs)
            candidates = ops.reshape(ops.expand_dims(alive, -1) + log_probs, (batch, k * vocab))
            scores, flat = ops.top_k(candidates, 2 * k)  # (batch, 2k)
            parent = flat // vocab
            word = ops.cast(flat % vocab, "int32")
            ids = ops.slice_update(take(alive_ids, parent), (0, 0, t),
                                   ops.expand_dims(word, -1))  # (batch, 2k, length)
            attention = take(alive_attention, parent)
            if weights is not None:
                weights = take(ops.reshape(ops.cast(weights, "float32"), (batch, k, regions)),
                               parent)
                attention = ops.slice_update(attention, (0, 0, t, 0),
                                             ops.expand_dims(weights, 2))
            ends = word == self.end_id
            # At most K of the 2K end (one per parent), so K others stay alive.
            size = ops.cast(t + 1, "float32")
            ended = ops.where(ends, scores / size ** penalty, _NEG_INF)
            pool_scores, pick = ops.top_k(ops.concatenate([pool_scores, ended], axis=1), k)
            both = lambda old, new: take(ops.concatenate([old, new], axis=1), pick)
            pool_log_probs = both(pool_log_probs, ops.where(ends, scores, _NEG_INF))
            pool_ids, pool_attention = both(pool_ids, ids), both(pool_attention, attention)
            pool_lengths = both(pool_lengths, ops.full((batch, 2 * k), t + 1, dtype="int32"))
            alive, keep = ops.top_k(ops.where(ends, -np.inf, scores), k)
            alive_ids, alive_attention = take(ids, keep), take(attention, keep)
            word, source = take(word, keep), take(parent, keep)
            states = [ops.reshape(take(ops.reshape(s, (batch, k, s.shape[-1])), source),
                                  (batch * k, s.shape[-1])) for s in states]
            return (t + 1, ops.reshape(word, (batch * k, 1)), states, alive, alive_ids,
                    alive_attention, pool_scores, pool_log_probs, pool_ids, pool_attention,
                    pool_lengths)

        loop = (0, token, states, alive, alive_ids, alive_attention, pool_scores,
                pool_log_probs, pool_ids, pool_attention, pool_lengths)
        (t, _, _, alive, alive_ids, alive_attention, pool_scores, pool_log_probs, pool_ids,
         pool_attention, pool_lengths) = ops.while_loop(cond, body, loop)
        # Alive captions count as finished only when they ran to max_length.
        ran_out = t >= length
        last = ops.where(ran_out, alive / bound, _NEG_INF)
        _, pick = ops.top_k(ops.concatenate([pool_scores, last], axis=1), k)
        both = lambda old, new: take(ops.concatenate([old, new], axis=1), pick)
        lengths = both(pool_lengths, ops.full((batch, k), length, dtype="int32"))
        return (both(pool_ids, alive_ids), both(pool_log_probs, alive), lengths,
                both(pool_attention, alive_attention))


def compile_search(function):
    """`function` compiled for the backend: `tf.function` on TensorFlow, `jax.jit` on JAX,
    unchanged on others. A function that runs a model should take the model's variable
    values as an argument and read them through a `keras.StatelessScope`: a JAX function
    keeps the values it was traced with."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function
