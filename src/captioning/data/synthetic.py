"""A synthetic "shapes" captioning dataset written in the real on-disk formats.

COCO and Flickr8k cannot be downloaded everywhere, so the toolkit is tested and
demonstrated on generated pictures of coloured shapes on a dark, lightly noisy
background. `make_dataset` writes the JPEG images and their captions in the same
layout as the real datasets (a plain CSV file, the Flickr8k token and split files,
or COCO caption JSON files), so every loader is exercised exactly as on real data.

Two configurations are available:

- `shapes_per_image=1` (the simple configuration): one shape of a given colour,
  kind and size at a random position. Its captions name the size, colour and kind
  but never the position, so they can be learned from globally pooled
  (position-free) image features.
- `shapes_per_image=2` or `3` (the hard configuration, for attention models): two
  or three shapes in distinct columns of a 3x3 grid. Their captions name the
  shapes' left-to-right order, which pooled features cannot recover.

Each image gets `CAPTIONS_PER_IMAGE` differently phrased captions drawn from a
fixed set of templates, all of them true. Everything is derived from a single
seed, so the same arguments always write byte-identical files.

Example:

```python
from captioning import synthetic

captions_file = synthetic.make_dataset("data/shapes", n_images=2000, format="csv")
```
"""

import csv
import dataclasses
import json
import math
import os
import pathlib

import numpy as np
from PIL import Image
from PIL import ImageDraw
from tqdm import tqdm

from captioning.errors import ConfigError

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

FORMATS = ("csv", "flickr8k", "coco")
"""The on-disk caption formats `make_dataset` can write."""

SPLITS = ("train", "val", "test")
"""The dataset splits, in the order they are written."""

CAPTIONS_PER_IMAGE = 5
"""How many differently phrased captions each image gets."""

METADATA_FILE = "metadata.json"
"""The file, inside the output directory, recording how each image was drawn."""

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
_BACKGROUND_LEVELS = (35, 56)
_NOISE_STD = 6.0
_SUPERSAMPLE = 4
_JPEG_QUALITIES = (60, 95)
"""JPEG quality of each image, drawn uniformly from this range, so that a model trained on
the images does not learn one encoder's artefacts (a user's photos come at every quality)."""
_SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}
_PROGRESS_THRESHOLD = 200
_MIN_IMAGES = 10
_MIN_IMAGE_SIZE = 32


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
    _check_int("shapes_per_image", shapes_per_image, 1, 3)
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


def make_dataset(
    out_dir,
    *,
    n_images=2000,
    seed=7,
    format="csv",
    image_size=128,
    shapes_per_image=1,
):
    """Writes a synthetic shapes captioning dataset.

    The images go to `out_dir/images/shape_000000.jpg`, ... (RGB JPEG, each at a
    quality drawn from 60 to 95). The captions go to files laid out like the real
    dataset of the chosen format:

    - "csv": `out_dir/captions.csv` with columns `image,caption,split`, one row
      per caption, `image` being the file name inside `images/` and `split` one
      of "train", "val", "test".
    - "flickr8k": `out_dir/Flickr8k.token.txt` with lines
      `name.jpg#n<TAB>caption`, and the split lists `Flickr_8k.trainImages.txt`,
      `Flickr_8k.devImages.txt` (the "val" split) and `Flickr_8k.testImages.txt`.
    - "coco": `out_dir/annotations/captions_{train,val,test}.json` in the COCO
      captions format; image ids are unique across the three files, and so are
      annotation ids.

    In every format, `out_dir/metadata.json` records for each image its split,
    its captions and how each shape was drawn (colour, shape, size, and
    `center`/`extent` in pixels), so that tests can check the pictures against
    their captions. About 80% of the images go to "train" and 10% each to "val"
    and "test"; every split holds at least one image. Files already in `out_dir`
    with the same names are overwritten; other files are left alone.

    Args:
        out_dir: The directory to write to; created if missing.
        n_images: How many images to write, at least 10.
        seed: A non-negative integer; the same arguments and seed always write
            byte-identical files.
        format: One of "csv", "flickr8k", "coco".
        image_size: The side of the square images in pixels, at least 32.
        shapes_per_image: 1 for the simple configuration (captions name size,
            colour and kind), 2 or 3 for the hard one (captions name the shapes'
            left-to-right order).

    Returns:
        The path of the main caption file: `captions.csv`,
        `Flickr8k.token.txt`, or `annotations/captions_train.json`.
    """
    _check_int("n_images", n_images, _MIN_IMAGES)
    _check_int("seed", seed, 0)
    _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    _check_int("shapes_per_image", shapes_per_image, 1, 3)
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {format!r}.")
    try:
        out_dir = pathlib.Path(os.fspath(out_dir))
    except TypeError:
        raise ConfigError(f"out_dir must be a path, got {out_dir!r}.") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir {str(out_dir)!r} exists and is not a directory.")

    layout_seed, split_seed, pixel_seed, quality_seed = np.random.SeedSequence(seed).spawn(4)
    layout_rng = np.random.default_rng(layout_seed)
    pixel_rng = np.random.default_rng(pixel_seed)
    quality_rng = np.random.default_rng(quality_seed)
    splits = _assign_splits(n_images, np.random.default_rng(split_seed))

    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(n_images - 1)))
    records = []
    for index in tqdm(
        range(n_images),
        desc="Writing shapes",
        unit="image",
        disable=True if n_images <= _PROGRESS_THRESHOLD else None,
    ):
        shapes = _random_layout(layout_rng, shapes_per_image)
        background = int(pixel_rng.integers(*_BACKGROUND_LEVELS, endpoint=True))
        image = _render(shapes, image_size, background, pixel_rng)
        file_name = f"shape_{index:0{width}d}.jpg"
        quality = int(quality_rng.integers(*_JPEG_QUALITIES, endpoint=True))
        image.save(image_dir / file_name, format="JPEG", quality=quality)
        records.append(
            {
                "id": index + 1,
                "file_name": file_name,
                "split": splits[index],
                "background": background,
                "jpeg_quality": quality,
                "shapes": [_shape_metadata(item, image_size) for item in shapes],
                "captions": describe(shapes),
            }
        )

    writers = {"csv": _write_csv, "flickr8k": _write_flickr8k, "coco": _write_coco}
    main_file = writers[format](out_dir, records, image_size)
    metadata = {
        "seed": seed,
        "n_images": n_images,
        "image_size": image_size,
        "shapes_per_image": shapes_per_image,
        "format": format,
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "images": records,
    }
    _write_json(out_dir / METADATA_FILE, metadata, indent=1)
    return main_file


def _check_int(name, value, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ConfigError(f"{name} must be {bounds}, got {value!r}.")


def _assign_splits(n_images, rng):
    order = rng.permutation(n_images)
    counts = {name: max(1, round(n_images * f)) for name, f in _SPLIT_FRACTIONS.items()}
    splits = ["train"] * n_images
    start = 0
    for name in ("test", "val"):
        for index in order[start : start + counts[name]]:
            splits[index] = name
        start += counts[name]
    return splits


def _random_layout(rng, shapes_per_image):
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


def _render(shapes, image_size, background, rng):
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


def _shape_metadata(item, image_size):
    return {
        "colour": item.colour,
        "shape": item.shape,
        "size": item.size,
        "center": [round(value * image_size, 3) for value in item.center],
        "extent": round(item.extent * image_size, 3),
    }


def _write_text(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        file.writelines(f"{line}\n" for line in lines)


def _write_json(path, value, indent=None):
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        json.dump(value, file, indent=indent)
        file.write("\n")


def _write_csv(out_dir, records, image_size):
    path = out_dir / "captions.csv"
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(("image", "caption", "split"))
        for record in records:
            for caption in record["captions"]:
                writer.writerow((record["file_name"], caption, record["split"]))
    return path


def _write_flickr8k(out_dir, records, image_size):
    path = out_dir / "Flickr8k.token.txt"
    _write_text(
        path,
        (
            f"{record['file_name']}#{n}\t{caption}"
            for record in records
            for n, caption in enumerate(record["captions"])
        ),
    )
    split_files = {
        "train": "Flickr_8k.trainImages.txt",
        "val": "Flickr_8k.devImages.txt",
        "test": "Flickr_8k.testImages.txt",
    }
    for split, name in split_files.items():
        _write_text(
            out_dir / name,
            (record["file_name"] for record in records if record["split"] == split),
        )
    return path


def _write_coco(out_dir, records, image_size):
    annotation_dir = out_dir / "annotations"
    annotation_dir.mkdir(parents=True, exist_ok=True)
    annotation_id = 0
    for split in SPLITS:
        images, annotations = [], []
        for record in records:
            if record["split"] != split:
                continue
            images.append(
                {
                    "id": record["id"],
                    "file_name": record["file_name"],
                    "width": image_size,
                    "height": image_size,
                }
            )
            for caption in record["captions"]:
                annotation_id += 1
                annotations.append(
                    {"id": annotation_id, "image_id": record["id"], "caption": caption}
                )
        _write_json(
            annotation_dir / f"captions_{split}.json",
            {
                "info": {
                    "description": f"Synthetic shapes captions ({split} split)",
                    "version": "1.0",
                    "contributor": "captioning.synthetic",
                },
                "licenses": [],
                "images": images,
                "annotations": annotations,
            },
        )
    return annotation_dir / "captions_train.json"
