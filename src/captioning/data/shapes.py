"""The pictures of the synthetic dataset: coloured shapes, how they are drawn and described.

A picture holds one shape (the simple configuration: its captions name the size, colour and
kind) or two to three shapes in distinct columns of a 3x3 grid (the hard configuration: the
captions name their left-to-right order). `random_layout` places the shapes, `render` draws
them on a dark, lightly noisy background, and `describe` writes the captions, all true, one
per template. `captioning.data.synthetic.make_dataset` writes them to disk.
"""

import dataclasses
import math

import numpy as np
from PIL import Image
from PIL import ImageDraw

from captioning.errors import ConfigError
from captioning.utils.checks import check_int

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 215, 35),
    "white": (245, 245, 245),
    "purple": (175, 60, 215),
}
"""The colours a shape can have, as RGB triples, keyed by the word used in captions."""

SHAPES = ("circle", "square", "triangle", "star")
"""The kinds of shape that can be drawn, as named in captions."""

SIZES = ("small", "large")
"""The sizes of a shape in the simple configuration."""

CAPTIONS_PER_IMAGE = 5
"""How many differently phrased captions each image gets."""

SIMPLE_TEMPLATES = (
    "a {large} {colour} {shape}",
    "a {big} {colour} {shape} on a dark background",
    "there is one {large} {colour} {shape}",
    "a picture of a {colour} {shape} that is {large}",
    "the image shows a {big} {colour} {shape}",
)
"""Captions of one shape.

`{large}` is "large" or "small" and `{big}` is "big" or "little".
"""

TWO_SHAPE_TEMPLATES = (
    "a {left} to the left of a {right}",
    "a {right} to the right of a {left}",
    "a {right} is right of a {left}",
    "a {left} on the left and a {right} on the right",
    "there is a {left} left of a {right}",
)
"""Captions of two shapes; each placeholder is a "colour kind" phrase."""

THREE_SHAPE_TEMPLATES = (
    "a {left} , a {middle} and a {right} from left to right",
    "from left to right a {left} , a {middle} and a {right}",
    "a {left} on the left , a {middle} in the middle and a {right} on the right",
    "a {right} on the right , a {middle} in the middle and a {left} on the left",
    "a {middle} between a {left} on the left and a {right} on the right",
)
"""Captions of three shapes; each placeholder is a "colour kind" phrase."""

_SIZE_WORDS = {
    "small": {"large": "small", "big": "little"},
    "large": {"large": "large", "big": "big"},
}
_NOMINAL_EXTENT = {"small": 0.25, "large": 0.55}
_GRID_EXTENT = 0.22
_GRID_SIZE = "medium"
_EXTENT_JITTER = 0.08
_MARGIN = 0.04
_CELL_JITTER = 0.035
_NOISE_STD = 6.0
_SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class DrawnShape:
    """One shape in a synthetic image.

    Attributes:
        colour: A key of `COLOURS`.
        shape: One of `SHAPES`.
        size: "small" or "large" in the simple configuration, "medium" in the
            hard one.
        center: The centre of the shape's bounding box as `(x, y)` fractions of
            the image side, measured from the top-left corner. The pixel there
            always lies inside the shape.
        extent: The side of the shape's square bounding box as a fraction of
            the image side.
    """

    colour: str
    shape: str
    size: str
    center: tuple[float, float]
    extent: float

    @property
    def phrase(self):
        """The shape as named in captions of several shapes, e.g. "red circle"."""
        return f"{self.colour} {self.shape}"


def describe(shapes):
    """Returns the captions of an image holding the given shapes.

    Args:
        shapes: A sequence of one to three `DrawnShape`s. With one shape the
            captions name its size, colour and kind; with two or three, the
            shapes must have distinct horizontal positions and the captions name
            their left-to-right order.

    Returns:
        A list of `CAPTIONS_PER_IMAGE` distinct, lower-case captions, one per
        template, in template order.
    """
    shapes = list(shapes)
    if not 1 <= len(shapes) <= 3:
        raise ConfigError(f"describe() takes 1 to 3 shapes, got {len(shapes)}.")
    for item in shapes:
        if item.colour not in COLOURS:
            raise ConfigError(
                f"Unknown colour {item.colour!r}; expected one of {sorted(COLOURS)}."
            )
        if item.shape not in SHAPES:
            raise ConfigError(
                f"Unknown shape {item.shape!r}; expected one of {SHAPES}."
            )
    if len(shapes) == 1:
        (item,) = shapes
        if item.size not in _SIZE_WORDS:
            raise ConfigError(
                f"A single shape must be 'small' or 'large', got {item.size!r}."
            )
        words = _SIZE_WORDS[item.size]
        return [
            template.format(colour=item.colour, shape=item.shape, **words)
            for template in SIMPLE_TEMPLATES
        ]
    ordered = sorted(shapes, key=lambda item: item.center[0])
    xs = [item.center[0] for item in ordered]
    if len(set(xs)) != len(xs):
        raise ConfigError(
            "Shapes must have distinct horizontal positions to be described, "
            f"got x={xs}."
        )
    if len(ordered) == 2:
        templates = TWO_SHAPE_TEMPLATES
        slots = dict(zip(("left", "right"), (item.phrase for item in ordered)))
    else:
        templates = THREE_SHAPE_TEMPLATES
        names = ("left", "middle", "right")
        slots = dict(zip(names, (item.phrase for item in ordered)))
    return [template.format(**slots) for template in templates]


def vocabulary(shapes_per_image=1):
    """Returns every word the captions of a configuration can use.

    Words are whitespace-separated tokens, so "," counts as a word.

    Args:
        shapes_per_image: 1 for the simple configuration, 2 or 3 for the hard one.

    Returns:
        A sorted list of the distinct words.
    """
    check_int("shapes_per_image", shapes_per_image, 1, 3)
    if shapes_per_image == 1:
        fillers = [
            {"colour": colour, "shape": shape, **words}
            for colour in COLOURS
            for shape in SHAPES
            for words in _SIZE_WORDS.values()
        ]
        templates = SIMPLE_TEMPLATES
    else:
        phrases = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
        fillers = [{"left": p, "middle": p, "right": p} for p in phrases]
        templates = (
            TWO_SHAPE_TEMPLATES if shapes_per_image == 2 else THREE_SHAPE_TEMPLATES
        )
    words = {
        word
        for template in templates
        for filler in fillers
        for word in template.format(**filler).split()
    }
    return sorted(words)


def random_layout(rng, shapes_per_image):
    """Draws the shapes of one picture from `rng`: one (simple) or 2-3 in a 3x3 grid (hard)."""
    if shapes_per_image == 1:
        size = SIZES[rng.integers(len(SIZES))]
        jitter = rng.uniform(1 - _EXTENT_JITTER, 1 + _EXTENT_JITTER)
        extent = _NOMINAL_EXTENT[size] * jitter
        low = extent / 2 + _MARGIN
        x, y = rng.uniform(low, 1 - low, size=2)
        return [
            DrawnShape(
                colour=list(COLOURS)[rng.integers(len(COLOURS))],
                shape=SHAPES[rng.integers(len(SHAPES))],
                size=size,
                center=(float(x), float(y)),
                extent=float(extent),
            )
        ]
    kinds = rng.choice(len(COLOURS) * len(SHAPES), size=shapes_per_image, replace=False)
    columns = np.sort(rng.choice(3, size=shapes_per_image, replace=False))
    rows = rng.integers(3, size=shapes_per_image)
    shapes = []
    for kind, column, row in zip(kinds, columns, rows):
        extent = _GRID_EXTENT * rng.uniform(1 - _EXTENT_JITTER, 1 + _EXTENT_JITTER)
        dx, dy = rng.uniform(-_CELL_JITTER, _CELL_JITTER, size=2)
        shapes.append(
            DrawnShape(
                colour=list(COLOURS)[kind // len(SHAPES)],
                shape=SHAPES[kind % len(SHAPES)],
                size=_GRID_SIZE,
                center=(float((column + 0.5) / 3 + dx), float((row + 0.5) / 3 + dy)),
                extent=float(extent),
            )
        )
    return shapes


def _unit_outline(points):
    """Centres a polygon's bounding box on the origin and scales it into [-1, 1]."""
    points = np.asarray(points, dtype=np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - (low + high) / 2) * (2 / (high - low).max())


def _star(points=5, inner=0.42):
    angles = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_OUTLINES = {
    "square": _unit_outline([(-1, -1), (1, -1), (1, 1), (-1, 1)]),
    "triangle": _unit_outline(
        [(math.cos(a), math.sin(a)) for a in np.radians([-90, 30, 150])]
    ),
    "star": _unit_outline(_star()),
}


def render(shapes, image_size, background, rng):
    """Draws `shapes` on a `background` grey square of side `image_size`, with `rng`'s noise.

    The shapes are drawn at 4 times the size and reduced, so their edges are antialiased.
    """
    side = image_size * _SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    for item in shapes:
        cx, cy = item.center[0] * side, item.center[1] * side
        half = item.extent * side / 2
        fill = COLOURS[item.colour]
        if item.shape == "circle":
            draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
        else:
            outline = _OUTLINES[item.shape] * half + (cx, cy)
            draw.polygon([tuple(point) for point in outline], fill=fill)
    pixels = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float64)
    pixels = pixels + rng.normal(0.0, _NOISE_STD, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
