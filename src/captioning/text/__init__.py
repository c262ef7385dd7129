"""Caption text: the tokenizer, its safe file format, the earlier Keras tokenizer pickles and
the Java-free caption scores.

- `safe_pickle`: the restricted unpickler (`safe_load_pickle`), the only pickle reader.
- `cleaning`: caption text to words.
- `tokenizer`: `CaptionTokenizer`, words to ids and back.
- `tokenizer_file`: the saved format (`FORMAT_NAME`, `FORMAT_VERSION`) and its checks.
- `legacy_state`: the `keras_preprocessing` Tokenizer pickles of earlier projects.
- `load`: `load_tokenizer`, for either kind of file.
- `scores`: `bleu4`, the Java-free corpus BLEU-4 used during training.
- `cider`: `CiderD`, the vectorised CIDEr-D (pycocoevalcap's), SCST's reward.
"""

from captioning.config import DEFAULT_FILTERS, LONG_CAPTION_POLICIES  # noqa: F401
from captioning.text.cider import CiderD
from captioning.text.load import load_tokenizer
from captioning.text.safe_pickle import safe_load_pickle
from captioning.text.scores import bleu4
from captioning.text.tokenizer import CaptionTokenizer
from captioning.text.tokenizer_file import FORMAT_NAME, FORMAT_VERSION

__all__ = [
    "CaptionTokenizer",
    "CiderD",
    "DEFAULT_FILTERS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LONG_CAPTION_POLICIES",
    "bleu4",
    "load_tokenizer",
    "safe_load_pickle",
]
