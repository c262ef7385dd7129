"""Aliases that keep the flat module names of 0.1 (`captioning.features`, ...) importable."""

from __future__ import annotations

import importlib
import warnings

_warned: set[str] = set()


def moved(old: str, new: tuple[str, ...]):
    """A PEP 562 `__getattr__` for module `old` that finds names in the modules `new`.

    The first use of each old module warns once (a `FutureWarning` naming the new place);
    the aliases go away in 0.3.
    """

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if old not in _warned:
            _warned.add(old)
            warnings.warn(f"{old} moved to {new[0]}; import from there (the old name goes "
                          "away in captioning 0.3)", FutureWarning, stacklevel=2)
        for target in new:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {new[0]})")

    return __getattr__
