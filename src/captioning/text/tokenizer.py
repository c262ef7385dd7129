"""Caption text to token ids and back, and tokenizer files that are safe to load.

`CaptionTokenizer` cleans caption text (lower-casing, filtered characters, optional removal of
articles), builds a vocabulary from training captions, and turns captions into the id
sequences a decoder is trained on, with start and end markers around every caption. The id
layout of a tokenizer fitted here is fixed:

| id | meaning |
| --- | --- |
| 0 | padding (`pad_id`) |
| 1 | `oov_token`, for every word outside the vocabulary (`oov_id`) |
| 2 | `start_token` (`start_id`) |
| 3 | `end_token` (`end_id`) |
| 4, 5, ... | caption words by descending count, ties in alphabetical order |

A tokenizer is saved as a pickle of plain Python values only (dict, list, str, int, float,
bool, None) and loaded by `load_tokenizer` through a restricted unpickler that refuses every
global the file names, before anything runs. `load_tokenizer` also reads the pickled
`keras_preprocessing.text.Tokenizer` objects that earlier Keras captioning projects released,
without `keras_preprocessing` installed: that one class name is mapped to a holder that only
keeps the pickled state, and the state is checked and turned into a `CaptionTokenizer` that
keeps the Keras vocabulary, ids and semantics (ids at or beyond `num_words` read as the
out-of-vocabulary id).

Example:

```python
tokenizer = CaptionTokenizer(max_length=20).fit(["A dog runs.", "Two dogs play."])
tokenizer.encode(["a dog plays"])          # [[2, 4, 5, 1, 3]]
tokenizer.decode([2, 4, 5, 1, 3, 0, 0])    # 'a dog <unk>'
tokenizer.save("tokenizer/tokenizer.pickle")
tokenizer = load_tokenizer("tokenizer/tokenizer.pickle")
```
"""

import collections
import collections.abc
import functools
import io
import os
import pickle
import re

import numpy as np

from captioning.config import DEFAULT_FILTERS
from captioning.errors import CaptioningError, ConfigError, UnsafeFileError

__all__ = [
    "DEFAULT_FILTERS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CaptionTokenizer",
    "load_tokenizer",
    "safe_load_pickle",
]


FORMAT_NAME = "captioning.tokenizer"
FORMAT_VERSION = 1

LONG_CAPTION_POLICIES = ("truncate", "drop")
ARTICLES = frozenset({"a", "an", "the"})
MARKER_PAIRS = (("<start>", "<end>"), ("<sos>", "<eos>"), ("ssss", "eeee"))
"""Start/end marker pairs recognised in a legacy Keras vocabulary, in order of preference."""

PAD_ID = 0

_CONFIG_KEYS = (
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
_DICT_KEYS = frozenset({"format", "version", "config", "word_index", "word_counts", "legacy"})
_REQUIRED_DICT_KEYS = _DICT_KEYS - {"legacy"}

_KERAS_TOKENIZER = "keras_preprocessing.text.Tokenizer"
_KERAS_REQUIRED_STATE = frozenset({"word_index", "num_words", "oov_token", "filters", "lower"})
_KERAS_KNOWN_STATE = _KERAS_REQUIRED_STATE | {
    "word_counts",
    "word_docs",
    "index_docs",
    "index_word",
    "split",
    "char_level",
    "document_count",
    "analyzer",
}
_LEGACY_KEYS = frozenset({"source", "split", "document_count"})

_PLAIN_TYPES = (dict, list, str, int, float, bool, type(None))
_PLAIN_DESCRIPTION = "plain values only (dict, list, str, int, float, bool, None)"
_TOKENIZER_REASON = (
    f"a tokenizer pickle holds {_PLAIN_DESCRIPTION}; a legacy Keras tokenizer may also name "
    "keras_preprocessing.text.Tokenizer, collections.OrderedDict, collections.defaultdict and "
    "builtins.int. Unpickling anything else could run code. Only load tokenizers from a source "
    "you trust, or rebuild the tokenizer from the captions with CaptionTokenizer().fit(...)"
)


# ---------------------------------------------------------------------------------------------
# Restricted unpickling.


class _RefusedGlobal(UnsafeFileError):
    """A pickle named a global that is not allowed; raised by `find_class`."""

    def __init__(self, message, global_name):
        super().__init__(message)
        self.global_name = global_name


class _Abuse(Exception):
    """An allowed global was used in a way a genuine file never uses it."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `allowed`, and refuses every other one."""

    def __init__(self, file, source, allowed, reason):
        super().__init__(file)
        self._source = source
        self._allowed = allowed
        self._reason = reason

    def find_class(self, module, name):
        global_name = f"{module}.{name}"
        if global_name in self._allowed:
            return self._allowed[global_name]
        shown = global_name
        if not shown.isprintable() or len(shown) > 120:
            shown = ascii(shown[:120])
        raise _RefusedGlobal(
            f"{self._source} names {shown}; refusing to load it: {self._reason}.", global_name
        )

    def persistent_load(self, pid):
        raise _Abuse("uses a persistent id, which no supported file does")


def _generic_reason(allowed):
    reason = f"this pickle may hold {_PLAIN_DESCRIPTION}"
    if allowed:
        reason += " and " + ", ".join(sorted(allowed))
    return reason + "; unpickling anything else could run code"


def _read_bytes(file_or_path, what):
    """Returns `(data, source)` for a path or a binary file object."""
    if hasattr(file_or_path, "read"):
        source = str(getattr(file_or_path, "name", "<file object>"))
        try:
            data = file_or_path.read()
        except OSError as error:
            raise ConfigError(f"Cannot read {what} {source}: {error}.") from error
        if not isinstance(data, (bytes, bytearray)):
            raise ConfigError(
                f"{what.capitalize()} {source} is open in text mode; open it with mode 'rb'."
            )
        return bytes(data), source
    if not isinstance(file_or_path, (str, os.PathLike)):
        raise ConfigError(
            f"Expected a path or a binary file object for the {what}; got {file_or_path!r}."
        )
    source = os.fspath(file_or_path)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    try:
        with open(source, "rb") as file:
            return file.read(), source
    except FileNotFoundError:
        raise ConfigError(f"No {what} at {source}: the file does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"{source} is a directory, not a {what} file.") from None
    except OSError as error:
        raise ConfigError(f"Cannot read {what} {source}: {error.strerror or error}.") from None


def _unpickle(data, source, allowed, reason):
    """Unpickles `data` with only `allowed` globals; every failure names `source`."""
    if not data:
        raise ConfigError(f"{source} is empty; it is not a pickle (was the file written fully?).")
    stream = io.BytesIO(data)
    unpickler = _RestrictedUnpickler(stream, source, allowed, reason)
    try:
        obj = unpickler.load()
    except CaptioningError:
        raise
    except _Abuse as abuse:
        raise UnsafeFileError(f"{source} {abuse}; refusing to load it: {reason}.") from None
    except RecursionError:
        raise UnsafeFileError(f"{source} is nested too deeply to be a genuine file.") from None
    except Exception as error:
        raise ConfigError(
            f"{source} is not a readable pickle ({type(error).__name__}: {error}); it is "
            "truncated, corrupt or not a pickle at all."
        ) from None
    trailing = len(data) - stream.tell()
    if trailing:
        raise ConfigError(
            f"{source} has {trailing} unexpected byte(s) after the end of its pickle; it is "
            "corrupt or was tampered with."
        )
    return obj


def safe_load_pickle(file_or_path, allowed=None):
    """Loads a pickle that may only name the globals in `allowed`.

    Every global (class, function, module attribute) the pickle names is looked up in
    `allowed`; any other global is refused with `UnsafeFileError` when the unpickler meets it,
    before it is called, so a pickle that would run `os.system`, `eval` or `subprocess.Popen`
    runs nothing. With no `allowed` globals a pickle can only build plain values: dict, list,
    tuple, set, str, bytes, int, float, bool and None. The caller checks the structure of what
    comes back.

    Args:
        file_or_path: path of the pickle, or a binary file object open for reading.
        allowed: optional mapping from a global's full name (`"module.qualname"`, e.g.
            `"collections.OrderedDict"`) to the object the unpickler gets for it. Hand it
            harmless stand-ins rather than the real callables where the real ones could be
            misused with arguments a genuine file never passes.

    Returns:
        The unpickled object.

    Raises:
        UnsafeFileError: the pickle names a global outside `allowed` (the message names the
            file and the global), or misuses an allowed one.
        ConfigError: the file is missing, empty, truncated, corrupt or not a pickle.

    Example:

    ```python
    values = safe_load_pickle("stats.pickle")   # plain values only
    ```
    """
    if allowed is None:
        allowed = {}
    if not isinstance(allowed, collections.abc.Mapping) or not all(
        isinstance(name, str) for name in allowed
    ):
        raise ConfigError(
            "`allowed` must map full global names such as 'collections.OrderedDict' to "
            f"objects; got {allowed!r}."
        )
    data, source = _read_bytes(file_or_path, "pickle")
    return _unpickle(data, source, dict(allowed), _generic_reason(allowed))


def _walk_plain(obj, source):
    """Refuses any object in the graph of `obj` that is not a plain value.

    Walks iteratively, so deep nesting cannot exhaust the stack; shared and cyclic containers
    are visited once.
    """
    seen = set()
    stack = [(obj, "")]
    while stack:
        value, path = stack.pop()
        if type(value) not in _PLAIN_TYPES:
            kind = type(value)
            where = f" at {path}" if path else ""
            raise UnsafeFileError(
                f"{source} holds a {kind.__module__}.{kind.__qualname__} object{where}; "
                f"refusing to load it: {_TOKENIZER_REASON}."
            )
        if type(value) not in (dict, list) or id(value) in seen:
            continue
        seen.add(id(value))
        items = value.items() if type(value) is dict else enumerate(value)
        for key, item in items:
            if type(key) not in _PLAIN_TYPES:
                stack.append((key, f"{path}[key {_short(key)}]"))
            if type(item) in (dict, list) or type(item) not in _PLAIN_TYPES:
                stack.append((item, f"{path}[{_short(key)}]"))


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------------
# Stand-ins for the four globals a legacy Keras tokenizer pickle names.


class _KerasTokenizerState:
    """Stands in for `keras_preprocessing.text.Tokenizer` while unpickling: keeps the state."""

    __slots__ = ("state",)

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise _Abuse(
                "creates keras_preprocessing.text.Tokenizer with arguments, which pickled "
                "Keras tokenizers never do"
            )
        instance = super().__new__(cls)
        instance.state = None
        return instance

    def __setstate__(self, state):
        if self.state is not None:
            raise _Abuse("sets the state of a keras_preprocessing.text.Tokenizer twice")
        if type(state) is not dict:
            raise _Abuse(
                "gives a keras_preprocessing.text.Tokenizer a state that is a "
                f"{type(state).__name__}, not a dict of attributes"
            )
        self.state = state


class _LegacyIntFactory:
    """Stands in for `builtins.int`, which a legacy pickle may only use as a defaultdict factory."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise _Abuse("calls builtins.int, which pickled Keras tokenizers never do")


_LEGACY_INT = _LegacyIntFactory()


def _legacy_ordered_dict(*args):
    if args:
        raise _Abuse(
            "creates collections.OrderedDict with arguments, which pickled Keras tokenizers "
            "never do"
        )
    return {}


def _legacy_defaultdict(*args):
    if len(args) != 1 or args[0] is not _LEGACY_INT:
        raise _Abuse(
            "creates collections.defaultdict with arguments other than the factory "
            "builtins.int, which pickled Keras tokenizers never do"
        )
    return {}


_LEGACY_GLOBALS = {
    _KERAS_TOKENIZER: _KerasTokenizerState,
    "collections.OrderedDict": _legacy_ordered_dict,
    "collections.defaultdict": _legacy_defaultdict,
    "builtins.int": _LEGACY_INT,
}


# ---------------------------------------------------------------------------------------------
# Argument checks.


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}` must be True or False; got {value!r}.")


def _check_int(name, value, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ConfigError(f"`{name}` must be {expected}; got {value!r}.")


def _check_token(name, value):
    if not isinstance(value, str) or not value or any(char.isspace() for char in value):
        raise ConfigError(
            f"`{name}` must be a non-empty string without whitespace; got {value!r}."
        )


def _as_texts(texts):
    if isinstance(texts, (str, bytes)):
        raise ConfigError(
            f"`texts` must be a list of captions, not a single string; got {_short(texts)}. "
            "Wrap one caption in a list."
        )
    try:
        return list(texts)
    except TypeError:
        raise ConfigError(
            f"`texts` must be a list of caption strings; got {_short(texts)}."
        ) from None


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


# ---------------------------------------------------------------------------------------------
# The tokenizer.


class CaptionTokenizer:
    """Turns captions into token ids for a captioning model, and ids back into captions.

    Cleaning a caption lower-cases it (if `lower`), replaces every character of `filters` by a
    space, splits it on whitespace and, if `remove_articles`, drops the words "a", "an" and
    "the". Start and end markers are never filtered, counted or returned as words: a caption
    that already holds them ("<start> a dog <end>") encodes exactly like one without them.

    Args:
        lower: lower-case captions before anything else.
        filters: characters replaced by spaces. The default keeps `<` and `>`.
        remove_articles: drop the words "a", "an" and "the" (in any case).
        start_token: the marker that starts every encoded caption, e.g. `"<start>"`,
            `"<sos>"` or `"ssss"`.
        end_token: the marker that ends every encoded caption, e.g. `"<end>"`, `"<eos>"` or
            `"eeee"`.
        oov_token: the word that stands for every word outside the vocabulary.
        max_length: the most caption words (markers not counted) to keep, or None for no
            limit.
        long_captions: what `max_length` does to longer captions: `"truncate"` keeps their
            first `max_length` words in `encode`; `"drop"` leaves them whole in `encode` and
            marks them False in `keep_mask`, for the caller to leave out.
        min_count: words seen fewer times than this in `fit` are left out of the vocabulary.
        num_words: if set, caps `vocab_size`: as in Keras, words whose id is `num_words` or more
            stay in `word_index` but encode as `oov_id`. At least 4 (padding, oov, start, end).

    Example:

    ```python
    tokenizer = CaptionTokenizer(num_words=5000).fit(train_captions)
    matrix = tokenizer.to_matrix(train_captions, length=22)   # int32 (N, 22)
    tokenizer.decode(matrix[0])                               # 'a dog runs on the grass'
    ```
    """

    def __init__(
        self,
        *,
        lower=True,
        filters=DEFAULT_FILTERS,
        remove_articles=False,
        start_token="<start>",
        end_token="<end>",
        oov_token="<unk>",
        max_length=None,
        long_captions="truncate",
        min_count=1,
        num_words=None,
    ):
        _check_bool("lower", lower)
        if not isinstance(filters, str):
            raise ConfigError(f"`filters` must be a string of characters; got {filters!r}.")
        _check_bool("remove_articles", remove_articles)
        _check_token("start_token", start_token)
        _check_token("end_token", end_token)
        _check_token("oov_token", oov_token)
        folded = [token.lower() for token in (start_token, end_token, oov_token)]
        if len(set(folded)) != 3:
            raise ConfigError(
                "`start_token`, `end_token` and `oov_token` must differ (ignoring case); got "
                f"{start_token!r}, {end_token!r} and {oov_token!r}."
            )
        _check_int("max_length", max_length, 1, allow_none=True)
        if long_captions not in LONG_CAPTION_POLICIES:
            raise ConfigError(
                f"`long_captions` must be one of {LONG_CAPTION_POLICIES}; got {long_captions!r}."
            )
        _check_int("min_count", min_count, 1)
        _check_int("num_words", num_words, 4, allow_none=True)

        self.lower = lower
        self.filters = filters
        self.remove_articles = remove_articles
        self.start_token = start_token
        self.end_token = end_token
        self.oov_token = oov_token
        self.max_length = None if max_length is None else int(max_length)
        self.long_captions = long_captions
        self.min_count = int(min_count)
        self.num_words = None if num_words is None else int(num_words)
        self._legacy = None
        self._set_vocabulary(self._special_words(), {})

    # -- vocabulary ---------------------------------------------------------------------------

    def _special_words(self):
        return {self.oov_token: 1, self.start_token: 2, self.end_token: 3}

    def _set_vocabulary(self, word_index, word_counts):
        self.word_index = dict(word_index)
        self.index_word = {index: word for word, index in self.word_index.items()}
        self.word_counts = dict(word_counts)

    def fit(self, texts):
        """Builds the vocabulary from caption texts, replacing any earlier one.

        Every cleaned word of every caption is counted (markers and the oov token excluded);
        words seen at least `min_count` times get ids from 4 on, by descending count, ties in
        alphabetical order. A tokenizer read from a Keras pickle becomes an ordinary one.

        Args:
            texts: an iterable of caption strings.

        Returns:
            The tokenizer itself.

        Example:

        ```python
        tokenizer = CaptionTokenizer(min_count=5).fit(captions)
        ```
        """
        texts = _as_texts(texts)
        counts = collections.Counter()
        for text in texts:
            counts.update(self.words(text))
        counts.pop(self.oov_token, None)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        word_index = self._special_words()
        for word, count in ranked:
            if count >= self.min_count:
                word_index[word] = len(word_index) + 1
        self._legacy = None
        self._set_vocabulary(word_index, dict(ranked))
        return self

    @property
    def _split(self):
        return None if self._legacy is None else self._legacy["split"]

    def words(self, text):
        """Returns the cleaned words of one caption, without markers.

        Args:
            text: one caption string.

        Returns:
            A list of words: lower-cased if `lower`, with `filters` removed, articles dropped if
            `remove_articles`, and start/end markers left out wherever they appear.

        Example:

        ```python
        CaptionTokenizer(remove_articles=True).words("<start> A dog, running. <end>")
        # ['dog', 'running']
        ```
        """
        if not isinstance(text, str):
            raise ConfigError(f"A caption must be a string; got {_short(text)}.")
        markers = (self.start_token, self.end_token)
        if self.lower:
            text = text.lower()
            markers = tuple(marker.lower() for marker in markers)
        split = self._split
        table = _filter_table(self.filters, split or " ")
        words = []
        for piece in _marker_pattern(markers).split(text):
            piece = piece.translate(table)
            words.extend(piece.split() if split is None else filter(None, piece.split(split)))
        words = [word for word in words if word not in markers]
        if self.remove_articles:
            words = [word for word in words if word.lower() not in ARTICLES]
        return words

    def _special_id(self, name):
        token = getattr(self, name)
        index = self.word_index.get(token)
        if index is None:
            raise ConfigError(f"The {name} {token!r} is not in the tokenizer's vocabulary.")
        return index

    @property
    def pad_id(self):
        """The padding id: always 0."""
        return PAD_ID

    @property
    def oov_id(self):
        """The id of `oov_token`, which every word outside the vocabulary encodes as."""
        return self._special_id("oov_token")

    @property
    def start_id(self):
        """The id of `start_token`."""
        return self._special_id("start_token")

    @property
    def end_id(self):
        """The id of `end_token`."""
        return self._special_id("end_token")

    @property
    def vocab_size(self):
        """The size of the model's output layer: the largest usable id + 1."""
        size = len(self.word_index) + 1
        return size if self.num_words is None else min(size, self.num_words)

    # -- encoding -----------------------------------------------------------------------------

    def encode(self, texts, add_markers=True):
        """Turns captions into lists of token ids.

        Args:
            texts: a list (or other iterable) of caption strings.
            add_markers: put `start_id` before and `end_id` after every caption.

        Returns:
            One list of ids per caption. Words outside the vocabulary, or whose id is not below
            `vocab_size`, become `oov_id`. With `long_captions="truncate"` only the first
            `max_length` words are kept.

        Example:

        ```python
        tokenizer.encode(["A dog runs."])   # [[2, 4, 9, 3]]
        ```
        """
        texts = _as_texts(texts)
        _check_bool("add_markers", add_markers)
        lookup = self.word_index
        limit = self.vocab_size
        oov_id = self.oov_id
        start, end = ([self.start_id], [self.end_id]) if add_markers else ([], [])
        keep = self.max_length if self.long_captions == "truncate" else None
        sequences = []
        for text in texts:
            words = self.words(text)
            if keep is not None:
                words = words[:keep]
            ids = [lookup.get(word, oov_id) for word in words]
            sequences.append(start + [index if index < limit else oov_id for index in ids] + end)
        return sequences

    def keep_mask(self, texts):
        """Says which captions to keep under `max_length`.

        Args:
            texts: a list (or other iterable) of caption strings.

        Returns:
            A numpy bool array, one entry per caption: False for a caption with more than
            `max_length` words when `long_captions="drop"`, True everywhere else.

        Example:

        ```python
        keep = tokenizer.keep_mask(captions)
        captions = [caption for caption, kept in zip(captions, keep) if kept]
        ```
        """
        texts = _as_texts(texts)
        if self.long_captions != "drop" or self.max_length is None:
            for text in texts:
                if not isinstance(text, str):
                    raise ConfigError(f"A caption must be a string; got {_short(text)}.")
            return np.ones(len(texts), dtype=bool)
        return np.array([len(self.words(text)) <= self.max_length for text in texts], dtype=bool)

    def to_matrix(self, texts, length):
        """Encodes captions with markers into a padded id matrix.

        Args:
            texts: a list (or other iterable) of caption strings.
            length: the number of columns. Shorter sequences are right-padded with `pad_id`,
                longer ones are cut to their first `length` ids.

        Returns:
            A numpy int32 array of shape `(len(texts), length)`.

        Example:

        ```python
        tokenizer.to_matrix(["a dog"], length=6)   # [[2, 4, 5, 3, 0, 0]]
        ```
        """
        _check_int("length", length, 1)
        sequences = self.encode(texts)
        matrix = np.zeros((len(sequences), int(length)), dtype=np.int32)
        for row, sequence in zip(matrix, sequences):
            sequence = sequence[:length]
            row[: len(sequence)] = sequence
        return matrix

    def decode(self, ids):
        """Turns one sequence of ids back into a caption.

        Args:
            ids: a list or 1-D array of token ids, such as a model's output.

        Returns:
            The caption: its words joined by single spaces, skipping `pad_id` and `start_id`
            and stopping at the first `end_id`. Ids outside the usable vocabulary read as
            `oov_token`.

        Example:

        ```python
        tokenizer.decode([2, 4, 9, 3, 0, 0])   # 'dog runs'
        ```
        """
        array = np.asarray(ids)
        if array.ndim != 1:
            raise ConfigError(
                f"`ids` must be one sequence of token ids; got an array of shape {array.shape}."
            )
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"`ids` must be integer token ids; got {_short(ids)}.")
        skip = {PAD_ID, self.start_id}
        end_id = self.end_id
        limit = self.vocab_size
        words = []
        for index in array.tolist():
            if index in skip:
                continue
            if index == end_id:
                break
            word = self.index_word.get(index) if 0 < index < limit else None
            words.append(self.oov_token if word is None else word)
        return " ".join(words)

    # -- serialization ------------------------------------------------------------------------

    def get_config(self):
        """Returns the constructor arguments.

        Returns:
            A dict with every argument of `__init__`, so that
            `CaptionTokenizer(**tokenizer.get_config())` cleans text the same way.
        """
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    def to_dict(self):
        """Returns everything the tokenizer knows as plain values.

        Returns:
            A dict of dict/list/str/int/bool/None only: `format`, `version`, `config`,
            `word_index` (by id), `word_counts` and `legacy` (None, or how a Keras tokenizer
            split text).

        Example:

        ```python
        clone = CaptionTokenizer.from_dict(tokenizer.to_dict())
        ```
        """
        word_index = dict(sorted(self.word_index.items(), key=lambda item: item[1]))
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": self.get_config(),
            "word_index": word_index,
            "word_counts": dict(self.word_counts),
            "legacy": None if self._legacy is None else dict(self._legacy),
        }

    @classmethod
    def from_dict(cls, d):
        """Builds a tokenizer from the output of `to_dict`.

        Args:
            d: a dict as returned by `to_dict`.

        Returns:
            A `CaptionTokenizer`.

        Raises:
            ConfigError: `d` is not a valid tokenizer dict.
            UnsafeFileError: `d` holds something other than plain values.
        """
        return cls._from_plain(d, "The tokenizer dict")

    @classmethod
    def _from_plain(cls, d, source):
        _walk_plain(d, source)
        if type(d) is not dict:
            raise ConfigError(
                f"{source} holds a {type(d).__name__}, not a tokenizer dict; it is not a "
                "captioning tokenizer."
            )
        if d.get("format") != FORMAT_NAME:
            raise ConfigError(
                f"{source} is not a captioning tokenizer: its format is {_short(d.get('format'))}"
                f", not {FORMAT_NAME!r}."
            )
        version = d.get("version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise ConfigError(
                f"{source} is in tokenizer format version {_short(version)}; this version of "
                f"captioning reads version {FORMAT_VERSION}. Upgrade captioning, or re-create "
                "the tokenizer."
            )
        missing = sorted(_REQUIRED_DICT_KEYS - d.keys())
        unknown = sorted(map(repr, d.keys() - _DICT_KEYS))
        if missing or unknown:
            raise ConfigError(
                f"{source} does not have the structure of a tokenizer (missing keys: "
                f"{missing or 'none'}; unexpected keys: {', '.join(unknown) or 'none'})."
            )
        config = d["config"]
        if type(config) is not dict or set(config) != set(_CONFIG_KEYS):
            raise ConfigError(
                f"{source} has a config of {_short(config)}; expected a dict with exactly the "
                f"keys {list(_CONFIG_KEYS)}."
            )
        legacy = d.get("legacy")
        if legacy is not None:
            legacy = _check_legacy(legacy, source)
        return cls._build(config, d["word_index"], d["word_counts"], legacy, source)

    @classmethod
    def _build(cls, config, word_index, word_counts, legacy, source):
        try:
            tokenizer = cls(**config)
        except ConfigError as error:
            raise ConfigError(f"{source} has an invalid tokenizer setting: {error}") from None
        word_index = _check_word_index(word_index, source)
        word_counts = _check_counts(word_counts, "word_counts", source, str)
        tokenizer._legacy = legacy
        tokenizer._set_vocabulary(word_index, word_counts)
        for name in ("oov_token", "start_token", "end_token"):
            token = getattr(tokenizer, name)
            index = word_index.get(token)
            if index is None:
                raise ConfigError(f"{source}: its vocabulary lacks its {name} {token!r}.")
            if index >= tokenizer.vocab_size:
                raise ConfigError(
                    f"{source}: its {name} {token!r} has id {index}, outside the usable ids "
                    f"below vocab_size={tokenizer.vocab_size} (num_words={tokenizer.num_words})."
                )
        return tokenizer

    @classmethod
    def _from_keras_state(cls, holder, source):
        if type(holder) is not _KerasTokenizerState:
            raise UnsafeFileError(
                f"{source} names {_KERAS_TOKENIZER} but holds a {type(holder).__name__} rather "
                f"than one tokenizer; refusing to load it: {_TOKENIZER_REASON}."
            )
        state = holder.state
        if state is None:
            raise ConfigError(f"{source} holds a Keras Tokenizer without its attributes.")
        _walk_plain(state, source)
        missing = sorted(_KERAS_REQUIRED_STATE - state.keys())
        unknown = sorted(map(repr, state.keys() - _KERAS_KNOWN_STATE))
        if missing or unknown:
            raise ConfigError(
                f"{source} holds a Keras Tokenizer with missing attributes {missing or 'none'} "
                f"and unexpected attributes {', '.join(unknown) or 'none'}; it was not written "
                "by keras_preprocessing's Tokenizer."
            )
        if state.get("char_level", False) is not False:
            raise ConfigError(
                f"{source} holds a character-level Keras Tokenizer (char_level="
                f"{_short(state['char_level'])}); captioning needs a word-level one."
            )
        if state.get("analyzer") is not None:
            raise ConfigError(f"{source} holds a Keras Tokenizer with a custom analyzer.")
        split = state.get("split", " ")
        if not isinstance(split, str) or not split:
            raise ConfigError(f"{source} holds a Keras Tokenizer whose split is {_short(split)}.")
        document_count = state.get("document_count", 0)
        if type(document_count) is not int or document_count < 0:
            raise ConfigError(
                f"{source} holds a Keras Tokenizer whose document_count is "
                f"{_short(document_count)}."
            )
        if state["oov_token"] is None:
            raise ConfigError(
                f"{source} holds a Keras Tokenizer without an oov_token; captioning needs one "
                "for words outside the vocabulary. Re-fit the tokenizer with "
                "CaptionTokenizer().fit(captions)."
            )
        word_index = _check_word_index(state["word_index"], source)
        if "index_word" in state:
            index_word = _int_keys(state["index_word"], "index_word", source)
            if index_word != {index: word for word, index in word_index.items()}:
                raise ConfigError(
                    f"{source} holds a Keras Tokenizer whose index_word is not the inverse of "
                    "its word_index; the file is inconsistent."
                )
        for name in ("word_docs", "word_counts"):
            if name in state:
                _check_counts(state[name], name, source, str)
        if "index_docs" in state:
            index_docs = _int_keys(state["index_docs"], "index_docs", source)
            _check_counts(index_docs, "index_docs", source, int)
        for start_token, end_token in MARKER_PAIRS:
            if start_token in word_index and end_token in word_index:
                break
        else:
            pairs = ", ".join(f"{start}/{end}" for start, end in MARKER_PAIRS)
            raise ConfigError(
                f"{source} holds a Keras Tokenizer whose vocabulary has none of the start/end "
                f"marker pairs {pairs}; it was not fitted on captions with markers."
            )
        config = {
            "lower": state["lower"],
            "filters": state["filters"],
            "remove_articles": False,
            "start_token": start_token,
            "end_token": end_token,
            "oov_token": state["oov_token"],
            "max_length": None,
            "long_captions": "truncate",
            "min_count": 1,
            "num_words": state["num_words"],
        }
        legacy = {"source": _KERAS_TOKENIZER, "split": split, "document_count": document_count}
        return cls._build(config, word_index, state.get("word_counts", {}), legacy, source)

    def save(self, path):
        """Saves the tokenizer as a pickle (protocol 4) of plain values only.

        The file holds `to_dict()`: no class or function is named in it, so
        `load_tokenizer` can refuse every global. Parent directories are created.

        Args:
            path: where to write, e.g. `"tokenizer/tokenizer.pickle"`.

        Example:

        ```python
        tokenizer.save("tokenizer/tokenizer.pickle")
        ```
        """
        path = os.fspath(path)
        data = pickle.dumps(self.to_dict(), protocol=4)
        try:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(path, "wb") as file:
                file.write(data)
        except OSError as error:
            raise ConfigError(
                f"Cannot write the tokenizer to {path}: {error.strerror or error}."
            ) from None

    def __repr__(self):
        return (
            f"CaptionTokenizer(vocab_size={self.vocab_size}, words={len(self.word_index)}, "
            f"start_token={self.start_token!r}, end_token={self.end_token!r}, "
            f"oov_token={self.oov_token!r}, num_words={self.num_words!r})"
        )


def _check_word_index(word_index, source):
    """Checks that ids are 1..N for N distinct non-empty words; returns a copy ordered by id."""
    if type(word_index) is not dict:
        raise ConfigError(f"{source}: word_index is {_short(word_index)}, not a dict.")
    for word, index in word_index.items():
        if type(word) is not str or not word or type(index) is not int or index < 1:
            raise ConfigError(
                f"{source}: word_index maps {_short(word)} to {_short(index)}; it must map "
                "non-empty words to ids from 1."
            )
    ordered = sorted(word_index.items(), key=lambda item: item[1])
    if [index for _, index in ordered] != list(range(1, len(ordered) + 1)):
        raise ConfigError(
            f"{source}: the ids in word_index are not 1..{len(ordered)} without gaps or repeats."
        )
    return dict(ordered)


def _check_counts(counts, name, source, key_type):
    if type(counts) is not dict:
        raise ConfigError(f"{source}: {name} is {_short(counts)}, not a dict.")
    for key, count in counts.items():
        if type(key) is not key_type or type(count) is not int or count < 0:
            raise ConfigError(
                f"{source}: {name} maps {_short(key)} to {_short(count)}; it must map "
                f"{key_type.__name__} keys to counts >= 0."
            )
    return dict(counts)


def _int_keys(mapping, name, source):
    """Returns `mapping` with its keys as ints: pickled Keras tokenizers hold int or str keys."""
    if type(mapping) is not dict:
        raise ConfigError(f"{source}: {name} is {_short(mapping)}, not a dict.")
    result = {}
    for key, value in mapping.items():
        if type(key) is str and key.isascii() and key.isdigit():
            key = int(key)
        if type(key) is not int:
            raise ConfigError(f"{source}: {name} has the key {_short(key)}, not an id.")
        result[key] = value
    return result


def _check_legacy(legacy, source):
    if (
        type(legacy) is not dict
        or set(legacy) != _LEGACY_KEYS
        or legacy["source"] != _KERAS_TOKENIZER
        or type(legacy["split"]) is not str
        or not legacy["split"]
        or type(legacy["document_count"]) is not int
        or legacy["document_count"] < 0
    ):
        raise ConfigError(
            f"{source} has a legacy section of {_short(legacy)}; expected "
            f"{{'source': {_KERAS_TOKENIZER!r}, 'split': <str>, 'document_count': <int>}}."
        )
    return dict(legacy)


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
        ConfigError: the file is missing, empty, truncated, corrupt, or not a tokenizer.

    Example:

    ```python
    tokenizer = load_tokenizer("tokenizer/tokenizer.pickle")
    tokenizer.decode(model_output_ids)
    ```
    """
    data, source = _read_bytes(path, "tokenizer")
    try:
        obj = _unpickle(data, source, {}, _TOKENIZER_REASON)
    except _RefusedGlobal as refusal:
        if refusal.global_name != _KERAS_TOKENIZER:
            raise
        holder = _unpickle(data, source, _LEGACY_GLOBALS, _TOKENIZER_REASON)
        return CaptionTokenizer._from_keras_state(holder, source)
    return CaptionTokenizer._from_plain(obj, source)
