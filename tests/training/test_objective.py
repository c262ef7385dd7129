"""Tests for captioning.training.objective: the masked cross-entropy with label smoothing
against Keras' loss and a NumPy reference, and the scheduled-sampling ramp and its callback."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from captioning.config import CaptionConfig
from captioning.errors import ConfigError
from captioning.models.decoders import build_decoder
from captioning.training.callbacks import ScheduledSamplingRamp
from captioning.training.objective import (
    MaskedCrossEntropy,
    compile_for_captions,
    make_optimizer,
    sampling_probability,
)

VOCAB = 11


def batch(seed=0, rows=4, steps=7):
    """Targets padded with 0 at the end of each row, and random logits."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(1, VOCAB, size=(rows, steps)).astype("int32")
    for row, length in enumerate(rng.integers(1, steps + 1, size=rows)):
        targets[row, length:] = 0
    logits = (rng.normal(size=(rows, steps, VOCAB)) * 3).astype("float32")
    return targets, logits


def reference(targets, logits, smoothing):
    """The mean over the words of the cross-entropy against a smoothed one-hot target."""
    logits = logits.astype("float64")
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    target = np.eye(VOCAB)[targets] * (1 - smoothing) + smoothing / VOCAB
    losses = -(target * log_probs).sum(-1)
    words = targets != 0
    return losses[words].sum() / words.sum()


def value(loss, targets, logits):
    return float(keras.ops.convert_to_numpy(loss(targets, logits)))


def test_without_smoothing_it_is_the_loss_of_today():
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    for seed in range(3):
        targets, logits = batch(seed)
        want = value(keras_loss, targets, logits)
        assert value(MaskedCrossEntropy(), targets, logits) == pytest.approx(want, rel=1e-5)
        assert want == pytest.approx(reference(targets, logits, 0.0), rel=1e-5)


@pytest.mark.parametrize("smoothing", [0.1, 0.4])
def test_smoothing_matches_a_numpy_reference(smoothing):
    targets, logits = batch(seed=5)
    got = value(MaskedCrossEntropy(smoothing), targets, logits)
    assert got == pytest.approx(reference(targets, logits, smoothing), rel=1e-5)
    assert got != pytest.approx(reference(targets, logits, 0.0), rel=1e-3)
    # padded positions count for nothing, whatever the model says there
    noisy = logits.copy()
    noisy[targets == 0] += 100.0 * np.random.default_rng(1).normal(size=noisy[targets == 0].shape)
    assert value(MaskedCrossEntropy(smoothing), targets, noisy) == pytest.approx(got, rel=1e-6)
    # Keras' dense label smoothing on one-hot targets agrees on a batch without padding
    full, _ = batch(seed=5)
    full[full == 0] = 1
    dense = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    assert value(MaskedCrossEntropy(smoothing), full, logits) == pytest.approx(
        value(dense, np.eye(VOCAB, dtype="float32")[full], logits), rel=1e-5)


def test_a_batch_of_padding_only_gives_zero():
    targets, logits = batch()
    assert value(MaskedCrossEntropy(0.1), np.zeros_like(targets), logits) == 0.0


def test_the_loss_is_compiled_with_the_smoothing_and_round_trips():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(VOCAB)])
    compile_for_captions(model, make_optimizer(1e-3, None), label_smoothing=0.2)
    assert isinstance(model.loss, MaskedCrossEntropy) and model.loss.label_smoothing == 0.2
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        MaskedCrossEntropy(0.3)))
    assert isinstance(revived, MaskedCrossEntropy) and revived.label_smoothing == 0.3
    for bad in (-0.1, 1.0, "0.1"):
        with pytest.raises(ConfigError, match="label_smoothing"):
            MaskedCrossEntropy(bad)


def test_fine_tuning_is_compiled_with_the_same_smoothed_loss(cache):
    from captioning.cache import FeatureCache
    from captioning.training.finetune import _joint_model

    store = FeatureCache(cache)
    config = CaptionConfig(units=4, embedding_dim=4, max_length=3, label_smoothing=0.15,
                           fine_tune=1)
    decoder = build_decoder(config, VOCAB, store.feature_shape)
    joint, _, _ = _joint_model(store, decoder, config)
    assert isinstance(joint.loss, MaskedCrossEntropy) and joint.loss.label_smoothing == 0.15


# ---------------------------------------------------------------------------------------------
# Scheduled sampling: 0 at the first epoch, linearly up to P at the last.


def test_the_ramp_rises_linearly_from_zero_to_the_final_probability():
    assert [sampling_probability(e, 0.25, 5) for e in range(5)] == pytest.approx(
        [0.0, 0.0625, 0.125, 0.1875, 0.25])
    assert sampling_probability(7, 0.25, 5) == 0.25  # a resumed run's extra epochs
    assert sampling_probability(0, 0.3, 1) == 0.3
    assert [sampling_probability(e, 0.0, 4) for e in range(4)] == [0.0] * 4
    with pytest.raises(ConfigError, match="epochs"):
        sampling_probability(0, 0.3, 0)


def test_the_callback_sets_each_epochs_probability(caplog):
    import logging

    config = CaptionConfig(units=4, embedding_dim=4, max_length=3, scheduled_sampling=0.3)
    decoder = build_decoder(config, VOCAB, (5,))
    layer = decoder.training.get_layer("scheduled_sampling")
    ramp = ScheduledSamplingRamp(0.3, epochs=4)
    ramp.set_model(decoder.training)
    seen = []
    with caplog.at_level(logging.INFO, logger="captioning"):
        for epoch in range(4):
            ramp.on_epoch_begin(epoch)
            seen.append(float(keras.ops.convert_to_numpy(layer.probability)))
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert "epoch 4: scheduled sampling" in caplog.text and "0.300" in caplog.text
    # without scheduled sampling the model has no such layer and the callback does nothing
    plain = build_decoder(config.replace(scheduled_sampling=0.0), VOCAB, (5,))
    off = ScheduledSamplingRamp(0.0, epochs=4)
    off.set_model(plain.training)
    off.on_epoch_begin(2)


_JAX_CHECK = """
import numpy as np, keras
from captioning.config import CaptionConfig
from captioning.models.decoders import build_decoder
from captioning.training.callbacks import ScheduledSamplingRamp
from captioning.training.objective import MaskedCrossEntropy, compile_for_captions, make_optimizer
rng = np.random.default_rng(0)
targets = rng.integers(1, 11, size=(4, 6)).astype("int32"); targets[:, 4:] = 0
logits = rng.normal(size=(4, 6, 11)).astype("float32")
values = [float(MaskedCrossEntropy(e)(targets, logits)) for e in (0.0, 0.2)]
keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
keras.utils.set_random_seed(0)
config = CaptionConfig(units=8, embedding_dim=4, max_length=5, scheduled_sampling=0.5,
                       label_smoothing=0.1)
model = build_decoder(config, 11, (6,)).training
compile_for_captions(model, make_optimizer(1e-2, 5.0), label_smoothing=0.1)
f = rng.normal(size=(8, 6)).astype("float32")
tokens = rng.integers(2, 11, size=(8, 6)).astype("int32")
history = model.fit([f, tokens], np.roll(tokens, -1, 1), epochs=3, verbose=0,
                    callbacks=[ScheduledSamplingRamp(0.5, 3)])
print(keras.backend.backend(), repr(values[0]), repr(float(keras_loss(targets, logits))),
      repr(values[1]), float(keras.ops.convert_to_numpy(
          model.get_layer("scheduled_sampling").probability)),
      bool(np.all(np.isfinite(history.history["loss"]))))
"""


@pytest.mark.slow
def test_jax_backend_smooths_and_samples():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _JAX_CHECK], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    backend, plain, keras_value, smoothed, probability, finite = done.stdout.split()[-6:]
    assert backend == "jax" and finite == "True"
    assert float(plain) == pytest.approx(float(keras_value), rel=1e-5)
    rng = np.random.default_rng(0)
    targets = rng.integers(1, 11, size=(4, 6)).astype("int32")
    targets[:, 4:] = 0
    logits = rng.normal(size=(4, 6, 11)).astype("float32")
    assert float(smoothed) == pytest.approx(reference(targets, logits, 0.2), rel=1e-5)
    assert float(probability) == pytest.approx(0.5)
