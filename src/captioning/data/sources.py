"""Reading a captions file's text or JSON, with errors that name the file and the place.

The format readers share these: a path check, UTF-8 text (a BOM and CRLF line ends are
accepted) read from a regular file of at most `MAX_CAPTIONS_BYTES` (a FIFO or a device is
refused, never waited on), and JSON whose fields are fetched with their JSON path
(`annotations[3].caption`) named in every error. JSON nested too deeply for the parser, or
with integers of more than `MAX_JSON_INT_DIGITS` digits, is refused on one line.
"""

import codecs
import os
import re
from pathlib import Path

from captioning.errors import ConfigError, DatasetError
from captioning.utils.files import (
    JsonLimitError,
    describe_os_error,
    display_path,
    parse_json_limited,
    read_limited,
)

TOKEN_LINE = re.compile(r"(?P<name>\S+?)#(?P<index>\d+)(?:[\t ](?P<caption>.*))?")
"""A line of a Flickr token file: `NAME#N<TAB>CAPTION`."""

MAX_CAPTIONS_BYTES = 2**30
"""The largest captions file read (Karpathy's dataset_coco.json: 150 MB)."""
MAX_JSON_INT_DIGITS = 30
"""The longest integer in a captions JSON file (image ids have at most 20 digits)."""

_JSON_KINDS = {int: "a number", str: "a string", list: "an array", dict: "an object"}


def captions_file(path) -> Path:
    """`path` as a `Path` to an existing file, or a `DatasetError` saying what it is instead."""
    try:
        resolved = Path(os.fspath(path)).expanduser()
    except TypeError:
        raise ConfigError(
            f"A captions file must be given as a str or pathlib.Path, not {type(path).__name__}."
        ) from None
    if "\0" in str(resolved):
        raise DatasetError(f"{display_path(resolved)}: a path cannot hold a NUL byte.")
    if not resolved.exists():
        reason = "a symbolic link loop" if _is_loop(resolved) else "not found"
        raise DatasetError(f"Captions file {reason}: {display_path(resolved)}. Check the path.")
    if resolved.is_dir():
        raise DatasetError(
            f"{resolved} is a folder; pass the captions file inside it "
            "(for example Flickr8k.token.txt or captions_train2014.json)."
        )
    return resolved


def _is_loop(path) -> bool:
    try:
        os.stat(path)
    except OSError as error:
        return describe_os_error(error) == "a symbolic link loop"
    return False


def read_text(path) -> str:
    """The file's UTF-8 text with `\\n` line ends; a byte that is not UTF-8 names its line."""
    data = read_limited(path, MAX_CAPTIONS_BYTES, what="captions file", error=DatasetError)
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}, line {line}: not UTF-8 text (byte {data[error.start]:#04x}). "
            "Save the file as UTF-8, or check that it is a captions file."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def looks_like_json(text) -> bool:
    """Whether the text starts like a JSON object or array."""
    return text.lstrip()[:1] in ("{", "[")


def read_json(path, fmt):
    """The parsed JSON of a file to be read as format `fmt`; other text says its format."""
    text = read_text(path)
    if not looks_like_json(text):
        other = "flickr8k" if TOKEN_LINE.match(text.lstrip()) else "csv"
        raise DatasetError(
            f"{path} is not JSON, so it cannot be read as format {fmt!r}; "
            f"if it is a {other} file, read it with format={other!r}."
        )
    try:
        return parse_json_limited(text, max_int_digits=MAX_JSON_INT_DIGITS)
    except JsonLimitError as error:
        where = ", " if str(error).startswith("line ") else ": "
        raise DatasetError(
            f"{path}{where}{error}; not a readable captions file. The file may be truncated "
            "or damaged; download or export it again."
        ) from None


def json_kind(value) -> str:
    """What a JSON value is, as an error message names it ("an array", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def json_field(path, obj, key, kinds, where, hint=""):
    """Returns `obj[key]`, raising when it is absent or not of `kinds`."""
    expected = " or ".join(_JSON_KINDS[kind] for kind in kinds)
    if key not in obj:
        raise DatasetError(f"{path}: {where}.{key} is missing; expected {expected}.{hint}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DatasetError(
            f"{path}: {where}.{key} is {json_kind(value)}; expected {expected}.{hint}"
        )
    return value


def json_items(path, obj, key, where, hint=""):
    """Returns the objects of the array `obj[key]`, with their JSON paths."""
    items = json_field(path, obj, key, (list,), where, hint)
    prefix = f"{where}." if where else ""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise DatasetError(
                f"{path}: {prefix}{key}[{index}] is {json_kind(item)}; expected an object.{hint}"
            )
    return [(f"{prefix}{key}[{index}]", item) for index, item in enumerate(items)]


def json_root(path, data, fmt, hint):
    """The top-level object of a COCO or Karpathy file; anything else is refused."""
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: the top level is {json_kind(data)}; a {fmt} captions file is an object "
            f"with an 'images' array.{hint}"
        )
    return data
