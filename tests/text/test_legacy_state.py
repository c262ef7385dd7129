"""Tests for captioning.text.legacy_state: the Keras tokenizer pickles of earlier projects."""

import importlib.util
import pickle
import sys
import types
from pathlib import Path

import pytest

from captioning.errors import ConfigError
from captioning.text import load_tokenizer
from tests.text.helpers import assert_refused, payloads

SEED_RELEASE = Path(__file__).resolve().parents[3] / "shared" / "data" / "seed_release"
LEGACY_PICKLES = [
    SEED_RELEASE / "with_attention" / "tokenizer.pickle",
    SEED_RELEASE / "without_attention" / "tokenizer.pickle",
]
LEGACY_SIZES = {"with_attention": 22226, "without_attention": 22196}


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
    state["word_docs"] = {"dog": payloads(marker)[kind]}
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(_pickle_fake_keras(monkeypatch, state))
    assert_refused(path, marker)


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
         ["OrderedDict"]),
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
    assert_refused(path, tmp_path / "never-created", names)
