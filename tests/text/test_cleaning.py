"""Tests for captioning.text.cleaning: caption text to words."""

import pytest

from captioning.errors import ConfigError
from captioning.text.cleaning import as_texts, caption_words

MARKERS = ("<start>", "<end>")


def test_markers_survive_filters_that_hold_their_characters():
    words = caption_words("<START> A dog, (running). <end>", MARKERS, lower=True,
                          filters="<>,().", remove_articles=False)
    assert words == ["a", "dog", "running"]


def test_keras_split_keeps_whitespace_inside_words():
    words = caption_words("a dog\trunning", MARKERS, lower=True, filters="", split=" ",
                          remove_articles=False)
    assert words == ["a", "dog\trunning"]


def test_articles_go_in_any_case():
    words = caption_words("The Dog and AN apple", MARKERS, lower=False, filters="",
                          remove_articles=True)
    assert words == ["Dog", "and", "apple"]


def test_texts_must_be_a_list_of_strings():
    assert as_texts(caption for caption in ("a", "b")) == ["a", "b"]
    with pytest.raises(ConfigError, match="single string"):
        as_texts("a dog")
    with pytest.raises(ConfigError, match="list of caption strings"):
        as_texts(7)
    with pytest.raises(ConfigError, match="must be a string"):
        caption_words(b"a dog", MARKERS, lower=True, filters="", remove_articles=False)
