"""Tests for captioning.inference.captioner: the one captioner loop (`caption_images`) with a
stand-in model, and `Captioner` on the tiny trained run."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from captioning.data.images import load_image
from captioning.errors import ConfigError
from captioning.inference.captioner import Caption, CaptionModel, Captioner, caption_images


@pytest.fixture(scope="module")
def image_paths(dataset):
    return sorted(str(path) for path in (dataset / "images").glob("*.jpg"))[:5]


@pytest.fixture(scope="module")
def greedy(captioner, image_paths):
    return captioner.caption(image_paths)


def test_captions_are_non_empty_strings(greedy, image_paths):
    assert [result.image for result in greedy] == image_paths
    # The 2-epoch decoder is barely trained: it could end a caption at once (an empty
    # string is a genuine answer then), but it writes words for nearly every image.
    assert sum(bool(result.caption.strip()) for result in greedy) >= len(greedy) - 1
    for result in greedy:
        assert isinstance(result, Caption)
        assert result.ok and result.error is None
        assert isinstance(result.caption, str)
        assert "<start>" not in result.caption and "<end>" not in result.caption
        assert result.words == result.caption.split()
        assert isinstance(result.score, float) and np.isfinite(result.score)
        assert result.attention is None  # not an attention model


def test_a_bad_file_gives_one_error_and_the_rest_are_captioned(captioner, greedy, image_paths,
                                                               bad_image, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    inputs = [image_paths[0], str(bad_image), image_paths[1], missing, image_paths[2]]
    results = captioner.caption(inputs)
    assert [r.image for r in results] == inputs
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert bad_image.name in results[1].error
    assert "missing.jpg" in results[3].error
    assert results[1].caption is None
    assert [r.caption for r in results if r.ok] == [g.caption for g in greedy[:3]]


def test_arrays_are_captioned_like_their_files(captioner, greedy, image_paths):
    arrays = [load_image(path) for path in image_paths[:3]]
    results = captioner.caption(arrays)
    assert [r.image for r in results] == ["<array>"] * 3
    assert [r.caption for r in results] == [g.caption for g in greedy[:3]]


def test_grey_rgba_and_mixed_inputs(captioner, image_paths):
    rgb = load_image(image_paths[0])
    grey = rgb.mean(axis=-1).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    wrong = np.zeros((4, 4, 5), np.uint8)
    results = captioner.caption([grey, rgba, image_paths[1], wrong])
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[1].caption == captioner.caption([rgb])[0].caption
    assert "(H, W, 3)" in results[3].error


def test_small_batches_give_every_image_a_result(run, image_paths, bad_image):
    small = Captioner.load(run, batch_size=2)
    inputs = image_paths + [str(bad_image)]
    results = small.caption(inputs)
    assert [r.image for r in results] == inputs
    assert [r.ok for r in results] == [True] * len(image_paths) + [False]


def test_beam_search_returns_the_top_beams(captioner, image_paths):
    results = captioner.caption(image_paths[:3], beam=3, top=3)
    for result in results:
        assert result.ok
        assert len(result.alternatives) == 3
        captions = [text for text, _ in result.alternatives]
        scores = [score for _, score in result.alternatives]
        assert captions[0] == result.caption
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(result.score)
        assert all(isinstance(text, str) for text in captions)


def test_top_must_not_exceed_beam(captioner, image_paths):
    with pytest.raises(ConfigError, match="top"):
        captioner.caption(image_paths[:1], beam=2, top=3)
    with pytest.raises(ConfigError, match="top"):
        captioner.caption(image_paths[:1], top=0)


def test_caption_features_matches_caption(captioner, greedy, cache, image_paths):
    from pathlib import Path

    from captioning.cache import FeatureCache

    reader = FeatureCache(cache)
    names = [Path(path).name for path in image_paths]
    captions, beams = captioner.caption_features(reader.gather(reader.rows(names)))
    assert len(captions) == len(names) and beams.ids.shape[:2] == (len(names), 1)
    # The cache holds float16 features; the captioner computes float32 ones. The tiny
    # decoder is almost untrained, so allow the odd word to differ, but most captions match.
    same = sum(a == b.caption for a, b in zip(captions, greedy))
    assert same >= len(names) - 1


def test_no_images_gives_no_results(captioner):
    assert captioner.caption([]) == []


def test_one_path_or_one_array_is_one_image(captioner, greedy, image_paths):
    from pathlib import Path

    for single in (image_paths[0], Path(image_paths[0])):
        results = captioner.caption(single)
        assert len(results) == 1
        assert results[0].image == image_paths[0]
        assert results[0].caption == greedy[0].caption
    rgb = load_image(image_paths[0])
    assert [r.caption for r in captioner.caption(rgb)] == [greedy[0].caption]
    grey = rgb.mean(axis=-1).astype(np.uint8)
    results = captioner.caption(grey)
    assert len(results) == 1 and results[0].ok
    assert results[0].caption == captioner.caption([grey])[0].caption


def test_a_batch_array_is_one_image_per_row(captioner, image_paths):
    arrays = [load_image(path) for path in image_paths[:3]]
    assert len({a.shape for a in arrays}) == 1
    results = captioner.caption(np.stack(arrays))
    assert len(results) == 3
    assert [r.caption for r in results] == [r.caption for r in captioner.caption(arrays)]
    with pytest.raises(ConfigError, match=r"\(1, 1, 2, 2, 3\)"):
        captioner.caption(np.zeros((1, 1, 2, 2, 3), np.uint8))


def test_bad_beam_and_batch_size_are_refused(captioner, run, image_paths):
    for beam in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="beam"):
            captioner.caption(image_paths[:1], beam=beam)
    with pytest.raises(ConfigError, match="batch_size.*0"):
        Captioner.load(run, batch_size=0)


def test_words_and_attention_rows_come_from_the_same_ids(captioner, image_paths, monkeypatch):
    """Each word keeps its own attention row, whatever ids the search returns."""
    from captioning.models.search import Beams

    tokenizer = captioner.tokenizer
    red, circle = tokenizer.word_index["red"], tokenizer.word_index["circle"]
    # a start token in the middle, an id outside the vocabulary, then the end and padding
    ids = [red, tokenizer.start_id, circle, tokenizer.vocab_size + 5, tokenizer.end_id, 0]
    regions = 4
    attention = np.zeros((1, 1, len(ids), regions), np.float32)
    for step in range(5):
        attention[0, 0, step, step % regions] = 1.0 + step  # the step, readable in the row

    def decode(features, beam=1, length_penalty=0.0, block_ngram_repeat=0):
        return Beams(ids=np.array([[ids]]), scores=np.array([[-1.0]]),
                     log_probs=np.array([[-2.0]]), lengths=np.array([[5]]),
                     attention=attention)

    monkeypatch.setattr(captioner.search, "decode", decode)
    result = captioner.caption(image_paths[0])[0]
    assert result.words == ["red", "circle", tokenizer.oov_token]
    assert result.caption == f"red circle {tokenizer.oov_token}"
    assert result.attention.shape == (3, regions)
    # the rows of steps 0, 2 and 3: the start token's row (step 1) went with it
    np.testing.assert_array_equal(result.attention.max(axis=1), [1.0, 3.0, 4.0])
    assert captioner.words(ids, 5) == (result.words, [0, 2, 3])


def repeated_words(caption):
    words = caption.split()
    return len(words) - len(set(words))


def test_decoding_options_default_to_the_releases(captioner, run):
    from captioning.release.load import load_release

    config = load_release(run).config
    assert captioner.length_penalty == config.length_penalty
    assert captioner.block_ngram_repeat == config.block_ngram_repeat == 0


def test_blocking_repeats_on_load_or_per_call(run, captioner, greedy, image_paths, monkeypatch):
    # the barely trained decoder repeats words, which the blocking must prevent
    assert any(repeated_words(r.caption) for r in captioner.caption(image_paths, beam=3))
    blocking = Captioner.load(run, block_ngram_repeat=1)
    for beam in (1, 3):
        results = blocking.caption(image_paths, beam=beam, top=beam)
        for result in results:
            assert repeated_words(result.caption) == 0, result.caption
            assert all(repeated_words(text) == 0 for text, _ in result.alternatives)
        per_call = captioner.caption(image_paths, beam=beam, top=beam, block_ngram_repeat=1)
        assert [r.alternatives for r in per_call] == [r.alternatives for r in results]
    # a per-call option leaves the captioner as it was; 0 is today's output
    assert captioner.block_ngram_repeat == 0
    assert [r.caption for r in captioner.caption(image_paths, block_ngram_repeat=0)] == [
        r.caption for r in greedy]
    # and the options reach the search
    seen = []
    real = captioner.search.decode
    monkeypatch.setattr(captioner.search, "decode",
                        lambda *args, **kwargs: seen.append(kwargs) or real(*args, **kwargs))
    captioner.caption(image_paths[:1], beam=2, length_penalty=1.5, block_ngram_repeat=3)
    captioner.caption(image_paths[:1], beam=2)
    assert seen == [dict(beam=2, length_penalty=1.5, block_ngram_repeat=3),
                    dict(beam=2, length_penalty=captioner.length_penalty,
                         block_ngram_repeat=0)]


def test_bad_decoding_options_are_refused(captioner, run, image_paths):
    with pytest.raises(ConfigError, match="block_ngram_repeat.*-1"):
        captioner.caption(image_paths[:1], block_ngram_repeat=-1)
    with pytest.raises(ConfigError, match="length_penalty.*-0.5"):
        captioner.caption(image_paths[:1], length_penalty=-0.5)
    with pytest.raises(ConfigError, match="length_penalty"):
        Captioner.load(run, length_penalty=float("inf"))


# ---------------------------------------------------------------------------------------------
# The loop, with a stand-in model: no Keras, no release.


class GreyLevel:
    """A `CaptionModel` whose caption is an image's mean grey level; it records its batches."""

    image_size = 8
    max_beam = None

    def __init__(self, fail_on=None):
        self.batches, self.fail_on = [], fail_on

    def encode(self, pixels):
        self.batches.append(pixels.shape)
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise RuntimeError("the encoder failed")
        return pixels.reshape(len(pixels), -1).mean(axis=1)

    def captions(self, features, beam=1, top=1):
        return [Caption(image="", caption=f"grey {value:.0f}", score=-float(beam),
                        alternatives=[(f"grey {value:.0f}", -float(k)) for k in range(top)])
                for value in features]


def loop_threads():
    return [t for t in threading.enumerate() if t.name.startswith("caption-images")]


def test_the_loop_batches_keeps_order_and_reports_bad_images(bad_image):
    model = GreyLevel()
    assert isinstance(model, CaptionModel)
    levels = [10, 20, None, 30, 40, 50, 60]
    images = [str(bad_image) if level is None else np.full((5, 7, 3), level, np.uint8)
              for level in levels]
    results = caption_images(model, images, beam=3, top=2, batch_size=2, workers=2)
    assert [r.caption for r in results] == [
        None if level is None else f"grey {level}" for level in levels]
    assert [r.image for r in results] == ["<array>"] * 2 + [str(bad_image)] + ["<array>"] * 4
    assert not results[2].ok and bad_image.name in results[2].error
    assert [len(r.alternatives) for r in results if r.ok] == [2] * 6
    # batches of 2 positions; the bad image leaves its batch one short, at the input size
    assert model.batches == [(2, 8, 8, 3), (1, 8, 8, 3), (2, 8, 8, 3), (1, 8, 8, 3)]
    assert not loop_threads()


def test_the_loop_shuts_its_threads_down_when_the_model_fails():
    images = [np.full((4, 4, 3), level, np.uint8) for level in range(9)]
    with pytest.raises(RuntimeError, match="encoder failed"):
        caption_images(GreyLevel(fail_on=2), images, batch_size=2)
    assert not loop_threads()


def test_the_loop_checks_its_settings_before_reading_images():
    greedy = GreyLevel()
    greedy.max_beam = 1
    with pytest.raises(ConfigError, match="beam must be at most 1"):
        caption_images(greedy, ["never_read.jpg"], beam=2)
    for settings, name in (({"top": 3, "beam": 2}, "top"), ({"batch_size": 0}, "batch_size"),
                           ({"workers": 0}, "workers")):
        with pytest.raises(ConfigError, match=name):
            caption_images(GreyLevel(), ["never_read.jpg"], **settings)
    assert caption_images(GreyLevel(), []) == []
