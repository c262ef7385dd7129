"""Tests for `captioning.data.downloads`, `transfer` and `archives`: a local HTTP server on
127.0.0.1 serves small archives laid out as the real ones (`tests/data/layouts.py`)."""

import shutil
import socket
import zipfile

import pytest

from captioning.data import archives, downloads, transfer
from captioning.data.archives import archive_problem, marker_path
from captioning.data.captions import read_captions
from captioning.data.downloads import DOWNLOADS, Archive, Download, download_dataset
from captioning.data.table import check_images
from captioning.errors import CaptioningError, ConfigError, DatasetError
from tests.data.layouts import FLICKR_TEXT, ArchiveServer, point_registry, write_archives


@pytest.fixture
def source(tmp_path):
    return tmp_path / "archives"


@pytest.fixture
def server(source):
    source.mkdir(exist_ok=True)
    httpd = ArchiveServer(source)
    yield httpd
    httpd.close()


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    monkeypatch.setattr(transfer, "_RETRY_WAIT", 0.0)


@pytest.fixture
def flickr8k(server, source, monkeypatch):
    """The two Flickr8k archives, served; the registry points at them with their sizes and
    sha256. Returns the number of images."""
    count = write_archives("flickr8k", source)
    point_registry(monkeypatch, "flickr8k", server.url, source)
    return count


def _images(found):
    table, missing = check_images(read_captions(found.captions_file, found.format),
                                  found.images_dir)
    return table, missing


def test_flickr8k_is_fetched_checked_unpacked_marked_and_removed(flickr8k, server, tmp_path,
                                                                  caplog):
    data = tmp_path / "data"
    with caplog.at_level("INFO", logger="captioning"):
        found = download_dataset("flickr8k", data, progress=False)
    assert server.names() == ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"]
    assert found.captions_file == data / "Flickr8k.token.txt"
    assert found.format == "flickr8k" and found.images_dir == data / "Flicker8k_Dataset"
    # No archive, no .part, no __MACOSX junk left; a completion marker per archive.
    assert sorted(path.name for path in data.iterdir()) == sorted([
        "Flicker8k_Dataset", *FLICKR_TEXT, "readme.txt", ".Flickr8k_Dataset.zip.complete",
        ".Flickr8k_text.zip.complete"])
    table, missing = _images(found)
    assert missing == [] and table["image"].nunique() == flickr8k
    assert set(table["split"]) == {"train", "val", "test"}
    assert f"Downloading {server.url}Flickr8k_Dataset.zip into {data}" in caplog.text

    # Run again: everything is there, nothing is fetched.
    assert download_dataset("flickr8k", data, progress=False) == found
    assert len(server.requests) == 2


def test_coco_brings_the_images_the_official_captions_and_the_karpathy_split(
        server, source, monkeypatch, tmp_path):
    count = write_archives("coco", source)
    point_registry(monkeypatch, "coco", server.url, source)
    data = tmp_path / "coco"
    found = download_dataset("coco", data, progress=False)
    assert server.names() == ["train2014.zip", "val2014.zip", "annotations_trainval2014.zip",
                              "caption_datasets.zip"]
    assert found == (data / "dataset_coco.json", "karpathy", data)
    table, missing = _images(found)
    assert missing == [] and table["image"].nunique() == count
    assert set(table["split"]) == {"train", "val", "test"}  # restval folded into train
    # The official captions are there too, and they have no test split.
    official = read_captions([data / "annotations" / "captions_train2014.json",
                              data / "annotations" / "captions_val2014.json"], "coco",
                             images_dir=data)
    assert set(official["split"]) == {"train", "val"}
    assert check_images(official, data)[1] == []


def test_karpathy_alone(server, source, monkeypatch, tmp_path):
    write_archives("karpathy", source)
    point_registry(monkeypatch, "karpathy", server.url, source)
    found = download_dataset("karpathy", tmp_path / "k", progress=False)
    assert found.captions_file.name == "dataset_coco.json" and found.format == "karpathy"
    assert (tmp_path / "k" / "dataset_flickr8k.json").is_file()


def test_redirects_are_followed(flickr8k, server, tmp_path):
    for name in ("Flickr8k_Dataset.zip", "Flickr8k_text.zip"):
        shutil.copy(server.folder / name, server.folder / f"mirror-{name}")
        server.redirects[name] = f"{server.url}mirror-{name}"
    download_dataset("flickr8k", tmp_path / "data", progress=False)
    assert server.names() == ["Flickr8k_Dataset.zip", "mirror-Flickr8k_Dataset.zip",
                              "Flickr8k_text.zip", "mirror-Flickr8k_text.zip"]


def test_a_redirected_resume_keeps_its_range(flickr8k, server, tmp_path):
    name = "Flickr8k_Dataset.zip"
    shutil.copy(server.folder / name, server.folder / f"mirror-{name}")
    server.redirects[name] = f"{server.url}mirror-{name}"
    server.drops[f"mirror-{name}"] = [1000]
    download_dataset("flickr8k", tmp_path / "data", progress=False)
    assert server.requests[:4] == [(name, None), (f"mirror-{name}", None),
                                   (name, "bytes=1000-"), (f"mirror-{name}", "bytes=1000-")]


def test_a_dropped_connection_is_resumed_where_it_stopped(flickr8k, server, tmp_path, caplog):
    server.drops["Flickr8k_Dataset.zip"] = [1500, 4000]
    data = tmp_path / "data"
    found = download_dataset("flickr8k", data, progress=False)
    assert server.requests[:3] == [("Flickr8k_Dataset.zip", None),
                                   ("Flickr8k_Dataset.zip", "bytes=1500-"),
                                   ("Flickr8k_Dataset.zip", "bytes=4000-")]
    assert "The download of Flickr8k_Dataset.zip stopped at 1.5 KiB" in caplog.text
    assert _images(found)[1] == []


def test_a_server_that_cannot_resume_sends_the_file_again(flickr8k, server, tmp_path):
    server.ranges = False
    server.drops["Flickr8k_Dataset.zip"] = [1500]
    found = download_dataset("flickr8k", tmp_path / "data", progress=False)
    assert server.requests[1] == ("Flickr8k_Dataset.zip", "bytes=1500-")  # asked, refused
    table, missing = _images(found)
    assert missing == [] and table["image"].nunique() == flickr8k


def test_a_connection_that_keeps_dropping_says_run_again_and_resumes_next_run(
        flickr8k, server, tmp_path):
    server.drops["Flickr8k_Dataset.zip"] = [100, 200, 300, 400]
    data = tmp_path / "data"
    with pytest.raises(DatasetError) as caught:
        download_dataset("flickr8k", data, progress=False)
    part = data / "Flickr8k_Dataset.zip.part"
    message = str(caught.value)
    assert message.startswith(f"the download of {server.url}Flickr8k_Dataset.zip stopped at "
                              "400 B (")
    assert message.endswith(f"4 times; run it again: it resumes from {part}")
    assert part.stat().st_size == 400

    server.requests.clear()
    download_dataset("flickr8k", data, progress=False)
    assert server.requests[0] == ("Flickr8k_Dataset.zip", "bytes=400-")
    assert not part.exists()


def test_a_part_file_left_by_a_killed_session_is_resumed(flickr8k, server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    whole = (server.folder / "Flickr8k_text.zip").read_bytes()
    (data / "Flickr8k_text.zip.part").write_bytes(whole[:700])
    download_dataset("flickr8k", data, progress=False)
    assert ("Flickr8k_text.zip", "bytes=700-") in server.requests
    assert (data / "Flickr8k.token.txt").read_bytes() == (
        zipfile.ZipFile(server.folder / "Flickr8k_text.zip").read("Flickr8k.token.txt"))


def test_a_whole_part_file_not_yet_renamed_is_taken_as_it_is(flickr8k, server, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    whole = (server.folder / "Flickr8k_text.zip").read_bytes()
    (data / "Flickr8k_text.zip.part").write_bytes(whole)  # killed before the rename
    download_dataset("flickr8k", data, progress=False)
    assert ("Flickr8k_text.zip", f"bytes={len(whole)}-") in server.requests  # answered 416
    assert (data / "Flickr8k.token.txt").is_file() and not list(data.glob("*.part"))


@pytest.mark.parametrize("known_size", [True, False], ids=["size-recorded", "zip-check-only"])
def test_a_truncated_archive_is_deleted_and_downloaded_again(server, source, monkeypatch,
                                                             tmp_path, caplog, known_size):
    write_archives("flickr8k", source)
    point_registry(monkeypatch, "flickr8k", server.url, source if known_size else None)
    data = tmp_path / "data"
    data.mkdir()
    whole = (source / "Flickr8k_Dataset.zip").read_bytes()
    (data / "Flickr8k_Dataset.zip").write_bytes(whole[:len(whole) // 2])  # a killed session's
    found = download_dataset("flickr8k", data, progress=False)
    assert server.names() == ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"]
    assert (f"{data / 'Flickr8k_Dataset.zip'} is damaged (" in caplog.text
            and "deleting it and downloading it again" in caplog.text)
    assert _images(found)[1] == []


def test_an_archive_damaged_again_after_a_fresh_download_names_the_file(
        server, source, monkeypatch, tmp_path):
    write_archives("flickr8k", source)
    point_registry(monkeypatch, "flickr8k", server.url, source)
    whole = (source / "Flickr8k_text.zip").read_bytes()
    (source / "Flickr8k_text.zip").write_bytes(whole[:-40])  # the host serves a cut file
    data = tmp_path / "data"
    with pytest.raises(DatasetError) as caught:
        download_dataset("flickr8k", data, progress=False)
    path = data / "Flickr8k_text.zip"
    assert str(caught.value) == (
        f"{path} is damaged (only {len(whole) - 40} of its {len(whole)} bytes) after a fresh "
        f"download from {server.url}Flickr8k_text.zip; delete {path} and run again later, "
        f"or download it yourself into {data}")


def test_a_crc_error_while_unpacking_fetches_the_archive_again(server, source, monkeypatch,
                                                               tmp_path):
    write_archives("flickr8k", source)
    point_registry(monkeypatch, "flickr8k", server.url)  # no size nor sha256: zip checks only
    data = tmp_path / "data"
    data.mkdir()
    damaged = bytearray((source / "Flickr8k_text.zip").read_bytes())
    with zipfile.ZipFile(source / "Flickr8k_text.zip") as archive:
        member = archive.getinfo("Flickr8k.token.txt")
    damaged[member.header_offset + 60] ^= 0xFF  # inside the compressed data
    (data / "Flickr8k_text.zip").write_bytes(bytes(damaged))
    assert archive_problem(data / "Flickr8k_text.zip") is None  # it looks whole
    download_dataset("flickr8k", data, progress=False)
    assert server.names() == ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"]
    assert (data / "Flickr8k.token.txt").read_bytes() == (
        zipfile.ZipFile(source / "Flickr8k_text.zip").read("Flickr8k.token.txt"))


def test_an_unpack_killed_half_way_resumes_without_a_download(flickr8k, server, tmp_path,
                                                              monkeypatch):
    data = tmp_path / "data"
    real_extract, calls = archives._extract, []

    def killed_at_the_fifth_file(*args):
        calls.append(args[2])
        if len(calls) == 5:
            raise KeyboardInterrupt
        real_extract(*args)

    monkeypatch.setattr(archives, "_extract", killed_at_the_fifth_file)
    with pytest.raises(KeyboardInterrupt):
        download_dataset("flickr8k", data, progress=False)
    assert not marker_path(data, "Flickr8k_Dataset.zip").exists()
    assert (data / "Flickr8k_Dataset.zip").is_file()  # kept for the resume
    assert len(list((data / "Flicker8k_Dataset").iterdir())) == 4

    monkeypatch.setattr(archives, "_extract", real_extract)
    server.requests.clear()
    found = download_dataset("flickr8k", data, progress=False)
    assert server.names() == ["Flickr8k_text.zip"]  # the images' archive was unpacked again
    assert _images(found)[1] == [] and marker_path(data, "Flickr8k_Dataset.zip").exists()
    assert not list(data.rglob("*.unpacking"))


def test_a_half_unpacked_folder_without_a_marker_is_completed(server, source, monkeypatch,
                                                              tmp_path, caplog):
    # What an earlier version left when a session stopped while unpacking: 4 of 12 images,
    # the captions, no archive and no marker.
    count = write_archives("flickr8k", source)
    point_registry(monkeypatch, "flickr8k", server.url, source)
    spec = DOWNLOADS["flickr8k"]
    archive = spec.archives[0]
    monkeypatch.setitem(DOWNLOADS, "flickr8k", Download(
        (Archive(archive.url, archive.unpacks_to, archive.size, archive.sha256, files=count),
         spec.archives[1]), spec.captions, spec.format, spec.images))
    data = tmp_path / "data"
    with zipfile.ZipFile(source / "Flickr8k_Dataset.zip") as whole:
        names = [n for n in whole.namelist() if n.startswith("Flicker8k_Dataset/")][:4]
        whole.extractall(data, names)
    with zipfile.ZipFile(source / "Flickr8k_text.zip") as text:
        text.extractall(data)
    found = download_dataset("flickr8k", data, progress=False)
    assert f"Flicker8k_Dataset holds 4 of its {count} files" in caplog.text
    assert "Flickr8k_Dataset.zip" in server.names()
    table, missing = _images(found)
    assert missing == [] and table["image"].nunique() == count


def test_a_whole_folder_from_before_the_markers_is_kept(flickr8k, server, source, tmp_path,
                                                        monkeypatch):
    spec = DOWNLOADS["flickr8k"]
    archive = spec.archives[0]
    monkeypatch.setitem(DOWNLOADS, "flickr8k", Download(
        (Archive(archive.url, archive.unpacks_to, files=flickr8k), spec.archives[1]),
        spec.captions, spec.format, spec.images))
    data = tmp_path / "data"
    with zipfile.ZipFile(source / "Flickr8k_Dataset.zip") as whole:
        whole.extractall(data)
    download_dataset("flickr8k", data, progress=False)
    assert server.names() == ["Flickr8k_text.zip"]  # no count to recognise it by
    assert marker_path(data, "Flickr8k_Dataset.zip").exists()


def test_a_marker_without_its_folder_fetches_again(flickr8k, server, tmp_path):
    data = tmp_path / "data"
    download_dataset("flickr8k", data, progress=False)
    shutil.rmtree(data / "Flicker8k_Dataset")
    download_dataset("flickr8k", data, progress=False)
    assert server.names()[2:] == ["Flickr8k_Dataset.zip"]
    assert (data / "Flicker8k_Dataset").is_dir()


def test_the_progress_bar_shows_on_stderr(flickr8k, server, tmp_path, capsys):
    transfer.fetch_file(server.url + "Flickr8k_text.zip", tmp_path / "t.zip", progress=True)
    assert "t.zip" in capsys.readouterr().err


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_offline_is_one_line_naming_the_url_and_the_fix(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}/"  # nothing listens there
    point_registry(monkeypatch, "flickr8k", url)
    with pytest.raises(DatasetError) as caught:
        download_dataset("flickr8k", tmp_path / "data", progress=False)
    message = str(caught.value)
    assert isinstance(caught.value, CaptioningError)
    assert message.startswith(f"cannot download {url}Flickr8k_Dataset.zip (")
    assert "\n" not in message
    assert "check the network connection" in message and str(tmp_path / "data") in message
    assert list((tmp_path / "data").iterdir()) == []


def test_a_missing_file_on_the_server(server, tmp_path):
    with pytest.raises(DatasetError, match="HTTP 404"):
        downloads.fetch_archive(Archive(server.url + "a.zip", "a"), tmp_path, progress=False)
    assert not list(tmp_path.glob("*.part"))


def test_an_archive_without_the_expected_content_is_refused(server, source, tmp_path):
    with zipfile.ZipFile(source / "a.zip", "w") as archive:
        archive.writestr("other.txt", "x")
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(DatasetError, match=r"no expected\.txt came out of it"):
        downloads.fetch_archive(Archive(server.url + "a.zip", "expected.txt"), data,
                                progress=False)


def test_a_member_that_would_land_outside_the_folder_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../evil.txt", "x")
    assert "would land outside the data folder" in archive_problem(tmp_path / "evil.zip")
    assert archive_problem(tmp_path / "evil.zip", size=3) == (
        f"{(tmp_path / 'evil.zip').stat().st_size} bytes, not the 3 of the published archive")


def test_locate_names_what_is_missing_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match=r"no dataset_coco\.json under .*python -m captioning "
                       r"download coco --out"):
        downloads.locate_dataset("coco", tmp_path)
    with pytest.raises(ConfigError, match="dataset must be one of flickr8k, coco, karpathy, "
                       "got 'imagenet'"):
        download_dataset("imagenet", tmp_path)


def test_the_registry_holds_the_real_sources():
    from captioning.cli import DOWNLOADABLE

    assert tuple(DOWNLOADS) == DOWNLOADABLE == ("flickr8k", "coco", "karpathy")
    archives_by_name = {a.file_name: a for spec in DOWNLOADS.values() for a in spec.archives}
    assert all(a.url.startswith(("https://", "http://")) and a.url.endswith(".zip")
               for a in archives_by_name.values())
    assert (archives_by_name["train2014.zip"].url ==
            "http://images.cocodataset.org/zips/train2014.zip")
    assert (archives_by_name["train2014.zip"].size, archives_by_name["val2014.zip"].size,
            archives_by_name["annotations_trainval2014.zip"].size) == (
        13_510_573_713, 6_645_013_297, 252_872_794)
    assert (archives_by_name["Flickr8k_Dataset.zip"].url ==
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
            "Flickr8k_Dataset.zip")
    assert (DOWNLOADS["coco"].format, DOWNLOADS["coco"].images) == ("karpathy", None)
    with pytest.raises(ConfigError, match="format must be one of"):
        Download((), "x.json", "tsv")
