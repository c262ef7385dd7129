"""The caption decoder: a teacher-forcing training model and a one-step model, one set of
layers.

`build_decoder` creates the layers once and wires them twice:

- `training`: `[features, tokens (batch, steps)] -> logits (batch, steps, vocab)`, fed the
  caption shifted right (teacher forcing);
- `step`: the exported `Decoder.hdf5`, one word at a time: `[features, token (batch, 1),
  *states] -> [log_probs, *next_states, *initial_states(, attention)]`, named as its
  `StepSignature` says (`captioning.models.step`). Its initial-state outputs depend on the
  features alone, so a decoder builds them once per image.

Because both graphs call the same layer objects, what was trained is exactly what is
exported. With `scheduled_sampling` the training graph runs the layers twice over each
caption (parallel scheduled sampling, Duckworth et al. 2019): a teacher-forced pass, whose
predicted words replace some input words (a `ScheduledSampling` layer, its probability set
at each epoch), then the pass whose logits are the output. The one-step model is the same
either way. How the image enters is the `conditioning` setting:

- `init_state`: a dense map of the image vector to the initial state(s);
- `first_input`: the image vector, projected to the embedding size, is the first input step
  (Show and Tell); its output state starts the caption;
- `every_step`: the projected image vector is concatenated to every word embedding;
- `attention`: Bahdanau attention over grid regions at every step (Show, Attend and Tell);
  the initial state is a dense map of the regions' mean.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from captioning.config import CaptionConfig
from captioning.errors import ConfigError
from captioning.models.layers import AttentionRNN, ScheduledSampling, ZeroState
from captioning.models.step import (
    ATTENTION,
    FEATURES,
    LOG_PROBS,
    TOKEN,
    StepSignature,
    initial_name,
    next_name,
    state_names,
)
from captioning.utils.checks import check_int

STEP_OUTPUT_LOG_PROBS = LOG_PROBS
STEP_OUTPUT_ATTENTION = ATTENTION


def check_features(config: CaptionConfig, feature_shape) -> None:
    """Refuses features of the wrong kind for the chosen conditioning."""
    grid = len(feature_shape) == 2
    if config.conditioning == "attention" and not grid:
        raise ConfigError(
            f"conditioning 'attention' needs grid features (regions x dim), but the cache "
            f"holds pooled features {tuple(feature_shape)}; make a cache with --features grid"
        )
    if config.conditioning != "attention" and grid:
        raise ConfigError(
            f"conditioning {config.conditioning!r} needs pooled features (one vector per "
            f"image), but the cache holds grid features {tuple(feature_shape)}; make a cache "
            "with --features pooled, or train with --conditioning attention"
        )


@dataclasses.dataclass
class Decoder:
    """The two Functional models that share the decoder's layers, and the step model's
    signature."""

    training: keras.Model
    step: keras.Model
    state_names: list
    signature: StepSignature | None = None


class _SharedLayers:
    """Creates every decoder layer once; `sequence` and `initial` wire them into a graph."""

    def __init__(self, config: CaptionConfig, vocab_size: int, feature_stats=None):
        self.config = config
        mean, variance = feature_stats if feature_stats is not None else (0.0, 1.0)
        self.normalize = layers.Normalization(axis=-1, mean=mean, variance=variance,
                                              name="feature_normalization")
        units, cell = config.units, config.cell
        self.names = state_names(cell, config.num_layers)
        self.embedding = layers.Embedding(vocab_size, config.embedding_dim, name="embedding")
        self.embedding_dropout = layers.Dropout(config.dropout, name="embedding_dropout")
        self.output_dropout = layers.Dropout(config.dropout, name="output_dropout")
        self.feature_dropout = (layers.Dropout(config.feature_dropout, name="feature_dropout")
                                if config.feature_dropout else None)
        self.logits = layers.Dense(vocab_size, name="logits")
        rnn_class = layers.GRU if cell == "gru" else layers.LSTM
        self.rnns = []
        for index in range(config.num_layers):
            if index == 0 and config.conditioning == "attention":
                rnn = AttentionRNN(cell, units, config.attention_units, config.dropout,
                                   name=f"attention_{cell}0")
            else:
                rnn = rnn_class(units, return_sequences=True, return_state=True,
                                name=f"{cell}{index}")
            self.rnns.append(rnn)
        conditioning = config.conditioning
        if conditioning in ("first_input", "every_step"):
            self.image_embedding = layers.Dense(config.embedding_dim, name="image_embedding")
        if conditioning == "attention":
            self.projection = layers.Dense(units, activation="relu", name="feature_projection")
            self.mean = layers.GlobalAveragePooling1D(name="feature_mean")
        if conditioning in ("init_state", "attention"):
            self.init = {name: layers.Dense(units, activation="tanh", name=f"init_{name}")
                         for name in self.names}
        if conditioning == "every_step":
            self.zero = {name: ZeroState(units, name=f"init_{name}") for name in self.names}
            self.word_and_image = layers.Concatenate(axis=-1, name="word_and_image")
            self.image_repeats = {}  # steps -> RepeatVector, one per graph

    def regions(self, features):
        # grid features (batch, regions, dim) -> (batch, regions, units)
        return self.projection(features) if self.config.conditioning == "attention" else None

    def initial(self, features):
        """Initial states from normalised features: a dict name -> (batch, units)."""
        conditioning = self.config.conditioning
        if conditioning == "init_state":
            return {name: dense(features) for name, dense in self.init.items()}
        if conditioning == "attention":
            mean = self.mean(self.projection(features))
            return {name: dense(mean) for name, dense in self.init.items()}
        if conditioning == "every_step":
            return {name: zero(features) for name, zero in self.zero.items()}
        image = layers.Reshape((1, self.config.embedding_dim), name="image_step")(
            self.image_embedding(features))
        _, states, _ = self._run(image, None, None)
        return states

    def sequence(self, features, tokens, states):
        """Runs the words `tokens (batch, steps)` from `states`; returns logits, states,
        attention."""
        x = self.embedding_dropout(self.embedding(tokens))  # (batch, steps, embedding)
        if self.config.conditioning == "every_step":
            steps = tokens.shape[1]
            if steps not in self.image_repeats:
                self.image_repeats[steps] = layers.RepeatVector(steps, name="image_repeat")
            image = self.image_embedding(features)  # (batch, embedding)
            image = self.image_repeats[steps](image)  # (batch, steps, embedding)
            x = self.word_and_image([x, image])
        outputs, states, attention = self._run(x, self.regions(features), states)
        return self.logits(self.output_dropout(outputs)), states, attention

    def _run(self, x, regions, states):
        new_states, attention = {}, None
        kinds = len(self.names) // self.config.num_layers
        for index, rnn in enumerate(self.rnns):
            names = self.names[index * kinds:(index + 1) * kinds]
            initial = [states[name] for name in names] if states is not None else None
            if isinstance(rnn, AttentionRNN):
                x, attention, *out_states = rnn([x, regions, *initial])
            else:
                x, *out_states = rnn(x, initial_state=initial)
            if index + 1 < len(self.rnns):
                x = self.output_dropout(x)
            new_states.update(zip(names, out_states))
        return x, new_states, attention


def build_decoder(config: CaptionConfig, vocab_size: int, feature_shape,
                  sequence_length: int | None = None, feature_stats=None) -> Decoder:
    """Builds the training and one-step decoders over shared layers.

    Args:
        config: the run's settings (cell, conditioning, units, ...).
        vocab_size: size of the output layer (`tokenizer.vocab_size`).
        feature_shape: one image's features: `(dim,)` pooled or `(regions, dim)` grid.
        sequence_length: input steps of the training model; default `max_length + 1`.
        feature_stats: `(mean, variance)` per feature dimension of the training features;
            the decoder standardises its input with them (an ImageNet CNN's features and a
            random one's differ in scale by orders of magnitude). None: no scaling.

    Returns:
        A `Decoder` with `training`, `step`, `state_names` and `signature`.

    Example:
    >>> decoder = build_decoder(CaptionConfig(units=8, embedding_dim=4), 20, (16,))
    >>> [t.name for t in decoder.step.inputs]
    ['features', 'token', 'h0']
    """
    check_int("vocab_size", vocab_size, 4)
    check_features(config, feature_shape)
    feature_shape = tuple(int(d) for d in feature_shape)
    steps = sequence_length or config.max_length + 1
    shared = _SharedLayers(config, vocab_size, feature_stats)

    features = keras.Input(feature_shape, name=FEATURES)
    tokens = keras.Input((steps,), dtype="int32", name="tokens")
    normalized = shared.normalize(features)
    if shared.feature_dropout is not None:  # training only: the step model has no dropout
        normalized = shared.feature_dropout(normalized)
    initial = shared.initial(normalized)
    logits, _, _ = shared.sequence(normalized, tokens, initial)
    if config.scheduled_sampling:
        mixed = ScheduledSampling(name="scheduled_sampling")([tokens, logits])
        logits, _, _ = shared.sequence(normalized, mixed, initial)
    training = keras.Model([features, tokens], logits, name="caption_trainer")

    signature = StepSignature.from_config(config)
    features = keras.Input(feature_shape, name=FEATURES)
    token = keras.Input((1,), dtype="int32", name=TOKEN)
    states = {name: keras.Input((config.units,), name=name) for name in signature.state_names}
    normalized = shared.normalize(features)
    initial = shared.initial(normalized)
    logits, next_states, attention = shared.sequence(normalized, token, states)
    log_probs = layers.Activation("log_softmax", name="log_softmax")(logits)
    log_probs = layers.Reshape((vocab_size,), name="log_probs_step")(log_probs)
    outputs = {LOG_PROBS: log_probs}
    for name in signature.state_names:
        outputs[next_name(name)] = next_states[name]
        outputs[initial_name(name)] = initial[name]
    if attention is not None:
        outputs[ATTENTION] = layers.Reshape((feature_shape[0],), name="attention_step")(attention)
    step = keras.Model(signature.arrange(features, token, list(states.values())),
                       [layers.Identity(name=name)(outputs[name])
                        for name in signature.output_names],
                       name="caption_decoder")
    return Decoder(training=training, step=step, state_names=list(signature.state_names),
                   signature=signature)
