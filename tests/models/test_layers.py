"""Tests for captioning.layers: preprocessing parity with Keras, attention, config round
trips and .hdf5 save/reload of every custom layer under safe_mode."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import captioning.models.layers  # noqa: F401  (registers the custom layers)
from captioning.errors import ConfigError
from captioning.models.layers import (
    AttentionRNN,
    BahdanauAttention,
    ImagePreprocessing,
    ScheduledSampling,
    ZeroState,
)

RNG = np.random.default_rng(0)


def random_pixels(batch=3, size=8):
    return (RNG.random((batch, size, size, 3)) * 255).astype("float32")


# --------------------------------------------------------------------------- preprocessing

PARITY = [
    ("tf", keras.applications.inception_v3.preprocess_input),
    ("tf", keras.applications.mobilenet_v2.preprocess_input),
    ("caffe", keras.applications.vgg16.preprocess_input),
    ("caffe", keras.applications.resnet50.preprocess_input),
    ("torch", keras.applications.densenet.preprocess_input),
]


@pytest.mark.parametrize("mode,reference", PARITY,
                         ids=["inception_v3", "mobilenet_v2", "vgg16", "resnet50", "densenet"])
def test_preprocessing_matches_keras_applications(mode, reference):
    pixels = random_pixels()
    expected = reference(pixels.copy())
    got = keras.ops.convert_to_numpy(ImagePreprocessing(mode)(pixels))
    assert got.shape == pixels.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_preprocessing_accepts_uint8_pixels():
    pixels = random_pixels().round()
    as_uint8 = keras.ops.convert_to_numpy(ImagePreprocessing("caffe")(pixels.astype("uint8")))
    as_float = keras.ops.convert_to_numpy(ImagePreprocessing("caffe")(pixels))
    np.testing.assert_allclose(as_uint8, as_float, atol=1e-4)


def test_preprocessing_tf_range():
    layer = ImagePreprocessing("tf")
    low = keras.ops.convert_to_numpy(layer(np.zeros((1, 2, 2, 3), "float32")))
    high = keras.ops.convert_to_numpy(layer(np.full((1, 2, 2, 3), 255.0, "float32")))
    assert np.allclose(low, -1.0) and np.allclose(high, 1.0)


def test_bad_constructor_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="'bgr'"):
        ImagePreprocessing("bgr")
    with pytest.raises(ConfigError, match="0"):
        BahdanauAttention(0)
    with pytest.raises(ConfigError, match="'rnn'"):
        AttentionRNN(cell="rnn")
    with pytest.raises(ConfigError, match="-1"):
        AttentionRNN(units=-1)
    with pytest.raises(ConfigError, match="0"):
        ZeroState(0)
    with pytest.raises(ConfigError, match="-3"):
        ScheduledSampling(seed=-3)


# --------------------------------------------------------------------------- get_config

LAYERS = {
    "preprocessing": lambda: ImagePreprocessing("caffe", name="pre"),
    "bahdanau": lambda: BahdanauAttention(6, name="att"),
    "attention_gru": lambda: AttentionRNN("gru", 8, 6, 0.25, name="argru"),
    "attention_lstm": lambda: AttentionRNN("lstm", 8, 6, 0.0, name="arlstm"),
    "zero_state": lambda: ZeroState(5, name="zero"),
    "scheduled_sampling": lambda: ScheduledSampling(seed=4, name="sampling"),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_get_config_round_trip(kind):
    layer = LAYERS[kind]()
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    assert type(clone) is type(layer)
    # every constructor argument is kept as an attribute of the same name
    for key in ("mode", "units", "cell", "attention_units", "dropout", "seed"):
        if key in config:
            assert getattr(clone, key) == getattr(layer, key) == config[key]
    # and the registered name resolves through Keras' own deserialisation
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == config


# --------------------------------------------------------------------------- attention


def test_bahdanau_weights_sum_to_one_and_context_is_their_average():
    features = RNG.normal(size=(2, 7, 5)).astype("float32")
    state = RNG.normal(size=(2, 4)).astype("float32")
    context, weights = BahdanauAttention(6)([features, state])
    context, weights = keras.ops.convert_to_numpy(context), keras.ops.convert_to_numpy(weights)
    assert context.shape == (2, 5) and weights.shape == (2, 7)
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(context, np.einsum("br,brd->bd", weights, features), atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_attention_rnn_shapes_and_stepwise_equivalence(cell):
    batch, steps, dim, regions, fdim, units = 2, 4, 3, 5, 6, 8
    layer = AttentionRNN(cell, units, 7)
    sequence = RNG.normal(size=(batch, steps, dim)).astype("float32")
    features = RNG.normal(size=(batch, regions, fdim)).astype("float32")
    states = [RNG.normal(size=(batch, units)).astype("float32")
              for _ in range(1 if cell == "gru" else 2)]
    outputs, attention, *final = [keras.ops.convert_to_numpy(x)
                                  for x in layer([sequence, features, *states])]
    assert outputs.shape == (batch, steps, units + fdim)
    assert attention.shape == (batch, steps, regions)
    assert len(final) == layer.num_states == (1 if cell == "gru" else 2)
    assert all(s.shape == (batch, units) for s in final)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    # the last step's h is the recurrent part of the last output
    np.testing.assert_allclose(outputs[:, -1, :units], final[0], atol=1e-6)
    # the symbolic shapes agree with what it computes
    symbolic = layer.compute_output_shape(
        [sequence.shape, features.shape] + [s.shape for s in states])
    assert [tuple(s) for s in symbolic] == [outputs.shape, attention.shape] + [
        s.shape for s in final]
    # running it one step at a time gives the same as one call over the whole sequence
    current = states
    for t in range(steps):
        out, att, *current = layer([sequence[:, t:t + 1], features, *current])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[:, 0], outputs[:, t],
                                   atol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(att)[:, 0], attention[:, t],
                                   atol=1e-5)


def test_zero_state_follows_batch():
    zeros = keras.ops.convert_to_numpy(ZeroState(4)(np.ones((3, 7, 2), "float32")))
    assert zeros.shape == (3, 4) and not zeros.any()


# --------------------------------------------------------------------------- save / reload


def _model_with_every_layer():
    image = keras.Input((8, 8, 3), name="image")
    sequence = keras.Input((3, 4), name="sequence")
    regions = keras.Input((5, 6), name="regions")
    state = keras.Input((8,), name="state")
    pixels = ImagePreprocessing("caffe", name="preprocessing")(image)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(pixels)
    context, weights = BahdanauAttention(7, name="bahdanau")([regions, state])
    zero = ZeroState(8, name="zero_state")(regions)
    gru_out, gru_att, gru_h = AttentionRNN("gru", 8, 6, 0.3, name="attention_gru")(
        [sequence, regions, state])
    lstm_out, lstm_att, lstm_h, lstm_c = AttentionRNN("lstm", 8, 6, name="attention_lstm")(
        [sequence, regions, state, zero])
    outputs = [pooled, context, weights, zero, gru_out, gru_att, gru_h, lstm_out, lstm_att,
               lstm_h, lstm_c]
    outputs = [keras.layers.Identity(name=f"out{i}")(x) for i, x in enumerate(outputs)]
    return keras.Model([image, sequence, regions, state], outputs, name="every_layer")


def _inputs(batch=2):
    return [random_pixels(batch, 8), RNG.normal(size=(batch, 3, 4)).astype("float32"),
            RNG.normal(size=(batch, 5, 6)).astype("float32"),
            RNG.normal(size=(batch, 8)).astype("float32")]


def test_model_with_every_custom_layer_reloads_from_hdf5(tmp_path):
    model = _model_with_every_layer()
    inputs = _inputs()
    expected = model.predict(inputs, verbose=0)
    path = tmp_path / "every_layer.hdf5"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert {type(layer).__name__ for layer in loaded.layers} >= {
        "ImagePreprocessing", "BahdanauAttention", "AttentionRNN", "ZeroState"}
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)
    for got, want in zip(loaded.predict(inputs, verbose=0), expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # the weights are the trained ones, not a fresh initialisation
    for layer in model.layers:
        for a, b in zip(layer.get_weights(), loaded.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_hdf5_reloads_in_a_fresh_process_after_importing_the_layers_module(tmp_path):
    model = _model_with_every_layer()
    inputs = _inputs()
    path = tmp_path / "every_layer.hdf5"
    model.save(path)
    np.savez(tmp_path / "io.npz", *inputs, *model.predict(inputs, verbose=0))
    code = (
        "import sys, numpy as np, keras, captioning.models.layers\n"
        "m = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)\n"
        "d = np.load(sys.argv[2]); a = [d[f'arr_{i}'] for i in range(len(d.files))]\n"
        "out = m.predict(a[:4], verbose=0)\n"
        "assert all(np.allclose(o, e, atol=1e-6) for o, e in zip(out, a[4:])), 'differs'\n"
        "print('RELOADED-OK')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "io.npz")],
                          capture_output=True, text=True, timeout=300)
    assert "RELOADED-OK" in done.stdout, done.stderr[-3000:]


# --------------------------------------------------------------------------- scheduled sampling


def sampling_inputs(batch=64, steps=6, vocab=9, seed=0):
    """Tokens (start token 2, then words, padding 0 at the end of some rows) and logits whose
    argmax at step t is `(t + 5) % vocab`, a word no token equals."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, 5, size=(batch, steps)).astype("int32")
    tokens[:, 0] = 2
    tokens[::2, steps - 2:] = 0
    logits = rng.normal(size=(batch, steps, vocab)).astype("float32")
    for t in range(steps):
        logits[:, t, (t + 5) % vocab] += 10.0
    return tokens, logits


def test_scheduled_sampling_feeds_the_predicted_words_at_random():
    tokens, logits = sampling_inputs()
    predicted = logits.argmax(-1)  # predicted[:, t] is the guess for word t + 1
    layer = ScheduledSampling(seed=1)
    numpy = keras.ops.convert_to_numpy
    mixed = numpy(layer([tokens, logits], training=True))
    assert mixed.dtype == np.int32 and mixed.shape == tokens.shape
    np.testing.assert_array_equal(mixed, tokens)  # the probability starts at 0
    layer.probability.assign(1.0)
    mixed = numpy(layer([tokens, logits], training=True))
    words = tokens != 0
    np.testing.assert_array_equal(mixed[:, 0], 2)  # the start token stays
    np.testing.assert_array_equal(mixed[:, 1:][words[:, 1:]], predicted[:, :-1][words[:, 1:]])
    np.testing.assert_array_equal(mixed[~words], 0)  # and padding stays
    np.testing.assert_array_equal(numpy(layer([tokens, logits], training=False)), tokens)
    layer.probability.assign(0.5)
    first, second = (numpy(layer([tokens, logits], training=True)) for _ in range(2))
    replaced = (first != tokens)[:, 1:][words[:, 1:]]
    assert 0.35 < replaced.mean() < 0.65, replaced.mean()
    assert not np.array_equal(first, second)  # new draws at every call
    assert not layer.trainable_weights
