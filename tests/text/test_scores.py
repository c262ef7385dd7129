"""Tests for captioning.text.scores: the Java-free BLEU-4 that training monitors."""

import pytest

from captioning.errors import CaptioningError
from captioning.text import bleu4
from captioning.text.scores import nltk_bleu_4
from tests.text.helpers import synthetic_captions

PREDICTIONS, REFERENCES = synthetic_captions()


def test_bleu4_bounds():
    perfect = {image: REFERENCES[image][0] for image in PREDICTIONS}
    assert bleu4(perfect, REFERENCES) == pytest.approx(1.0)
    unrelated = {image: "an old man rides a horse on the beach" for image in PREDICTIONS}
    assert bleu4(unrelated, REFERENCES) < 1e-3
    score = bleu4(PREDICTIONS, REFERENCES)
    assert isinstance(score, float)
    assert 0 < score < 1


def test_bleu4_ignores_case_and_standalone_punctuation():
    references = {"a.jpg": ["A big red circle .", "a red circle on white"]}
    assert bleu4({"a.jpg": "a BIG red circle"}, references) == pytest.approx(1.0)


def test_nltk_bleu_4_is_one_for_perfect_and_lower_for_imperfect_captions():
    images = sorted(PREDICTIONS)
    references = [REFERENCES[image] for image in images]
    assert nltk_bleu_4([REFERENCES[image][1] for image in images], references) == 1.0
    assert 0 < nltk_bleu_4([PREDICTIONS[image] for image in images], references) < 1


def test_missing_references_are_named():
    predictions = dict(PREDICTIONS, **{"ghost_1.jpg": "a cat", "ghost_2.jpg": "a dog"})
    with pytest.raises(CaptioningError, match="2 predicted image.*'ghost_1.jpg', 'ghost_2.jpg'"):
        bleu4(predictions, REFERENCES)


def test_many_missing_references_are_counted():
    predictions = {f"ghost_{index}.jpg": "a cat" for index in range(8)}
    with pytest.raises(CaptioningError, match="'ghost_4.jpg' and 3 more"):
        bleu4(predictions, REFERENCES)


def test_empty_predictions_raise():
    with pytest.raises(CaptioningError, match="no predictions"):
        bleu4({}, REFERENCES)


@pytest.mark.parametrize(
    "references",
    [{"a.jpg": "a red circle"}, {"a.jpg": []}, {"a.jpg": ["a red circle", None]}],
)
def test_malformed_references_raise(references):
    with pytest.raises(CaptioningError, match="'a.jpg'"):
        bleu4({"a.jpg": "a red circle"}, references)


def test_non_string_prediction_raises():
    with pytest.raises(CaptioningError, match="strings"):
        bleu4({"a.jpg": ["a", "red", "circle"]}, {"a.jpg": ["a red circle"]})
