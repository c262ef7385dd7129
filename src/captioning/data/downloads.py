"""The datasets that can be downloaded (Flickr8k, MS COCO 2014), and their download.

`DOWNLOADS` is the registry: for each dataset, the archives to fetch (each archive's URL and
a file or folder it unpacks to, whose presence means it is there already) and where the
captions file and the images are once unpacked. `download_dataset` fetches what is missing
into a data folder, unpacks it, removes the archive, and says where the files are:

```python
captions_file, captions_format, images_dir = download_dataset("flickr8k", "data/flickr8k")
table = read_captions(captions_file, format=captions_format)
```

The Flickr8k archives come from the copy that Jason Brownlee keeps on GitHub; COCO from
cocodataset.org, with Andrej Karpathy's train/val/test split file. None of them publishes a
checksum, so none is checked.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from captioning.config import CAPTION_FORMATS
from captioning.errors import DatasetError
from captioning.utils.checks import check_choice, check_number

__all__ = ["DOWNLOADS", "Archive", "Download", "LocalDataset", "download_dataset",
           "fetch_archive", "locate_dataset"]

logger = logging.getLogger(__name__)

_CHUNK = 2**20
_IGNORED = "__MACOSX"  # macOS resource forks that some archives carry


@dataclasses.dataclass(frozen=True)
class Archive:
    """One archive of a dataset.

    Attributes:
        url: where it is downloaded from.
        unpacks_to: the name of a file or folder it unpacks to; found anywhere under the
            data folder, it means the archive is there already.
    """

    url: str
    unpacks_to: str

    @property
    def file_name(self) -> str:
        """The archive's file name, the last part of its URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Download:
    """A dataset that can be downloaded.

    Attributes:
        archives: its archives, fetched in order.
        captions: the name of its captions file once unpacked.
        format: the `read_captions` format of that file.
        images: the name of the folder the image names are relative to, or `None` for the
            data folder itself.
    """

    archives: tuple[Archive, ...]
    captions: str
    format: str
    images: str | None = None

    def __post_init__(self):
        check_choice("format", self.format, CAPTION_FORMATS)


class LocalDataset(NamedTuple):
    """Where a downloaded dataset's files are: what `read_captions` and `check_images` take."""

    captions_file: Path
    format: str
    images_dir: Path


DOWNLOADS = {
    "flickr8k": Download(
        archives=(
            Archive("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
                    "Flickr8k_Dataset.zip", "Flicker8k_Dataset"),  # sic: "Flicker"
            Archive("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
                    "Flickr8k_text.zip", "Flickr8k.token.txt"),
        ),
        captions="Flickr8k.token.txt",  # the split lists are read from beside it
        format="flickr8k",
        images="Flicker8k_Dataset",
    ),
    "coco": Download(
        archives=(
            Archive("http://images.cocodataset.org/zips/train2014.zip", "train2014"),
            Archive("http://images.cocodataset.org/zips/val2014.zip", "val2014"),
            Archive("https://cs.stanford.edu/people/karpathy/deepimagesent/"
                    "caption_datasets.zip", "dataset_coco.json"),
        ),
        captions="dataset_coco.json",  # names are train2014/... and val2014/...
        format="karpathy",
    ),
}
"""The downloadable datasets by name: about 1 GB for Flickr8k, 19 GB for COCO 2014."""


def download_dataset(name: str, data_dir, *, timeout: float = 60.0,
                     progress: bool = True) -> LocalDataset:
    """Downloads and unpacks a dataset of `DOWNLOADS` into `data_dir`, skipping what is there.

    An archive whose `unpacks_to` is found under `data_dir` is not downloaded again. An
    archive file already in `data_dir` (one downloaded by hand, or left by a run stopped
    while unpacking) is unpacked without being downloaded. Each archive is removed once
    unpacked.

    Args:
        name: a key of `DOWNLOADS`: `"flickr8k"` or `"coco"`.
        data_dir: the folder to unpack into; made if missing.
        timeout: seconds to wait for the server before giving up.
        progress: show a progress bar of each download (tqdm, on stderr).

    Returns:
        A `LocalDataset`: the captions file, its format and the images folder.

    Raises:
        DatasetError: a download or an unpacking failed (offline, say); the message names the
            URL or the file, and what to do.
        ConfigError: `name` is not a key of `DOWNLOADS`.
    """
    check_choice("dataset", name, tuple(DOWNLOADS))
    check_number("timeout", timeout, 0, exclusive_minimum=True)
    folder = Path(data_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"{folder}: cannot make the data folder ({error.strerror or error}); "
                           "pick a folder you can write to") from None
    for archive in DOWNLOADS[name].archives:
        if (folder / archive.file_name).is_file():
            _unpack(folder / archive.file_name, archive, folder)
        elif _find(folder, archive.unpacks_to) is None:
            fetch_archive(archive, folder, timeout=timeout, progress=progress)
        else:
            logger.info("%s is there already under %s; %s not downloaded.", archive.unpacks_to,
                        folder, archive.file_name)
    return locate_dataset(name, folder)


def fetch_archive(archive: Archive, data_dir, *, timeout: float = 60.0,
                  progress: bool = True) -> None:
    """Downloads one archive into `data_dir`, unpacks it there and removes it.

    The download goes to `<archive>.part` first, renamed once complete, so a stopped
    download never passes for an archive.

    Raises:
        DatasetError: the server cannot be reached or the download stops, the file cannot be
            written, or it is not an archive that unpacks to `archive.unpacks_to`.
    """
    folder = Path(data_dir).expanduser()
    path = folder / archive.file_name
    logger.info("Downloading %s into %s", archive.url, folder)
    _download(archive.url, path, timeout, progress)
    _unpack(path, archive, folder)


def locate_dataset(name: str, data_dir) -> LocalDataset:
    """Where the files of a dataset of `DOWNLOADS` are under `data_dir`, once unpacked.

    Raises:
        DatasetError: its captions file or images folder is not there.
    """
    check_choice("dataset", name, tuple(DOWNLOADS))
    spec, folder = DOWNLOADS[name], Path(data_dir).expanduser()
    captions = _find(folder, spec.captions)
    images = folder if spec.images is None else _find(folder, spec.images)
    for wanted, found in ((spec.captions, captions), (spec.images, images)):
        if found is None:
            raise DatasetError(f"no {wanted} under {folder}; download_dataset({name!r}, "
                               f"{str(folder)!r}) fetches and unpacks the {name} archives "
                               "there")
    return LocalDataset(captions, spec.format, images)


def _find(folder: Path, name: str) -> Path | None:
    """`folder / name` if it exists, else the first `name` found deeper, else None."""
    if (folder / name).exists():
        return folder / name
    found = (path for path in folder.rglob(name) if _IGNORED not in path.parts)
    return min(found, key=lambda path: (len(path.parts), str(path)), default=None)


def _download(url: str, path: Path, timeout: float, progress: bool) -> None:
    part = path.with_name(path.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "captioning"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        raise DatasetError(_unreachable(url, error, path.parent)) from None
    total = int(response.headers.get("Content-Length") or 0) or None
    received = 0
    try:
        with response, open(part, "wb") as handle, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name,
                disable=not progress, leave=False) as bar:
            while block := _read(response, url, path.parent):
                handle.write(block)
                received += len(block)
                bar.update(len(block))
            handle.flush()
            os.fsync(handle.fileno())
        if total is not None and received != total:
            raise DatasetError(f"the download of {url} stopped after {received} of {total} "
                               "bytes; run the same command again")
        os.replace(part, path)
    except OSError as error:
        part.unlink(missing_ok=True)
        raise DatasetError(f"{part}: could not be written ({error.strerror or error}); free "
                           "some space, or pick another data folder, and run again") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _read(response, url: str, folder: Path) -> bytes:
    try:
        return response.read(_CHUNK)
    except (http.client.HTTPException, OSError) as error:
        raise DatasetError(_unreachable(url, error, folder)) from None


def _unreachable(url: str, error: Exception, folder: Path) -> str:
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        reason = str(error.reason)
    else:
        reason = str(error) or type(error).__name__
    reason = " ".join(reason.split())
    return (f"cannot download {url} ({reason}); check the network connection, or download "
            f"the file yourself into {folder} and run again")


def _unpack(path: Path, archive: Archive, folder: Path) -> None:
    options = {} if path.suffix.lower() == ".zip" else {"filter": "data"}
    try:
        shutil.unpack_archive(path, folder, **options)
    except (shutil.ReadError, zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable archive ({error}); delete it and run "
                           "again to download it afresh") from None
    except OSError as error:
        raise DatasetError(f"{path}: could not be unpacked into {folder} "
                           f"({error.strerror or error}); free some space and run again "
                           "(the archive is kept and unpacked again)") from None
    if _find(folder, archive.unpacks_to) is None:
        raise DatasetError(f"{path} unpacked, but no {archive.unpacks_to} came out of it; the "
                           f"archive at {archive.url} is not the one expected")
    path.unlink()
    logger.info("Unpacked %s into %s", path.name, folder)
