"""The `keras_preprocessing.text.Tokenizer` pickles that earlier Keras projects released.

They are read without `keras_preprocessing` installed. The unpickler gets `LEGACY_GLOBALS`:
harmless stand-ins for the four globals such a pickle names. The Tokenizer class becomes a
holder that only keeps the pickled attributes; `collections.OrderedDict()` and
`collections.defaultdict(int)` become plain dicts; `builtins.int` may only be that factory.
Any other use of them is refused. `read_keras_state` then checks the attributes and returns
a `TokenizerState` that keeps the Keras vocabulary, ids and semantics: the markers are found
in the vocabulary (`MARKER_PAIRS`), and ids at or beyond `num_words` read as the
out-of-vocabulary id.
"""

import types

from captioning.errors import ConfigError, UnsafeFileError
from captioning.text.safe_pickle import PickleAbuse, shorten
from captioning.text.tokenizer_file import (
    KERAS_TOKENIZER,
    TOKENIZER_REASON,
    TokenizerState,
    check_counts,
    check_plain,
    check_word_index,
    listed,
)

MARKER_PAIRS = (("<start>", "<end>"), ("<sos>", "<eos>"), ("ssss", "eeee"))
"""Start/end marker pairs recognised in a legacy Keras vocabulary, in order of preference."""

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


class _Frozen(type):
    """The metaclass of the stand-ins: their classes take no new attribute values either
    (a pickle could otherwise reach a class through its instances)."""

    def __setattr__(cls, name, value):
        raise PickleAbuse(f"sets the attribute {shorten(name)} of a class, which pickled Keras "
                          "tokenizers never do")

    def __delattr__(cls, name):
        raise PickleAbuse(f"deletes the attribute {shorten(name)} of a class")


class _StandIn(metaclass=_Frozen):
    """A stand-in handed to the unpickler: a pickle cannot change it.

    No `__dict__` (`__slots__`), and `__setattr__`, `__delattr__` and `__setstate__` refuse,
    so a pickle's BUILD (which sets a state or attributes) cannot alter what the loader uses,
    neither a `__qualname__` nor anything else.
    """

    __slots__ = ()

    def __setattr__(self, name, value):
        raise PickleAbuse(f"sets the attribute {shorten(name)} of {self._name}, which pickled "
                          "Keras tokenizers never do")

    def __delattr__(self, name):
        raise PickleAbuse(f"deletes the attribute {shorten(name)} of {self._name}")

    def __setstate__(self, state):
        raise PickleAbuse(f"gives {self._name} a state, which pickled Keras tokenizers never do")

    def __reduce__(self):
        raise PickleAbuse(f"pickles {self._name}")


class KerasTokenizerState(_StandIn):
    """Stands in for `keras_preprocessing.text.Tokenizer` while unpickling: keeps the state.

    Its one state may be set once, as a dict, by the pickle's BUILD; nothing else about it
    can be changed.
    """

    __slots__ = ("state",)
    _name = KERAS_TOKENIZER

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise PickleAbuse(
                "creates keras_preprocessing.text.Tokenizer with arguments, which pickled "
                "Keras tokenizers never do"
            )
        instance = super().__new__(cls)
        object.__setattr__(instance, "state", None)
        return instance

    def __setstate__(self, state):
        if self.state is not None:
            raise PickleAbuse("sets the state of a keras_preprocessing.text.Tokenizer twice")
        if type(state) is not dict:
            raise PickleAbuse(
                "gives a keras_preprocessing.text.Tokenizer a state that is a "
                f"{type(state).__name__}, not a dict of attributes"
            )
        object.__setattr__(self, "state", state)


class _LegacyIntFactory(_StandIn):
    """Stands in for `builtins.int`, which a legacy pickle may only use as a defaultdict factory."""

    __slots__ = ()
    _name = "builtins.int"

    def __call__(self, *args, **kwargs):
        raise PickleAbuse("calls builtins.int, which pickled Keras tokenizers never do")


class _LegacyOrderedDict(_StandIn):
    """Stands in for `collections.OrderedDict`: only `OrderedDict()`, as a plain dict."""

    __slots__ = ()
    _name = "collections.OrderedDict"

    def __call__(self, *args):
        if args:
            raise PickleAbuse(
                "creates collections.OrderedDict with arguments, which pickled Keras "
                "tokenizers never do"
            )
        return {}


class _LegacyDefaultDict(_StandIn):
    """Stands in for `collections.defaultdict`: only `defaultdict(int)`, as a plain dict."""

    __slots__ = ()
    _name = "collections.defaultdict"

    def __call__(self, *args):
        if len(args) != 1 or args[0] is not _LEGACY_INT:
            raise PickleAbuse(
                "creates collections.defaultdict with arguments other than the factory "
                "builtins.int, which pickled Keras tokenizers never do"
            )
        return {}


_LEGACY_INT = _LegacyIntFactory()


LEGACY_GLOBALS = types.MappingProxyType({
    KERAS_TOKENIZER: KerasTokenizerState,
    "collections.OrderedDict": _LegacyOrderedDict(),
    "collections.defaultdict": _LegacyDefaultDict(),
    "builtins.int": _LEGACY_INT,
})
"""What the unpickler gets for each global a legacy Keras tokenizer pickle may name."""


def _int_keys(mapping, name, source):
    """Returns `mapping` with its keys as ints: pickled Keras tokenizers hold int or str keys."""
    if type(mapping) is not dict:
        raise ConfigError(f"{source}: {name} is {shorten(mapping)}, not a dict.")
    result = {}
    for key, value in mapping.items():
        if type(key) is str and key.isascii() and key.isdigit():
            key = int(key)
        if type(key) is not int:
            raise ConfigError(f"{source}: {name} has the key {shorten(key)}, not an id.")
        result[key] = value
    return result


def _check_attributes(state, source):
    """Refuses a Keras state that `keras_preprocessing`'s word-level Tokenizer never wrote.

    Returns:
        The tokenizer's `split` and `document_count`.
    """
    missing = sorted(_KERAS_REQUIRED_STATE - state.keys())
    unknown = state.keys() - _KERAS_KNOWN_STATE
    if missing or unknown:
        raise ConfigError(
            f"{source} holds a Keras Tokenizer with missing attributes {missing or 'none'} "
            f"and unexpected attributes {listed(unknown) or 'none'}; it was not written "
            "by keras_preprocessing's Tokenizer."
        )
    if state.get("char_level", False) is not False:
        raise ConfigError(
            f"{source} holds a character-level Keras Tokenizer (char_level="
            f"{shorten(state['char_level'])}); captioning needs a word-level one."
        )
    if state.get("analyzer") is not None:
        raise ConfigError(f"{source} holds a Keras Tokenizer with a custom analyzer.")
    split = state.get("split", " ")
    if not isinstance(split, str) or not split:
        raise ConfigError(f"{source} holds a Keras Tokenizer whose split is {shorten(split)}.")
    document_count = state.get("document_count", 0)
    if type(document_count) is not int or document_count < 0:
        raise ConfigError(
            f"{source} holds a Keras Tokenizer whose document_count is "
            f"{shorten(document_count)}."
        )
    if state["oov_token"] is None:
        raise ConfigError(
            f"{source} holds a Keras Tokenizer without an oov_token; captioning needs one "
            "for words outside the vocabulary. Re-fit the tokenizer with "
            "CaptionTokenizer().fit(captions)."
        )
    return split, document_count


def _check_vocabulary(state, source):
    """Checks the Keras vocabulary tables against each other; returns the checked word_index."""
    word_index = check_word_index(state["word_index"], source)
    if "index_word" in state:
        index_word = _int_keys(state["index_word"], "index_word", source)
        if index_word != {index: word for word, index in word_index.items()}:
            raise ConfigError(
                f"{source} holds a Keras Tokenizer whose index_word is not the inverse of "
                "its word_index; the file is inconsistent."
            )
    for name in ("word_docs", "word_counts"):
        if name in state:
            check_counts(state[name], name, source, str)
    if "index_docs" in state:
        index_docs = _int_keys(state["index_docs"], "index_docs", source)
        check_counts(index_docs, "index_docs", source, int)
    return word_index


def read_keras_state(holder, source):
    """Checks what a legacy Keras tokenizer pickle held and returns its `TokenizerState`.

    Args:
        holder: what the unpickler returned with `LEGACY_GLOBALS`.
        source: the file's name, for error messages.

    Returns:
        A `TokenizerState` with the Keras vocabulary, `lower`, `filters`, `num_words` and
        `oov_token`, the first of `MARKER_PAIRS` found in the vocabulary, and the split and
        document count under `legacy`.

    Raises:
        UnsafeFileError: the file holds something other than one tokenizer of plain values.
        ConfigError: the attributes are not those of a word-level Keras tokenizer fitted on
            captions with markers, or do not agree with each other.
    """
    if type(holder) is not KerasTokenizerState:
        raise UnsafeFileError(
            f"{source} names {KERAS_TOKENIZER} but holds a {type(holder).__name__} rather "
            f"than one tokenizer; refusing to load it: {TOKENIZER_REASON}."
        )
    state = holder.state
    if state is None:
        raise ConfigError(f"{source} holds a Keras Tokenizer without its attributes.")
    check_plain(state, source)
    split, document_count = _check_attributes(state, source)
    word_index = _check_vocabulary(state, source)
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
    legacy = {"source": KERAS_TOKENIZER, "split": split, "document_count": document_count}
    return TokenizerState(config, word_index, state.get("word_counts", {}), legacy)
