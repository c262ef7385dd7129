"""`python -m captioning download`: the same package code as notebook 01, from a shell.

In this process (`cli.main`), so that the registry can point at a local HTTP server serving
archives laid out as the real ones (`tests/data/layouts.py`).
"""

import socket

import pytest

from captioning import cli
from captioning.data import transfer
from tests.data.layouts import ArchiveServer, point_registry, write_archives


@pytest.fixture
def served(tmp_path, monkeypatch):
    folder = tmp_path / "archives"
    count = write_archives("flickr8k", folder)
    server = ArchiveServer(folder)
    point_registry(monkeypatch, "flickr8k", server.url, folder)
    monkeypatch.setattr(transfer, "_RETRY_WAIT", 0.0)
    yield server, count
    server.close()


def test_download_prints_where_the_files_are_and_the_next_command(served, tmp_path, capsys):
    server, _ = served
    out = tmp_path / "flickr8k"
    assert cli.main(["download", "flickr8k", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"captions_file\t{out / 'Flickr8k.token.txt'}",
                                         "format\tflickr8k",
                                         f"images_dir\t{out / 'Flicker8k_Dataset'}"]
    assert (f"Next: python -m captioning cache --format flickr8k --captions "
            f"{out / 'Flickr8k.token.txt'} --images {out / 'Flicker8k_Dataset'} --out CACHE"
            ) in captured.err
    assert f"Downloading {server.url}Flickr8k_Dataset.zip into {out}" in captured.err

    # Again: nothing is downloaded; the files are where they were.
    assert cli.main(["download", "flickr8k", "--out", str(out)]) == 0
    assert len(server.requests) == 2
    assert capsys.readouterr().out.splitlines()[0] == f"captions_file\t{out / 'Flickr8k.token.txt'}"


def test_download_resumes_a_dropped_connection(served, tmp_path, capsys):
    server, _ = served
    server.drops["Flickr8k_Dataset.zip"] = [2000]
    assert cli.main(["download", "flickr8k", "--out", str(tmp_path / "d")]) == 0
    assert ("Flickr8k_Dataset.zip", "bytes=2000-") in server.requests
    assert "stopped at 2.0 KiB" in capsys.readouterr().err


def test_download_offline_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    point_registry(monkeypatch, "karpathy", f"http://127.0.0.1:{port}/")
    assert cli.main(["download", "karpathy", "--out", str(tmp_path / "k")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines()
             if not line.startswith("Downloading")]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot download http://127.0.0.1:{port}/caption_datasets.zip (")


def test_download_names_the_datasets(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["download", "imagenet", "--out", "x"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'imagenet'" in err
    assert all(name in err.split("choose from")[1] for name in ("flickr8k", "coco", "karpathy"))
