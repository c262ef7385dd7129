"""Tests for captioning.models.sampling: sampled captions are valid, differ, follow the seed
and the current weights; greedy captions are the search's."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from captioning.config import CaptionConfig
from captioning.errors import ConfigError
from captioning.models.decoders import build_decoder
from captioning.models.sampling import CaptionSampler, Samples, teacher_forcing
from captioning.models.search import SequenceDecoder

VOCAB, DIM, REGIONS = 20, 12, 6
PAD, START, END = 0, 2, 3
MAX_LENGTH = 7


def feature_shape(conditioning):
    return (REGIONS, DIM) if conditioning == "attention" else (DIM,)


def features(conditioning="init_state", batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, *feature_shape(conditioning))).astype("float32")


def decoder(conditioning="init_state", cell="gru"):
    """A random decoder whose padding and start token are the likeliest words (never to be
    generated) and whose end token is likely enough that some captions end early."""
    keras.utils.set_random_seed(1)
    config = CaptionConfig(cell=cell, conditioning=conditioning, units=16, embedding_dim=8,
                           attention_units=8, max_length=MAX_LENGTH)
    built = build_decoder(config, VOCAB, feature_shape(conditioning))
    logits = built.step.get_layer("logits")
    kernel, bias = logits.get_weights()
    bias[PAD], bias[START], bias[END] = 6.0, 6.0, 1.5
    logits.set_weights([kernel * 2.0, bias])
    return built


def sampler(step, seed=3, **kwargs):
    return CaptionSampler(step, start_id=START, end_id=END, pad_id=PAD, max_length=MAX_LENGTH,
                          seed=seed, **kwargs)


def check_valid(samples: Samples):
    ids, lengths = samples.ids, samples.lengths
    assert ids.shape == (len(lengths), MAX_LENGTH)
    for row, length in zip(ids, lengths):
        words = row[:length]
        assert 1 <= length <= MAX_LENGTH
        assert PAD not in words and START not in words
        assert np.all((words >= 0) & (words < VOCAB))
        assert np.all(row[length:] == PAD)
        ended = np.flatnonzero(words == END)
        assert ended.size == 0 and length == MAX_LENGTH or list(ended) == [length - 1]


@pytest.mark.parametrize("conditioning,cell", [("init_state", "gru"), ("attention", "lstm")])
def test_samples_are_valid_captions_k_per_image(conditioning, cell):
    built = decoder(conditioning, cell)
    samples = sampler(built.step).sample(features(conditioning), samples=5)

    assert samples.ids.shape == (4 * 5, MAX_LENGTH) and samples.per_image == 5
    check_valid(samples)
    assert (samples.lengths < MAX_LENGTH).any()  # some end early: padding after the end
    assert np.all(samples.log_probs < 0)


def test_samples_differ_and_follow_the_seed():
    step = decoder().step
    f = features()
    first = sampler(step, seed=3)
    a, b = first.sample(f, 5), first.sample(f, 5)
    again = sampler(step, seed=3).sample(f, 5)
    other = sampler(step, seed=4).sample(f, 5)

    np.testing.assert_array_equal(a.ids, again.ids)
    assert not np.array_equal(a.ids, b.ids)  # each call draws new captions
    assert not np.array_equal(a.ids, other.ids)
    distinct = {tuple(row) for row in a.ids[:5]}  # the five samples of the first image
    assert len(distinct) > 1


def test_samples_log_probs_are_the_models():
    step = decoder().step
    samples = sampler(step).sample(features(batch=2), 3)
    rows = np.repeat(features(batch=2), 3, axis=0)
    states = step.predict([rows, np.zeros((6, 1), "int32"), np.zeros((6, 16))], verbose=0)
    states = [states[step.output_names.index("initial_h0")]]
    token, total = np.full((6, 1), START, "int32"), np.zeros(6)
    for t in range(MAX_LENGTH):
        out = step.predict([rows, token, *states], verbose=0)
        log_probs, states = out[0], [out[step.output_names.index("next_h0")]]
        word = samples.ids[:, t]
        total += np.where(t < samples.lengths, log_probs[np.arange(6), word], 0.0)
        token = word[:, None].astype("int32")
    np.testing.assert_allclose(samples.log_probs, total, rtol=1e-4, atol=1e-4)


def test_greedy_is_the_search_s_and_follows_new_weights():
    built = decoder()
    step, f = built.step, features()
    captions = sampler(step)
    greedy = captions.greedy(f)
    np.testing.assert_array_equal(
        greedy.ids, SequenceDecoder(step, start_id=START, end_id=END,
                                    max_length=MAX_LENGTH).decode(f).ids[:, 0])
    # A near-zero temperature samples the greedy caption.
    cold = sampler(step, temperature=1e-4).sample(f, 2)
    np.testing.assert_array_equal(cold.ids, np.repeat(greedy.ids, 2, axis=0))

    logits = step.get_layer("logits")
    kernel, bias = logits.get_weights()
    bias[5] = 50.0  # now word 5 always wins
    logits.set_weights([kernel, bias])
    assert np.all(captions.greedy(f).ids == 5)
    assert np.all(captions.sample(f, 3).ids == 5)


def test_teacher_forcing_inputs_and_targets():
    samples = Samples(ids=np.array([[7, 8, END, 0], [9, END, 0, 0]]), lengths=np.array([3, 2]),
                      log_probs=np.zeros(2), per_image=1)
    tokens_in, tokens_out = teacher_forcing(samples, START, steps=5)
    np.testing.assert_array_equal(tokens_in, [[START, 7, 8, END, 0], [START, 9, END, 0, 0]])
    np.testing.assert_array_equal(tokens_out, [[7, 8, END, 0, 0], [9, END, 0, 0, 0]])
    with pytest.raises(ConfigError, match="max_length"):
        teacher_forcing(samples, START, steps=3)


def test_refuses_bad_arguments():
    step = decoder().step
    with pytest.raises(ConfigError, match="samples"):
        sampler(step).sample(features(), 0)
    with pytest.raises(ConfigError, match="do not fit"):
        sampler(step).sample(np.zeros((2, DIM + 1), "float32"))
    with pytest.raises(ConfigError, match="temperature"):
        sampler(step, temperature=0.0)


_JAX_CHECK = """
import numpy as np, keras
from captioning.config import CaptionConfig
from captioning.models.decoders import build_decoder
from captioning.models.sampling import CaptionSampler
keras.utils.set_random_seed(0)
step = build_decoder(CaptionConfig(units=8, embedding_dim=4), 12, (6,)).step
f = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
make = lambda: CaptionSampler(step, start_id=2, end_id=3, max_length=5, seed=7)
one = make()
a, b, again = one.sample(f, 4).ids, one.sample(f, 4).ids, make().sample(f, 4).ids
logits = step.get_layer("logits")
kernel, bias = logits.get_weights()
bias[5] = 50.0
logits.set_weights([kernel, bias])
print(keras.backend.backend(), np.array_equal(a, again), not np.array_equal(a, b),
      bool(np.all(one.sample(f, 2).ids == 5)), bool(np.all(one.greedy(f).ids == 5)))
"""


@pytest.mark.slow
def test_jax_backend_seeds_and_reads_the_current_weights():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _JAX_CHECK], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-5:] == ["jax", "True", "True", "True", "True"]
