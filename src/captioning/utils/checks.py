"""Argument checks shared by every stage; each message shows the bad value.

They raise `ConfigError` (a `CaptioningError`), so the CLI prints them as one line.
"""

from __future__ import annotations

import numbers

from captioning.errors import ConfigError


def is_int(value) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None, *,
              allow_none: bool = False) -> None:
    """Refuses anything but an integer in `minimum..maximum` (or None with `allow_none`)."""
    if value is None and allow_none:
        return
    if not is_int(value) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            expected = f"an integer in {minimum}..{maximum}"
        elif minimum is not None:
            expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        elif maximum is not None:
            expected = f"an integer <= {maximum}"
        else:
            expected = "an integer"
        raise ConfigError(f"{name} must be {expected}{' or None' if allow_none else ''}, "
                          f"got {value!r}")


def check_number(name: str, value, minimum: float | None = None, maximum: float | None = None,
                 *, exclusive_minimum: bool = False, exclusive_maximum: bool = False,
                 allow_none: bool = False) -> None:
    """Refuses anything but a number within the bounds (or None with `allow_none`)."""
    if value is None and allow_none:
        return
    low_bad = minimum is not None and (value <= minimum if exclusive_minimum
                                       else value < minimum) if is_number(value) else True
    high_bad = maximum is not None and (value >= maximum if exclusive_maximum
                                        else value > maximum) if is_number(value) else True
    if not is_number(value) or low_bad or high_bad:
        parts = []
        if minimum is not None:
            parts.append(f"{'>' if exclusive_minimum else '>='} {minimum}")
        if maximum is not None:
            parts.append(f"{'<' if exclusive_maximum else '<='} {maximum}")
        bounds = f" {' and '.join(parts)}" if parts else ""
        raise ConfigError(f"{name} must be a number{bounds}{' or None' if allow_none else ''}, "
                          f"got {value!r}")


def check_choice(name: str, value, choices) -> None:
    """Refuses a value that is not one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_bool(name: str, value) -> None:
    """Refuses anything but True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
