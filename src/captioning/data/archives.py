"""Zip archives: checked before unpacking, unpacked resumably, marked done when whole.

- `archive_problem` says what is wrong with an archive file before anything is unpacked:
  a size or sha256 other than the published one, a zip cut short (its central directory,
  at the end of the file, is missing), a member that would land outside the folder.
- `unpack_zip` writes each member through a temporary file renamed into place, so a file
  that is there is whole: an unpack stopped half way (a killed session) is resumed by
  unpacking again, which skips the files already there. Each member's CRC is checked as it
  is read. macOS resource forks (`__MACOSX/`) are left out.
- The completion marker, `.<archive name>.complete` in the data folder, is written last,
  once the archive is unpacked whole; until it is there, the archive counts as not unpacked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from captioning.errors import DatasetError
from captioning.utils.files import atomic_write_json, sha256_file

__all__ = ["ArchiveDamaged", "archive_problem", "marker_path", "read_marker", "unpack_zip",
           "write_marker"]

logger = logging.getLogger(__name__)

IGNORED = "__MACOSX"  # macOS resource forks that some archives carry
_PARTIAL = ".unpacking"  # suffix of a member being written


class ArchiveDamaged(DatasetError):
    """An archive turned out damaged while it was unpacked (a CRC error, a cut stream)."""


def archive_problem(path, *, size: int | None = None, sha256: str | None = None
                    ) -> str | None:
    """What is wrong with a zip archive, or None when it can be unpacked.

    Args:
        path: the archive file.
        size: its published size in bytes, when known.
        sha256: its published sha256, when known (the whole file is read).

    Returns:
        One phrase (`"only 120 of 512 bytes"`, `"not a complete zip file (...)"`), or None.
    """
    path = Path(path)
    actual = path.stat().st_size
    if size is not None and actual != size:
        return (f"only {actual} of its {size} bytes" if actual < size
                else f"{actual} bytes, not the {size} of the published archive")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        return f"not a complete zip file ({error})"
    if not members:
        return "an empty zip file"
    for member in members:
        if _target(member.filename) is None:
            return f"it holds {member.filename!r}, which would land outside the data folder"
        if member.header_offset + member.compress_size > actual:
            return f"cut short: {member.filename} ends past the end of the file"
    if sha256 is not None and sha256_file(path) != sha256.lower():
        return f"its sha256 is not the published {sha256}"
    return None


def unpack_zip(path, folder, *, progress: bool = False) -> int:
    """Unpacks a zip archive into `folder`, skipping the files a stopped unpack left whole.

    Args:
        path: the archive (checked with `archive_problem` first).
        folder: where its members go, by their names in the archive.
        progress: show a progress bar of the members (tqdm, on stderr).

    Returns:
        The number of files the archive holds (without `__MACOSX/`).

    Raises:
        ArchiveDamaged: a member cannot be read whole (a bad CRC, a cut stream); the archive
            is damaged.
        DatasetError: a file cannot be written (a full disk); what was unpacked is kept and
            the next unpack resumes.
    """
    from tqdm.auto import tqdm

    path, folder = Path(path), Path(folder)
    count = 0
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if _target(m.filename) not in (None, ())]
        members = [m for m in members if _target(m.filename)[0] != IGNORED]
        with tqdm(total=len(members), unit="file", desc=f"unpacking {path.name}",
                  disable=not progress, leave=False) as bar:
            for member in members:
                target = folder.joinpath(*_target(member.filename))
                if member.is_dir():
                    _make_folder(target, path)
                else:
                    count += 1
                    if not (target.is_file() and target.stat().st_size == member.file_size):
                        _extract(archive, member, target, path)
                bar.update(1)
    return count


def marker_path(folder, file_name: str) -> Path:
    """Where the completion marker of archive `file_name` unpacked into `folder` goes."""
    return Path(folder) / f".{file_name}.complete"


def write_marker(folder, file_name: str, record: dict) -> Path:
    """Writes the completion marker of an archive: the last step of a whole unpack."""
    return atomic_write_json(marker_path(folder, file_name), record, error=DatasetError,
                             again="run again")


def read_marker(folder, file_name: str) -> dict | None:
    """The completion marker's record, or None when the archive was not unpacked whole."""
    try:
        record = json.loads(marker_path(folder, file_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _target(name: str) -> tuple | None:
    """The parts of a member's path under the folder; None when it would climb out."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or ":" in name.split("/", 1)[0]:
        return None
    return tuple(part for part in posix.parts if part not in ("", "."))


def _make_folder(target: Path, archive: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(_unwritable(target, archive, error)) from None


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path,
             path: Path) -> None:
    partial = target.with_name(target.name + _PARTIAL)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink, 2**20)
        os.replace(partial, target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        partial.unlink(missing_ok=True)
        raise ArchiveDamaged(f"{path}: {member.filename} cannot be read whole ({error})"
                             ) from None
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise DatasetError(_unwritable(target, path, error)) from None


def _unwritable(target: Path, archive: Path, error: OSError) -> str:
    return (f"{target}: could not be written while unpacking {archive.name} "
            f"({error.strerror or error}); free some space and run again (the archive is "
            "kept and the unpack resumes)")
