"""Caption text to words: the cleaning `CaptionTokenizer` applies before any lookup."""

import functools
import re

from captioning.errors import ConfigError
from captioning.text.safe_pickle import shorten

ARTICLES = frozenset({"a", "an", "the"})


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


def caption_words(text, markers, *, lower, filters, remove_articles, split=None):
    """The cleaned words of one caption, without its markers.

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
    markers = tuple(markers)
    if lower:
        text = text.lower()
        markers = tuple(marker.lower() for marker in markers)
    table = _filter_table(filters, split or " ")
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
