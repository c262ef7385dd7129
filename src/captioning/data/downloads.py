"""The datasets that can be downloaded (Flickr8k, MS COCO 2014, the Karpathy splits).

`DOWNLOADS` is the registry: for each dataset, the archives to fetch (each archive's URL,
what it unpacks to, and its published size when known) and where the captions file and the
images are once unpacked. `download_dataset` fetches what is missing into a data folder,
checks each archive, unpacks it, marks it complete, removes it, and says where the files are:

```python
captions_file, captions_format, images_dir = download_dataset("flickr8k", "data/flickr8k")
table = read_captions(captions_file, format=captions_format)
```

`python -m captioning download NAME --out DIR` runs the same function.

Everything survives a session that stops at any point (`transfer` and `archives` say how):
a download stopped half way resumes where it stopped; an archive left truncated is deleted
and downloaded again; an unpack stopped half way is resumed; an archive counts as there only
once its completion marker is (written after a whole unpack).

The Flickr8k archives come from the copy that Jason Brownlee keeps on GitHub; COCO from
cocodataset.org (the images, and the official captions of train2014 and val2014 only), with
Andrej Karpathy's train/val/test split file, which is the captions file used. No host
publishes a checksum: the COCO archives' sizes are checked (as their server reports them),
and every archive's zip structure and CRCs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import NamedTuple

from captioning.config import CAPTION_FORMATS
from captioning.data.archives import (
    IGNORED,
    ArchiveDamaged,
    archive_problem,
    read_marker,
    unpack_zip,
    write_marker,
)
from captioning.data.transfer import fetch_file
from captioning.errors import DatasetError
from captioning.utils.checks import check_choice, check_number

__all__ = ["DOWNLOADS", "Archive", "Download", "LocalDataset", "download_dataset",
           "fetch_archive", "locate_dataset"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Archive:
    """One archive of a dataset.

    Attributes:
        url: where it is downloaded from.
        unpacks_to: the name of a file or folder it unpacks to (found anywhere under the
            data folder once unpacked).
        size: its size in bytes as published, or None when unknown; another size means a
            damaged or different file.
        sha256: its sha256 as published, or None when unknown.
        files: how many files the folder `unpacks_to` holds once whole, or None. A data
            folder unpacked before completion markers existed is recognised by it.
    """

    url: str
    unpacks_to: str
    size: int | None = None
    sha256: str | None = None
    files: int | None = None

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


_FLICKR8K = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
_COCO = "http://images.cocodataset.org/"
_KARPATHY = Archive("https://cs.stanford.edu/people/karpathy/deepimagesent/"
                    "caption_datasets.zip", "dataset_coco.json")

DOWNLOADS = {
    "flickr8k": Download(
        archives=(
            Archive(_FLICKR8K + "Flickr8k_Dataset.zip", "Flicker8k_Dataset",  # sic: "Flicker"
                    files=8091),
            Archive(_FLICKR8K + "Flickr8k_text.zip", "Flickr8k.token.txt"),
        ),
        captions="Flickr8k.token.txt",  # the split lists are read from beside it
        format="flickr8k",
        images="Flicker8k_Dataset",
    ),
    "coco": Download(
        archives=(
            Archive(_COCO + "zips/train2014.zip", "train2014", size=13_510_573_713,
                    files=82_783),
            Archive(_COCO + "zips/val2014.zip", "val2014", size=6_645_013_297, files=40_504),
            # The official captions: train2014 and val2014 only, no test split.
            Archive(_COCO + "annotations/annotations_trainval2014.zip",
                    "captions_train2014.json", size=252_872_794),
            _KARPATHY,
        ),
        captions="dataset_coco.json",  # names are train2014/... and val2014/...
        format="karpathy",
    ),
    "karpathy": Download(
        archives=(_KARPATHY,),  # also dataset_flickr8k.json and dataset_flickr30k.json
        captions="dataset_coco.json",
        format="karpathy",
    ),
}
"""The downloadable datasets by name: about 1 GB for Flickr8k, 20 GB for COCO 2014 (with the
Karpathy splits), 36 MB for the Karpathy split files alone (no images)."""


def download_dataset(name: str, data_dir, *, timeout: float = 60.0,
                     progress: bool = True) -> LocalDataset:
    """Downloads and unpacks a dataset of `DOWNLOADS` into `data_dir`, skipping what is there.

    Each archive in turn: skipped when its completion marker is in `data_dir`; else
    downloaded (resuming a `.part` file), or taken from `data_dir` when it is there already
    (downloaded by hand, or left by a run that stopped while unpacking); checked
    (`archive_problem`): a damaged one is deleted and downloaded again, once; unpacked (an
    unpack stopped half way resumes); marked complete; removed.

    Args:
        name: a key of `DOWNLOADS`: `"flickr8k"`, `"coco"` or `"karpathy"`.
        data_dir: the folder to unpack into; made if missing.
        timeout: seconds without a byte from the server before the connection counts as
            dropped.
        progress: show progress bars of the downloads and the unpacking (tqdm, on stderr).

    Returns:
        A `LocalDataset`: the captions file, its format and the images folder.

    Raises:
        DatasetError: a download or an unpacking failed (offline, a full disk, an archive
            damaged twice); the message names the URL or the file, and what to do.
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
        done = read_marker(folder, archive.file_name) is not None
        if done and _find(folder, archive.unpacks_to) is not None:
            _remove(folder / archive.file_name)  # left by a run stopped after the marker
            logger.info("%s is there already (unpacked from %s).", archive.unpacks_to,
                        archive.file_name)
        elif done or not _adopt(folder, archive):
            fetch_archive(archive, folder, timeout=timeout, progress=progress)
    return locate_dataset(name, folder)


def fetch_archive(archive: Archive, data_dir, *, timeout: float = 60.0,
                  progress: bool = True) -> None:
    """Gets one archive into `data_dir` (unless its file is there), checks it, unpacks it,
    writes its completion marker and removes it.

    A damaged archive (the wrong size or sha256, a zip cut short, a CRC error while
    unpacking) is deleted and downloaded again, once.

    Raises:
        DatasetError: the download fails, a file cannot be written, the archive is damaged
            again after a fresh download (the message names the file to delete), or it does
            not unpack to `archive.unpacks_to`.
    """
    folder = Path(data_dir).expanduser()
    path = folder / archive.file_name
    for _ in range(2):  # the second time, downloaded afresh
        fresh = not path.is_file()
        if fresh:
            logger.info("Downloading %s into %s", archive.url, folder)
            fetch_file(archive.url, path, timeout=timeout, progress=progress)
        else:
            logger.info("Checking %s before unpacking it", path)
        problem = archive_problem(path, size=archive.size, sha256=archive.sha256)
        if problem is None:
            try:
                files = unpack_zip(path, folder, progress=progress)
                break
            except ArchiveDamaged as error:
                problem = str(error).split(": ", 1)[-1]
        if fresh:
            raise DatasetError(
                f"{path} is damaged ({problem}) after a fresh download from {archive.url}; "
                f"delete {path} and run again later, or download it yourself into {folder}")
        logger.warning("%s is damaged (%s): deleting it and downloading it again.", path,
                       problem)
        _remove(path)
    if _find(folder, archive.unpacks_to) is None:
        raise DatasetError(f"{path} unpacked, but no {archive.unpacks_to} came out of it; the "
                           f"archive at {archive.url} is not the one expected")
    write_marker(folder, archive.file_name, {
        "url": archive.url, "bytes": path.stat().st_size, "files": files,
        "unpacks_to": archive.unpacks_to})
    _remove(path)
    logger.info("Unpacked %s into %s (%d files)", path.name, folder, files)


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
            raise DatasetError(f"no {wanted} under {folder}; `python -m captioning download "
                               f"{name} --out {folder}` (or download_dataset({name!r}, "
                               f"{str(folder)!r})) fetches and unpacks the {name} archives "
                               "there")
    return LocalDataset(captions, spec.format, images)


def _adopt(folder: Path, archive: Archive) -> bool:
    """Whether a folder that `archive` unpacks to, unpacked before completion markers
    existed, is whole (it holds `archive.files` files); then its marker is written. A
    folder found incomplete is said so, and completed by `fetch_archive`."""
    found = _find(folder, archive.unpacks_to)
    if found is None or (folder / archive.file_name).exists():
        return False
    if archive.files is None or not found.is_dir():
        logger.info("%s has no completion marker: fetching %s again to be sure it is whole.",
                    found, archive.file_name)
        return False
    count = sum(1 for path in found.rglob("*") if path.is_file()
                and not path.name.startswith("."))
    if count != archive.files:
        logger.warning("%s holds %d of its %d files (an unpack stopped half way?): fetching "
                       "%s again to complete it.", found, count, archive.files,
                       archive.file_name)
        return False
    write_marker(folder, archive.file_name, {"url": archive.url, "files": count,
                                             "unpacks_to": archive.unpacks_to})
    logger.info("%s is there already, whole (%d files).", found, count)
    return True


def _find(folder: Path, name: str) -> Path | None:
    """`folder / name` if it exists, else the first `name` found deeper, else None."""
    if (folder / name).exists():
        return folder / name
    found = (path for path in folder.rglob(name) if IGNORED not in path.parts)
    return min(found, key=lambda path: (len(path.parts), str(path)), default=None)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        raise DatasetError(f"{path}: cannot be deleted ({error.strerror or error}); delete it "
                           "yourself and run again") from None

