"""Caption text to token ids and back: `CaptionTokenizer`.

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

Its file holds plain values only (`captioning.text.tokenizer_file`); `load_tokenizer` reads
it, and the earlier Keras tokenizer pickles too (`captioning.text.legacy_state`).

Example:

```python
tokenizer = CaptionTokenizer(max_length=20).fit(["A dog runs.", "Two dogs play."])
tokenizer.encode(["a dog plays"])          # [[2, 4, 5, 1, 3]]
tokenizer.decode([2, 4, 5, 1, 3, 0, 0])    # 'a dog <unk>'
tokenizer.save("tokenizer/tokenizer.pickle")
```
"""

import collections

import numpy as np

from captioning.config import DEFAULT_FILTERS, LONG_CAPTION_POLICIES
from captioning.errors import ConfigError
from captioning.text.cleaning import as_texts, caption_words, check_caption
from captioning.text.safe_pickle import shorten
from captioning.text.tokenizer_file import (
    CONFIG_KEYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    check_counts,
    check_word_index,
    read_tokenizer_dict,
    write_tokenizer_dict,
)
from captioning.utils.checks import check_bool, check_choice, check_int

__all__ = ["CaptionTokenizer"]

PAD_ID = 0


def _check_token(name, value):
    if not isinstance(value, str) or not value or any(char.isspace() for char in value):
        raise ConfigError(
            f"`{name}` must be a non-empty string without whitespace; got {value!r}."
        )


class CaptionTokenizer:
    """Turns captions into token ids for a captioning model, and ids back into captions.

    Cleaning a caption puts it in Unicode NFC form, lower-cases it (if `lower`, with Python's
    full Unicode case mapping: "ĐÁ BÓNG" -> "đá bóng"), replaces every character of `filters`
    (and the zero width space U+200B) by a space, splits it on whitespace and, if
    `remove_articles`, drops the words "a", "an" and "the". Start and end markers are never
    filtered, counted or returned as words: a caption that already holds them
    ("<start> a dog <end>") encodes exactly like one without them.

    The default `filters` (`DEFAULT_FILTERS`, Keras' `Tokenizer` default without `<` and `>`)
    are the 29 ASCII punctuation and symbol characters other than `'`, `<` and `>`, plus tab
    and newline: ``!"#$%&()*+,-./:;=?@[\\]^_`{|}~``. So "dog." and "dog" are one word,
    "well-known" becomes "well known" and "man's" stays one word. Letters of any script, their
    accents and tone marks, digits, the apostrophe and every non-ASCII character (such as "…"
    or "«") are kept: pass your own `filters` to remove more.

    Args:
        lower: lower-case captions (after the NFC normalisation every caption gets).
        filters: characters replaced by spaces. The default, `DEFAULT_FILTERS`, is ASCII
            punctuation but `'`, `<` and `>` (see above).
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
        check_bool("lower", lower)
        if not isinstance(filters, str):
            raise ConfigError(f"`filters` must be a string of characters; got {filters!r}.")
        check_bool("remove_articles", remove_articles)
        _check_token("start_token", start_token)
        _check_token("end_token", end_token)
        _check_token("oov_token", oov_token)
        folded = [token.lower() for token in (start_token, end_token, oov_token)]
        if len(set(folded)) != 3:
            raise ConfigError(
                "`start_token`, `end_token` and `oov_token` must differ (ignoring case); got "
                f"{start_token!r}, {end_token!r} and {oov_token!r}."
            )
        check_int("max_length", max_length, 1, allow_none=True)
        check_choice("long_captions", long_captions, LONG_CAPTION_POLICIES)
        check_int("min_count", min_count, 1)
        check_int("num_words", num_words, 4, allow_none=True)

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
        texts = as_texts(texts)
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
        return caption_words(text, (self.start_token, self.end_token), lower=self.lower,
                             filters=self.filters, remove_articles=self.remove_articles,
                             split=self._split)

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
        texts = as_texts(texts)
        check_bool("add_markers", add_markers)
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
        texts = as_texts(texts)
        if self.long_captions != "drop" or self.max_length is None:
            for text in texts:
                check_caption(text)
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
        check_int("length", length, 1)
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
            raise ConfigError(f"`ids` must be integer token ids; got {shorten(ids)}.")
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
        return {key: getattr(self, key) for key in CONFIG_KEYS}

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
        source = "The tokenizer dict"
        return cls._from_state(read_tokenizer_dict(d, source), source)

    @classmethod
    def _from_state(cls, state, source):
        """Builds a tokenizer from a checked `TokenizerState` read from `source`."""
        try:
            tokenizer = cls(**state.config)
        except ConfigError as error:
            raise ConfigError(f"{source} has an invalid tokenizer setting: {error}") from None
        word_index = check_word_index(state.word_index, source)
        word_counts = check_counts(state.word_counts, "word_counts", source, str)
        tokenizer._legacy = state.legacy
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
        write_tokenizer_dict(path, self.to_dict())

    def __repr__(self):
        return (
            f"CaptionTokenizer(vocab_size={self.vocab_size}, words={len(self.word_index)}, "
            f"start_token={self.start_token!r}, end_token={self.end_token!r}, "
            f"oov_token={self.oov_token!r}, num_words={self.num_words!r})"
        )
