"""Files written whole or not at all, and their hashes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

from captioning.errors import CaptioningError


def sha256_file(path, chunk: int = 2**20) -> str:
    """The hex sha256 of a file's bytes, read in `chunk`-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
