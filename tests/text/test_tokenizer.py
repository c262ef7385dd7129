"""Tests for captioning.tokenizer: vocabulary, encoding, saving, legacy and hostile pickles."""

import importlib.util
import io
import os
import pickle
import pickletools
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from captioning.errors import CaptioningError, ConfigError, UnsafeFileError
from captioning.text.tokenizer import (
    DEFAULT_FILTERS,
    CaptionTokenizer,
    load_tokenizer,
    safe_load_pickle,
)

SEED_RELEASE = Path(__file__).resolve().parents[3] / "shared" / "data" / "seed_release"
LEGACY_PICKLES = [
    SEED_RELEASE / "with_attention" / "tokenizer.pickle",
    SEED_RELEASE / "without_attention" / "tokenizer.pickle",
]
LEGACY_SIZES = {"with_attention": 22226, "without_attention": 22196}

CAPTIONS = [
    "A dog runs on the grass.",
    "A black dog runs!",
    "Two dogs play in the grass",
    "The cat sleeps.",
]


def fitted(**kwargs):
    return CaptionTokenizer(**kwargs).fit(CAPTIONS)


# ---------------------------------------------------------------------------------------------
# Vocabulary and encoding.


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


# ---------------------------------------------------------------------------------------------
# Saving and loading.


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


# ---------------------------------------------------------------------------------------------
# The released Keras tokenizers.


class _TrustedKerasState:
    def __setstate__(self, state):
        self.state = state


class _TrustedUnpickler(pickle.Unpickler):
    """Reads the trusted seed files independently of the code under test."""

    def find_class(self, module, name):
        if (module, name) == ("keras_preprocessing.text", "Tokenizer"):
            return _TrustedKerasState
        return super().find_class(module, name)


@pytest.mark.parametrize("path", LEGACY_PICKLES, ids=lambda p: p.parent.name)
def test_legacy_keras_pickles(path, tmp_path):
    if not path.exists():
        pytest.skip(f"{path} is not available")
    assert importlib.util.find_spec("keras_preprocessing") is None
    tokenizer = load_tokenizer(path)
    assert "keras_preprocessing" not in sys.modules
    with open(path, "rb") as file:
        state = _TrustedUnpickler(file).load().state

    assert tokenizer.word_index == state["word_index"]
    assert tokenizer.index_word == {int(i): w for i, w in state["index_word"].items()}
    assert len(tokenizer.word_index) == LEGACY_SIZES[path.parent.name]
    assert all(tokenizer.index_word[i] == w for w, i in tokenizer.word_index.items())
    assert tokenizer.num_words == 10000 and tokenizer.vocab_size == 10000
    assert tokenizer.oov_token == "<unk>" and tokenizer.oov_id == 1
    assert (tokenizer.start_token, tokenizer.end_token) == ("<sos>", "<eos>")
    assert (tokenizer.start_id, tokenizer.end_id) == (2, 3)
    assert tokenizer.lower is True and tokenizer.filters == "!?,'()_-+=&*$#@."
    assert tokenizer.word_counts == dict(state["word_counts"])

    caption = "a man riding a horse on a beach"
    ids = tokenizer.encode([f"<sos> {caption} <eos>"])[0]
    assert ids == [2] + [state["word_index"][w] for w in caption.split()] + [3]
    assert tokenizer.decode(ids) == caption
    rare = next(w for w, i in state["word_index"].items() if i >= 10000)
    assert tokenizer.encode([f"a {rare}"], add_markers=False) == [[state["word_index"]["a"], 1]]
    assert tokenizer.encode(["A man, riding!"], add_markers=False) == [
        [state["word_index"][w] for w in ("a", "man", "riding")]
    ]

    saved = tmp_path / "converted.pickle"
    tokenizer.save(saved)
    reloaded = load_tokenizer(saved)
    assert reloaded.to_dict() == tokenizer.to_dict()
    assert reloaded.encode([caption]) == tokenizer.encode([caption])


# ---------------------------------------------------------------------------------------------
# Hostile pickles.


class _Call:
    """Pickles as a call of `func(*args)`: what an attacker puts in a file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_command(marker):
    return f"touch {marker}"


def _payloads(marker):
    return {
        "os.system": _Call(os.system, _touch_command(marker)),
        "eval": _Call(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": _Call(subprocess.Popen, ["touch", str(marker)]),
    }


def _assert_refused(path, marker, names=()):
    with pytest.raises(UnsafeFileError) as raised:
        load_tokenizer(path)
    message = str(raised.value)
    assert str(path) in message
    for name in names:
        assert name in message
    assert isinstance(raised.value, CaptioningError)
    assert not marker.exists()
    return message


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess.Popen"])
def test_malicious_pickle_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(_payloads(marker)[kind], protocol=4))
    message = _assert_refused(path, marker)
    assert "refusing to load it" in message and kind.split(".")[-1] in message
    with pytest.raises(UnsafeFileError):
        safe_load_pickle(path)
    assert not marker.exists()


def test_protocol_0_global_names_os_system(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(b"cos\nsystem\n(V" + _touch_command(marker).encode() + b"\ntR.")
    message = _assert_refused(path, marker, names=["os.system"])
    assert message.startswith(f"{path} names os.system; refusing to load it")


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess.Popen"])
def test_payload_nested_in_valid_tokenizer_dict(tmp_path, kind):
    marker = tmp_path / "pwned"
    d = fitted().to_dict()
    d["word_counts"]["dog"] = _payloads(marker)[kind]
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(pickle.dumps(d, protocol=4))
    _assert_refused(path, marker)


def _fake_keras_tokenizer_class(monkeypatch):
    package = types.ModuleType("keras_preprocessing")
    text = types.ModuleType("keras_preprocessing.text")
    tokenizer_class = type("Tokenizer", (), {"__module__": "keras_preprocessing.text"})
    text.Tokenizer = tokenizer_class
    package.text = text
    monkeypatch.setitem(sys.modules, "keras_preprocessing", package)
    monkeypatch.setitem(sys.modules, "keras_preprocessing.text", text)
    return tokenizer_class


def _keras_state():
    return {
        "word_counts": {"<sos>": 2, "dog": 2, "<eos>": 2},
        "filters": "!?,.",
        "split": " ",
        "lower": True,
        "num_words": 50,
        "document_count": 2,
        "char_level": False,
        "oov_token": "<unk>",
        "index_docs": {2: 2, 4: 2, 3: 2},
        "word_index": {"<unk>": 1, "<sos>": 2, "<eos>": 3, "dog": 4},
        "index_word": {"1": "<unk>", "2": "<sos>", "3": "<eos>", "4": "dog"},
        "word_docs": {"<sos>": 2, "dog": 2, "<eos>": 2},
    }


def _pickle_fake_keras(monkeypatch, state):
    with monkeypatch.context() as patch:
        tokenizer_class = _fake_keras_tokenizer_class(patch)
        instance = tokenizer_class()
        instance.__dict__.update(state)
        data = pickle.dumps(instance, protocol=4)
    assert "keras_preprocessing" not in sys.modules
    return data


def test_fake_keras_tokenizer_loads(tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(_pickle_fake_keras(monkeypatch, _keras_state()))
    tokenizer = load_tokenizer(path)
    assert tokenizer.word_index == _keras_state()["word_index"]
    assert tokenizer.index_word == {1: "<unk>", 2: "<sos>", 3: "<eos>", 4: "dog"}
    assert tokenizer.decode(tokenizer.encode(["Dog. cat"])[0]) == "dog <unk>"
    assert tokenizer.vocab_size == 5


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess.Popen"])
def test_keras_tokenizer_smuggling_a_call(tmp_path, monkeypatch, kind):
    marker = tmp_path / "pwned"
    state = _keras_state()
    state["word_docs"] = {"dog": _payloads(marker)[kind]}
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(_pickle_fake_keras(monkeypatch, state))
    _assert_refused(path, marker)


def _u(text):
    return b"V" + text.encode() + b"\n"


_KERAS_HEAD = b"\x80\x02ckeras_preprocessing.text\nTokenizer\n)\x81"
_KERAS_STATE_OPS = (
    b"}(" + _u("word_index") + b"}(" + _u("<unk>") + b"K\x01" + _u("<sos>") + b"K\x02"
    + _u("<eos>") + b"K\x03u" + _u("num_words") + b"N" + _u("oov_token") + _u("<unk>")
    + _u("filters") + _u("") + _u("lower") + b"\x88"
)


@pytest.mark.parametrize(
    "data,names",
    [
        # The minimal hand-built Keras tokenizer, then its abuses.
        (None, ()),
        (_KERAS_HEAD + _KERAS_STATE_OPS + _u("x") + b"cos\nsystem\n" + _u("true") + b"\x85Rub.",
         ["os.system"]),
        (_KERAS_HEAD + _KERAS_STATE_OPS + _u("x") + b"ccollections\ndefaultdict\n"
         + b"ccollections\nOrderedDict\n\x85Rub.", ["defaultdict"]),
        (_KERAS_HEAD + _KERAS_STATE_OPS + _u("x") + b"ccollections\nOrderedDict\n"
         + b"]" + _u("a") + b"K\x01\x86a\x85Rub.", ["OrderedDict"]),
        (_KERAS_HEAD + _KERAS_STATE_OPS + _u("x") + b"cbuiltins\nint\n" + _u("9") + b"\x85Rub.",
         ["builtins.int"]),
        (b"\x80\x02ckeras_preprocessing.text\nTokenizer\n" + _u("arg") + b"\x85\x81" + b"}b.",
         ["with arguments"]),
        (_KERAS_HEAD + b"N}" + _u("__class__") + b"ccollections\nOrderedDict\ns\x86b.",
         ["tuple"]),
        (_KERAS_HEAD + _KERAS_STATE_OPS + b"ub}b.", ["twice"]),
        (b"\x80\x02}" + _u("t") + b"ckeras_preprocessing.text\nTokenizer\n)\x81s.",
         ["dict"]),
        (_KERAS_HEAD + _KERAS_STATE_OPS + _u("x") + b"ccollections\nOrderedDict\nub.",
         ["function"]),
        (b"\x80\x02ccollections\nOrderedDict\n)R.", ["collections.OrderedDict"]),
        (_KERAS_HEAD + _KERAS_STATE_OPS + _u("x") + b"(cbuiltins\neval\n" + b"ub.",
         ["builtins.eval"]),
    ],
    ids=[
        "minimal", "os.system", "defaultdict-factory", "ordereddict-args", "int-call",
        "tokenizer-args", "class-via-build", "build-twice", "tokenizer-nested", "global-as-value",
        "ordereddict-without-keras", "eval-global",
    ],
)
def test_hand_built_keras_pickles(tmp_path, data, names):
    path = tmp_path / "tokenizer.pickle"
    if data is None:
        path.write_bytes(_KERAS_HEAD + _KERAS_STATE_OPS + _u("x") + b"ccollections\ndefaultdict\n"
                         + b"cbuiltins\nint\n\x85R" + b"ub.")
        with pytest.raises(ConfigError, match="unexpected attributes 'x'"):
            load_tokenizer(path)
        path.write_bytes(_KERAS_HEAD + _KERAS_STATE_OPS + b"ub.")
        tokenizer = load_tokenizer(path)
        assert tokenizer.word_index == {"<unk>": 1, "<sos>": 2, "<eos>": 3}
        assert tokenizer.num_words is None and tokenizer.filters == ""
        return
    path.write_bytes(data)
    _assert_refused(path, tmp_path / "never-created", names)


def test_safe_load_pickle_allowed_and_file_objects(tmp_path):
    data = pickle.dumps({"a": [1, 2.5, None, True]}, protocol=4)
    assert safe_load_pickle(io.BytesIO(data)) == {"a": [1, 2.5, None, True]}
    pickled_od = pickle.dumps(__import__("collections").OrderedDict(a=1), protocol=4)
    with pytest.raises(UnsafeFileError, match="collections.OrderedDict"):
        safe_load_pickle(io.BytesIO(pickled_od))
    assert safe_load_pickle(io.BytesIO(pickled_od), allowed={"collections.OrderedDict": dict}) == {
        "a": 1
    }
    with pytest.raises(ConfigError, match="allowed"):
        safe_load_pickle(io.BytesIO(data), allowed=["collections.OrderedDict"])
