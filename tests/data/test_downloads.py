"""Tests for `captioning.data.downloads`, against a local HTTP server on 127.0.0.1."""

import http.server
import io
import socket
import threading
import zipfile

import pytest

from captioning.data import downloads
from captioning.data.captions import read_captions
from captioning.data.downloads import DOWNLOADS, Archive, Download, download_dataset
from captioning.data.synthetic import make_dataset
from captioning.data.table import check_images
from captioning.errors import CaptioningError, ConfigError, DatasetError

FLICKR_TEXT = ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
               "Flickr_8k.testImages.txt")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` (name -> bytes); `server.declared` may claim another length."""

    def do_GET(self):
        name = self.path.lstrip("/")
        self.server.requests.append(name)
        if name not in self.server.files:
            self.send_error(404)
            return
        body = self.server.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(self.server.declared.get(name, len(body))))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.declared, httpd.requests = {}, {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def flickr8k(server, tmp_path, monkeypatch):
    """The two Flickr8k archives, laid out as the real ones, served; the registry points at
    them. Returns the number of images."""
    source = tmp_path / "source"
    make_dataset(source, n_images=10, image_size=32, format="flickr8k")
    images = {path.name: path.read_bytes() for path in (source / "images").glob("*.jpg")}
    server.files["Flickr8k_Dataset.zip"] = _zip({
        **{f"Flicker8k_Dataset/{name}": data for name, data in images.items()},
        **{f"__MACOSX/Flicker8k_Dataset/._{name}": b"\0" for name in images}})
    server.files["Flickr8k_text.zip"] = _zip({name: (source / name).read_bytes()
                                              for name in FLICKR_TEXT})
    real = DOWNLOADS["flickr8k"]
    local = tuple(Archive(server.url + a.file_name, a.unpacks_to) for a in real.archives)
    monkeypatch.setitem(DOWNLOADS, "flickr8k", Download(local, real.captions, real.format,
                                                        real.images))
    return len(images)


def test_download_fetches_unpacks_and_removes_the_archives(flickr8k, server, tmp_path,
                                                           caplog):
    data = tmp_path / "data"
    with caplog.at_level("INFO", logger="captioning"):
        found = download_dataset("flickr8k", data, progress=False)
    assert server.requests == ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"]
    assert found.captions_file == data / "Flickr8k.token.txt"
    assert found.format == "flickr8k" and found.images_dir == data / "Flicker8k_Dataset"
    assert sorted(path.name for path in data.iterdir()) == sorted(
        ["Flicker8k_Dataset", "__MACOSX", *FLICKR_TEXT])  # no archive, no .part left
    table, missing = check_images(read_captions(found.captions_file, found.format),
                                  found.images_dir, strict=True)
    assert missing == [] and table["image"].nunique() == flickr8k
    assert set(table["split"]) == {"train", "val", "test"}
    assert f"Downloading {server.url}Flickr8k_Dataset.zip into {data}" in caplog.text

    # Run again: everything is there, nothing is fetched.
    assert download_dataset("flickr8k", data, progress=False) == found
    assert len(server.requests) == 2


def test_an_archive_in_the_folder_is_unpacked_without_a_download(flickr8k, server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "Flickr8k_text.zip").write_bytes(server.files["Flickr8k_text.zip"])
    download_dataset("flickr8k", data, progress=False)
    assert server.requests == ["Flickr8k_Dataset.zip"]
    assert (data / "Flickr8k.token.txt").is_file() and not list(data.glob("*.zip"))


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_offline_is_one_line_naming_the_url_and_the_fix(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}/Flickr8k_Dataset.zip"  # nothing listens there
    archives = (Archive(url, "Flicker8k_Dataset"),) + DOWNLOADS["flickr8k"].archives[1:]
    monkeypatch.setitem(DOWNLOADS, "flickr8k",
                        Download(archives, "Flickr8k.token.txt", "flickr8k", "Flicker8k_Dataset"))
    with pytest.raises(DatasetError) as caught:
        download_dataset("flickr8k", tmp_path / "data", progress=False)
    message = str(caught.value)
    assert isinstance(caught.value, CaptioningError)
    assert message.startswith(f"cannot download {url} (") and "\n" not in message
    assert "check the network connection" in message and str(tmp_path / "data") in message
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("served, declared, expected", [
    (None, None, "HTTP 404"),
    (b"not a zip file", None, "not a readable archive"),
    (b"PK" + bytes(40), 10_000, "stopped after"),
], ids=["missing", "not-an-archive", "cut-short"])
def test_a_bad_download_says_what_went_wrong(server, tmp_path, served, declared, expected):
    if served is not None:
        server.files["a.zip"] = served
    if declared is not None:
        server.declared["a.zip"] = declared
    with pytest.raises(DatasetError, match=expected):
        downloads.fetch_archive(Archive(server.url + "a.zip", "a"), tmp_path, progress=False)
    assert not list(tmp_path.glob("*.part"))


def test_an_archive_without_the_expected_content_is_refused(server, tmp_path):
    server.files["a.zip"] = _zip({"other.txt": b"x"})
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(DatasetError, match=r"no expected\.txt came out of it"):
        downloads.fetch_archive(Archive(server.url + "a.zip", "expected.txt"), data,
                                progress=False)


def test_locate_names_what_is_missing_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match=r"no dataset_coco\.json under .*download_dataset"):
        downloads.locate_dataset("coco", tmp_path)
    with pytest.raises(ConfigError, match="dataset must be one of flickr8k, coco, got 'imagenet'"):
        download_dataset("imagenet", tmp_path)


def test_the_registry_holds_the_real_sources():
    assert set(DOWNLOADS) == {"flickr8k", "coco"}
    urls = [archive.url for spec in DOWNLOADS.values() for archive in spec.archives]
    assert all(url.startswith(("https://", "http://")) and url.endswith(".zip") for url in urls)
    assert "http://images.cocodataset.org/zips/train2014.zip" in urls
    assert ("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
            "Flickr8k_Dataset.zip") in urls
    assert (DOWNLOADS["coco"].format, DOWNLOADS["coco"].images) == ("karpathy", None)
    with pytest.raises(ConfigError, match="format must be one of"):
        Download((), "x.json", "tsv")
