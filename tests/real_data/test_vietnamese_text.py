"""The tokenizer on the real Vietnamese captions of vi_photos: every diacritic survives."""

from __future__ import annotations

import unicodedata

import pytest

from captioning.config import DEFAULT_FILTERS
from captioning.text import CaptionTokenizer, load_tokenizer

pytestmark = pytest.mark.real_data


def _letters(text: str) -> str:
    return "".join(char for char in text if char.isalnum())


@pytest.fixture(scope="module")
def tokenizer(vi_references):
    captions = [c for captions in vi_references["train"].values() for c in captions]
    return CaptionTokenizer(max_length=30).fit(captions)


def test_words_keep_every_letter_and_diacritic(vi_rows):
    tokenizer = CaptionTokenizer()
    for row in vi_rows:
        caption = row["caption"]
        words = tokenizer.words(caption)
        assert words, caption
        # No letter lost or changed but for the case: the tone marks and the letters that
        # carry them (ă, â, đ, ê, ô, ơ, ư) are all still there, lower-cased.
        assert _letters("".join(words)) == _letters(caption.lower()), caption
        for word in words:
            assert word == unicodedata.normalize("NFC", word), (caption, word)
            assert word == word.lower(), (caption, word)
            assert not set(word) & set(DEFAULT_FILTERS), (caption, word)


def test_default_filters_remove_punctuation_only(vi_rows):
    characters = set("".join(row["caption"] for row in vi_rows))
    removed = {char for char in characters if char in DEFAULT_FILTERS}
    assert {".", ","} <= removed
    assert all(not char.isalnum() for char in removed)


def test_zero_width_space_separates_words():
    # One vi_photos caption (0000031.jpg) has two U+200B before a word.
    caption = "hai tay giơ lên \u200b\u200btrời ."
    assert CaptionTokenizer().words(caption) == ["hai", "tay", "giơ", "lên", "trời"]


def test_decomposed_and_upper_case_captions_encode_like_the_original(tokenizer, vi_references):
    for captions in list(vi_references["val"].values())[:50]:
        caption = captions[0]
        expected = tokenizer.encode([caption])
        assert tokenizer.encode([unicodedata.normalize("NFD", caption)]) == expected
        assert tokenizer.encode([caption.upper()]) == expected


def test_upper_case_vietnamese_letters_lower_to_their_own_small_letters():
    tokenizer = CaptionTokenizer()
    assert tokenizer.words("ĐÁ BÓNG Ở SÂN VẬN ĐỘNG") == ["đá", "bóng", "ở", "sân", "vận", "động"]


def test_val_captions_decode_to_their_words(tokenizer, vi_references):
    known = unknown = 0
    for captions in vi_references["val"].values():
        for caption in captions:
            words = tokenizer.words(caption)[:30]
            decoded = tokenizer.decode(tokenizer.encode([caption])[0])
            if all(word in tokenizer.word_index for word in words):
                assert decoded == " ".join(words)
                known += 1
            else:
                unknown += 1
    assert known > 10 * unknown  # most val captions use only words seen in train


def test_vocabulary_round_trips_through_the_tokenizer_file(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.pickle"
    tokenizer.save(path)
    loaded = load_tokenizer(path)
    assert loaded.word_index == tokenizer.word_index
    assert "người" in loaded.word_index and "đàn" in loaded.word_index
