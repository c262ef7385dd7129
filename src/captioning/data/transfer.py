"""One file over HTTP: resumed where it stopped, redirects followed, a progress bar.

`fetch_file(url, path)` writes into `<path>.part` and renames it to `path` once every byte
has come. A stopped transfer (a dropped connection, a timeout, a killed session) leaves the
`.part` file; the next call asks the server for the rest only (an HTTP `Range` request) and
appends it, or starts over when the server sends the whole file instead. A connection
dropped mid-way is resumed at once, a few times, before giving up with a message that says
to run again.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from captioning.errors import DatasetError
from captioning.utils.checks import check_int, check_number

__all__ = ["fetch_file", "human_size"]

logger = logging.getLogger(__name__)

_CHUNK = 2**20
_RETRY_WAIT = 2.0  # seconds before the first resume; doubled each time
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _Stopped(Exception):
    """The transfer stopped before the end; the `.part` file keeps what came."""


class _StartOver(Exception):
    """What the `.part` file holds cannot be resumed; it is emptied."""


def human_size(count: float) -> str:
    """`1536` -> `"1.5 KiB"`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def fetch_file(url: str, path, *, timeout: float = 60.0, progress: bool = True,
               attempts: int = 4) -> Path:
    """Downloads `url` into `path`, resuming a `<path>.part` left by an earlier call.

    Args:
        url: an `http://` or `https://` URL; redirects are followed.
        path: the file to write; its folder must exist.
        timeout: seconds without a byte from the server before the connection counts as
            dropped.
        progress: show a progress bar (tqdm, on stderr).
        attempts: transfers tried in this call when the connection drops.

    Returns:
        `path`, complete.

    Raises:
        DatasetError: the server cannot be reached or refuses the file (one line naming the
            URL and what to do), the connection dropped `attempts` times (the `.part` file
            is kept, so running again resumes), or the file cannot be written.
    """
    check_number("timeout", timeout, 0, exclusive_minimum=True)
    check_int("attempts", attempts, 1)
    path = Path(path)
    part = path.with_name(path.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except _StartOver as reason:
            logger.info("%s: %s; downloading it from the start.", part.name, reason)
            _empty(part)
        except _Stopped as reason:
            have = part.stat().st_size if part.exists() else 0
            if attempt == attempts:
                raise DatasetError(
                    f"the download of {url} stopped at {human_size(have)} ({reason}), "
                    f"{attempts} times; run it again: it resumes from {part}") from None
            wait = _RETRY_WAIT * 2 ** (attempt - 1)
            logger.warning("The download of %s stopped at %s (%s); resuming in %.0f s.",
                           path.name, human_size(have), reason, wait)
            time.sleep(wait)
    else:  # every attempt started over
        raise DatasetError(f"the download of {url} could not be resumed nor restarted; run "
                           "it again")
    try:
        os.replace(part, path)
    except OSError as error:
        raise DatasetError(f"{part}: cannot be renamed to {path.name} "
                           f"({error.strerror or error}); check the folder and run again"
                           ) from None
    return path


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One request: the rest of the file after what `part` holds, appended to it."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "captioning", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            total = _total_of(error.headers.get("Content-Range", ""))
            if total == have:
                return  # it was all there
            raise _StartOver(f"the server cannot resume at byte {have}") from None
        if error.code >= 500 or error.code == 429:
            raise _Stopped(f"HTTP {error.code} {error.reason}") from None
        raise DatasetError(_unreachable(url, error, part.parent)) from None
    except (urllib.error.URLError, ValueError) as error:
        raise DatasetError(_unreachable(url, error, part.parent)) from None
    except (http.client.HTTPException, OSError) as error:  # dropped before the headers
        raise _Stopped(_reason(error)) from None
    with response:
        start, total = _range_of(response, have)
        if start == 0 and have:
            logger.info("%s: the server sends the whole file again (no resume); starting "
                        "over.", part.name)
        elif have:
            logger.info("Resuming the download of %s at %s of %s.", url, human_size(have),
                        human_size(total) if total else "?")
        _receive(response, part, start, total, progress)


def _range_of(response, have: int) -> tuple[int, int | None]:
    """Where the response's bytes start in the file, and the file's size (None: unknown)."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not match or int(match[1]) != have:
            raise _StartOver("the server answered another byte range than asked")
        return have, None if match[3] == "*" else int(match[3])
    return 0, length


def _total_of(content_range: str) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", content_range.strip())
    return int(match[1]) if match else None


def _receive(response, part: Path, start: int, total: int | None, progress: bool) -> None:
    from tqdm.auto import tqdm

    received = start
    try:
        handle = open(part, "r+b" if start else "wb")
    except OSError as error:
        raise DatasetError(_unwritable(part, error)) from None
    with handle, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=part.name.removesuffix(".part"),
                      disable=not progress, leave=False) as bar:
        handle.seek(start)
        handle.truncate()
        while True:
            try:
                block = response.read(_CHUNK)
            except (http.client.HTTPException, OSError) as error:
                _flush(handle, part)
                raise _Stopped(_reason(error)) from None
            if not block:
                break
            try:
                handle.write(block)
            except OSError as error:
                raise DatasetError(_unwritable(part, error)) from None
            received += len(block)
            bar.update(len(block))
        _flush(handle, part)
    if total is not None and received < total:
        raise _Stopped(f"the connection closed after {human_size(received)} of "
                       f"{human_size(total)}")
    if total is not None and received > total:
        raise _StartOver(f"{received} bytes came, more than the {total} announced")


def _flush(handle, part: Path) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    except OSError as error:
        raise DatasetError(_unwritable(part, error)) from None


def _empty(part: Path) -> None:
    try:
        part.unlink(missing_ok=True)
    except OSError as error:
        raise DatasetError(_unwritable(part, error)) from None


def _reason(error: Exception) -> str:
    if isinstance(error, http.client.IncompleteRead):
        return "the connection closed early"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unwritable(part: Path, error: OSError) -> str:
    return (f"{part}: could not be written ({error.strerror or error}); free some space, or "
            "pick another folder, and run again (the download resumes)")


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
