"""Tests for captioning.models.step: one `StepSignature` names the step model's inputs and
outputs for every module that builds, checks or searches over it."""

import keras
import numpy as np
import pytest

import captioning.models.layers  # noqa: F401  (registers the custom layers)
from captioning.config import CaptionConfig
from captioning.errors import CaptioningError, ReleaseError
from captioning.models.decoders import build_decoder
from captioning.models.search import SequenceDecoder
from captioning.models.step import StepSignature

VOCAB, DIM, REGIONS = 20, 12, 6


def config(cell="gru", conditioning="init_state", num_layers=1):
    return CaptionConfig(cell=cell, conditioning=conditioning, num_layers=num_layers, units=8,
                         embedding_dim=4, attention_units=8)


def build(*args, **kwargs):
    settings = config(*args, **kwargs)
    shape = (REGIONS, DIM) if settings.conditioning == "attention" else (DIM,)
    return settings, build_decoder(settings, VOCAB, shape)


@pytest.mark.parametrize("cell, conditioning, num_layers", [
    ("gru", "init_state", 1), ("lstm", "attention", 1), ("lstm", "every_step", 2),
    ("gru", "first_input", 2)])
def test_the_config_signature_is_the_built_models(cell, conditioning, num_layers):
    settings, decoder = build(cell, conditioning, num_layers)
    signature = StepSignature.from_config(settings)
    assert StepSignature.from_model(decoder.step) == signature == decoder.signature
    states = ["h0", "c0", "h1", "c1"] if cell == "lstm" else ["h0", "h1"]
    assert list(signature.state_names) == states[:len(states) // 2 * num_layers]
    assert signature.has_attention == (conditioning == "attention")
    assert signature.vocab_size(decoder.step) == VOCAB
    assert set(signature.state_units(decoder.step).values()) == {8}


def test_a_model_without_a_step_output_is_refused_by_name():
    _, decoder = build("lstm")
    step = decoder.step
    kept = [t for name, t in zip(step.output_names, step.outputs) if name != "initial_c0"]
    partial = keras.Model(step.inputs, kept)
    with pytest.raises(ReleaseError, match="Decoder.hdf5: not a one-step") as refused:
        StepSignature.from_model(partial, "Decoder.hdf5")
    assert "initial_c0" in str(refused.value)
    assert issubclass(ReleaseError, CaptioningError)


def test_a_model_without_the_token_input_is_refused():
    features = keras.Input((DIM,), name="features")
    log_probs = keras.layers.Dense(VOCAB, name="log_probs")(features)
    with pytest.raises(ReleaseError, match="token"):
        StepSignature.from_model(keras.Model(features, log_probs))


def test_inputs_and_outputs_are_found_by_name_not_position():
    """A step model whose inputs and outputs come in another order is searched the same."""
    _, decoder = build("lstm", "attention")
    step = decoder.step
    shuffled = keras.Model(step.inputs[::-1], step.outputs[::-1])  # the same graph
    signature = StepSignature.from_model(shuffled)
    assert signature.input_names[0] == "c0" and signature.output_names[0] == "attention"
    assert signature.state_names == ("c0", "h0")

    features = np.random.default_rng(0).normal(size=(3, REGIONS, DIM)).astype("float32")
    expected = SequenceDecoder(step, start_id=2, end_id=3, max_length=5).decode(features, 2)
    got = SequenceDecoder(shuffled, start_id=2, end_id=3, max_length=5).decode(features, 2)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5)
    np.testing.assert_allclose(got.attention, expected.attention, rtol=1e-5, atol=1e-6)


def test_split_and_arrange_round_trip_through_the_model():
    _, decoder = build("lstm")
    signature = decoder.signature
    features = np.ones((2, DIM), "float32")
    token = np.full((2, 1), 2, "int32")
    zeros = [np.zeros((2, 8), "float32")] * len(signature.state_names)
    first = signature.split(decoder.step(signature.arrange(features, token, zeros)))
    assert first.attention is None
    assert len(first.next_states) == len(first.initial_states) == 2
    log_probs = keras.ops.convert_to_numpy(first.log_probs)
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=-1), 1.0, rtol=1e-5)
