"""Caption text: the tokenizer, its safe file format and the earlier Keras tokenizer pickles."""

from captioning.text.tokenizer import (  # noqa: F401
    DEFAULT_FILTERS,
    FORMAT_NAME,
    FORMAT_VERSION,
    CaptionTokenizer,
    load_tokenizer,
    safe_load_pickle,
)

__all__ = [
    "CaptionTokenizer",
    "DEFAULT_FILTERS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "load_tokenizer",
    "safe_load_pickle",
]
