"""Command-line flags made from a dataclass's fields, and argparse types that use `checks`.

`add_field_flags` gives each field of a settings dataclass (such as `CaptionConfig`) its
flag, so a command line cannot drift from the settings it sets: the name in `--kebab-case`,
the field's type as the argparse type (an `X | None` field also takes `none`), the
`choices` and `help` from the field's `metadata`, and `--name/--no-name` for a bool.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from captioning.errors import ConfigError
from captioning.utils.checks import check_int

_METAVARS = {int: "N", float: "X", str: "TEXT"}


def flag_name(name: str) -> str:
    """The flag of a field: `max_length` -> `--max-length`."""
    return "--" + name.replace("_", "-")


def add_field_flags(parser, cls, names=None, *, defaults_kept: bool = False) -> list[str]:
    """Adds one flag per field of the dataclass `cls` (or of the fields `names`).

    Args:
        parser: an `argparse.ArgumentParser` or argument group.
        cls: a dataclass whose fields all have defaults.
        names: the fields to add, in this order; all of them by default.
        defaults_kept: False: a flag not given leaves no attribute in the parsed namespace
            (`argparse.SUPPRESS`), so a settings file read first keeps its value. True: it
            gives the field's default.

    Returns:
        The names of the fields added, which are also the attributes of the namespace.
    """
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints, defaults = typing.get_type_hints(cls), cls()
    names = list(fields) if names is None else list(names)
    for name in names:
        value = getattr(defaults, name)
        add_field_flag(parser, fields[name], hints[name], value,
                       default=value if defaults_kept else argparse.SUPPRESS)
    return names


def add_field_flag(parser, field, hint, value, *, default=argparse.SUPPRESS) -> None:
    """Adds the flag of one dataclass field of type `hint` whose default is `value`."""
    flag = flag_name(field.name)
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)] or [hint]
    kind, optional = kinds[0], hint is not kinds[0]
    help = field.metadata.get("help", "").replace("%", "%%")
    if kind is bool:
        shown = flag if value else f"--no-{flag[2:]}"
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                            help=f"{help} (default {shown})")
        return
    if "\n" not in str(value):  # a default such as a list of control characters: the help says
        help = f"{help} (default {'none' if value is None else value})"
    choices = field.metadata.get("choices")
    parser.add_argument(flag, type=value_type(kind, optional), default=default, choices=choices,
                        help=help, metavar=None if choices else _METAVARS.get(kind))


def value_type(kind, optional: bool = False):
    """An argparse type for `kind` (int, float or str) that also takes `none` if `optional`."""

    def parse(text: str):
        if optional and text.strip().lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            expected = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
            raise argparse.ArgumentTypeError(
                f"must be {expected}{' or none' if optional else ''}, got {text!r}") from None

    parse.__name__ = kind.__name__  # argparse names it in "invalid <type> value" messages
    return parse


def int_at_least(minimum: int):
    """An argparse type: an integer >= `minimum`, refused with `check_int`'s message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = text
        try:
            check_int("", value, minimum)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error).strip()) from None
        return value

    return parse
