"""Tests for `captioning.utils.flags`: flags made from a dataclass's fields."""

import argparse
import dataclasses

import pytest

from captioning.utils.flags import add_field_flags, int_at_least


@dataclasses.dataclass
class Settings:
    width: int = dataclasses.field(default=4, metadata={"help": "how wide"})
    cap: int | None = None
    rate: float = 0.5
    mode: str = dataclasses.field(default="fast", metadata={"choices": ("fast", "slow")})
    fold: bool = True


def _parse(*argv, **options):
    parser = argparse.ArgumentParser()
    names = add_field_flags(parser, Settings, **options)
    return names, parser.parse_args(argv)


def test_each_field_gets_its_typed_flag():
    names, args = _parse("--width", "8", "--cap", "none", "--rate", "2", "--mode", "slow",
                         "--no-fold")
    assert names == ["width", "cap", "rate", "mode", "fold"]
    assert vars(args) == {"width": 8, "cap": None, "rate": 2.0, "mode": "slow", "fold": False}


def test_flags_not_given_leave_no_attribute_unless_defaults_are_kept():
    assert vars(_parse()[1]) == {}
    assert vars(_parse(defaults_kept=True)[1]) == dataclasses.asdict(Settings())
    assert vars(_parse("--cap", "3", names=["cap"])[1]) == {"cap": 3}


@pytest.mark.parametrize("argv, shown", [
    (["--width", "wide"], "argument --width: must be an integer, got 'wide'"),
    (["--cap", "x"], "argument --cap: must be an integer or none, got 'x'"),
    (["--mode", "medium"], "argument --mode: invalid choice: 'medium'"),
])
def test_a_value_of_the_wrong_type_is_a_usage_error(argv, shown, capsys):
    with pytest.raises(SystemExit):
        _parse(*argv)
    assert shown in capsys.readouterr().err


def test_int_at_least_shows_the_bad_value():
    assert int_at_least(1)("3") == 3
    for text, shown in (("0", "got 0"), ("x", "got 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"positive integer, {shown}$"):
            int_at_least(1)(text)
