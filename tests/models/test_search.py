"""Tests for captioning.models.search: the compiled greedy and beam search against plain Python
reference searches that call the one-step model once per word."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import captioning.models.layers  # noqa: F401  (registers the custom layers)
from captioning.config import CaptionConfig
from captioning.models.decoders import build_decoder
from captioning.models.search import Beams, SequenceDecoder
from captioning.models.step import StepSignature
from captioning.errors import ConfigError

VOCAB, DIM, REGIONS = 20, 12, 6
PAD, START, END = 0, 2, 3
MAX_LENGTH = 6


def feature_shape(conditioning):
    return (REGIONS, DIM) if conditioning == "attention" else (DIM,)


def random_features(conditioning, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, *feature_shape(conditioning))).astype("float32")


_STEPS = {}


def step_model(cell="gru", conditioning="init_state", end_bias=None, pad_bias=5.0, seed=1,
               start_bias=0.0, favourite=None):
    """A random one-step decoder with peaky outputs. `pad_bias` makes the padding id the
    most likely word, which the search must never pick (`start_bias` likewise for the start
    token); `end_bias` sets how soon it ends (by default so that some captions end early
    and others run to the limit); `favourite` is a word it loves to repeat."""
    if end_bias is None:
        end_bias = 3.0 if conditioning == "attention" else 1.0
    key = (cell, conditioning, end_bias, pad_bias, seed, start_bias, favourite)
    if key not in _STEPS:
        keras.utils.set_random_seed(seed)
        config = CaptionConfig(cell=cell, conditioning=conditioning, units=16, embedding_dim=8,
                               attention_units=8, max_length=MAX_LENGTH)
        decoder = build_decoder(config, VOCAB, feature_shape(conditioning), sequence_length=3)
        logits = decoder.step.get_layer("logits")
        kernel, bias = logits.get_weights()
        bias[END], bias[PAD], bias[START] = end_bias, pad_bias, bias[START] + start_bias
        if favourite is not None:
            bias[favourite] += 6.0
        logits.set_weights([kernel * 4.0, bias])
        _STEPS[key] = decoder.step
    return _STEPS[key]


_SEARCHES = {}


def search(*args, max_length=MAX_LENGTH, **kwargs):
    key = (args, tuple(sorted(kwargs.items())), max_length)
    if key not in _SEARCHES:
        _SEARCHES[key] = SequenceDecoder(step_model(*args, **kwargs), start_id=START,
                                         end_id=END, pad_id=PAD, max_length=max_length)
    return _SEARCHES[key]


class StepRunner:
    """Calls the one-step model on one image, as a user's Python loop would."""

    def __init__(self, step, features):
        self.step, self.features = step, features[None]
        self.signature = StepSignature.from_model(step)
        zeros = [np.zeros((1, 16), "float32") for _ in self.signature.state_names]
        self.initial = self._call(START, zeros).initial_states

    def _call(self, token, states):
        result = self.step(self.signature.arrange(self.features, np.array([[token]], "int32"),
                                                  states), training=False)
        return self.signature.split([keras.ops.convert_to_numpy(x) for x in result])

    def __call__(self, token, states):
        """-> log-probs (vocab,) in float64, next states, attention (regions,) or None."""
        result = self._call(token, states)
        attention = None if result.attention is None else result.attention[0]
        return result.log_probs[0].astype("float64"), result.next_states, attention


def repeats(ids, n):
    """The words that, appended to `ids`, would make an n-gram of them appear twice."""
    if n == 0 or len(ids) < n:
        return set()
    prefix = tuple(ids[len(ids) - n + 1:])
    return {ids[j + n - 1] for j in range(len(ids) - n + 1) if tuple(ids[j:j + n - 1]) == prefix}


def ngram_counts(ids, n):
    grams = [tuple(ids[j:j + n]) for j in range(len(ids) - n + 1)]
    return {gram: grams.count(gram) for gram in grams}


def reference_greedy(step, features, max_length=MAX_LENGTH, block=0):
    run = StepRunner(step, features)
    token, states, ids, total = START, run.initial, [], 0.0
    for _ in range(max_length):
        log_probs, states, _ = run(token, states)
        log_probs[[PAD, START]] = -np.inf
        log_probs[list(repeats(ids, block))] = -np.inf
        token = int(np.argmax(log_probs))
        ids.append(token)
        total += log_probs[token]
        if token == END:
            break
    return ids, total


def reference_beam(step, features, k, max_length=MAX_LENGTH, length_penalty=0.0, block=0):
    """Plain beam search with a pool of finished captions (GNMT style), run to the end.

    K alive captions ranked by total log-probability; each step takes the 2K best
    expansions (none that repeats a `block`-gram), moves those that end into the pool
    (scored log_prob / length ** penalty, the K best kept) and keeps the K best others
    alive. It always runs `max_length` steps
    (no early stop), then the alive captions join the pool. Returns the K best of the pool,
    best first, as (score, log_prob, ids padded to max_length, attention rows)."""
    run = StepRunner(step, features)
    alive = [(0.0, [], run.initial, [])]  # log_prob, ids, states, attention
    pool = []  # normalised score, log_prob, ids, attention
    for t in range(max_length):
        candidates = []
        for log_prob, ids, states, attention in alive:
            log_probs, next_states, weights = run(ids[-1] if ids else START, states)
            banned = repeats(ids, block) | {PAD, START}
            for word in range(VOCAB):
                if word not in banned:
                    candidates.append((log_prob + log_probs[word], ids + [word], next_states,
                                       attention + [weights]))
        candidates = sorted(candidates, key=lambda c: -c[0])[:2 * k]
        for log_prob, ids, _, attention in candidates:
            if ids[-1] == END:
                pool.append((log_prob / (t + 1) ** length_penalty, log_prob, ids, attention))
        pool = sorted(pool, key=lambda c: -c[0])[:k]
        alive = [c for c in candidates if c[1][-1] != END][:k]
    for log_prob, ids, _, attention in alive:
        pool.append((log_prob / max_length ** length_penalty, log_prob, ids, attention))
    pool = sorted(pool, key=lambda c: -c[0])[:k]
    return [(score, log_prob, ids + [PAD] * (max_length - len(ids)), attention)
            for score, log_prob, ids, attention in pool]


def strip(ids):
    """The generated words up to and including the end token."""
    ids = list(ids)
    return ids[:ids.index(END) + 1] if END in ids else [i for i in ids if i != PAD]


KINDS = [("gru", "init_state"), ("lstm", "attention")]


@pytest.mark.parametrize("cell,conditioning", KINDS, ids=[c for _, c in KINDS])
def test_greedy_equals_a_python_loop_over_the_step_model(cell, conditioning):
    features = random_features(conditioning, batch=4)
    beams = search(cell, conditioning).decode(features, beam=1)
    assert isinstance(beams, Beams)
    assert beams.ids.shape == (4, 1, MAX_LENGTH)
    for image in range(4):
        ids, total = reference_greedy(step_model(cell, conditioning), features[image])
        assert strip(beams.ids[image, 0]) == ids
        assert beams.lengths[image, 0] == len(ids)
        np.testing.assert_allclose(beams.log_probs[image, 0], total, rtol=1e-4, atol=1e-4)
    # the random decoder ends some captions early and runs others to the limit
    assert len(set(beams.lengths[:, 0].tolist())) > 1


def test_beam_one_is_greedy_and_the_default():
    features = random_features("init_state", batch=3, seed=2)
    decoder = search("gru", "init_state")
    default, one = decoder.decode(features), decoder.decode(features, beam=1)
    np.testing.assert_array_equal(default.ids, one.ids)
    for image in range(3):
        ids, _ = reference_greedy(step_model("gru", "init_state"), features[image])
        assert strip(one.ids[image, 0]) == ids


@pytest.mark.parametrize("cell,conditioning", KINDS, ids=[c for _, c in KINDS])
def test_beam_search_equals_a_python_beam_search(cell, conditioning):
    features = random_features(conditioning, batch=3, seed=4)
    for penalty in (0.0, 0.7):
        beams = search(cell, conditioning).decode(features, beam=3, length_penalty=penalty)
        for image in range(3):
            expected = reference_beam(step_model(cell, conditioning), features[image], 3,
                                      length_penalty=penalty)
            for b, (score, log_prob, ids, _) in enumerate(expected):
                assert beams.ids[image, b].tolist() == ids, (penalty, image, b)
                np.testing.assert_allclose(beams.log_probs[image, b], log_prob, rtol=1e-4,
                                           atol=1e-4)
                np.testing.assert_allclose(beams.scores[image, b], score, rtol=1e-4,
                                           atol=1e-4)


@pytest.mark.parametrize("cell,conditioning", KINDS, ids=[c for _, c in KINDS])
def test_beams_are_sorted_and_the_best_beats_greedy(cell, conditioning):
    features = random_features(conditioning, batch=4, seed=6)
    decoder = search(cell, conditioning)
    greedy = decoder.decode(features, beam=1, length_penalty=0.0)
    beams = decoder.decode(features, beam=3, length_penalty=0.0)
    assert beams.ids.shape == (4, 3, MAX_LENGTH)
    assert np.all(np.diff(beams.scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(beams.scores, beams.log_probs, rtol=1e-6)
    assert np.all(beams.log_probs[:, 0] >= greedy.log_probs[:, 0] - 1e-4)
    # with length normalisation the scores are log_prob / length ** penalty, still sorted
    normalised = decoder.decode(features, beam=3, length_penalty=0.7)
    np.testing.assert_allclose(normalised.scores,
                               normalised.log_probs / normalised.lengths ** 0.7, rtol=1e-5)
    assert np.all(np.diff(normalised.scores, axis=1) <= 1e-6)
    # the beams of one image are different captions
    for image in range(4):
        assert len({tuple(row) for row in beams.ids[image]}) == 3


@pytest.mark.parametrize("cell,conditioning", KINDS, ids=[c for _, c in KINDS])
def test_never_pad_before_the_end_and_finished_beams_stay_finished(cell, conditioning):
    features = random_features(conditioning, batch=4, seed=8)
    for beam in (1, 3):
        beams = search(cell, conditioning).decode(features, beam=beam)
        for image in range(4):
            for b in range(beam):
                ids, length = beams.ids[image, b].tolist(), int(beams.lengths[image, b])
                assert 1 <= length <= MAX_LENGTH
                assert PAD not in ids[:length]
                assert ids[length:] == [PAD] * (MAX_LENGTH - length)
                assert END not in ids[:length - 1]
                if length < MAX_LENGTH:
                    assert ids[length - 1] == END
    # some beams did finish early, so the checks above were exercised
    assert np.any(beams.lengths < MAX_LENGTH)


@pytest.mark.parametrize("cell,conditioning", KINDS, ids=[c for _, c in KINDS])
def test_the_start_token_is_never_generated(cell, conditioning):
    # The start token is the decoder's favourite word here; the search must skip it, as
    # the tokenizer's decode would drop it and the words would lose their attention rows.
    step = step_model(cell, conditioning, start_bias=8.0)
    features = random_features(conditioning, batch=3, seed=16)
    run = StepRunner(step, features[0])
    log_probs, _, _ = run(START, run.initial)
    log_probs[PAD] = -np.inf
    assert int(np.argmax(log_probs)) == START  # the bias does make it the favourite
    decoder = search(cell, conditioning, start_bias=8.0)
    for beam in (1, 3):
        beams = decoder.decode(features, beam=beam)
        assert not np.any(beams.ids == START)
        for image in range(3):
            for b in range(beam):
                length = int(beams.lengths[image, b])
                assert PAD not in beams.ids[image, b, :length].tolist()
    for image in range(3):
        ids, _ = reference_greedy(step, features[image])
        assert strip(decoder.decode(features[image:image + 1]).ids[0, 0]) == ids


def test_stops_at_max_length_when_the_end_never_comes():
    features = random_features("init_state", batch=3, seed=3)
    decoder = search("gru", "init_state", end_bias=-1e4, max_length=5)
    for beam in (1, 2):
        beams = decoder.decode(features, beam=beam)
        assert beams.ids.shape == (3, beam, 5)
        assert np.all(beams.lengths == 5)
        assert not np.any(beams.ids == END)
        assert not np.any(beams.ids == PAD)


def test_batched_equals_one_image_at_a_time():
    features = random_features("attention", batch=4, seed=10)
    decoder = search("lstm", "attention")
    batched = decoder.decode(features, beam=3)
    for image in range(4):
        single = decoder.decode(features[image:image + 1], beam=3)
        np.testing.assert_array_equal(single.ids[0], batched.ids[image])
        np.testing.assert_array_equal(single.lengths[0], batched.lengths[image])
        np.testing.assert_allclose(single.log_probs[0], batched.log_probs[image], atol=1e-5)
        np.testing.assert_allclose(single.attention[0], batched.attention[image], atol=1e-5)


def test_attention_weights_per_generated_word():
    features = random_features("attention", batch=3, seed=12)
    beams = search("lstm", "attention").decode(features, beam=3, length_penalty=0.0)
    assert beams.attention.shape == (3, 3, MAX_LENGTH, REGIONS)
    for image in range(3):
        for b in range(3):
            length = int(beams.lengths[image, b])
            np.testing.assert_allclose(beams.attention[image, b, :length].sum(-1), 1.0,
                                       atol=1e-5)
            assert not beams.attention[image, b, length:].any()
        # and they are the weights the step model gave for those words
        expected = reference_beam(step_model("lstm", "attention"), features[image], 3)
        for b, (_, _, _, attention) in enumerate(expected):
            np.testing.assert_allclose(beams.attention[image, b, :len(attention)],
                                       np.stack(attention), atol=1e-5)
    assert search("gru", "init_state").decode(random_features("init_state", 1)).attention \
        is None


def test_reloaded_step_model_decodes_the_same(tmp_path):
    step = step_model("lstm", "attention")
    path = tmp_path / "Decoder.hdf5"
    step.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    features = random_features("attention", batch=2, seed=14)
    want = search("lstm", "attention").decode(features, beam=3)
    got = SequenceDecoder(loaded, start_id=START, end_id=END, max_length=MAX_LENGTH).decode(
        features, beam=3)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_refusals():
    decoder = search("gru", "init_state")
    with pytest.raises(ConfigError, match="beam"):
        decoder.decode(random_features("init_state", 1), beam=0)
    with pytest.raises(ConfigError, match=r"\(7,\)"):
        decoder.decode(np.zeros((1, 7), "float32"))
    with pytest.raises(ConfigError, match="max_length"):
        SequenceDecoder(step_model(), start_id=START, end_id=END, max_length=0)


# ---------------------------------------------------------------------------------------------
# Beams that read well: n-gram blocking and the length penalty.

FAVOURITE = 5


def test_the_repeating_decoder_does_repeat_without_blocking():
    features = random_features("init_state", batch=4, seed=20)
    decoder = search("gru", "init_state", favourite=FAVOURITE)
    for beam in (1, 3):
        off = decoder.decode(features, beam=beam, block_ngram_repeat=0)
        default = decoder.decode(features, beam=beam)
        np.testing.assert_array_equal(off.ids, default.ids)
        np.testing.assert_array_equal(off.scores, default.scores)
        best = [strip(off.ids[image, 0]) for image in range(4)]
        assert all(max(ngram_counts(ids, 2).values()) > 1 for ids in best), best
    for image in range(4):
        ids, _ = reference_greedy(step_model("gru", "init_state", favourite=FAVOURITE),
                                  features[image])
        assert strip(decoder.decode(features, block_ngram_repeat=0).ids[image, 0]) == ids


@pytest.mark.parametrize("block", [1, 2, 3])
def test_blocking_leaves_no_repeated_ngram_in_any_caption(block):
    features = random_features("init_state", batch=4, seed=20)
    step = step_model("gru", "init_state", favourite=FAVOURITE)
    decoder = search("gru", "init_state", favourite=FAVOURITE)
    for beam in (1, 3):
        beams = decoder.decode(features, beam=beam, length_penalty=0.7,
                               block_ngram_repeat=block)
        for image in range(4):
            for b in range(beam):
                ids = strip(beams.ids[image, b])
                assert len(ids) == beams.lengths[image, b]
                assert max(ngram_counts(ids, block).values(), default=1) == 1, (beam, ids)
    greedy = decoder.decode(features, block_ngram_repeat=block)
    beams = decoder.decode(features, beam=3, length_penalty=0.7, block_ngram_repeat=block)
    for image in range(4):
        # the most likely words among those that repeat nothing, not merely some other words
        ids, total = reference_greedy(step, features[image], block=block)
        assert strip(greedy.ids[image, 0]) == ids
        np.testing.assert_allclose(greedy.log_probs[image, 0], total, rtol=1e-4, atol=1e-4)
        expected = reference_beam(step, features[image], 3, length_penalty=0.7, block=block)
        for b, (score, _, ids, _) in enumerate(expected):
            assert beams.ids[image, b].tolist() == ids, (image, b)
            np.testing.assert_allclose(beams.scores[image, b], score, rtol=1e-4, atol=1e-4)


def test_blocking_longer_ngrams_than_a_caption_changes_nothing():
    features = random_features("attention", batch=2, seed=22)
    decoder = search("lstm", "attention")
    for beam in (1, 3):
        want = decoder.decode(features, beam=beam)
        got = decoder.decode(features, beam=beam, block_ngram_repeat=MAX_LENGTH)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.attention, want.attention, atol=1e-6)


def test_a_stronger_length_penalty_ranks_longer_captions_higher():
    # GNMT: a finished caption scores log_prob / length ** alpha; with alpha 0 the most
    # likely caption wins, which favours short ones, and a larger alpha favours longer ones.
    features = random_features("init_state", batch=8, seed=24)
    decoder = search("gru", "init_state")
    step = step_model("gru", "init_state")
    lengths = {}
    for alpha in (0.0, 2.0):
        beams = decoder.decode(features, beam=3, length_penalty=alpha)
        np.testing.assert_allclose(beams.scores, beams.log_probs / beams.lengths ** alpha,
                                   rtol=1e-5)
        assert np.all(np.diff(beams.scores, axis=1) <= 1e-6)
        lengths[alpha] = beams.lengths[:, 0]
        for image in range(8):
            score, _, ids, _ = reference_beam(step, features[image], 3, length_penalty=alpha)[0]
            assert beams.ids[image, 0].tolist() == ids
    assert np.all(lengths[2.0] >= lengths[0.0])
    assert np.any(lengths[2.0] > lengths[0.0])


def test_bad_decoding_options_are_refused():
    decoder = search("gru", "init_state")
    features = random_features("init_state", 1)
    with pytest.raises(ConfigError, match="block_ngram_repeat.*-1"):
        decoder.decode(features, beam=2, block_ngram_repeat=-1)
    with pytest.raises(ConfigError, match="length_penalty"):
        decoder.decode(features, beam=2, length_penalty=-0.5)


def test_a_decoder_made_once_reads_the_current_weights():
    keras.utils.set_random_seed(3)
    config = CaptionConfig(units=8, embedding_dim=4, max_length=MAX_LENGTH)
    step = build_decoder(config, VOCAB, (DIM,), sequence_length=3).step
    decoder = SequenceDecoder(step, start_id=START, end_id=END, max_length=MAX_LENGTH)
    features = random_features("init_state", batch=2)
    decoder.decode(features), decoder.decode(features, beam=2)
    logits = step.get_layer("logits")
    kernel, bias = logits.get_weights()
    bias[7] = 50.0  # word 7 now always wins
    logits.set_weights([kernel, bias])
    assert np.all(decoder.decode(features).ids == 7)
    assert np.all(decoder.decode(features, beam=2).ids[:, 0] == 7)


_JAX_CHECK = """
import numpy as np, keras
from captioning.config import CaptionConfig
from captioning.models.decoders import build_decoder
from captioning.models.search import SequenceDecoder
keras.utils.set_random_seed(0)
step = build_decoder(CaptionConfig(units=8, embedding_dim=4), 12, (6,)).step
f = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
decoder = SequenceDecoder(step, start_id=2, end_id=3, max_length=6)
before = [decoder.decode(f, beam=b).ids for b in (1, 3)]
logits = step.get_layer("logits")
kernel, bias = logits.get_weights()
bias[5] = 50.0
logits.set_weights([kernel, bias])
greedy, beams = decoder.decode(f).ids, decoder.decode(f, beam=3).ids
fresh = SequenceDecoder(step, start_id=2, end_id=3, max_length=6)
blocked = decoder.decode(f, beam=3, block_ngram_repeat=1).ids
print(keras.backend.backend(), bool(np.all(greedy == 5)), bool(np.all(beams[:, 0] == 5)),
      np.array_equal(beams, fresh.decode(f, beam=3).ids),
      all(len(set(row[row > 0].tolist())) == (row > 0).sum() for row in blocked.reshape(-1, 6)),
      not np.array_equal(before[0], greedy))
"""


@pytest.mark.slow
def test_jax_backend_decodes_with_the_current_weights():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _JAX_CHECK], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-6:] == ["jax", "True", "True", "True", "True", "True"]
