"""A synthetic "shapes" captioning dataset written in the real on-disk formats.

COCO and Flickr8k cannot be downloaded everywhere, so the toolkit is tested and
demonstrated on generated pictures of coloured shapes on a dark, lightly noisy
background (`captioning.data.shapes`). `make_dataset` writes the JPEG images and their
captions in the same layout as the real datasets (a plain CSV file, the Flickr8k token and
split files, or COCO caption JSON files), so every loader is exercised exactly as on real
data.

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
from captioning.data import synthetic

captions_file = synthetic.make_dataset("data/shapes", n_images=2000, format="csv")
```
"""

import csv
import io
import json
import os
import pathlib

import numpy as np
from tqdm import tqdm

from captioning.config import SYNTHETIC_FORMATS
from captioning.data.flickr import FLICKR8K_SPLIT_FILES
from captioning.data.shapes import (  # noqa: F401  (the names of this module before 0.2)
    CAPTIONS_PER_IMAGE,
    COLOURS,
    SHAPES,
    SIMPLE_TEMPLATES,
    SIZES,
    THREE_SHAPE_TEMPLATES,
    TWO_SHAPE_TEMPLATES,
    DrawnShape,
    describe,
    random_layout,
    render,
    vocabulary,
)
from captioning.data.table import SPLITS
from captioning.errors import ConfigError, DatasetError
from captioning.utils.checks import check_choice, check_int
from captioning.utils.files import atomic_write

FORMATS = SYNTHETIC_FORMATS
"""The on-disk caption formats `make_dataset` can write."""

METADATA_FILE = "metadata.json"
"""The file, inside the output directory, recording how each image was drawn."""

_BACKGROUND_LEVELS = (35, 56)
_JPEG_QUALITIES = (60, 95)
"""JPEG quality of each image, drawn uniformly from this range, so that a model trained on
the images does not learn one encoder's artefacts (a user's photos come at every quality)."""
_SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}
_PROGRESS_THRESHOLD = 200
_MIN_IMAGES = 10
_MIN_IMAGE_SIZE = 32


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
    check_int("n_images", n_images, _MIN_IMAGES)
    check_int("seed", seed, 0)
    check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    check_int("shapes_per_image", shapes_per_image, 1, 3)
    check_choice("format", format, FORMATS)
    n_images, seed, image_size, shapes_per_image = map(
        int, (n_images, seed, image_size, shapes_per_image))  # NumPy integers too
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
        shapes = random_layout(layout_rng, shapes_per_image)
        background = int(pixel_rng.integers(*_BACKGROUND_LEVELS, endpoint=True))
        image = render(shapes, image_size, background, pixel_rng)
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


def _shape_metadata(item, image_size):
    return {
        "colour": item.colour,
        "shape": item.shape,
        "size": item.size,
        "center": [round(value * image_size, 3) for value in item.center],
        "extent": round(item.extent * image_size, 3),
    }


def _write_bytes(path, text):
    """Writes `text` as UTF-8 with `\n` line ends on every platform, whole or not at all."""
    atomic_write(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")), error=DatasetError)


def _write_text(path, lines):
    _write_bytes(path, "".join(f"{line}\n" for line in lines))


def _write_json(path, value, indent=None):
    _write_bytes(path, json.dumps(value, indent=indent) + "\n")


def _write_csv(out_dir, records, image_size):
    path = out_dir / "captions.csv"
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("image", "caption", "split"))
    for record in records:
        for caption in record["captions"]:
            writer.writerow((record["file_name"], caption, record["split"]))
    _write_bytes(path, text.getvalue())
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
    for split, name in FLICKR8K_SPLIT_FILES.items():
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
