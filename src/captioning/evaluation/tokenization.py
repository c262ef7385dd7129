"""Captions to scorer tokens in Python, for captions the Java tools would mangle.

`coco_scores` tokenizes captions with pycocoevalcap's Stanford PTB tokenizer (Java), as the
COCO evaluation does, and METEOR re-tokenizes them with its English normaliser (`-norm`).
Measured on the Vietnamese captions of `vi_photos` (13,199 captions):

- the PTB tokenizer keeps Vietnamese words whole and lower-cases them right, but it passes
  decomposed (NFD) text through as it is, so "ờ" written as "o" + two combining marks never
  matches the one code point "ờ" that the caption tokenizer produces, and it drops some
  symbols such as emoji;
- METEOR's `-norm` cuts a word at many letters outside Latin-1 ("ơ", "ư", "ế", "ả", Greek,
  CJK, combining marks), so "vợt" (racket) and "vọt" (to spurt) become "v ợ t" and "v ọ t"
  and share two of their three pieces: a caption with every word wrong still earned a
  METEOR of 0.3.

So captions that hold any letter or mark beyond U+00FF are tokenized here instead
(`python_tokenize`) and METEOR reads those tokens without `-norm`; the scores then say
`"tokenizer": "python"`. On the `vi_photos` captions these tokens are the PTB tokenizer's
(BLEU, ROUGE-L and CIDEr are the same), and only METEOR changes. English captions keep the
PTB tokenizer (`"tokenizer": "ptb"`), so their scores stay comparable with published ones.
"""

from __future__ import annotations

import unicodedata

from captioning.text.cleaning import INVISIBLE_SEPARATORS, normalize_text

PTB, PYTHON = "ptb", "python"
TOKENIZERS = ("auto", PTB, PYTHON)
"""`coco_scores(tokenizer=...)`: `auto` picks `python` for captions `needs_python_tokens`."""

_LAST_LATIN_1 = 0xFF
_SEPARATORS = str.maketrans({char: " " for char in INVISIBLE_SEPARATORS})


def needs_python_tokens(*captions_for_image) -> bool:
    """Whether any caption holds a letter or mark beyond Latin-1 (U+00FF), which the Java
    tokenizers may mangle (see the module docstring).

    Args:
        *captions_for_image: dicts from image id to a list of captions.
    """
    for captions in captions_for_image:
        for group in captions.values():
            for caption in group:
                if any(ord(char) > _LAST_LATIN_1 and unicodedata.category(char)[0] in "LM"
                       for char in caption):
                    return True
    return False


def python_tokens(caption: str) -> list[str]:
    """The scorer tokens of one caption, as `python_tokenize` makes them.

    Example:

    ```python
    python_tokens("Một người đàn ông, đang chơi QUẦN VỢT.")
    # ['một', 'người', 'đàn', 'ông', 'đang', 'chơi', 'quần', 'vợt']
    ```
    """
    tokens = []
    for token in normalize_text(caption, lower=True).translate(_SEPARATORS).split():
        token = _strip_punctuation(token)
        if token:
            tokens.append(token)
    return tokens


def python_tokenize(captions_for_image: dict) -> dict:
    """Tokenizes captions in Python, for the scorers.

    Each caption is put in Unicode NFC form and lower-cased, split at whitespace (and the
    zero width space), and each token loses the punctuation at its ends ("sân." -> "sân");
    tokens of punctuation only ("." or "--", which the PTB tokenizer's output also drops)
    are left out. Punctuation inside a token stays ("well-known", "3.5").

    Args:
        captions_for_image: dict from image id to a list of caption strings.

    Returns:
        A dict with the same keys, each mapped to its captions as space-joined tokens.
    """
    return {image: [" ".join(python_tokens(caption)) for caption in captions]
            for image, captions in captions_for_image.items()}


def _strip_punctuation(token: str) -> str:
    start, stop = 0, len(token)
    while start < stop and unicodedata.category(token[start]).startswith("P"):
        start += 1
    while stop > start and unicodedata.category(token[stop - 1]).startswith("P"):
        stop -= 1
    return token[start:stop]
