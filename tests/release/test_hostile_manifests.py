"""Hostile `manifest.json` files and release paths (issue 14, items 3 and 7): each is refused
on one line, quickly, with a bounded read, in a child process capped at
`CAP_WITHOUT_TENSORFLOW` (so an endless read fails here instead of filling the memory)."""

from __future__ import annotations

import json
import os

import pytest

from tests.release.helpers import (
    CAP_WITHOUT_TENSORFLOW,
    assert_refused_on_one_line,
    cli_capped,
    edit_manifest,
    rehash,
    run_capped,
)

CHILD = """
import sys
from captioning.errors import CaptioningError
from captioning.release import load_release
try:
    load_release(sys.argv[1])
    print("loaded")
except CaptioningError as error:
    print("refused:", error)
"""

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")


def _replace_manifest(make):
    def change(run):
        manifest = run / "manifest.json"
        manifest.unlink()
        make(manifest)
        return run
    return change


def _text(text):
    return _replace_manifest(lambda path: path.write_text(text))


def _deep_json(run):
    manifest = json.loads((run / "manifest.json").read_text())
    text = json.dumps(manifest)
    return _text(text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")(run)


def _long_int(digits, key="vocab_size"):
    def change(run):
        manifest = json.loads((run / "manifest.json").read_text())
        text = json.dumps({**manifest, key: 0})
        return _text(text.replace(f'"{key}": 0', f'"{key}": {"9" * digits}'))(run)
    return change


def _sparse(run):
    # 8 GiB that take no disk space: only the size says what it is.
    def make(path):
        with open(path, "wb") as handle:
            handle.truncate(8 * 2**30)
    return _replace_manifest(make)(run)


def _file_path(role, path_of):
    def change(run):
        edit_manifest(run, lambda m: m["files"][role].update(path=path_of(run)))
        return run
    return change


def _looping_file(run):
    os.symlink("loop.hdf5", run / "loop.hdf5")
    return _file_path("encoder", lambda run: "loop.hdf5")(run)


def _fifo_file(run):
    os.mkfifo(run / "pipe.pickle")
    return _file_path("tokenizer", lambda run: "pipe.pickle")(run)


def _looping_release(run):
    os.symlink(run / "itself", run / "itself")
    return run / "itself"


# case -> (how the release is changed, what the refusal must name)
CASES = {
    "manifest.json -> /dev/zero": (_replace_manifest(lambda p: os.symlink("/dev/zero", p)),
                                   ["manifest.json", "character device"]),
    "manifest.json -> /dev/urandom": (_replace_manifest(lambda p: os.symlink("/dev/urandom", p)),
                                      ["manifest.json", "character device"]),
    "manifest.json of 8 GiB (sparse)": (_sparse, ["manifest.json", "8.0 GiB", "4.0 MiB"]),
    "manifest.json 100k levels deep": (_deep_json, ["manifest.json", "nested"]),
    "5000-digit integer": (_long_int(5000), ["manifest.json", "5000 digits"]),
    "4000-digit integer": (_long_int(4000), ["manifest.json", "4000 digits"]),
    "files.encoder.path is a symlink loop": (_looping_file, ["loop.hdf5", "symbolic link loop"]),
    "files.decoder.path holds a NUL byte": (_file_path("decoder", lambda run: "Decoder\0.hdf5"),
                                            ["manifest.json", "NUL"]),
    "files.tokenizer.path is absolute": (_file_path("tokenizer", lambda run: "/dev/zero"),
                                         ["manifest.json", "relative"]),
    "the release path is a symlink loop": (_looping_release, ["itself", "symbolic link loop"]),
}
FIFO_CASES = {
    "manifest.json is a FIFO": (_replace_manifest(os.mkfifo), ["manifest.json", "FIFO"]),
    "files.tokenizer.path is a FIFO": (_fifo_file, ["pipe.pickle", "FIFO"]),
}


def _refusal(target):
    code, out, err = run_capped(["-c", CHILD, target], limit=CAP_WITHOUT_TENSORFLOW, timeout=60)
    assert code == 0, f"exit {code}: {err[-2000:]}"
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refused: "), out + err[-2000:]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_manifest_is_refused_on_one_line(copy_run, case):
    make, names = CASES[case]
    target = make(copy_run)
    message = _refusal(target)
    for name in names:
        assert name in message, message


@needs_fifo
@pytest.mark.parametrize("case", sorted(FIFO_CASES))
def test_a_fifo_is_refused_without_waiting(copy_run, case):
    make, names = FIFO_CASES[case]
    message = _refusal(make(copy_run))
    for name in names:
        assert name in message, message


def test_the_cli_refuses_dev_zero_before_tensorflow_with_exit_2(copy_run, image):
    _replace_manifest(lambda p: os.symlink("/dev/zero", p))(copy_run)
    code, out, err = cli_capped("caption", image, "--release", copy_run,
                                limit=CAP_WITHOUT_TENSORFLOW, timeout=60)
    assert out == ""
    assert_refused_on_one_line(code, err, "manifest.json", "character device")


@needs_fifo
def test_the_cli_refuses_a_fifo_manifest_with_exit_2(copy_run, image):
    _replace_manifest(os.mkfifo)(copy_run)
    code, out, err = cli_capped("caption", image, "--release", copy_run,
                                limit=CAP_WITHOUT_TENSORFLOW, timeout=60)
    assert_refused_on_one_line(code, err, "manifest.json", "FIFO")


def test_a_genuine_manifest_reads_under_the_same_cap(copy_run):
    rehash(copy_run)
    code, out, err = run_capped(
        ["-c", "import sys; from captioning.release import verify_release; "
               "print(sorted(verify_release(sys.argv[1])[2]))", copy_run],
        limit=CAP_WITHOUT_TENSORFLOW, timeout=60)
    assert code == 0, err[-2000:]
    assert out.strip() == "['decoder', 'encoder', 'tokenizer']"


def test_a_release_path_with_a_nul_byte_is_refused_on_one_line(copy_run):
    code, out, err = run_capped(
        ["-c", "import sys\nfrom captioning.errors import CaptioningError\n"
               "from captioning.release import load_release\n"
               "try:\n    load_release(sys.argv[1] + '\\0/manifest.json')\n"
               "except CaptioningError as error:\n    print('refused:', error)\n", copy_run],
        limit=CAP_WITHOUT_TENSORFLOW, timeout=60)
    assert code == 0, err[-2000:]
    assert out.startswith("refused: ") and "NUL byte" in out and len(out.splitlines()) == 1
