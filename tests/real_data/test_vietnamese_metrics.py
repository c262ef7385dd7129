"""The COCO metrics on real Vietnamese captions: no word is split or merged on its way to
the scorers, and the scores say how the captions were tokenized."""

from __future__ import annotations

import pytest

from captioning.evaluation import coco_scores
from captioning.evaluation.java import java_available

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not java_available(), reason="the COCO metrics need Java on PATH"),
]


def _leave_one_out(references, count):
    """Each image's first caption as the prediction, its other captions as references."""
    images = sorted(references)[:count]
    return ({image: references[image][0] for image in images},
            {image: references[image][1:] for image in images})


def test_vietnamese_captions_are_tokenized_in_python_and_labelled(vi_references):
    predictions, references = _leave_one_out(vi_references["val"], 20)
    scores = coco_scores(predictions, references)
    assert scores["tokenizer"] == "python"
    assert 0 < scores["CIDEr"] and 0 < scores["METEOR"] < 1


def test_english_captions_keep_the_ptb_tokenizer():
    scores = coco_scores({"a": "a dog runs on the grass"},
                         {"a": ["a dog runs on grass", "a brown dog is running"]})
    assert scores["tokenizer"] == "ptb"


def test_python_tokens_score_as_the_ptb_tokens_on_vietnamese(vi_references):
    # The PTB tokenizer keeps Vietnamese words whole, so BLEU, ROUGE-L and CIDEr are the same
    # on the Python tokens: only METEOR's own normaliser splits them (see the next test).
    predictions, references = _leave_one_out(vi_references["val"], 60)
    python = coco_scores(predictions, references)
    ptb = coco_scores(predictions, references, tokenizer="ptb")
    for name in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert python[name] == pytest.approx(ptb[name], abs=1e-9), name


def test_a_different_tone_mark_makes_a_different_word_for_meteor():
    # "vợt" (racket) and "vọt" (to spurt) share no word; METEOR's English normaliser (-norm)
    # cuts both at the letters outside Latin-1 ("v ợ t", "v ọ t") and matched their pieces.
    references = {"a": ["người chơi quần vợt"], "b": ["người chơi quần vợt"]}
    scores = coco_scores({"a": "ngươi chới quẫn vọt", "b": "người chơi quần vợt"},
                         references, return_per_image=True)[1]
    assert scores["a"]["METEOR"] == 0.0
    assert scores["b"]["METEOR"] == pytest.approx(1.0, abs=0.01)


def test_own_references_score_above_another_photos(vi_references):
    val = vi_references["val"]
    images = sorted(val)[:40]
    own = {image: val[image][0] for image in images}
    other = {image: val[images[(i + 1) % len(images)]][0] for i, image in enumerate(images)}
    references = {image: val[image][1:] for image in images}
    assert coco_scores(own, references)["CIDEr"] > 2 * coco_scores(other, references)["CIDEr"]
