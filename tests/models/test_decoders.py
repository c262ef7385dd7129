"""Tests for captioning.models.decoders: every cell x conditioning trains, the training and
one-step models share their weights, the one-step model reloads from .hdf5, and running it
word by word gives exactly the training model's teacher-forcing predictions."""

import keras
import numpy as np
import pytest

import captioning.models.layers  # noqa: F401  (registers the custom layers)
from captioning.config import CELLS, CONDITIONINGS, CaptionConfig
from captioning.models.decoders import (
    STEP_OUTPUT_ATTENTION,
    STEP_OUTPUT_LOG_PROBS,
    build_decoder,
    check_features,
    state_names,
)
from captioning.errors import ConfigError
from captioning.models.step import StepSignature

VOCAB = 20
STEPS = 5  # training model input steps: <start> + 4 words
DIM = 12
REGIONS = 6
COMBOS = [(cell, conditioning) for cell in CELLS for conditioning in CONDITIONINGS]
IDS = [f"{cell}-{conditioning}" for cell, conditioning in COMBOS]


def tiny_config(cell="gru", conditioning="init_state", **changes):
    settings = dict(cell=cell, conditioning=conditioning, units=8, embedding_dim=8,
                    attention_units=8, dropout=0.2, max_length=STEPS - 1)
    settings.update(changes)
    return CaptionConfig(**settings)


def feature_shape(conditioning):
    return (REGIONS, DIM) if conditioning == "attention" else (DIM,)


def random_batch(conditioning, batch=8, seed=0):
    """Features, teacher-forcing input tokens and targets (padded with 0 at the end)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, *feature_shape(conditioning))).astype("float32")
    words = rng.integers(4, VOCAB, size=(batch, STEPS + 1)).astype("int32")
    words[:, 0] = 2  # <start>
    for row, length in enumerate(rng.integers(2, STEPS + 1, size=batch)):
        words[row, length] = 3  # <end>
        words[row, length + 1:] = 0
    return features, words[:, :-1], words[:, 1:]


def run_step_model(step, features, tokens, names, initial=None):
    """Runs the one-step model over `tokens (batch, steps)` from its own initial states,
    addressing its inputs and outputs through its `StepSignature`.

    Returns the log-probs `(batch, steps, vocab)` and the attention (or None)."""
    signature = StepSignature.from_model(step)
    assert list(signature.state_names) == list(names)
    numpy = keras.ops.convert_to_numpy
    if initial is None:
        units = signature.state_units(step)
        zeros = [np.zeros((features.shape[0], units[name]), "float32") for name in names]
        first = step(signature.arrange(features, tokens[:, :1], zeros), training=False)
        initial = [numpy(x) for x in signature.split(first).initial_states]
    states, log_probs, attention = list(initial), [], []
    for t in range(tokens.shape[1]):
        result = signature.split(step(signature.arrange(features, tokens[:, t:t + 1], states),
                                      training=False))
        log_probs.append(numpy(result.log_probs))
        states = [numpy(x) for x in result.next_states]
        if result.attention is not None:
            attention.append(numpy(result.attention))
    return np.stack(log_probs, 1), (np.stack(attention, 1) if attention else None)


def log_softmax(logits):
    logits = logits - logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


_TRAINED = {}
GRAPH_TRAINED = ("lstm", "attention")


def trained(cell, conditioning):
    """A decoder of this kind trained 2 epochs on a tiny random batch (built once)."""
    key = (cell, conditioning)
    if key not in _TRAINED:
        keras.utils.set_random_seed(0)
        decoder = build_decoder(tiny_config(cell, conditioning), VOCAB,
                                feature_shape(conditioning), sequence_length=STEPS)
        features, tokens, targets = random_batch(conditioning)
        # Eager steps are several times faster for 4 tiny batches than tracing the graph;
        # one kind is still trained as a compiled graph, as `fit` runs it for users.
        decoder.training.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
            run_eagerly=key != GRAPH_TRAINED)
        before = decoder.training.evaluate([features, tokens], targets, verbose=0)
        history = decoder.training.fit([features, tokens], targets, batch_size=4, epochs=2,
                                       shuffle=False, verbose=0)
        after = decoder.training.evaluate([features, tokens], targets, verbose=0)
        _TRAINED[key] = decoder, history.history["loss"], before, after
    return _TRAINED[key]


@pytest.mark.parametrize("cell,conditioning", COMBOS, ids=IDS)
def test_training_reduces_the_loss(cell, conditioning):
    decoder, losses, before, after = trained(cell, conditioning)
    assert np.all(np.isfinite(losses))
    assert losses[1] < losses[0], losses
    assert after < before, (before, after)
    # the model's own outputs: logits over the vocabulary at every input step
    assert tuple(decoder.training.output.shape) == (None, STEPS, VOCAB)


@pytest.mark.parametrize("cell,conditioning", COMBOS, ids=IDS)
def test_step_model_interface(cell, conditioning):
    decoder = trained(cell, conditioning)[0]
    names = state_names(cell, 1)
    assert decoder.state_names == names
    step = decoder.step
    assert [t.name for t in step.inputs] == ["features", "token", *names]
    expected = [STEP_OUTPUT_LOG_PROBS, *[f"next_{n}" for n in names],
                *[f"initial_{n}" for n in names]]
    if conditioning == "attention":
        expected.append(STEP_OUTPUT_ATTENTION)
    assert step.output_names == expected
    assert decoder.signature == StepSignature.from_model(step)
    assert tuple(step.outputs[0].shape) == (None, VOCAB)
    if conditioning == "attention":
        assert tuple(step.outputs[-1].shape) == (None, REGIONS)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in step.layers)


@pytest.mark.parametrize("cell,conditioning", COMBOS, ids=IDS)
def test_teacher_forcing_equals_step_by_step(cell, conditioning):
    decoder = trained(cell, conditioning)[0]
    features, tokens, _ = random_batch(conditioning, batch=3, seed=5)
    logits = keras.ops.convert_to_numpy(decoder.training([features, tokens], training=False))
    step_log_probs, attention = run_step_model(decoder.step, features, tokens,
                                               decoder.state_names)
    np.testing.assert_allclose(step_log_probs, log_softmax(logits), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.exp(step_log_probs).sum(-1), 1.0, atol=1e-4)
    if conditioning == "attention":
        assert attention.shape == (3, STEPS, REGIONS)
        np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("cell,conditioning", COMBOS, ids=IDS)
def test_step_model_reloads_from_hdf5(tmp_path, cell, conditioning):
    decoder = trained(cell, conditioning)[0]
    path = tmp_path / "Decoder.hdf5"
    decoder.step.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert [t.name for t in loaded.inputs] == [t.name for t in decoder.step.inputs]
    assert loaded.output_names == decoder.step.output_names
    features, tokens, _ = random_batch(conditioning, batch=3, seed=7)
    want, want_attention = run_step_model(decoder.step, features, tokens, decoder.state_names)
    got, got_attention = run_step_model(loaded, features, tokens, decoder.state_names)
    np.testing.assert_allclose(got, want, atol=1e-6)
    if conditioning == "attention":
        np.testing.assert_allclose(got_attention, want_attention, atol=1e-6)


@pytest.mark.parametrize("cell,conditioning", COMBOS, ids=IDS)
def test_training_and_step_models_share_weights(cell, conditioning):
    decoder = build_decoder(tiny_config(cell, conditioning), VOCAB,
                            feature_shape(conditioning), sequence_length=STEPS)
    training_ids = {id(v) for v in decoder.training.weights}
    step_ids = {id(v) for v in decoder.step.weights}
    assert training_ids == step_ids
    assert len(training_ids) == len(decoder.training.weights)
    features, tokens, _ = random_batch(conditioning, batch=2, seed=3)
    before, _ = run_step_model(decoder.step, features, tokens[:, :2], decoder.state_names)
    # change the output layer through the training model: the step model sees it
    bias = decoder.training.get_layer("logits").bias
    bias.assign(bias.numpy() + np.arange(VOCAB, dtype="float32"))
    assert decoder.step.get_layer("logits").bias is bias
    after, _ = run_step_model(decoder.step, features, tokens[:, :2], decoder.state_names)
    assert not np.allclose(before, after)
    full = keras.ops.convert_to_numpy(decoder.training([features, tokens], training=False))
    np.testing.assert_allclose(after, log_softmax(full)[:, :2], atol=1e-4)


def test_check_features_says_which_features_to_make():
    with pytest.raises(ConfigError, match="--features grid"):
        check_features(tiny_config(conditioning="attention"), (DIM,))
    with pytest.raises(ConfigError, match="--features pooled"):
        check_features(tiny_config(conditioning="init_state"), (REGIONS, DIM))
    check_features(tiny_config(conditioning="attention"), (REGIONS, DIM))
    check_features(tiny_config(conditioning="every_step"), (DIM,))
    with pytest.raises(ConfigError, match="--features grid"):
        build_decoder(tiny_config(conditioning="attention"), VOCAB, (DIM,))
    with pytest.raises(ConfigError, match="--features pooled"):
        build_decoder(tiny_config(conditioning="first_input"), VOCAB, (REGIONS, DIM))


def test_bad_vocab_size():
    with pytest.raises(ConfigError, match="vocab_size"):
        build_decoder(tiny_config(), 2, (DIM,))


@pytest.mark.parametrize("cell,conditioning", [("gru", "attention"), ("lstm", "init_state"),
                                               ("lstm", "first_input"), ("gru", "every_step")])
def test_two_layers(cell, conditioning):
    decoder = build_decoder(tiny_config(cell, conditioning, num_layers=2), VOCAB,
                            feature_shape(conditioning), sequence_length=STEPS)
    names = state_names(cell, 2)
    assert decoder.state_names == names
    assert len(names) == (2 if cell == "gru" else 4)
    assert [t.name for t in decoder.step.inputs] == ["features", "token", *names]
    features, tokens, _ = random_batch(conditioning, batch=2, seed=9)
    logits = keras.ops.convert_to_numpy(decoder.training([features, tokens], training=False))
    step_log_probs, _ = run_step_model(decoder.step, features, tokens, names)
    np.testing.assert_allclose(step_log_probs, log_softmax(logits), rtol=1e-4, atol=1e-4)


def test_feature_stats_standardise_the_input():
    mean = np.full((DIM,), 100.0, "float32")
    variance = np.full((DIM,), 400.0, "float32")
    scaled = build_decoder(tiny_config(), VOCAB, (DIM,), sequence_length=STEPS,
                           feature_stats=(mean, variance))
    plain = build_decoder(tiny_config(), VOCAB, (DIM,), sequence_length=STEPS)
    features, tokens, _ = random_batch("init_state", batch=2)
    # copy every trainable weight so only the normalisation differs
    for layer in plain.training.layers:
        if layer.name != "feature_normalization" and layer.weights:
            scaled.training.get_layer(layer.name).set_weights(layer.get_weights())
    a = keras.ops.convert_to_numpy(plain.training([features, tokens], training=False))
    b = keras.ops.convert_to_numpy(scaled.training([features * 20.0 + 100.0, tokens],
                                                   training=False))
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("cell,conditioning", COMBOS, ids=IDS)
def test_every_layer_is_named_the_same_on_every_build(cell, conditioning):
    def names():
        decoder = build_decoder(tiny_config(cell, conditioning), VOCAB,
                                feature_shape(conditioning), sequence_length=STEPS)
        return ([layer.name for layer in decoder.training.layers],
                [layer.name for layer in decoder.step.layers])

    first, second = names(), names()
    assert first == second  # no Keras auto-names such as "reshape_7"
    for model_names in first:
        assert len(set(model_names)) == len(model_names)


def test_step_model_with_feature_stats_reloads_from_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    stats = (rng.normal(size=(REGIONS, DIM)).mean(0).astype("float32"),
             rng.uniform(0.5, 2.0, size=(DIM,)).astype("float32"))
    decoder = build_decoder(tiny_config("gru", "attention"), VOCAB, (REGIONS, DIM),
                            sequence_length=STEPS, feature_stats=stats)
    path = tmp_path / "Decoder.hdf5"
    decoder.step.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    features, tokens, _ = random_batch("attention", batch=2, seed=11)
    want, _ = run_step_model(decoder.step, features, tokens, decoder.state_names)
    got, _ = run_step_model(loaded, features, tokens, decoder.state_names)
    np.testing.assert_allclose(got, want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Scheduled sampling: a second pass over the words the first pass predicted.

SAMPLED = [("gru", "init_state"), ("lstm", "attention"), ("gru", "every_step")]


def sampled(cell, conditioning, probability=0.5, **changes):
    return build_decoder(tiny_config(cell, conditioning, scheduled_sampling=probability,
                                      **changes),
                         VOCAB, feature_shape(conditioning), sequence_length=STEPS)


def test_no_scheduled_sampling_builds_the_teacher_forcing_model():
    plain = build_decoder(tiny_config(), VOCAB, (DIM,), sequence_length=STEPS)
    names = [layer.name for layer in plain.training.layers]
    assert "scheduled_sampling" not in names
    assert not any(isinstance(layer, captioning.models.layers.ScheduledSampling)
                   for layer in plain.training.layers)
    with_sampling = sampled("gru", "init_state")
    assert [layer.name for layer in with_sampling.training.layers] == names + [
        "scheduled_sampling"]
    # the same trainable weights, and the same one-step model
    assert ([tuple(v.shape) for v in with_sampling.training.trainable_weights]
            == [tuple(v.shape) for v in plain.training.trainable_weights])
    assert ([layer.name for layer in with_sampling.step.layers]
            == [layer.name for layer in plain.step.layers])
    assert len(with_sampling.step.weights) == len(plain.step.weights)


@pytest.mark.parametrize("cell,conditioning", SAMPLED, ids=[c for _, c in SAMPLED])
def test_with_probability_one_the_inputs_are_the_models_predictions(cell, conditioning):
    keras.utils.set_random_seed(1)
    decoder = sampled(cell, conditioning, dropout=0.0)
    layer = decoder.training.get_layer("scheduled_sampling")
    inputs_of = keras.Model(decoder.training.inputs, layer.output)
    features, tokens, _ = random_batch(conditioning, batch=4, seed=13)
    numpy = keras.ops.convert_to_numpy
    # outside training (validation, evaluate) the words are the true ones: teacher forcing
    teacher = numpy(decoder.training([features, tokens], training=False))
    layer.probability.assign(1.0)
    assert np.allclose(numpy(decoder.training([features, tokens], training=False)), teacher)
    fed = numpy(inputs_of([features, tokens], training=True))
    words = tokens != 0
    np.testing.assert_array_equal(fed[:, 0], tokens[:, 0])
    predicted = teacher.argmax(-1)[:, :-1]
    np.testing.assert_array_equal(fed[:, 1:][words[:, 1:]], predicted[words[:, 1:]])
    np.testing.assert_array_equal(fed[~words], 0)
    assert not np.array_equal(fed, tokens)
    # and the output is the model run on those words
    got = numpy(decoder.training([features, tokens], training=True))
    np.testing.assert_allclose(got, numpy(decoder.training([features, fed], training=False)),
                               rtol=1e-5, atol=1e-5)
    layer.probability.assign(0.0)
    np.testing.assert_array_equal(numpy(inputs_of([features, tokens], training=True)), tokens)


def test_scheduled_sampling_trains_and_its_step_model_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    decoder = sampled("gru", "init_state", probability=0.25)
    decoder.training.get_layer("scheduled_sampling").probability.assign(0.25)
    features, tokens, targets = random_batch("init_state")
    decoder.training.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.
                             SparseCategoricalCrossentropy(from_logits=True, ignore_class=0))
    before = decoder.training.evaluate([features, tokens], targets, verbose=0)
    decoder.training.fit([features, tokens], targets, batch_size=4, epochs=3, verbose=0)
    assert decoder.training.evaluate([features, tokens], targets, verbose=0) < before
    path = tmp_path / "Decoder.hdf5"
    decoder.step.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert "scheduled_sampling" not in [layer.name for layer in loaded.layers]
    want, _ = run_step_model(decoder.step, features, tokens, decoder.state_names)
    got, _ = run_step_model(loaded, features, tokens, decoder.state_names)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("conditioning", ["init_state", "attention", "every_step"])
def test_feature_dropout_drops_image_features_in_training_only(conditioning):
    """With feature_dropout the training graph drops image features (two training calls
    differ, and dropout 0.9 changes the logits); inference, and the step model, are the same
    as without it."""
    config = tiny_config(conditioning=conditioning, dropout=0.0, feature_dropout=0.9)
    decoder = build_decoder(config, VOCAB, feature_shape(conditioning), sequence_length=STEPS)
    plain = build_decoder(config.replace(feature_dropout=0.0), VOCAB,
                          feature_shape(conditioning), sequence_length=STEPS)
    assert "feature_dropout" in [layer.name for layer in decoder.training.layers]
    assert "feature_dropout" not in [layer.name for layer in plain.training.layers]
    assert [layer.name for layer in decoder.step.layers] == [
        layer.name for layer in plain.step.layers]
    plain.training.set_weights(decoder.training.get_weights())
    features, tokens, _ = random_batch(conditioning, batch=4, seed=3)

    def logits(model, training):
        return keras.ops.convert_to_numpy(model([features, tokens], training=training))

    np.testing.assert_allclose(logits(decoder.training, False), logits(plain.training, False),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits(decoder.training, True), logits(plain.training, True))
    step_log_probs, _ = run_step_model(decoder.step, features, tokens, decoder.state_names)
    np.testing.assert_allclose(step_log_probs, log_softmax(logits(plain.training, False)),
                               rtol=1e-4, atol=1e-4)
