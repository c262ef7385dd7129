"""Tokenizer pickles built to exhaust memory, time or the stack, and pickles that try to change
the loader's own stand-ins (issue 14, items 2, 7 and 10).

Each is loaded in a child process capped at 1 GiB of address space, so a regression fails its
test instead of taking the machine down: before the fix, a 1 KB pickle of lists shared 40
deep made an error message `repr()` 2**40 items."""

from __future__ import annotations

import os
import pickle

import pytest

from tests.release.helpers import (
    CAP_WITH_TENSORFLOW,
    CAP_WITHOUT_TENSORFLOW,
    assert_refused_on_one_line,
    cli_capped,
    rehash,
    run_capped,
)

CHILD = """
import sys
from captioning.errors import CaptioningError
from captioning.text import load_tokenizer
from captioning.text.legacy_state import LEGACY_GLOBALS

def attributes():
    return {name: (getattr(value, "__qualname__", None), getattr(value, "__module__", None),
                   sorted(getattr(value, "__dict__", {})))
            for name, value in LEGACY_GLOBALS.items()}

before = attributes()
try:
    load_tokenizer(sys.argv[1])
    print("loaded")
except CaptioningError as error:
    print(f"refused: {type(error).__name__}: {error}")
print("stand-ins unchanged" if attributes() == before else f"stand-ins changed: {attributes()}")
"""

TOKENIZER_HEAD = b"\x80\x02ckeras_preprocessing.text\nTokenizer\n)\x81"


def _u(text):
    return b"V" + text.encode() + b"\n"


def _shared(depth):
    value = []
    for _ in range(depth):
        value = [value, value]
    return value


def _deep(depth):
    return b"(" * depth + b"]" + b"l" * depth  # LIST opcodes: no recursion to make it


BASE = {"format": "captioning.tokenizer", "version": 1, "config": {}, "word_index": {},
        "word_counts": {}}


def _dump(value):
    return pickle.dumps(value, protocol=4)


def _in_format(raw):
    return b"\x80\x02}" + _u("format") + raw + b"s."


def _legacy_build(target, state):
    """A legacy Keras pickle whose state holds `target` (a global) after a BUILD of `state`."""
    keras_state = b"}(" + _u("word_index") + b"}" + _u("x") + target + state + b"bu"
    return TOKENIZER_HEAD + keras_state + b"b."


QUALNAME = b"N}" + _u("__qualname__") + _u("pwned") + b"s\x86"  # BUILD's (None, slots) state
DICT_STATE = b"}" + _u("__qualname__") + _u("pwned") + b"s"

# case -> (the file's bytes, what the one-line refusal must say)
CASES = {
    "lists shared 40 deep": (_dump(_shared(40)), "nests"),
    "lists shared 40 deep as the format": (_dump(dict(BASE, format=_shared(40))), "nests"),
    "lists shared 40 deep as the config": (_dump(dict(BASE, config=_shared(40))), "nests"),
    "lists shared 40 deep as the version": (_dump(dict(BASE, version=_shared(40))), "nests"),
    "a list 100k deep": (b"\x80\x02" + _deep(100_000) + b".", "nests"),
    "a list 100k deep as the format": (_in_format(_deep(100_000)), "nests"),
    "a 5000-digit version": (_dump(dict(BASE, version=10**5000)), "5001 digits"),
    "a 100000-digit integer": (_dump(10**100_000), "digits"),
    "a 30-digit num_words": (_dump(dict(BASE, config={"num_words": 10**30})), "31 digits"),
    "16 MiB of empty dicts": (b"\x80\x02](" + b"}" * (16 * 2**20) + b"e.", "8.0 MiB"),
    "BUILD on the OrderedDict stand-in": (
        _legacy_build(b"ccollections\nOrderedDict\n", QUALNAME), "OrderedDict"),
    "BUILD on the defaultdict stand-in": (
        _legacy_build(b"ccollections\ndefaultdict\n", DICT_STATE), "defaultdict"),
    "BUILD on the builtins.int stand-in": (
        _legacy_build(b"cbuiltins\nint\n", QUALNAME), "builtins.int"),
    "BUILD on the Tokenizer stand-in class": (
        _legacy_build(b"ckeras_preprocessing.text\nTokenizer\n", QUALNAME), "tokenizer.pickle"),
}


def _load(path):
    code, out, err = run_capped(["-c", CHILD, path], limit=CAP_WITHOUT_TENSORFLOW, timeout=60)
    assert code == 0, f"exit {code}: {err[-2000:]}"
    lines = out.strip().splitlines()
    assert len(lines) == 2, out + err[-2000:]
    return lines


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_tokenizer_pickle_is_refused_on_one_line(tmp_path, case):
    data, said = CASES[case]
    path = tmp_path / "tokenizer.pickle"
    path.write_bytes(data)
    refusal, stand_ins = _load(path)
    assert refusal.startswith("refused: "), refusal
    assert str(path) in refusal and said in refusal, refusal
    assert stand_ins == "stand-ins unchanged"


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_tokenizer_path_that_is_no_file_is_refused_without_reading(tmp_path, kind):
    path = tmp_path / "tokenizer.pickle"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs named pipes")
        os.mkfifo(path)
    else:
        os.symlink(kind, path)
    refusal, _ = _load(path)
    assert refusal.startswith("refused: ConfigError") and "not a regular file" in refusal


def test_the_stand_ins_refuse_every_attribute_change():
    from captioning.text.legacy_state import LEGACY_GLOBALS
    from captioning.text.safe_pickle import PickleAbuse

    for value in LEGACY_GLOBALS.values():
        # A stand-in and its class (a pickle reaches no metaclass: it names no global).
        for target in ((value,) if isinstance(value, type) else (value, type(value))):
            with pytest.raises((PickleAbuse, AttributeError, TypeError)):
                target.__qualname__ = "pwned"
            with pytest.raises((PickleAbuse, AttributeError, TypeError)):
                setattr(target, "extra", 1)
    with pytest.raises(TypeError):
        LEGACY_GLOBALS["builtins.int"] = int


def test_caption_refuses_a_release_with_such_a_tokenizer_with_exit_2(copy_run, dataset):
    # Via the CLI the 2**40-item message used to take 4.25 GB and end in a traceback.
    (copy_run / "tokenizer.pickle").write_bytes(CASES["lists shared 40 deep as the format"][0])
    rehash(copy_run)
    image = next((dataset / "images").glob("*.jpg"))
    code, out, err = cli_capped("caption", image, "--release", copy_run,
                                limit=CAP_WITH_TENSORFLOW, timeout=180)
    assert out == ""
    assert_refused_on_one_line(code, err, "tokenizer.pickle", "nests containers more than 16")
