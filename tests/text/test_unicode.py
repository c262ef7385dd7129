"""Captions in any script: NFC normalisation, Unicode lower-casing, invisible separators."""

import unicodedata

import pytest

from captioning.text import CaptionTokenizer
from captioning.text.cleaning import normalize_text

CAPTION = "Một người đàn ông đang chơi quần vợt"


def test_decomposed_caption_encodes_like_the_composed_one():
    tokenizer = CaptionTokenizer().fit([CAPTION])
    decomposed = unicodedata.normalize("NFD", CAPTION)
    assert decomposed != CAPTION
    assert tokenizer.encode([decomposed]) == tokenizer.encode([CAPTION])
    assert tokenizer.words(decomposed) == CAPTION.lower().split()


def test_upper_case_letters_of_other_scripts_lower_case():
    tokenizer = CaptionTokenizer()
    assert tokenizer.words("ĐÁ BÓNG Ở SÂN") == ["đá", "bóng", "ở", "sân"]
    assert tokenizer.words("ΣΚΎΛΟΣ ΤΡΈΧΕΙ") == ["σκύλος", "τρέχει"]
    assert tokenizer.words("СОБАКА БЕЖИТ") == ["собака", "бежит"]


def test_lower_case_result_is_nfc_again():
    # "İ".lower() is "i" + U+0307, which has no composed form: still NFC, one word.
    assert normalize_text("İSTANBUL", lower=True) == unicodedata.normalize(
        "NFC", "i\u0307stanbul")
    assert CaptionTokenizer().words("İSTANBUL") == ["i\u0307stanbul"]


@pytest.mark.parametrize("separator", ["\u200b", "\ufeff"])
def test_invisible_separators_split_words(separator):
    assert CaptionTokenizer().words(f"lên{separator}trời") == ["lên", "trời"]


def test_no_lower_keeps_case_but_still_normalises():
    tokenizer = CaptionTokenizer(lower=False)
    assert tokenizer.words(unicodedata.normalize("NFD", "Đá Bóng")) == ["Đá", "Bóng"]


def test_default_filters_keep_non_ascii_punctuation_and_every_letter():
    words = CaptionTokenizer().words("Chó «vui» chạy… (nhanh), giỏi!")
    assert words == ["chó", "«vui»", "chạy…", "nhanh", "giỏi"]
