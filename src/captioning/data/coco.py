"""The COCO captions format: `captions_train2014.json`, `captions_val2017.json`, ...

COCO keeps each file's images in a folder named after it (`train2014/`, `val2014/`) under one
root, so the image names get that folder unless the images folder holds them directly.
"""

import re
from pathlib import Path

from captioning.data.sources import json_field, json_items, json_root, read_json
from captioning.data.table import SPLITS, captions_table
from captioning.errors import ConfigError, DatasetError

_COCO_FILE = re.compile(r"captions_(?P<folder>(?:train|val|test)\d{4})\.json", re.IGNORECASE)


def coco_prefixes(paths, image_prefix, images_dir):
    """The folder put before each COCO file's image names, one per file."""
    if image_prefix is not None:
        prefixes = [image_prefix] * len(paths) if isinstance(image_prefix, str) else image_prefix
        if (not isinstance(prefixes, (list, tuple)) or len(prefixes) != len(paths)
                or not all(isinstance(p, str) for p in prefixes)):
            raise ConfigError(
                "image_prefix must be a str or a list of one str per COCO file "
                f"({len(paths)} files); got {image_prefix!r}."
            )
        prefixes = [p.replace("\\", "/").strip("/") for p in prefixes]
        return [f"{p}/" if p else "" for p in prefixes]
    root = Path(images_dir).expanduser() if images_dir is not None else None
    prefixes = []
    for path in paths:
        match = _COCO_FILE.fullmatch(path.name)
        folder = match["folder"].lower() if match else ""
        if folder and root is not None and not (root / folder).is_dir():
            folder = ""  # images_dir holds this file's images directly
        prefixes.append(f"{folder}/" if folder else "")
    return prefixes


def read_coco(path, split, prefix=""):
    """The table of one COCO captions file; `split=None` takes it from the file's name."""
    if split is None:
        name = path.name.lower()
        split = next((s for s in SPLITS if s in name), "")
    elif split not in SPLITS + ("",):
        raise ConfigError(f"split={split!r} is not one of 'train', 'val', 'test' or ''.")

    data = json_root(path, read_json(path, "coco"), "COCO", "")
    if "annotations" not in data and "images" in data:
        images = data["images"] if isinstance(data["images"], list) else []
        if any(isinstance(image, dict) and "sentences" in image for image in images[:1]):
            hint = " This looks like a Karpathy split file; read it with format='karpathy'."
        else:
            hint = (
                " This file lists images only (like image_info_test2014.json); "
                "COCO captions are in captions_*.json."
            )
        raise DatasetError(f"{path}: annotations is missing; a COCO captions file has one.{hint}")

    names = {}
    for where, image in json_items(path, data, "images", ""):
        image_id = json_field(path, image, "id", (int, str), where)
        file_name = json_field(path, image, "file_name", (str,), where).strip()
        if not file_name:
            raise DatasetError(f"{path}: {where}.file_name is empty; give the image's file name.")
        if image_id in names:
            raise DatasetError(
                f"{path}: {where}.id {image_id!r} repeats an earlier image's id; "
                "each image needs its own id."
            )
        names[image_id] = prefix + file_name

    hint = ""
    annotations = data.get("annotations")
    if isinstance(annotations, list) and annotations and isinstance(annotations[0], dict):
        if "caption" not in annotations[0] and "bbox" in annotations[0]:
            hint = (
                " This looks like an object-detection file (instances_*.json); "
                "COCO captions are in captions_*.json."
            )
    rows, empty = [], []
    for where, annotation in json_items(path, data, "annotations", "", hint):
        image_id = json_field(path, annotation, "image_id", (int, str), where, hint)
        caption = json_field(path, annotation, "caption", (str,), where, hint).strip()
        if image_id not in names:
            raise DatasetError(
                f"{path}: {where}.image_id {image_id!r} is not the id of any entry in images. "
                "Check that the file is complete."
            )
        if caption:
            rows.append((names[image_id], caption, split))
        else:
            empty.append(where)
    return captions_table(path, rows, empty)
