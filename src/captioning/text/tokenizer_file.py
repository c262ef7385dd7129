"""The tokenizer file: what a saved `CaptionTokenizer` holds, its checks, and its writing.

A tokenizer is saved as a pickle (protocol 4) of one dict of plain Python values only (dict,
list, str, int, float, bool, None), so it names no global at all and `load_tokenizer` can
refuse every one:

| key | value |
| --- | --- |
| `format` | `FORMAT_NAME`, `"captioning.tokenizer"` |
| `version` | `FORMAT_VERSION`, 1 |
| `config` | the constructor arguments, exactly the keys of `CONFIG_KEYS` |
| `word_index` | word -> id, ids 1..N without gaps, in id order |
| `word_counts` | word -> count in the fitted captions |
| `legacy` | None, or how a converted Keras tokenizer split text (`LEGACY_KEYS`) |

`read_tokenizer_dict` checks such a dict and returns its `TokenizerState`; the reader of the
earlier Keras pickles (`captioning.text.legacy_state`) returns the same.
"""

import os
import pickle
from typing import NamedTuple

from captioning.errors import ConfigError
from captioning.text.safe_pickle import PLAIN_DESCRIPTION, shorten, walk_plain
from captioning.utils.files import atomic_write

FORMAT_NAME = "captioning.tokenizer"
FORMAT_VERSION = 1

CONFIG_KEYS = (
    "lower",
    "filters",
    "remove_articles",
    "start_token",
    "end_token",
    "oov_token",
    "max_length",
    "long_captions",
    "min_count",
    "num_words",
)
KERAS_TOKENIZER = "keras_preprocessing.text.Tokenizer"
LEGACY_KEYS = frozenset({"source", "split", "document_count"})

MAX_TOKENIZER_BYTES = 8 * 2**20
"""The largest tokenizer file read: unpickling takes up to ~90x a pickle's size in memory,
and the largest genuine tokenizers (a Keras one fitted on COCO) are about 1 MB."""
MAX_NESTING = 16
"""How deep a tokenizer file nests containers at most (a genuine one: 3 levels)."""
MAX_INT_BITS = 64
"""The largest integer a tokenizer file holds (ids and counts)."""

_DICT_KEYS = frozenset({"format", "version", "config", "word_index", "word_counts", "legacy"})
_REQUIRED_DICT_KEYS = _DICT_KEYS - {"legacy"}

TOKENIZER_REASON = (
    f"a tokenizer pickle holds {PLAIN_DESCRIPTION}; a legacy Keras tokenizer may also name "
    "keras_preprocessing.text.Tokenizer, collections.OrderedDict, collections.defaultdict and "
    "builtins.int. Unpickling anything else could run code. Only load tokenizers from a source "
    "you trust, or rebuild the tokenizer from the captions with CaptionTokenizer().fit(...)"
)
"""Why a tokenizer file may hold nothing else; ends every refusal of one."""


class TokenizerState(NamedTuple):
    """What a tokenizer file holds, before it becomes a `CaptionTokenizer`.

    Attributes:
        config: the constructor arguments (the keys of `CONFIG_KEYS`).
        word_index: word -> id.
        word_counts: word -> count.
        legacy: None, or the `LEGACY_KEYS` of a converted Keras tokenizer.
    """

    config: dict
    word_index: dict
    word_counts: dict
    legacy: dict | None


def check_plain(obj, source):
    """Refuses anything in `obj` but plain values, containers nested more than `MAX_NESTING`
    deep and integers over `MAX_INT_BITS` bits, naming `source` and `TOKENIZER_REASON`."""
    walk_plain(obj, source, TOKENIZER_REASON, max_depth=MAX_NESTING, max_int_bits=MAX_INT_BITS)


def listed(values, most: int = 5) -> str:
    """Up to `most` values, shortened, for a message: `'a', 'b', ... (12 in all)`."""
    shown = sorted(map(shorten, values))
    text = ", ".join(shown[:most])
    return text + (f", ... ({len(shown)} in all)" if len(shown) > most else "")


def read_tokenizer_dict(d, source):
    """Checks a tokenizer dict (see the module docstring) and returns its `TokenizerState`.

    The vocabulary itself is checked when the tokenizer is built (`check_word_index`,
    `check_counts`).

    Args:
        d: the unpickled object.
        source: the file's name (or `"The tokenizer dict"`), for error messages.

    Raises:
        UnsafeFileError: `d` holds something other than plain values.
        ConfigError: `d` is not a tokenizer dict of this format version.
    """
    check_plain(d, source)
    if type(d) is not dict:
        raise ConfigError(
            f"{source} holds a {type(d).__name__}, not a tokenizer dict; it is not a "
            "captioning tokenizer."
        )
    if d.get("format") != FORMAT_NAME:
        raise ConfigError(
            f"{source} is not a captioning tokenizer: its format is {shorten(d.get('format'))}"
            f", not {FORMAT_NAME!r}."
        )
    version = d.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ConfigError(
            f"{source} is in tokenizer format version {shorten(version)}; this version of "
            f"captioning reads version {FORMAT_VERSION}. Upgrade captioning, or re-create "
            "the tokenizer."
        )
    missing = sorted(_REQUIRED_DICT_KEYS - d.keys())
    unknown = d.keys() - _DICT_KEYS
    if missing or unknown:
        raise ConfigError(
            f"{source} does not have the structure of a tokenizer (missing keys: "
            f"{missing or 'none'}; unexpected keys: {listed(unknown) or 'none'})."
        )
    config = d["config"]
    if type(config) is not dict or set(config) != set(CONFIG_KEYS):
        raise ConfigError(
            f"{source} has a config of {shorten(config)}; expected a dict with exactly the "
            f"keys {list(CONFIG_KEYS)}."
        )
    legacy = d.get("legacy")
    if legacy is not None:
        legacy = _check_legacy(legacy, source)
    return TokenizerState(config, d["word_index"], d["word_counts"], legacy)


def _check_legacy(legacy, source):
    if (
        type(legacy) is not dict
        or set(legacy) != LEGACY_KEYS
        or legacy["source"] != KERAS_TOKENIZER
        or type(legacy["split"]) is not str
        or not legacy["split"]
        or type(legacy["document_count"]) is not int
        or legacy["document_count"] < 0
    ):
        raise ConfigError(
            f"{source} has a legacy section of {shorten(legacy)}; expected "
            f"{{'source': {KERAS_TOKENIZER!r}, 'split': <str>, 'document_count': <int>}}."
        )
    return dict(legacy)


def check_word_index(word_index, source):
    """Checks that ids are 1..N for N distinct non-empty words; returns a copy ordered by id."""
    if type(word_index) is not dict:
        raise ConfigError(f"{source}: word_index is {shorten(word_index)}, not a dict.")
    for word, index in word_index.items():
        if type(word) is not str or not word or type(index) is not int or index < 1:
            raise ConfigError(
                f"{source}: word_index maps {shorten(word)} to {shorten(index)}; it must map "
                "non-empty words to ids from 1."
            )
    ordered = sorted(word_index.items(), key=lambda item: item[1])
    if [index for _, index in ordered] != list(range(1, len(ordered) + 1)):
        raise ConfigError(
            f"{source}: the ids in word_index are not 1..{len(ordered)} without gaps or repeats."
        )
    return dict(ordered)


def check_counts(counts, name, source, key_type):
    """Checks that `counts` maps `key_type` keys to ints >= 0; returns a copy."""
    if type(counts) is not dict:
        raise ConfigError(f"{source}: {name} is {shorten(counts)}, not a dict.")
    for key, count in counts.items():
        if type(key) is not key_type or type(count) is not int or count < 0:
            raise ConfigError(
                f"{source}: {name} maps {shorten(key)} to {shorten(count)}; it must map "
                f"{key_type.__name__} keys to counts >= 0."
            )
    return dict(counts)


def write_tokenizer_dict(path, d):
    """Writes a tokenizer dict as a protocol-4 pickle, whole or not at all.

    Parent directories are created.

    Raises:
        ConfigError: the file cannot be written (the message names it).
    """
    path = os.fspath(path)
    data = pickle.dumps(d, protocol=4)
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"Cannot write the tokenizer to {path}: {error.strerror or error}."
        ) from None
    atomic_write(path, lambda tmp: tmp.write_bytes(data), error=ConfigError,
                 again="save the tokenizer again")
