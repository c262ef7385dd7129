"""Tests for captioning.evaluation.tokenization: Python tokens for non-Latin captions."""

import unicodedata

import pytest

from captioning.evaluation.tokenization import (
    needs_python_tokens,
    python_tokenize,
    python_tokens,
)


def test_tokens_are_nfc_lower_case_without_edge_punctuation():
    caption = unicodedata.normalize("NFD", "Một NGƯỜI, đang chơi quần vợt trên sân .")
    assert python_tokens(caption) == ["một", "người", "đang", "chơi", "quần", "vợt", "trên",
                                      "sân"]


def test_inner_punctuation_stays_and_punctuation_tokens_go():
    assert python_tokens('"well-known" -- 3.5 ... (dog)') == ["well-known", "3.5", "dog"]
    assert python_tokens("lên\u200b\u200btrời") == ["lên", "trời"]


def test_tokenize_keeps_keys_and_caption_order():
    captions = {"a": ["Con chó.", "Chó chạy !"], "b": ["Bầu trời"]}
    assert python_tokenize(captions) == {"a": ["con chó", "chó chạy"], "b": ["bầu trời"]}


@pytest.mark.parametrize("caption, expected", [
    ("a man riding a wave on a surfboard", False),
    ("a café in Zürich, “quoted” — dashed", False),  # Latin-1 letters, non-letter symbols
    ("người đàn ông", True),
    ("σκύλος", True),
    ("一只狗", True),
    ("cafe\u0301", True),  # a combining mark
])
def test_python_tokens_are_needed_beyond_latin_1_letters(caption, expected):
    assert needs_python_tokens({"x": ["a dog"]}, {"x": [caption]}) is expected
