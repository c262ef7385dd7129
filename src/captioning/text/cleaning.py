"""Caption text to words: the cleaning `CaptionTokenizer` applies before any lookup.

Any language goes through unchanged but for what the settings ask: a caption is first put in
Unicode NFC form (so "ờ" typed as "o" + two combining marks and "ờ" as one code point are one
word), lower-cased with Python's full Unicode case mapping when `lower` ("ĐÁ" -> "đá"), and
then split into words at whitespace, the `filters` characters and the invisible separators
U+200B (zero width space) and U+FEFF (a stray byte order mark), which `str.split` keeps
inside words.
"""

import functools
import re
import unicodedata

from captioning.errors import ConfigError
from captioning.text.safe_pickle import shorten

ARTICLES = frozenset({"a", "an", "the"})
# Invisible characters that separate words but are not whitespace to `str.split`.
INVISIBLE_SEPARATORS = "\u200b\ufeff"


def as_texts(texts):
    """Returns `texts` as a list, refusing a single string where a list of captions belongs."""
    if isinstance(texts, (str, bytes)):
        raise ConfigError(
            f"`texts` must be a list of captions, not a single string; got {shorten(texts)}. "
            "Wrap one caption in a list."
        )
    try:
        return list(texts)
    except TypeError:
        raise ConfigError(
            f"`texts` must be a list of caption strings; got {shorten(texts)}."
        ) from None


def check_caption(text):
    """Refuses a caption that is not a string."""
    if not isinstance(text, str):
        raise ConfigError(f"A caption must be a string; got {shorten(text)}.")


def normalize_text(text, *, lower):
    """`text` in Unicode NFC form, lower-cased when `lower` (full Unicode case mapping).

    Lower-casing can leave a decomposed sequence ("İ" -> "i" + U+0307), so the result is
    put in NFC form again.

    Example:

    ```python
    normalize_text("Ngu\u031bo\u031b\u0300i", lower=True)   # 'người' (one code point each)
    ```
    """
    text = unicodedata.normalize("NFC", text)
    if lower:
        text = unicodedata.normalize("NFC", text.lower())
    return text


def caption_words(text, markers, *, lower, filters, remove_articles, split=None):
    """The cleaned words of one caption, without its markers.

    The caption is put in NFC form and lower-cased (`normalize_text`), then split into
    words at whitespace, at `filters` characters and at `INVISIBLE_SEPARATORS`.

    Args:
        text: one caption string.
        markers: the start and end markers, kept whole by the filters and left out wherever
            they stand as words of their own.
        lower: lower-case the caption (and the markers) first.
        filters: characters that separate words like spaces do.
        remove_articles: drop "a", "an" and "the" (in any case).
        split: None to split on any whitespace, or the one separator of a Keras tokenizer.

    Returns:
        A list of words.

    Example:

    ```python
    caption_words("<start> A dog, running. <end>", ("<start>", "<end>"), lower=True,
                  filters=".,", remove_articles=True)   # ['dog', 'running']
    ```
    """
    check_caption(text)
    text = normalize_text(text, lower=lower)
    markers = tuple(normalize_text(marker, lower=lower) for marker in markers)
    table = _filter_table(filters + INVISIBLE_SEPARATORS, split or " ")
    words = []
    for piece in _marker_pattern(markers).split(text):
        piece = piece.translate(table)
        words.extend(piece.split() if split is None else filter(None, piece.split(split)))
    words = [word for word in words if word not in markers]
    if remove_articles:
        words = [word for word in words if word.lower() not in ARTICLES]
    return words


def _is_word_char(char):
    return re.match(r"\w", char) is not None


@functools.lru_cache(maxsize=64)
def _marker_pattern(markers):
    """A regex matching any marker as a token of its own, never inside a longer word."""
    parts = []
    for marker in sorted(set(markers), key=len, reverse=True):
        part = re.escape(marker)
        if _is_word_char(marker[0]):
            part = r"(?<!\w)" + part
        if _is_word_char(marker[-1]):
            part += r"(?!\w)"
        parts.append(part)
    return re.compile("|".join(parts))


@functools.lru_cache(maxsize=64)
def _filter_table(filters, split):
    return str.maketrans({char: split for char in filters})
