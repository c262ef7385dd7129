"""`load_tokenizer`: a tokenizer file of this package, or an earlier Keras tokenizer pickle."""

from captioning.text.legacy_state import LEGACY_GLOBALS, read_keras_state
from captioning.text.safe_pickle import RefusedGlobal, read_bytes, unpickle
from captioning.text.tokenizer import CaptionTokenizer
from captioning.text.tokenizer_file import (
    KERAS_TOKENIZER,
    MAX_TOKENIZER_BYTES,
    TOKENIZER_REASON,
    read_tokenizer_dict,
)

__all__ = ["load_tokenizer"]


def load_tokenizer(path):
    """Loads a tokenizer saved by `CaptionTokenizer.save`, or a legacy Keras tokenizer pickle.

    The file is read through a restricted unpickler. A tokenizer saved here names no global at
    all, so any global is refused. A pickle whose first global is
    `keras_preprocessing.text.Tokenizer` is read as a legacy Keras tokenizer: that class is
    replaced by a holder that only keeps the pickled attributes, and only
    `collections.OrderedDict()`, `collections.defaultdict(int)` and `builtins.int` (as that
    factory) are allowed beside it, as the stand-ins of what Keras pickled. `keras_preprocessing`
    need not be installed. Everything loaded is then checked to be plain values in the
    expected structure.

    A legacy tokenizer keeps the Keras vocabulary exactly (`word_index`, `index_word`,
    `num_words`, `oov_token`, `lower`, `filters`); its markers are found in the vocabulary
    (`<start>`/`<end>`, else `<sos>`/`<eos>`, else `ssss`/`eeee`), and its `vocab_size` is
    `num_words` where that is below the vocabulary's size.

    Args:
        path: path of the pickle.

    Returns:
        A `CaptionTokenizer`.

    Raises:
        UnsafeFileError: the file names a global it must not (the message names the file and
            the global), misuses an allowed one, or holds anything but plain values.
        ConfigError: the file is missing, no regular file, larger than `MAX_TOKENIZER_BYTES`,
            empty, truncated, corrupt, or not a tokenizer.

    Example:

    ```python
    tokenizer = load_tokenizer("tokenizer/tokenizer.pickle")
    tokenizer.decode(model_output_ids)
    ```
    """
    data, source = read_bytes(path, "tokenizer", MAX_TOKENIZER_BYTES)
    try:
        obj = unpickle(data, source, {}, TOKENIZER_REASON)
    except RefusedGlobal as refusal:
        if refusal.global_name != KERAS_TOKENIZER:
            raise
        holder = unpickle(data, source, LEGACY_GLOBALS, TOKENIZER_REASON)
        state = read_keras_state(holder, source)
    else:
        state = read_tokenizer_dict(obj, source)
    return CaptionTokenizer._from_state(state, source)
