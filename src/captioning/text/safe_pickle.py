"""Pickles read through a restricted unpickler that refuses every global it was not given.

`safe_load_pickle` is the only way this package reads a pickle: every global a pickle names
(class, function, module attribute) is looked up in an explicit allow-list and refused with
`UnsafeFileError` before it is called, so a pickle that would run `os.system`, `eval` or
`subprocess.Popen` runs nothing. `walk_plain` then checks that what came back is plain values.

Example:

```python
values = safe_load_pickle("stats.pickle")   # plain values only
```
"""

import collections.abc
import io
import os
import pickle

from captioning.errors import CaptioningError, ConfigError, UnsafeFileError

__all__ = ["safe_load_pickle"]

PLAIN_TYPES = (dict, list, str, int, float, bool, type(None))
PLAIN_DESCRIPTION = "plain values only (dict, list, str, int, float, bool, None)"


class RefusedGlobal(UnsafeFileError):
    """A pickle named a global that is not allowed; raised by `find_class`.

    Attributes:
        global_name: the full name (`"module.qualname"`) the pickle asked for.
    """

    def __init__(self, message, global_name):
        super().__init__(message)
        self.global_name = global_name


class PickleAbuse(Exception):
    """An allowed global was used in a way a genuine file never uses it.

    Raised by the stand-ins handed to the unpickler; `unpickle` turns it into an
    `UnsafeFileError` that names the file.
    """


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `allowed`, and refuses every other one."""

    def __init__(self, file, source, allowed, reason):
        super().__init__(file)
        self._source = source
        self._allowed = allowed
        self._reason = reason

    def find_class(self, module, name):
        global_name = f"{module}.{name}"
        if global_name in self._allowed:
            return self._allowed[global_name]
        shown = global_name
        if not shown.isprintable() or len(shown) > 120:
            shown = ascii(shown[:120])
        raise RefusedGlobal(
            f"{self._source} names {shown}; refusing to load it: {self._reason}.", global_name
        )

    def persistent_load(self, pid):
        raise PickleAbuse("uses a persistent id, which no supported file does")


def shorten(value):
    """`repr(value)`, cut to 40 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _generic_reason(allowed):
    reason = f"this pickle may hold {PLAIN_DESCRIPTION}"
    if allowed:
        reason += " and " + ", ".join(sorted(allowed))
    return reason + "; unpickling anything else could run code"


def read_bytes(file_or_path, what):
    """Returns `(data, source)` for a path or a binary file object.

    Args:
        file_or_path: a path, or a binary file object open for reading.
        what: what the file is, for error messages (e.g. `"tokenizer"`).

    Raises:
        ConfigError: the file is missing, a directory, unreadable or open in text mode.
    """
    if hasattr(file_or_path, "read"):
        source = str(getattr(file_or_path, "name", "<file object>"))
        try:
            data = file_or_path.read()
        except OSError as error:
            raise ConfigError(f"Cannot read {what} {source}: {error}.") from error
        if not isinstance(data, (bytes, bytearray)):
            raise ConfigError(
                f"{what.capitalize()} {source} is open in text mode; open it with mode 'rb'."
            )
        return bytes(data), source
    if not isinstance(file_or_path, (str, os.PathLike)):
        raise ConfigError(
            f"Expected a path or a binary file object for the {what}; got {file_or_path!r}."
        )
    source = os.fspath(file_or_path)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    try:
        with open(source, "rb") as file:
            return file.read(), source
    except FileNotFoundError:
        raise ConfigError(f"No {what} at {source}: the file does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"{source} is a directory, not a {what} file.") from None
    except OSError as error:
        raise ConfigError(f"Cannot read {what} {source}: {error.strerror or error}.") from None


def unpickle(data, source, allowed, reason):
    """Unpickles `data` with only the `allowed` globals; every failure names `source`.

    Args:
        data: the pickle's bytes.
        source: the file's name, for error messages.
        allowed: mapping from a global's full name to what the unpickler gets for it.
        reason: why other globals are refused, ending the refusal's message.

    Raises:
        RefusedGlobal: the pickle names a global outside `allowed`.
        UnsafeFileError: the pickle misuses an allowed global or is nested absurdly deep.
        ConfigError: the data is empty, truncated, corrupt or not a pickle.
    """
    if not data:
        raise ConfigError(f"{source} is empty; it is not a pickle (was the file written fully?).")
    stream = io.BytesIO(data)
    unpickler = _RestrictedUnpickler(stream, source, allowed, reason)
    try:
        obj = unpickler.load()
    except CaptioningError:
        raise
    except PickleAbuse as abuse:
        raise UnsafeFileError(f"{source} {abuse}; refusing to load it: {reason}.") from None
    except RecursionError:
        raise UnsafeFileError(f"{source} is nested too deeply to be a genuine file.") from None
    except Exception as error:
        raise ConfigError(
            f"{source} is not a readable pickle ({type(error).__name__}: {error}); it is "
            "truncated, corrupt or not a pickle at all."
        ) from None
    trailing = len(data) - stream.tell()
    if trailing:
        raise ConfigError(
            f"{source} has {trailing} unexpected byte(s) after the end of its pickle; it is "
            "corrupt or was tampered with."
        )
    return obj


def safe_load_pickle(file_or_path, allowed=None):
    """Loads a pickle that may only name the globals in `allowed`.

    Every global (class, function, module attribute) the pickle names is looked up in
    `allowed`; any other global is refused with `UnsafeFileError` when the unpickler meets it,
    before it is called, so a pickle that would run `os.system`, `eval` or `subprocess.Popen`
    runs nothing. With no `allowed` globals a pickle can only build plain values: dict, list,
    tuple, set, str, bytes, int, float, bool and None. The caller checks the structure of what
    comes back.

    Args:
        file_or_path: path of the pickle, or a binary file object open for reading.
        allowed: optional mapping from a global's full name (`"module.qualname"`, e.g.
            `"collections.OrderedDict"`) to the object the unpickler gets for it. Hand it
            harmless stand-ins rather than the real callables where the real ones could be
            misused with arguments a genuine file never passes.

    Returns:
        The unpickled object.

    Raises:
        UnsafeFileError: the pickle names a global outside `allowed` (the message names the
            file and the global), or misuses an allowed one.
        ConfigError: the file is missing, empty, truncated, corrupt or not a pickle.

    Example:

    ```python
    values = safe_load_pickle("stats.pickle")   # plain values only
    ```
    """
    if allowed is None:
        allowed = {}
    if not isinstance(allowed, collections.abc.Mapping) or not all(
        isinstance(name, str) for name in allowed
    ):
        raise ConfigError(
            "`allowed` must map full global names such as 'collections.OrderedDict' to "
            f"objects; got {allowed!r}."
        )
    data, source = read_bytes(file_or_path, "pickle")
    return unpickle(data, source, dict(allowed), _generic_reason(allowed))


def walk_plain(obj, source, reason):
    """Refuses any object in the graph of `obj` that is not a plain value.

    Walks iteratively, so deep nesting cannot exhaust the stack; shared and cyclic containers
    are visited once.

    Args:
        obj: what `unpickle` returned.
        source: the file's name, for the error message.
        reason: why only plain values are allowed, ending the error message.

    Raises:
        UnsafeFileError: `obj` holds something other than `PLAIN_TYPES` (the message names the
            type and where it is).
    """
    seen = set()
    stack = [(obj, "")]
    while stack:
        value, path = stack.pop()
        if type(value) not in PLAIN_TYPES:
            kind = type(value)
            where = f" at {path}" if path else ""
            raise UnsafeFileError(
                f"{source} holds a {kind.__module__}.{kind.__qualname__} object{where}; "
                f"refusing to load it: {reason}."
            )
        if type(value) not in (dict, list) or id(value) in seen:
            continue
        seen.add(id(value))
        items = value.items() if type(value) is dict else enumerate(value)
        for key, item in items:
            if type(key) not in PLAIN_TYPES:
                stack.append((key, f"{path}[key {shorten(key)}]"))
            if type(item) in (dict, list) or type(item) not in PLAIN_TYPES:
                stack.append((item, f"{path}[{shorten(key)}]"))
