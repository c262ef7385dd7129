"""Registered custom layers of the decoder models.

Every layer here is registered serializable under the package name "captioning", keeps each
constructor argument as an attribute, builds its weights in `build` and returns every
argument from `get_config`, so `keras.saving.load_model(..., safe_mode=True)` rebuilds it
after `import captioning`, without any `Lambda` layer.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from captioning.config import CELLS
from captioning.utils.checks import check_choice, check_int

PREPROCESSING_MODES = ("tf", "caffe", "torch")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="captioning")
class ImagePreprocessing(layers.Layer):
    """Turns RGB pixels in 0..255 into what a CNN family was trained on.

    Matches `keras.applications.<family>.preprocess_input` for channels-last float input.

    Args:
        mode: `"tf"` scales to [-1, 1] (InceptionV3, MobileNet); `"caffe"` flips RGB to BGR
            and subtracts the ImageNet mean (VGG16, ResNet50); `"torch"` scales to [0, 1] and
            normalises by the ImageNet mean and standard deviation.

    Example:
    >>> layer = ImagePreprocessing("tf")
    >>> float(layer(keras.ops.full((1, 2, 2, 3), 255.0))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        check_choice("mode", mode, PREPROCESSING_MODES)
        self.mode = mode

    def call(self, images):
        # images: (batch, height, width, 3) RGB in 0..255
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "caffe":
            bgr = ops.flip(images, axis=-1)
            return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
        return (images / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="captioning")
class BahdanauAttention(layers.Layer):
    """Additive attention of a decoder state over image regions (Show, Attend and Tell).

    `score = v . tanh(W1 features + W2 state)`, softmax over the regions.

    Args:
        units: size of the attention's hidden layer.

    Call args:
        inputs: `[features, state]`: `(batch, regions, feature_dim)` and `(batch, units_rnn)`.

    Returns:
        `(context, weights)`: `(batch, feature_dim)` and `(batch, regions)`.
    """

    def __init__(self, units: int = 256, **kwargs):
        super().__init__(**kwargs)
        check_int("units", units, 1)
        self.units = units
        self.features_dense = layers.Dense(units, name="features_dense")
        self.state_dense = layers.Dense(units, name="state_dense")
        self.score_dense = layers.Dense(1, name="score_dense")

    def build(self, input_shape):
        features_shape, state_shape = input_shape
        self.features_dense.build(features_shape)
        self.state_dense.build(state_shape)
        self.score_dense.build(tuple(features_shape[:-1]) + (self.units,))

    def call(self, inputs):
        features, state = inputs
        return self.attend(features, self.features_dense(features), state)

    def attend(self, features, keys, state):
        """Attention with precomputed `keys = features_dense(features)`, which do not depend
        on the state: a decoder computes them once per caption, not once per word."""
        # features: (batch, regions, dim); keys: (batch, regions, units); state: (batch, rnn)
        hidden = ops.tanh(keys + ops.expand_dims(self.state_dense(state), 1))
        scores = ops.squeeze(self.score_dense(hidden), -1)  # (batch, regions)
        weights = ops.softmax(scores, axis=-1)
        context = ops.sum(features * ops.expand_dims(weights, -1), axis=1)  # (batch, dim)
        return context, weights

    def compute_output_shape(self, input_shape):
        features_shape, _ = input_shape
        return (features_shape[0], features_shape[2]), (features_shape[0], features_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="captioning")
class AttentionRNN(layers.Layer):
    """A GRU or LSTM cell that attends over image regions at every step.

    At step t the cell's input is `[x_t, context_t]`, where `context_t` is Bahdanau
    attention over the regions driven by the previous state; the step's output is
    `[h_t, context_t]`, so the word classifier sees what was looked at. Runs any number of
    steps: the training model feeds whole sequences, the one-step decoder feeds one.

    Args:
        cell: `"gru"` or `"lstm"`.
        units: recurrent units.
        attention_units: size of the attention's hidden layer.
        dropout: dropout on the cell's input.

    Call args:
        inputs: `[sequence, features, *states]`: `(batch, steps, dim)`,
            `(batch, regions, feature_dim)`, then `h` (and `c` for an LSTM), each
            `(batch, units)`.

    Returns:
        `[outputs, attention, *states]`: `(batch, steps, units + feature_dim)`,
        `(batch, steps, regions)`, and the final states.
    """

    def __init__(self, cell="gru", units=256, attention_units=256, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_choice("cell", cell, CELLS)
        check_int("units", units, 1)
        self.cell = cell
        self.units = units
        self.attention_units = attention_units
        self.dropout = dropout
        cell_class = layers.GRUCell if cell == "gru" else layers.LSTMCell
        self.rnn_cell = cell_class(units, name=f"{cell}_cell")
        self.attention = BahdanauAttention(attention_units, name="attention")
        self.input_dropout = layers.Dropout(dropout)

    @property
    def num_states(self):
        return 1 if self.cell == "gru" else 2

    def build(self, input_shape):
        sequence_shape, features_shape = input_shape[0], input_shape[1]
        self.attention.build([features_shape, (sequence_shape[0], self.units)])
        self.rnn_cell.build((sequence_shape[0], sequence_shape[-1] + features_shape[-1]))

    def call(self, inputs, training=None):
        sequence, features, *states = inputs
        # sequence: (batch, steps, dim); features: (batch, regions, feature_dim)
        keys = self.attention.features_dense(features)  # (batch, regions, attention_units)
        if sequence.shape[1] == 1:  # the one-step decoder
            output, attention, states = self._step(
                sequence[:, 0, :], features, keys, states, training,
                lambda x: self.input_dropout(x, training=training))
            return [ops.expand_dims(output, 1), ops.expand_dims(attention, 1), *states]
        return self._scan(sequence, features, keys, states, training)

    def _scan(self, sequence, features, keys, states, training):
        """Runs the steps in one compiled loop (`ops.scan`) rather than unrolled, so the
        training graph, and its compilation time, do not grow with the caption length."""
        words = ops.transpose(sequence, (1, 0, 2))  # (steps, batch, dim)
        masks = None
        if training and self.dropout:
            # The input dropout's masks, drawn before the loop (a random draw cannot run
            # inside a JAX scan), one per step in step order as an unrolled loop draws them.
            ones = ops.ones((ops.shape(sequence)[0], sequence.shape[-1] + features.shape[-1]),
                            dtype=self.compute_dtype)
            masks = ops.stack([self.input_dropout(ones, training=True)
                               for _ in range(sequence.shape[1])])  # (steps, batch, width)
        batch, count = ops.shape(features)[0], len(states)
        init = [*states,
                ops.zeros((batch, self.units + features.shape[-1]), dtype=self.compute_dtype),
                ops.zeros((batch, features.shape[1]), dtype=self.compute_dtype)]

        def step(carry, xs):
            words_t, mask_t = xs if masks is not None else (xs, None)
            output, attention, new_states = self._step(
                words_t, features, keys, carry[:count], training,
                (lambda x: x * mask_t) if mask_t is not None else (lambda x: x))
            carry = [*new_states, output, ops.cast(attention, self.compute_dtype)]
            return carry, carry  # TensorFlow's scan stacks outputs shaped as the carry

        last, stacked = ops.scan(step, init, (words, masks) if masks is not None else words)
        outputs = ops.transpose(stacked[count], (1, 0, 2))  # (batch, steps, units + dim)
        weights = ops.transpose(stacked[count + 1], (1, 0, 2))  # (batch, steps, regions)
        return [outputs, weights, *last[:count]]

    def _step(self, words, features, keys, states, training, dropout):
        """One step: `([h_t, context_t], attention_t, states_t)`."""
        # words: (batch, dim); states[0]: (batch, units)
        context, attention = self.attention.attend(features, keys, states[0])
        step_input = dropout(ops.concatenate([words, context], axis=-1))
        output, states = self.rnn_cell(step_input, list(states), training=training)
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        return ops.concatenate([output, context], axis=-1), attention, states

    def compute_output_shape(self, input_shape):
        sequence_shape, features_shape = input_shape[0], input_shape[1]
        batch, steps = sequence_shape[0], sequence_shape[1]
        state = (batch, self.units)
        return [
            (batch, steps, self.units + features_shape[-1]),
            (batch, steps, features_shape[1]),
            *([state] * self.num_states),
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "cell": self.cell,
                "units": self.units,
                "attention_units": self.attention_units,
                "dropout": self.dropout,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="captioning")
class ZeroState(layers.Layer):
    """A zero recurrent state `(batch, units)` shaped after its input's batch.

    Used where the image does not set the initial state (`every_step`), so the exported
    decoder still computes its initial state from the features like every other choice.

    Args:
        units: size of the state.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        check_int("units", units, 1)
        self.units = units

    def call(self, inputs):
        # inputs: (batch, ...) -> (batch, units)
        return ops.zeros((ops.shape(inputs)[0], self.units), dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="captioning")
class ScheduledSampling(layers.Layer):
    """Feeds the model its own predictions in place of some true words (parallel scheduled
    sampling, Duckworth et al. 2019).

    In training, each input word after the first is replaced, with probability
    `probability`, by the word a teacher-forced pass over the same caption predicted for
    that position (the argmax of the previous position's logits, without gradient); the
    start token and padding are kept. Outside training the words pass through unchanged.
    `probability` is a non-trainable weight, set between epochs (the training ramp).

    Args:
        seed: seed of the draws; None: from Keras' global seed.

    Call args:
        inputs: `[tokens, logits]`: `(batch, steps)` word ids and the teacher-forced pass's
            `(batch, steps, vocab)` logits over them (`logits[:, t]` predicts word t + 1).
        training: replace words only when True.

    Returns:
        `(batch, steps)` int32 word ids.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        check_int("seed", seed, 0, allow_none=True)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampling_seed")

    def build(self, input_shape):
        self.probability = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="probability")

    def call(self, inputs, training=None):
        tokens, logits = inputs
        tokens = ops.cast(tokens, "int32")  # (batch, steps)
        if not training:
            return tokens
        predicted = ops.cast(ops.argmax(ops.stop_gradient(logits), axis=-1), "int32")
        # word t is predicted at step t - 1; the start token stays (a replacement by itself)
        predicted = ops.concatenate([tokens[:, :1], predicted[:, :-1]], axis=1)
        draws = keras.random.uniform(ops.shape(tokens), seed=self.seed_generator)
        replace = ops.logical_and(draws < ops.cast(self.probability, draws.dtype),
                                  ops.not_equal(tokens, 0))
        return ops.where(replace, predicted, tokens)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(inputs[0].shape, dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config
