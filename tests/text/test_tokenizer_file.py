"""Tests for captioning.text.tokenizer_file and load_tokenizer: saving, loading, checks."""

import pickle
import pickletools

import pytest

from captioning.errors import CaptioningError, ConfigError, UnsafeFileError
from captioning.text import (
    DEFAULT_FILTERS,
    FORMAT_NAME,
    FORMAT_VERSION,
    CaptionTokenizer,
    load_tokenizer,
    safe_load_pickle,
)
from tests.text.helpers import CAPTIONS, assert_refused, fitted, payloads


def test_save_load_identical(tmp_path):
    tokenizer = fitted(min_count=1, num_words=10, start_token="<sos>", end_token="<eos>")
    path = tmp_path / "sub" / "tokenizer.pickle"
    tokenizer.save(path)
    loaded = load_tokenizer(path)
    assert loaded.to_dict() == tokenizer.to_dict()
    assert loaded.encode(CAPTIONS) == tokenizer.encode(CAPTIONS)
    assert isinstance(loaded, CaptionTokenizer)


def test_saved_pickle_is_plain(tmp_path):
    path = tmp_path / "tokenizer.pickle"
    fitted().save(path)
    data = path.read_bytes()
    opcodes = {opcode.name for opcode, _, _ in pickletools.genops(data)}
    assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "INST", "OBJ"}
    assert data[:2] == b"\x80\x04"
    assert safe_load_pickle(path) == fitted().to_dict()


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.update(format="other"), "not a captioning tokenizer"),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d.pop("word_index"), "missing keys"),
        (lambda d: d.update(extra=1), "'extra'"),
        (lambda d: d["config"].pop("lower"), "config"),
        (lambda d: d["config"].update(num_words=2), "num_words"),
        (lambda d: d["word_index"].update(dog=99), "without gaps"),
        (lambda d: d["word_index"].update({"x": d["word_index"].pop("<start>")}), "start_token"),
        (lambda d: d.update(word_counts=[1]), "word_counts"),
        (lambda d: d.update(legacy={"split": " "}), "legacy"),
    ],
)
def test_wrong_structure_is_refused(tmp_path, change, match):
    d = fitted().to_dict()
    change(d)
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(d, protocol=4))
    with pytest.raises(ConfigError, match=match) as raised:
        load_tokenizer(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, b"bytes", frozenset()])
def test_non_plain_values_are_refused(tmp_path, value):
    d = fitted().to_dict()
    d["word_counts"]["dog"] = value
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(d, protocol=4))
    with pytest.raises(UnsafeFileError, match="tokenizer.pickle holds"):
        load_tokenizer(path)


def test_corrupt_files(tmp_path):
    good = pickle.dumps(fitted().to_dict(), protocol=4)
    cases = {
        "empty.pickle": b"",
        "truncated.pickle": good[: len(good) // 2],
        "garbage.pickle": b"this is not a pickle at all",
        "trailing.pickle": good + b"junk",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CaptioningError) as raised:
            load_tokenizer(path)
        assert not isinstance(raised.value, pickle.UnpicklingError)
        assert name in str(raised.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.pickle")


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess.Popen"])
def test_payload_nested_in_valid_tokenizer_dict(tmp_path, kind):
    marker = tmp_path / "pwned"
    d = fitted().to_dict()
    d["word_counts"]["dog"] = payloads(marker)[kind]
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(d, protocol=4))
    assert_refused(path, marker)


def test_file_layout_is_pinned(tmp_path):
    tokenizer = CaptionTokenizer().fit(["A dog.", "a cat"])
    path = tmp_path / "tokenizer.pickle"
    tokenizer.save(path)
    expected = {
        "format": "captioning.tokenizer",
        "version": 1,
        "config": {
            "lower": True, "filters": DEFAULT_FILTERS, "remove_articles": False,
            "start_token": "<start>", "end_token": "<end>", "oov_token": "<unk>",
            "max_length": None, "long_captions": "truncate", "min_count": 1, "num_words": None,
        },
        "word_index": {"<unk>": 1, "<start>": 2, "<end>": 3, "a": 4, "cat": 5, "dog": 6},
        "word_counts": {"a": 2, "cat": 1, "dog": 1},
        "legacy": None,
    }
    assert (FORMAT_NAME, FORMAT_VERSION) == ("captioning.tokenizer", 1)
    assert path.read_bytes() == pickle.dumps(expected, protocol=4)


def test_save_replaces_a_file_whole_and_reports_failures(tmp_path):
    path = tmp_path / "tokenizer.pickle"
    fitted().save(path)
    CaptionTokenizer().fit(["zebra"]).save(path)
    assert set(load_tokenizer(path).word_index) == {"<unk>", "<start>", "<end>", "zebra"}
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.pickle"]
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(ConfigError) as raised:
        fitted().save(blocker / "tokenizer.pickle")
    assert str(blocker) in str(raised.value) and "\n" not in str(raised.value)
