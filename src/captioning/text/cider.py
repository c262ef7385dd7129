"""CIDEr-D, the coco-caption definition, vectorised over a batch of captions.

`CiderD` computes what pycocoevalcap's `Cider` (which is CIDEr-D) computes, with the
document frequencies taken from a fixed corpus (the training references, as self-critical
training wants) instead of from the captions being scored:

- the n-grams of orders 1..n of each caption, weighted tf-idf: `tf * (log(D) - log(max(1,
  df)))`, where `df` counts the corpus images whose references hold the n-gram and `D` the
  corpus images;
- for each reference, per order: the candidate's weights clipped by the reference's,
  `sum(min(w_c, w_r) * w_r) / (|w_c| |w_r|)`, times the Gaussian length penalty
  `exp(-(l_c - l_r)**2 / (2 sigma**2))`, where a caption's length is its count of bigrams
  (as coco-caption counts it);
- the mean over the orders, summed over the references, divided by their number, times 10.

Captions are id sequences (model outputs: cut at the first end or padding id, a leading start
id dropped) or words (strings split on whitespace, or lists of words). Every n-gram of ids
becomes one int64 key, exactly (ids below `exact_vocabulary(n)`, 55107 for n=4) or by a
64-bit hash for larger vocabularies, and the whole batch is counted and matched with
`np.unique` and `np.searchsorted`, without a Python loop over captions.

Example:
>>> scorer = CiderD([["a dog runs", "a dog is running"], ["a red car"]])
>>> scorer.score(["a dog runs", "a car"], images=[0, 1]).round(3).tolist()
[4.757, 1.743]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from captioning.utils.checks import check_int, check_number

_STOP = -1  # fills ragged id captions; always ends a caption
_MIX = np.uint64(0x9E3779B97F4A7C15)


def exact_vocabulary(n: int = 4) -> int:
    """The ids below this value get exact n-gram keys (`(vocab + 1) ** n < 2 ** 63`)."""
    base = int(round((2 ** 63 - 1) ** (1.0 / n)))
    while base ** n > 2 ** 63 - 1:
        base -= 1
    return base - 1


@dataclasses.dataclass(frozen=True)
class References:
    """The reference captions of some images, counted once for scoring.

    Make them with `CiderD.references` (the corpus' own are `CiderD.corpus`). Image `i` has
    `count[i]` references, in columns `0..count[i] - 1`, and the distinct n-grams of all of
    them are the entries `offsets[i]:offsets[i + 1]`, sorted by key.

    Attributes:
        count: `(images,)` references of each image.
        offsets: `(images + 1,)` first entry of each image.
        keys: `(entries,)` n-gram key of each entry.
        tf: `(entries, columns)` the entry's count in each reference of its image.
        norms: `(images, columns, n)` norm of each reference's tf-idf weights per order.
        lengths: `(images, columns)` bigram count of each reference.
    """

    count: np.ndarray
    offsets: np.ndarray
    keys: np.ndarray
    tf: np.ndarray
    norms: np.ndarray
    lengths: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.count)


@dataclasses.dataclass(frozen=True)
class _Tally:
    """Distinct n-grams of each caption: `keys` sorted unique; per entry (by row, then key)
    its `rows`, key index `index` into `keys`, `orders` (0-based) and term frequency `tf`."""

    keys: np.ndarray
    rows: np.ndarray
    index: np.ndarray
    orders: np.ndarray
    tf: np.ndarray


class CiderD:
    """CIDEr-D scorer with document frequencies from a fixed corpus of references.

    Args:
        corpus: the references per image that give the document frequencies (the training
            split's): a list with one list of captions per image; a caption is a sequence of
            ids, a string (split on whitespace) or a list of words. They are also the
            default references of `score`.
        n: the largest n-gram order (coco-caption: 4).
        sigma: the standard deviation of the length penalty (coco-caption: 6).
        start_id, end_id, pad_id: the marker ids of id captions: a caption ends at its first
            `end_id` or `pad_id`, and a leading `start_id` is dropped. None: not used.
        vocab_size: the id captions' vocabulary size, when known; above
            `exact_vocabulary(n)` the n-gram keys are 64-bit hashes. Default: exact keys.
    """

    def __init__(self, corpus, *, n: int = 4, sigma: float = 6.0, start_id: int | None = None,
                 end_id: int | None = None, pad_id: int | None = 0,
                 vocab_size: int | None = None):
        check_int("n", n, 1)
        check_number("sigma", sigma, 0, exclusive_minimum=True)
        for name, value in (("start_id", start_id), ("end_id", end_id), ("pad_id", pad_id)):
            check_int(name, value, 0, allow_none=True)
        check_int("vocab_size", vocab_size, 1, allow_none=True)
        self.n, self.sigma = int(n), float(sigma)
        self.start_id, self.end_id, self.pad_id = start_id, end_id, pad_id
        self.exact = vocab_size is None or vocab_size <= exact_vocabulary(self.n)
        self._base = exact_vocabulary(self.n) + 1
        self._mode = None  # "ids" or "words", from the corpus
        self._words = {}  # word -> id, in word mode
        digits, lengths, groups = self._grouped(corpus, "corpus")
        if len(groups) == 0:
            raise ValueError("the corpus holds no image; give one list of references per image")
        self.num_documents = int(groups.max()) + 1
        self.log_documents = math.log(float(self.num_documents))
        tally = self._tally(digits, lengths)
        documents = _sorted_unique(groups[tally.rows] * np.int64(len(tally.keys)) + tally.index)
        df = np.bincount(documents % max(len(tally.keys), 1), minlength=len(tally.keys))
        # An n-gram in one document weighs as one in none (`max(1, df)`): keep the others.
        shared = df > 1
        self._df_keys, self._df = tally.keys[shared], df[shared].astype(np.float64)
        self._pending = (lengths, groups, tally)
        self._corpus = None

    @property
    def corpus(self) -> References:
        """The corpus' own references, prepared on first use."""
        if self._corpus is None:
            self._corpus = self._prepare(*self._pending)
            self._pending = None
        return self._corpus

    def references(self, references) -> References:
        """Counts and weights the references of some images (with the corpus' df) once,
        for several `score` calls.

        Args:
            references: one list of captions per image (see `CiderD`).
        """
        digits, lengths, groups = self._grouped(references, "references")
        return self._prepare(lengths, groups, self._tally(digits, lengths))

    def score(self, candidates, images=None, references=None) -> np.ndarray:
        """CIDEr-D of each candidate against its image's references.

        Args:
            candidates: `(N, T)` int ids (a model's output), or a list of N captions.
            images: `(N,)` the index of each candidate's image in `references`; default
                `0..N-1`.
            references: the images' references: a `References`, or one list of captions per
                image; default the corpus.

        Returns:
            `(N,)` float64 scores (pycocoevalcap's per-image CIDEr values).
        """
        if references is None:
            references = self.corpus
        elif not isinstance(references, References):
            references = self.references(references)
        digits, lengths = self._captions(candidates, "candidates")
        count = len(lengths)
        images = np.arange(count) if images is None else np.asarray(images, np.int64).ravel()
        if len(images) != count:
            raise ValueError(f"{count} candidates but {len(images)} image indices; give one "
                             "image index per candidate")
        if count == 0:
            return np.zeros(0)
        if images.min() < 0 or images.max() >= references.num_images:
            raise ValueError(f"image indices must be in 0..{references.num_images - 1}, got "
                             f"{images.min()}..{images.max()}")
        mine = self._tally(digits, lengths)
        idf = self._idf(mine.keys)
        weight = mine.tf * idf[mine.index]
        norms = self._norms(mine.rows, mine.orders, weight, count)  # (N, n)

        # The entries of the images in play, by slot: image position in `used` * candidate
        # keys + key index (sorted, as the entries are sorted by key within an image).
        used, position = np.unique(images, return_inverse=True)
        spans = references.offsets[used + 1] - references.offsets[used]
        entries = np.repeat(references.offsets[used], spans) + _local(spans)
        index, known = _lookup(mine.keys, references.keys[entries])
        width = np.int64(max(len(mine.keys), 1))
        slots = np.repeat(np.arange(len(used)), spans)[known] * width + index[known]
        entries = entries[known]

        # Each candidate n-gram against the same n-gram in every reference of its image.
        found, hit = _lookup(slots, position[mine.rows] * width + mine.index)
        rows, orders = mine.rows[hit], mine.orders[hit]
        theirs = references.tf[entries[found[hit]]] * idf[mine.index[hit], None]
        clipped = np.minimum(weight[hit, None], theirs) * theirs  # (hits, columns)
        columns = references.tf.shape[1]
        value = np.zeros((count * self.n, columns))
        for column in range(columns):
            value[:, column] = np.bincount(rows * self.n + orders, clipped[:, column],
                                           minlength=count * self.n)
        value = value.reshape(count, self.n, columns).transpose(0, 2, 1)  # (N, columns, n)

        denominator = norms[:, None, :] * references.norms[images]
        value = np.where(denominator != 0, value / np.where(denominator != 0, denominator, 1),
                         value)
        delta = (_bigrams(lengths, self.n)[:, None] - references.lengths[images]).astype(float)
        value = value * np.exp(-(delta ** 2) / (2 * self.sigma ** 2))[:, :, None]
        per = references.count[images]
        value = np.where(np.arange(columns)[None, :] < per[:, None], value.mean(axis=2), 0.0)
        return value.sum(axis=1) / per * 10.0

    # -- counting ------------------------------------------------------------------------

    def _prepare(self, lengths, groups, tally: _Tally) -> References:
        count = np.bincount(groups)
        order = np.argsort(groups, kind="stable")
        column = np.empty(len(groups), np.int64)
        column[order] = np.arange(len(groups)) - np.repeat(np.cumsum(count) - count, count)
        width = np.int64(max(len(tally.keys), 1))
        slots, inverse = np.unique(groups[tally.rows] * width + tally.index, return_inverse=True)
        tf = np.zeros((len(slots), int(count.max())), np.uint16)
        tf[inverse, column[tally.rows]] = tally.tf
        weight = tally.tf * self._idf(tally.keys)[tally.index]
        ref_norms = self._norms(tally.rows, tally.orders, weight, len(groups))
        norms = np.zeros((len(count), tf.shape[1], self.n))
        norms[groups, column] = ref_norms
        lengths_by_column = np.zeros((len(count), tf.shape[1]), np.int64)
        lengths_by_column[groups, column] = _bigrams(lengths, self.n)
        spans = np.bincount(slots // width, minlength=len(count))
        return References(count=count, offsets=np.concatenate([[0], np.cumsum(spans)]),
                          keys=tally.keys[slots % width], tf=tf, norms=norms,
                          lengths=lengths_by_column)

    def _idf(self, keys) -> np.ndarray:
        """`log(D) - log(max(1, df))` of each (sorted) key."""
        position, found = _lookup(self._df_keys, keys)
        df = np.where(found, self._df[position] if len(self._df) else 0.0, 0.0)
        return self.log_documents - np.log(np.maximum(1.0, df))

    def _norms(self, rows, orders, weight, count) -> np.ndarray:
        squares = np.bincount(rows * self.n + orders, weight ** 2, minlength=count * self.n)
        return np.sqrt(squares).reshape(count, self.n)

    def _tally(self, digits, lengths) -> _Tally:
        """Counts the distinct n-grams, orders 1..n, of every caption."""
        rows, keys, orders = [], [], []
        width = digits.shape[1]
        columns = np.arange(width)
        for size in range(1, min(self.n, width) + 1):
            valid = columns[None, :width - size + 1] + size <= lengths[:, None]
            row, _ = np.nonzero(valid)
            rows.append(row)
            keys.append(self._keys(digits, size)[valid])
            orders.append(np.full(len(row), size - 1))
        rows = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        orders = np.concatenate(orders).astype(np.int64) if orders else np.zeros(0, np.int64)
        unique, inverse = np.unique(keys, return_inverse=True)
        width = np.int64(max(len(unique), 1))
        slots, first, tf = np.unique(rows * width + inverse, return_index=True,
                                     return_counts=True)
        return _Tally(keys=unique, rows=slots // width, index=slots % width,
                      orders=orders[first], tf=tf.astype(np.float64))

    def _keys(self, digits, size):
        """The int64 key of every n-gram of `size` words starting at each column."""
        width = digits.shape[1] - size + 1
        if self.exact:
            key = np.zeros((len(digits), width), np.int64)
            for offset in range(size):
                key = key * np.int64(self._base) + digits[:, offset:offset + width]
            return key
        with np.errstate(over="ignore"):
            key = np.full((len(digits), width), np.uint64(size) * _MIX, np.uint64)
            for offset in range(size):
                key = _mix(key ^ digits[:, offset:offset + width].astype(np.uint64))
        return key.view(np.int64)

    # -- input ---------------------------------------------------------------------------

    def _grouped(self, references, what):
        """`(digits, lengths, groups)` of one list of captions per image."""
        if isinstance(references, (str, np.ndarray)) or not hasattr(references, "__len__"):
            raise ValueError(f"{what}: give one list of captions per image, got "
                             f"{type(references).__name__}")
        captions, groups = [], []
        for image, items in enumerate(references):
            if isinstance(items, str) or len(items) == 0:
                raise ValueError(f"{what}: image {image} needs a non-empty list of captions, "
                                 f"got {items!r}")
            captions.extend(items)
            groups.extend([image] * len(items))
        digits, lengths = self._captions(captions, what)
        return digits, lengths, np.asarray(groups, np.int64)

    def _captions(self, captions, what):
        """`(digits, lengths)`: each caption's words as digits >= 1 in a padded matrix."""
        if isinstance(captions, np.ndarray) and captions.ndim == 2:
            return self._id_digits(captions, what)
        captions = list(captions)
        if captions and all(_is_words(c) for c in captions):
            return self._word_digits(captions)
        if captions and any(_is_words(c) for c in captions):
            raise ValueError(f"{what}: give every caption as ids or every one as words, not "
                             "both")
        width = max([len(c) for c in captions], default=0)
        ids = np.full((len(captions), max(width, 1)), _STOP, np.int64)
        for row, caption in zip(ids, captions):
            row[:len(caption)] = caption
        return self._id_digits(ids, what)

    def _id_digits(self, ids, what):
        if self._mode == "words":
            raise ValueError(f"{what}: the corpus was given as words; give words here too")
        self._mode = "ids"
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{what}: id captions must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        if self.start_id is not None and ids.shape[1]:
            lead = ids[:, 0] == self.start_id
            if lead.any():
                shifted = np.concatenate([ids[:, 1:], np.full((len(ids), 1), _STOP)], axis=1)
                ids = np.where(lead[:, None], shifted, ids)
        stop = ids == _STOP
        for marker in (self.end_id, self.pad_id):
            if marker is not None:
                stop |= ids == marker
        lengths = np.where(stop.any(axis=1), stop.argmax(axis=1), ids.shape[1])
        inside = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        words = ids[inside]
        if words.size and words.min() < 0:
            raise ValueError(f"{what}: ids must be >= 0, got {int(words.min())}")
        if self.exact and words.size and words.max() >= self._base - 1:
            raise ValueError(f"{what}: id {int(words.max())} is beyond the exact n-gram keys "
                             f"(ids below {self._base - 1}); give CiderD the vocab_size")
        return np.where(inside, ids + 1, 0), lengths.astype(np.int64)

    def _word_digits(self, captions):
        if self._mode == "ids":
            raise ValueError("the corpus was given as ids; give ids here too")
        self._mode = "words"
        words = [c.split() if isinstance(c, str) else list(c) for c in captions]
        lengths = np.array([len(w) for w in words], np.int64)
        digits = np.zeros((len(words), max(int(lengths.max(initial=0)), 1)), np.int64)
        lookup = self._words
        for row, caption in zip(digits, words):
            row[:len(caption)] = [lookup.setdefault(word, len(lookup) + 1) for word in caption]
        if self.exact and len(lookup) >= self._base:
            raise ValueError(f"more than {self._base - 1} distinct words; give the captions as "
                             "ids with vocab_size")
        return digits, lengths


def _is_words(caption) -> bool:
    return isinstance(caption, str) or (
        isinstance(caption, (list, tuple)) and len(caption) > 0 and isinstance(caption[0], str))


def _sorted_unique(values):
    """Sorted distinct values (a sort; NumPy 2's `np.unique` without return flags hashes, far
    slower on int64 keys)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def _lookup(table, queries):
    """`(position, found)` of each query in the sorted `table`."""
    if len(table) == 0:
        return np.zeros(len(queries), np.int64), np.zeros(len(queries), bool)
    position = np.minimum(np.searchsorted(table, queries), len(table) - 1)
    return position, table[position] == queries


def _bigrams(lengths, n):
    """coco-caption's caption length: its count of bigrams (0 when n < 2)."""
    return np.maximum(lengths - 1, 0) if n >= 2 else np.zeros_like(lengths)


def _local(counts):
    """`0..c-1` for each count c, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _mix(x):
    """splitmix64's finaliser (uint64, wrapping)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
