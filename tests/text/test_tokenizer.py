"""Tests for captioning.text.tokenizer: vocabulary, cleaning, encoding and decoding."""

import numpy as np
import pytest

from captioning.errors import ConfigError
from captioning.text import DEFAULT_FILTERS, CaptionTokenizer
from tests.text.helpers import CAPTIONS, fitted


def test_id_layout_and_ordering():
    tokenizer = fitted()
    ids = (tokenizer.pad_id, tokenizer.oov_id, tokenizer.start_id, tokenizer.end_id)
    assert ids == (0, 1, 2, 3)
    assert list(tokenizer.word_index)[:3] == ["<unk>", "<start>", "<end>"]
    # Counts: a 2, dog 2, grass 2, runs 2, the 3; the rest 1, ties alphabetical.
    assert list(tokenizer.word_index)[3:9] == ["the", "a", "dog", "grass", "runs", "black"]
    assert tokenizer.word_index["the"] == 4
    assert tokenizer.index_word == {i: w for w, i in tokenizer.word_index.items()}
    assert tokenizer.vocab_size == len(tokenizer.word_index) + 1
    assert tokenizer.word_counts["the"] == 3
    assert "<start>" not in tokenizer.word_counts


def test_fit_is_deterministic_and_refit_replaces():
    first = CaptionTokenizer().fit(CAPTIONS)
    second = CaptionTokenizer().fit(list(reversed(CAPTIONS)))
    assert first.word_index == second.word_index
    first.fit(["zebra"])
    assert set(first.word_index) == {"<unk>", "<start>", "<end>", "zebra"}


def test_round_trip_encode_decode():
    tokenizer = fitted()
    ids = tokenizer.encode(["A dog runs on the grass."])
    assert ids[0][0] == tokenizer.start_id and ids[0][-1] == tokenizer.end_id
    assert tokenizer.decode(ids[0]) == "a dog runs on the grass"
    assert tokenizer.decode(np.array(ids[0] + [0, 0])) == "a dog runs on the grass"
    assert tokenizer.encode(["a dog"], add_markers=False) == [
        [tokenizer.word_index["a"], tokenizer.word_index["dog"]]
    ]


def test_unknown_words_and_decode_rules():
    tokenizer = fitted()
    ids = tokenizer.encode(["a zebra runs"])[0]
    assert ids[2] == tokenizer.oov_id
    assert tokenizer.decode(ids) == "a <unk> runs"
    dog = tokenizer.word_index["dog"]
    assert tokenizer.decode([0, 2, dog, 0, dog, 3, dog]) == "dog dog"
    assert tokenizer.decode([dog, 10_000, -5]) == "dog <unk> <unk>"
    assert tokenizer.decode([]) == ""
    with pytest.raises(ConfigError, match="shape"):
        tokenizer.decode(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(ConfigError, match="integer"):
        tokenizer.decode([1.5, 2.0])


def test_words_cleaning():
    tokenizer = CaptionTokenizer()
    assert tokenizer.words("A Dog, jumps; over\tthe fence!\n") == [
        "a", "dog", "jumps", "over", "the", "fence",
    ]
    assert CaptionTokenizer(lower=False).words("A Dog") == ["A", "Dog"]
    assert CaptionTokenizer(filters="").words("dog.") == ["dog."]
    assert "<" not in DEFAULT_FILTERS and ">" not in DEFAULT_FILTERS


def test_remove_articles():
    tokenizer = CaptionTokenizer(remove_articles=True).fit(CAPTIONS)
    assert not {"a", "an", "the"} & set(tokenizer.word_index)
    assert tokenizer.words("An apple, a dog and THE cat") == ["apple", "dog", "and", "cat"]
    assert CaptionTokenizer(remove_articles=True, lower=False).words("The Cat") == ["Cat"]
    assert "the" in fitted().word_index


@pytest.mark.parametrize("start,end", [("<start>", "<end>"), ("ssss", "eeee"), ("<sos>", "<eos>")])
def test_marker_pairs(start, end):
    tokenizer = CaptionTokenizer(start_token=start, end_token=end)
    marked = [f"{start} {caption} {end}" for caption in CAPTIONS]
    tokenizer.fit(marked)
    assert tokenizer.word_index[start] == 2 and tokenizer.word_index[end] == 3
    assert start not in tokenizer.word_counts and end not in tokenizer.word_counts
    assert tokenizer.encode(marked) == tokenizer.encode(CAPTIONS)
    ids = tokenizer.encode([f"{start} a dog runs {end}"])[0]
    assert ids.count(2) == 1 and ids.count(3) == 1
    assert tokenizer.decode(ids) == "a dog runs"
    assert tokenizer.words(f"{start.upper()} dog.{end}") == ["dog"]
    assert CaptionTokenizer(start_token=start, end_token=end, filters="<>").words(
        f"{start} dog {end}"
    ) == ["dog"]


def test_markers_only_match_whole_words():
    tokenizer = CaptionTokenizer(start_token="ssss", end_token="eeee")
    assert tokenizer.words("classssic eeeel ssss") == ["classssic", "eeeel"]


def test_min_count_and_num_words():
    tokenizer = fitted(min_count=2)
    assert list(tokenizer.word_index) == [
        "<unk>", "<start>", "<end>", "the", "a", "dog", "grass", "runs",
    ]
    assert tokenizer.word_counts["cat"] == 1
    capped = fitted(num_words=6)
    assert capped.vocab_size == 6
    assert len(capped.word_index) > 6
    assert capped.encode(["the a dog grass"], add_markers=False) == [[4, 5, 1, 1]]
    assert capped.decode([capped.word_index["dog"]]) == "<unk>"
    assert fitted(num_words=1000).vocab_size == len(fitted().word_index) + 1


def test_truncate_and_drop():
    texts = ["a b c d e f", "a b"]
    truncating = CaptionTokenizer(max_length=3).fit(texts)
    assert [len(ids) for ids in truncating.encode(texts)] == [5, 4]
    assert truncating.keep_mask(texts).tolist() == [True, True]
    dropping = CaptionTokenizer(max_length=3, long_captions="drop").fit(texts)
    assert [len(ids) for ids in dropping.encode(texts)] == [8, 4]
    mask = dropping.keep_mask(texts)
    assert mask.dtype == bool and mask.tolist() == [False, True]
    assert CaptionTokenizer().keep_mask(texts).tolist() == [True, True]


def test_to_matrix():
    tokenizer = fitted()
    matrix = tokenizer.to_matrix(["a dog", "a dog runs on the grass"], length=5)
    assert matrix.dtype == np.int32 and matrix.shape == (2, 5)
    dog, a = tokenizer.word_index["dog"], tokenizer.word_index["a"]
    assert matrix[0].tolist() == [2, a, dog, 3, 0]
    assert matrix[1].tolist()[:3] == [2, a, dog] and 3 not in matrix[1].tolist()
    assert tokenizer.to_matrix([], length=4).shape == (0, 4)


@pytest.mark.parametrize(
    "kwargs,shown",
    [
        ({"lower": "yes"}, "'yes'"),
        ({"filters": None}, "None"),
        ({"remove_articles": 1}, "1"),
        ({"start_token": ""}, "''"),
        ({"end_token": "e e"}, "'e e'"),
        ({"oov_token": 3}, "3"),
        ({"start_token": "<END>"}, "'<END>'"),
        ({"max_length": 0}, "0"),
        ({"long_captions": "cut"}, "'cut'"),
        ({"min_count": 0}, "0"),
        ({"num_words": 3}, "3"),
        ({"num_words": True}, "True"),
    ],
)
def test_arguments_are_checked(kwargs, shown):
    with pytest.raises(ConfigError) as raised:
        CaptionTokenizer(**kwargs)
    assert shown in str(raised.value)


def test_bad_inputs_are_reported():
    tokenizer = fitted()
    with pytest.raises(ConfigError, match="single string"):
        tokenizer.encode("a dog")
    with pytest.raises(ConfigError, match="must be a string"):
        tokenizer.encode(["a dog", 7])
    with pytest.raises(ConfigError, match="length"):
        tokenizer.to_matrix(["a dog"], length=0)


def test_get_config_and_dict_round_trip():
    tokenizer = fitted(remove_articles=True, max_length=7, long_captions="drop", num_words=9,
                       start_token="ssss", end_token="eeee")
    config = tokenizer.get_config()
    assert config == {
        "lower": True, "filters": DEFAULT_FILTERS, "remove_articles": True,
        "start_token": "ssss", "end_token": "eeee", "oov_token": "<unk>", "max_length": 7,
        "long_captions": "drop", "min_count": 1, "num_words": 9,
    }
    clone = CaptionTokenizer.from_dict(tokenizer.to_dict())
    assert clone.to_dict() == tokenizer.to_dict()
    assert clone.encode(CAPTIONS) == tokenizer.encode(CAPTIONS)
