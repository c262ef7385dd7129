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
import reprlib

from captioning.errors import CaptioningError, ConfigError, UnsafeFileError
from captioning.utils.files import display_path, format_size, read_limited

__all__ = ["safe_load_pickle"]

PLAIN_TYPES = (dict, list, str, int, float, bool, type(None))
PLAIN_DESCRIPTION = "plain values only (dict, list, str, int, float, bool, None)"
MAX_PICKLE_BYTES = 64 * 2**20
"""The largest pickle `safe_load_pickle` reads: unpickling can take ~90x a file's size."""


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


class _ShortRepr(reprlib.Repr):
    """A `repr` whose work is bounded whatever the value: a few items of a few levels, cut
    strings, and huge integers by their size (their decimal digits could take minutes)."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple = 3, 3, 3, 3
        self.maxset, self.maxfrozenset, self.maxdeque, self.maxarray = 3, 3, 3, 3
        self.maxstring, self.maxother = 40, 40

    def repr_int(self, x, level):
        if x.bit_length() <= 128:
            return repr(x)
        return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"

    def repr_bytes(self, x, level):
        return repr(x[:self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    def repr_instance(self, x, level):
        kind = type(x)
        if kind in (bool, float, complex, type(None)):
            return repr(x)
        return f"<{kind.__module__}.{kind.__qualname__} object>"[:60]


_SHORT_REPR = _ShortRepr()


def shorten(value):
    """A short `repr(value)` for an error message: at most about 40 characters, made in
    bounded time and memory whatever the value (deep, shared or cyclic containers, huge
    integers, long strings)."""
    if isinstance(value, (str, bool, float, type(None))) or (
            type(value) is int and value.bit_length() <= 128):
        text = repr(value[:60] if isinstance(value, str) else value)
    else:
        text = _SHORT_REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _generic_reason(allowed):
    reason = f"this pickle may hold {PLAIN_DESCRIPTION}"
    if allowed:
        reason += " and " + ", ".join(sorted(allowed))
    return reason + "; unpickling anything else could run code"


def read_bytes(file_or_path, what, limit: int = MAX_PICKLE_BYTES):
    """Returns `(data, source)` for a path or a binary file object.

    A path must name a regular file (not a FIFO, a device or a folder) of at most `limit`
    bytes; a file object is read up to `limit` bytes.

    Args:
        file_or_path: a path, or a binary file object open for reading.
        what: what the file is, for error messages (e.g. `"tokenizer"`).
        limit: the most bytes a genuine file of this kind holds.

    Raises:
        ConfigError: the file is missing, a directory, no regular file, unreadable, larger
            than `limit` or open in text mode.
    """
    if hasattr(file_or_path, "read"):
        source = display_path(getattr(file_or_path, "name", "<file object>"))
        try:
            data = file_or_path.read(limit + 1)
        except OSError as error:
            raise ConfigError(f"Cannot read {what} {source}: {error}.") from error
        if not isinstance(data, (bytes, bytearray)):
            raise ConfigError(
                f"{what.capitalize()} {source} is open in text mode; open it with mode 'rb'."
            )
        if len(data) > limit:
            raise ConfigError(f"{source}: the {what} is over {format_size(limit)}, more than "
                              f"any genuine {what} needs; refusing to read it.")
        return bytes(data), source
    if not isinstance(file_or_path, (str, bytes, os.PathLike)):
        raise ConfigError(
            f"Expected a path or a binary file object for the {what}; got "
            f"{shorten(file_or_path)}."
        )
    source = display_path(file_or_path)
    if os.path.isdir(file_or_path):
        raise ConfigError(f"{source} is a directory, not a {what} file.")
    if not os.path.lexists(file_or_path):
        raise ConfigError(f"No {what} at {source}: the file does not exist.")
    return read_limited(file_or_path, limit, what=what, error=ConfigError), source


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


def walk_plain(obj, source, reason, *, max_depth=None, max_int_bits=None):
    """Refuses any object in the graph of `obj` that is not a plain value.

    Walks iteratively, so deep nesting cannot exhaust the stack; shared and cyclic containers
    are visited once, so a small pickle of lists shared 40 levels deep (2**40 items when
    expanded) is walked in 40 steps. Where an object is refused is only spelled out then.

    Args:
        obj: what `unpickle` returned.
        source: the file's name, for the error message.
        reason: why only plain values are allowed, ending the error message.
        max_depth: refuse containers nested deeper than this (None: any depth).
        max_int_bits: refuse integers of more bits than this (None: any size).

    Raises:
        UnsafeFileError: `obj` holds something other than `PLAIN_TYPES`, nests deeper than
            `max_depth` or holds a larger integer than `max_int_bits` (the message names
            the type or the size, and where it is).
    """
    seen = set()
    stack = [(obj, 0, None)]  # (value, depth, (parent entry, key) or None)
    while stack:
        entry = stack.pop()
        value, depth, _ = entry
        kind = type(value)
        problem = None
        if kind not in PLAIN_TYPES:
            problem = f"holds a {kind.__module__}.{kind.__qualname__} object"
        elif kind is int and max_int_bits is not None and value.bit_length() > max_int_bits:
            problem = f"holds an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        elif kind in (dict, list) and max_depth is not None and depth > max_depth:
            problem = f"nests containers more than {max_depth} levels deep"
        if problem:
            where = _where(entry)
            raise UnsafeFileError(
                f"{source} {problem}{f' at {where}' if where else ''}; refusing to load it: "
                f"{reason}."
            )
        if kind not in (dict, list) or id(value) in seen:
            continue
        seen.add(id(value))
        items = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            for part, how in (((key, "key"), (item, "item")) if kind is dict
                              else ((item, "item"),)):
                part_type = type(part)
                if part_type is str or part_type is float or part_type is bool or part is None:
                    continue
                if part_type is int and (max_int_bits is None
                                         or part.bit_length() <= max_int_bits):
                    continue
                stack.append((part, depth + 1, (entry, (how, key))))


def _where(entry, levels: int = 6) -> str:
    """Where a value is, as `[key][3]...`: its last `levels` steps from the top."""
    steps = []
    while entry[2] is not None:
        entry, (how, key) = entry[2]
        steps.append(f"[key {shorten(key)}]" if how == "key" else f"[{shorten(key)}]")
    steps.reverse()
    if len(steps) > levels:
        steps = ["..."] + steps[-levels:]
    return "".join(steps)
