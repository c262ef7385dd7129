"""Tests for captioning.training.scst: the REINFORCE step as a weighted cross-entropy, its
baselines, and rewards that rise on a tiny problem and on the test cache."""

import keras
import numpy as np
import pytest

from captioning.config import CaptionConfig
from captioning.models.decoders import build_decoder
from captioning.text import CaptionTokenizer
from captioning.training.objective import COSINE_FLOOR
from captioning.training.scst import (
    ScstTrainer,
    compile_for_scst,
    reward_scorer,
    scst_epoch,
    train_scst,
)
from tests.helpers import tiny_config

REFERENCES = [["a red circle", "red circle on grey"], ["a blue square", "blue square shape"],
              ["green triangle", "a green triangle here"], ["yellow star", "small yellow star"]]
DIM = 8


def tiny_problem(**changes):
    """Four images with distinct captions, random features, a fresh decoder."""
    keras.utils.set_random_seed(0)
    tokenizer = CaptionTokenizer(max_length=6).fit([c for refs in REFERENCES for c in refs])
    settings = dict(units=16, embedding_dim=8, dropout=0.0, max_length=6, max_decode_length=7,
                    batch_size=4, scst_samples=8, scst_learning_rate=0.03, seed=0)
    settings.update(changes)
    config = CaptionConfig(**settings)
    features = np.random.default_rng(0).normal(size=(len(REFERENCES), DIM)).astype("float32")
    decoder = build_decoder(config, tokenizer.vocab_size, (DIM,))
    return decoder, tokenizer, features, config


def test_negative_sample_weights_make_the_sampled_words_less_likely():
    decoder, _, features, _ = tiny_problem()
    model = decoder.training
    compile_for_scst(model, keras.optimizers.SGD(0.5))
    steps = model.inputs[1].shape[1]
    tokens_out = np.zeros((4, steps), "int32")
    tokens_out[:, :3] = [5, 6, 3]
    tokens_in = np.concatenate([np.full((4, 1), 2, "int32"), tokens_out[:, :-1]], axis=1)
    mask = (tokens_out != 0).astype("float32")

    def cross_entropy():
        log_probs = keras.ops.convert_to_numpy(
            keras.ops.log_softmax(model.predict([features, tokens_in], verbose=0)))
        picked = np.take_along_axis(log_probs, tokens_out[..., None], -1)[..., 0]
        return float(-(picked * mask).sum() / mask.sum())

    before = cross_entropy()
    loss = model.train_on_batch([features, tokens_in], tokens_out, sample_weight=-mask)
    after = cross_entropy()
    assert float(np.ravel(loss)[0]) == pytest.approx(-before, rel=1e-4)
    assert after > before
    model.train_on_batch([features, tokens_in], tokens_out, sample_weight=mask)
    assert cross_entropy() < after


def captured_steps(trainer, monkeypatch):
    """Records what each step gives `train_on_batch`."""
    calls = []
    real = trainer.decoder.training.train_on_batch

    def train_on_batch(x, y, sample_weight=None):
        calls.append((x, y, sample_weight))
        return real(x, y, sample_weight=sample_weight)

    monkeypatch.setattr(trainer.decoder.training, "train_on_batch", train_on_batch)
    return calls


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_step_weights_are_advantages_on_the_sampled_tokens(baseline, monkeypatch):
    decoder, tokenizer, features, config = tiny_problem(scst_baseline=baseline, scst_samples=3)
    trainer = ScstTrainer(decoder, tokenizer, REFERENCES, features, config)
    calls = captured_steps(trainer, monkeypatch)
    scorer = reward_scorer(tokenizer, REFERENCES)

    greedy = scorer.score(trainer.sampler.greedy(features[[2, 0]]).ids, [2, 0])

    step = trainer.step(np.array([2, 0]))

    (inputs, tokens_in), tokens_out, weights = calls[0]
    assert tokens_out.shape == weights.shape == (6, decoder.training.inputs[1].shape[1])
    np.testing.assert_array_equal(inputs, np.repeat(features[[2, 0]], 3, axis=0))
    np.testing.assert_array_equal(tokens_in[:, 1:], tokens_out[:, :-1])
    assert np.all(tokens_in[:, 0] == tokenizer.start_id)
    assert np.all(weights[tokens_out == 0] == 0)
    advantages = weights[:, 0]  # every caption has a first token
    assert np.all(weights == advantages[:, None] * (tokens_out != 0))
    rewards = scorer.score(tokens_out, np.repeat([2, 0], 3))
    assert step.reward == pytest.approx(rewards.mean())
    if baseline == "mean":
        per_image = rewards.reshape(2, 3)
        others = (per_image.sum(axis=1, keepdims=True) - per_image) / 2
        np.testing.assert_allclose(advantages, (per_image - others).ravel(), atol=1e-6)
        assert step.greedy_reward is None
    else:
        np.testing.assert_allclose(advantages, rewards - np.repeat(greedy, 3), atol=1e-6)
        assert step.baseline == pytest.approx(step.greedy_reward)
        assert step.greedy_reward == pytest.approx(greedy.mean())


def test_rewards_are_coco_cider_d_with_the_end_token_as_a_word():
    from pycocoevalcap.cider.cider import Cider

    _, tokenizer, _, _ = tiny_problem()
    scorer = reward_scorer(tokenizer, REFERENCES)
    captions = ["red circle", "a blue square shape", "green triangle here green", "star"]
    ended = np.zeros((4, 8), "int32")
    for row, ids in enumerate(tokenizer.encode(captions)):
        ended[row, :len(ids) - 1] = ids[1:]  # words and the end token, no start
    end = f" {tokenizer.end_token}"
    gts = {i: [" ".join(tokenizer.words(c)) + end for c in refs]
           for i, refs in enumerate(REFERENCES)}
    res = {i: [" ".join(tokenizer.words(c)) + end] for i, c in enumerate(captions)}
    np.testing.assert_allclose(scorer.score(ended), Cider().compute_score(gts, res)[1],
                               rtol=1e-9)
    # A caption cut off before its end token loses the closing n-grams it shares with its
    # references (captions 0, 1 and 3 end as one of theirs does; caption 2 does not).
    cut = np.where(ended == tokenizer.end_id, 0, ended)
    assert np.all(scorer.score(cut)[[0, 1, 3]] < scorer.score(ended)[[0, 1, 3]])


def test_scst_raises_the_sampled_captions_reward():
    decoder, tokenizer, features, config = tiny_problem()
    trainer = ScstTrainer(decoder, tokenizer, REFERENCES, features, config)

    rewards = [scst_epoch(trainer, epoch)["reward"] for epoch in range(1, 31)]

    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.3
    greedy = [tokenizer.decode(ids) for ids in trainer.sampler.greedy(features).ids]
    assert sum(len(set(caption.split()) & set(" ".join(refs).split())) > 0
               for caption, refs in zip(greedy, REFERENCES)) >= 3


def test_epochs_repeat_from_the_seed_and_the_weights():
    logs = []
    for _ in range(2):
        decoder, tokenizer, features, config = tiny_problem(scst_learning_rate=1e-3)
        trainer = ScstTrainer(decoder, tokenizer, REFERENCES, features, config)
        logs.append(scst_epoch(trainer, 2))
    assert logs[0]["reward"] == pytest.approx(logs[1]["reward"])
    assert set(logs[0]) == {"reward", "baseline", "loss", "learning_rate"}
    assert logs[0]["learning_rate"] == pytest.approx(1e-3)


def test_the_cosine_schedule_decays_over_the_scst_epochs():
    decoder, tokenizer, features, config = tiny_problem(
        scst_lr_schedule="cosine", scst_epochs=2, scst_learning_rate=1e-3)
    trainer = ScstTrainer(decoder, tokenizer, REFERENCES, features, config)
    rates = [scst_epoch(trainer, epoch)["learning_rate"] for epoch in (1, 2, 3)]
    # Halfway: half of the way down to the floor; then the floor, kept after the length.
    assert rates[0] == pytest.approx(1e-3 * (COSINE_FLOOR + (1 - COSINE_FLOOR) / 2), rel=1e-4)
    assert rates[1] == pytest.approx(rates[2]) == pytest.approx(1e-3 * COSINE_FLOOR, rel=1e-4)
    # A resumed phase passes the length it started with.
    decoder, tokenizer, features, config = tiny_problem(
        scst_lr_schedule="cosine", scst_epochs=2, scst_learning_rate=1e-3)
    longer = ScstTrainer(decoder, tokenizer, REFERENCES, features, config, decay_epochs=4)
    assert scst_epoch(longer, 1)["learning_rate"] == pytest.approx(
        1e-3 * (COSINE_FLOOR + (1 - COSINE_FLOOR) * (1 + np.cos(np.pi / 4)) / 2), rel=1e-4)


def test_train_scst_on_the_test_cache(cache):
    from captioning.cache import FeatureCache

    store = FeatureCache(cache)
    table = store.captions()
    train = table[table["split"] == "train"]
    images = sorted(set(train["image"]))
    references = [train.loc[train["image"] == image, "caption"].tolist() for image in images]
    config = tiny_config(scst_epochs=3, scst_samples=4, scst_baseline="greedy",
                         scst_learning_rate=1e-2, dropout=0.0)
    keras.utils.set_random_seed(0)
    tokenizer = CaptionTokenizer(max_length=config.max_length).fit(train["caption"].tolist())
    decoder = build_decoder(config, tokenizer.vocab_size, store.feature_shape,
                            feature_stats=store.statistics(store.rows(images)))
    rows = store.rows(images)
    seen = []

    history = train_scst(decoder, tokenizer, references, lambda index: store.gather(rows[index]),
                         config, first_epoch=2, on_epoch_end=lambda e, logs: seen.append(e))

    assert seen == [2, 3] and len(history) == 2
    for logs in history:
        assert 0 <= logs["reward"] < 10 and logs["greedy_reward"] >= 0
        assert np.isfinite(logs["loss"])


def test_scst_trains_on_the_sampled_words_unchanged_after_scheduled_sampling():
    decoder, tokenizer, features, config = tiny_problem(scheduled_sampling=0.5)
    layer = decoder.training.get_layer("scheduled_sampling")
    layer.probability.assign(0.5)  # where the cross-entropy ramp ended
    ScstTrainer(decoder, tokenizer, REFERENCES, features, config)
    assert float(keras.ops.convert_to_numpy(layer.probability)) == 0.0
    tokens = np.tile(np.arange(2, 9, dtype="int32"), (4, 1))
    trained = decoder.training([features, tokens], training=True)
    predicted = decoder.training([features, tokens], training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(trained),
                               keras.ops.convert_to_numpy(predicted), rtol=1e-5, atol=1e-5)
