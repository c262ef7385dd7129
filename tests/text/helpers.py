"""Helpers shared by the text tests: a fitted tokenizer, hostile pickles, scored captions."""

from __future__ import annotations

import os
import subprocess

import pytest

from captioning.errors import CaptioningError, UnsafeFileError
from captioning.text import CaptionTokenizer, load_tokenizer

CAPTIONS = [
    "A dog runs on the grass.",
    "A black dog runs!",
    "Two dogs play in the grass",
    "The cat sleeps.",
]


def fitted(**kwargs):
    return CaptionTokenizer(**kwargs).fit(CAPTIONS)


class Call:
    """Pickles as a call of `func(*args)`: what an attacker puts in a file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def touch_command(marker):
    return f"touch {marker}"


def payloads(marker):
    """Pickled calls that would create `marker` if they ran."""
    return {
        "os.system": Call(os.system, touch_command(marker)),
        "eval": Call(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": Call(subprocess.Popen, ["touch", str(marker)]),
    }


def assert_refused(path, marker, names=()):
    """`load_tokenizer(path)` refuses the file, names it (and `names`), and ran nothing."""
    with pytest.raises(UnsafeFileError) as raised:
        load_tokenizer(path)
    message = str(raised.value)
    assert str(path) in message
    for name in names:
        assert name in message
    assert isinstance(raised.value, CaptioningError)
    assert not marker.exists()
    return message


COLORS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "triangle")
SIZES = ("large", "small", "tiny")


def synthetic_captions():
    """36 images with five references each, imperfect predictions, and two unpredicted images."""
    predictions = {}
    references = {}
    index = 0
    for color in COLORS:
        for shape in SHAPES:
            for size in SIZES:
                image = f"image_{index:03d}.jpg"
                references[image] = [
                    f"A {size} {color} {shape} .",
                    f"a {color} {shape} that is {size}",
                    f"There is a {size} {color} {shape} here .",
                    f"{size} {shape} colored {color}",
                    f"the {shape} is {color} and {size}",
                ]
                wrong_shape = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
                if index % 3 == 0:
                    predictions[image] = f"a {size} {color} {wrong_shape}"
                elif index % 4 == 1:
                    predictions[image] = f"A {color} {shape} ."
                else:
                    predictions[image] = f"a {size} {color} {shape} on a white background"
                index += 1
    references["unpredicted_1.jpg"] = ["a purple hexagon", "an octagon"]
    references["unpredicted_2.jpg"] = ["a grey ellipse"]
    return predictions, references
