"""Captions files built to exhaust the stack, the CPU or the wait (issue 14, item 7): each is
refused with one `DatasetError` line naming the file, in a child process capped at 1 GiB."""

from __future__ import annotations

import json
import os

import pytest

from tests.release.helpers import CAP_WITHOUT_TENSORFLOW, run_capped

CHILD = """
import sys
from captioning.data.captions import read_captions
from captioning.errors import CaptioningError
try:
    table = read_captions(sys.argv[1], format=sys.argv[2])
    print(f"read {len(table)} captions")
except CaptioningError as error:
    print(f"refused: {type(error).__name__}: {error}")
"""

COCO = {"images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"image_id": 1, "caption": "a red circle"}]}


def _coco_with(key_path_value):
    text = json.dumps(COCO)
    old, new = key_path_value
    assert old in text
    return text.replace(old, new, 1)


CASES = {
    "COCO 100k levels deep": (json.dumps(COCO)[:-1] + ', "x": ' + "[" * 100_000
                              + "]" * 100_000 + "}", "coco", "nested"),
    "COCO with a 5000-digit image id": (_coco_with(('"id": 1', '"id": ' + "7" * 5000)),
                                        "coco", "5000 digits"),
    "COCO with a 4000-digit image id": (_coco_with(('"id": 1', '"id": ' + "7" * 4000)),
                                        "coco", "4000 digits"),
    "Karpathy 100k levels deep": ('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                  "karpathy", "nested"),
}


def _read(path, fmt):
    code, out, err = run_capped(["-c", CHILD, path, fmt], limit=CAP_WITHOUT_TENSORFLOW,
                                timeout=60)
    assert code == 0, f"exit {code}: {err[-2000:]}"
    lines = out.strip().splitlines()
    assert len(lines) == 1, out + err[-2000:]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_captions_json_is_refused_on_one_line(tmp_path, case):
    text, fmt, said = CASES[case]
    path = tmp_path / "captions.json"
    path.write_text(text)
    line = _read(path, fmt)
    assert line.startswith("refused: DatasetError"), line
    assert str(path) in line and said in line, line


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "loop"])
def test_a_captions_path_that_is_no_file_is_refused_without_waiting(tmp_path, kind):
    path = tmp_path / "captions.json"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs named pipes")
        os.mkfifo(path)
    elif kind == "loop":
        os.symlink(path, path)
    else:
        os.symlink(kind, path)
    line = _read(path, "coco")
    assert line.startswith("refused: DatasetError") and str(path) in line, line
    said = {"/dev/zero": "character device", "fifo": "FIFO", "loop": "symbolic link loop"}
    assert said[kind] in line, line


def test_a_genuine_coco_file_still_reads_under_the_cap(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(COCO))
    assert _read(path, "coco") == "read 1 captions"
