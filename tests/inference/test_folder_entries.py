"""A folder given to `caption` reports each entry named like an image that is no image file
(issue 14, item 8): a broken symlink, a FIFO, a symlink loop, a folder named `*.jpg`. Each gets
an error line, as when given explicitly, and the exit code is 1; nothing waits on the FIFO."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.release.helpers import CAP_WITH_TENSORFLOW, cli_capped
from captioning.data.images import find_images

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")

EXPECTED = {
    "broken.jpg": "a broken symbolic link",
    "loop.jpg": "a symbolic link loop",
    "pipe.jpg": "not a regular file (a named pipe (FIFO))",
    "album.jpg": "is a folder, not an image file",
}


@pytest.fixture
def folder(tmp_path, dataset):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(next((dataset / "images").glob("*.jpg")), folder / "good.jpg")
    os.symlink(tmp_path / "nowhere.jpg", folder / "broken.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "album.jpg").mkdir()
    (folder / "notes.txt").write_text("not named like an image: not listed")
    return folder


def test_find_images_reports_each_entry_that_is_no_image_file(folder):
    files, errors = find_images(folder)
    assert files == [str(folder / "good.jpg")]
    assert {os.path.basename(path): message for path, message in errors} == {
        name: EXPECTED[name] + (" (what it points to does not exist)" if name == "broken.jpg"
                                else ", not an image file" if name in ("loop.jpg", "pipe.jpg")
                                else "")
        for name in EXPECTED}


def test_caption_of_such_a_folder_prints_an_error_line_each_and_exits_1(folder, run):
    code, out, err = cli_capped("caption", folder, "--release", run,
                                limit=CAP_WITH_TENSORFLOW, timeout=300)
    lines = dict(line.split("\t", 1) for line in out.strip().splitlines())
    assert code == 1, f"exit {code}: {out}{err[-2000:]}"
    assert set(lines) == {str(folder / name) for name in ["good.jpg", *EXPECTED]}
    assert not lines[str(folder / "good.jpg")].startswith("error:")
    for name, said in EXPECTED.items():
        assert lines[str(folder / name)].startswith("error: ") and said in lines[str(folder / name)]
