"""Files written whole or not at all, files read within a size limit, and their hashes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

from captioning.errors import CaptioningError


def sha256_file(path, chunk: int = 2**20) -> str:
    """The hex sha256 of a file's bytes, read in `chunk`-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def display_path(path, limit: int = 200) -> str:
    """A path as one printable line: `ascii()` of it (cut to `limit`) when it holds control
    characters, a NUL byte or undecodable bytes, or is longer than `limit`."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    if text.isprintable() and len(text) <= limit:
        return text
    return ascii(text[:limit]) + ("..." if len(text) > limit else "")


def format_size(size: int) -> str:
    """`size` bytes for a message: `512 bytes`, `3.0 MiB`, `2.0 GiB`."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, from its `st_mode`: `"a folder"`, `"a named pipe (FIFO)"`."""
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def open_regular(path, *, what: str = "file", error=CaptioningError):
    """Opens `path` for binary reading when it is a regular file (a symlink to one counts).

    A FIFO is opened without blocking and refused, as are folders, devices (`/dev/zero`),
    sockets, symlink loops and paths with a NUL byte, each with one line naming the path.

    Returns:
        A binary file object (the caller closes it).

    Raises:
        error: the path cannot be opened or is no regular file.
    """
    shown = display_path(path)
    try:
        name = os.fspath(path)
    except TypeError:
        raise error(f"the {what} path must be a str or os.PathLike, not "
                    f"{type(path).__name__}") from None
    if ("\0" if isinstance(name, str) else b"\0") in name:
        raise error(f"{shown}: a {what} path cannot hold a NUL byte; check the path")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(name, flags)
    except OSError as failure:
        raise error(f"{shown}: cannot read the {what} ({describe_os_error(failure)})") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{shown}: the {what} is {file_kind(mode)}, not a regular file; give "
                        "the path of the file itself")
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def describe_os_error(failure: OSError) -> str:
    """The reason of an `OSError`, worded for a user (`a symbolic link loop`, ...)."""
    if failure.errno == errno.ELOOP:
        return "a symbolic link loop"
    if failure.errno == errno.ENOENT:
        return "no such file"
    return failure.strerror or str(failure)


def read_limited(path, limit: int, *, what: str = "file", error=CaptioningError) -> bytes:
    """The bytes of the regular file `path`, refused when it holds more than `limit`.

    The file is read up to `limit + 1` bytes whatever its size says (a file that grows, or
    reports size 0 as `/proc` files do, cannot make it read more).

    Raises:
        error: the file is not a regular file, cannot be read, or is larger than `limit`
            (the message names the file, its size and the limit).
    """
    with open_regular(path, what=what, error=error) as handle:
        size = os.fstat(handle.fileno()).st_size
        data = b"" if size > limit else _read_up_to(handle, limit + 1, path, what, error)
    if size > limit or len(data) > limit:
        shown = format_size(max(size, len(data)))
        raise error(f"{display_path(path)}: the {what} is {'over ' * (size <= limit)}{shown}, "
                    f"more than the {format_size(limit)} any genuine {what} needs; refusing "
                    "to read it")
    return data


def _read_up_to(handle, count, path, what, error) -> bytes:
    """At most `count` bytes, read in blocks: `read(count)` would allocate `count` first."""
    chunks, read = [], 0
    try:
        while read < count and (block := handle.read(min(2**22, count - read))):
            chunks.append(block)
            read += len(block)
        return b"".join(chunks)
    except OSError as failure:
        raise error(f"{display_path(path)}: cannot read the {what} "
                    f"({describe_os_error(failure)})") from None


class JsonLimitError(ValueError):
    """JSON beyond a limit of `parse_json_limited`, or not JSON at all; the message says
    which and where, without the file's name."""


def parse_json_limited(data, *, max_int_digits: int | None = 20, max_depth: int | None = None,
                       max_string: int | None = None):
    """Parses JSON text (or UTF-8 bytes) within limits, in bounded time and stack.

    Integers of more than `max_int_digits` digits are refused as they are met (Python only
    converts up to 4300 digits, and slowly); nesting too deep for the parser, or deeper than
    `max_depth`, and strings longer than `max_string` are refused too.

    Raises:
        JsonLimitError: the text is not UTF-8 or not JSON, or goes beyond a limit; the
            message says which (`line 3, column 7: ...`, `an integer of 5000 digits`).
    """
    def parse_int(text):
        if max_int_digits is not None and len(text.lstrip("-")) > max_int_digits:
            raise JsonLimitError(f"an integer of {len(text.lstrip('-'))} digits (more than "
                                 f"{max_int_digits})")
        return int(text)

    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        value = json.loads(text, parse_int=parse_int)
    except UnicodeDecodeError as error:
        raise JsonLimitError(f"not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise JsonLimitError(f"line {error.lineno}, column {error.colno}: invalid JSON "
                             f"({error.msg})") from None
    except RecursionError:
        raise JsonLimitError("nested deeper than the JSON reader can follow") from None
    except ValueError as error:  # the 4300-digit limit of int(), NaN parsing, ...
        raise JsonLimitError(str(error).splitlines()[0][:120]) from None
    if max_depth is not None or max_string is not None:
        _check_json_value(value, max_depth, max_string)
    return value


def _check_json_value(value, max_depth, max_string):
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if max_string is not None and len(item) > max_string:
                raise JsonLimitError(f"a string of {len(item)} characters (more than "
                                     f"{max_string}): {item[:40]!r}...")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if max_depth is not None and depth >= max_depth:
            raise JsonLimitError(f"nested more than {max_depth} levels deep")
        children = list(item.keys()) + list(item.values()) if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def atomic_write(path, write, *, error=CaptioningError, suffix: str = ".tmp",
                 again: str = "run the same command again") -> Path:
    """Writes `path` whole or not at all: `write(tmp_path)`, fsync, rename over `path`.

    A reader never sees a half-written file, even after a kill or a power cut. A failed
    write (a full disk, a read-only folder) removes the temporary file and raises `error`
    (a `CaptioningError` subclass) with one line that names the file and what to do.
    """
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as failure:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = failure.strerror or str(failure)
        advice = ("free some space" if failure.errno in (errno.ENOSPC, errno.EDQUOT)
                  else "raise the file size limit (ulimit -f)" if failure.errno == errno.EFBIG
                  else "fix that")
        raise error(f"{path}: could not be written ({reason}); {advice} and {again}") from None
    return path


def atomic_write_text(path, text: str, **kwargs) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), **kwargs)


def atomic_write_json(path, value, *, indent: int | None = 2, **kwargs) -> Path:
    """`atomic_write` of `value` as readable UTF-8 JSON (no `\\u` escapes), newline-ended."""
    text = json.dumps(value, indent=indent, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, **kwargs)
