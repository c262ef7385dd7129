"""Read the captions files that image-captioning datasets ship with.

Every supported format is read into one `pandas.DataFrame` with exactly the
columns `image`, `caption` and `split`, one row per caption, in the order the
source lists them:

- `image`: the image file name, relative to the images folder (for example
  `1000268201_693b08cb0e.jpg` or `val2014/COCO_val2014_000000391895.jpg`).
- `caption`: the caption text as found in the source, with only the
  surrounding whitespace removed. Cleaning the text is the tokenizer's job.
- `split`: `"train"`, `"val"` or `"test"`, or `""` when the source does not
  say (Karpathy files may also keep `"restval"`, see `read_captions`).

Formats (`FORMATS`):

- `"coco"`: the COCO captions JSON files (`captions_train2014.json`,
  `captions_val2017.json`, ...); several files may be read at once. COCO keeps
  each file's images in a folder named after it (`train2014/`, `val2014/`)
  under one root, so names get that folder unless the images folder passed as
  `images_dir` holds the images directly (see `read_captions`).
- `"flickr8k"`: the Flickr token files (`Flickr8k.token.txt`, and Flickr30k's
  `results_20130124.token`), one `NAME#N<TAB>CAPTION` per line, with the
  Flickr8k split lists found beside them.
- `"karpathy"`: the Karpathy split files (`dataset_coco.json`,
  `dataset_flickr8k.json`, `dataset_flickr30k.json`).
- `"csv"`: a CSV file with a header naming the columns `image`, `caption` and
  optionally `split`.

Captions that are empty once stripped are dropped and their count is reported
through the `"captioning"` logger; a file that yields no caption at all is an
error. Malformed input raises `DatasetError` naming the file and the line (text
formats) or the JSON path (JSON formats), what is wrong and what to do.

`check_images` then matches a table against an images folder, and
`assign_splits` gives train/val/test splits to a source that has none (an own
CSV, Flickr30k's token file).

Example:

```python
table = read_captions(["annotations/captions_train2014.json",
                       "annotations/captions_val2014.json"], format="coco",
                      images_dir="coco")
table.iloc[0]["image"]   # 'train2014/COCO_train2014_000000318556.jpg'
table, missing = check_images(table, "coco")
```
"""

import codecs
import csv
import hashlib
import json
import logging
import os
import re
from pathlib import Path, PurePosixPath

import pandas as pd

from captioning.errors import ConfigError, DatasetError

__all__ = ["COLUMNS", "DEFAULT_SPLIT_FRACTIONS", "FORMATS", "SPLITS", "assign_splits",
           "check_images", "read_captions"]

FORMATS = ("coco", "flickr8k", "karpathy", "csv")
COLUMNS = ("image", "caption", "split")
SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

logger = logging.getLogger("captioning")

_OPTIONS = {
    "coco": ("split", "image_prefix", "images_dir"),
    "flickr8k": ("split_files",),
    "karpathy": ("fold_restval",),
    "csv": (),
}
_FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
_COCO_FILE = re.compile(r"captions_(?P<folder>(?:train|val|test)\d{4})\.json", re.IGNORECASE)
_TOKEN_LINE = re.compile(r"(?P<name>\S+?)#(?P<index>\d+)(?:[\t ](?P<caption>.*))?")
_NUMBERED_COPY = re.compile(r"(?P<name>.+\.(?:jpe?g|png|gif|bmp))\.\d+", re.IGNORECASE)
_KARPATHY_SPLITS = ("train", "val", "test", "restval")
_SHOWN = 5
_JSON_KINDS = {int: "a number", str: "a string", list: "an array", dict: "an object"}


def read_captions(path, format, *, split_fractions=None, **options):
    """Reads a captions file into a table of `image`, `caption`, `split`.

    Args:
        path: The captions file, as a `str` or `pathlib.Path`. For `"coco"`,
            also a list of files, read in order and concatenated.
        format: One of `FORMATS`: `"coco"`, `"flickr8k"`, `"karpathy"` or
            `"csv"`.
        **options: Options of the format:
            - `"coco"`: `split` (`"train"`, `"val"`, `"test"` or `""`) gives
              the split of every row. By default each file's split is taken
              from its name: the first of `train`, `val`, `test` that the name
              contains, else `""`.
              `image_prefix` (a str, or a list of one per file) is the folder
              put before every image name of a file, like `"val2014/"`. By default it
              is the folder COCO keeps the file's images in, named after the
              file (`captions_train2014.json` -> `"train2014/"`,
              `captions_val2017.json` -> `"val2017/"`; `""` for other
              names). `images_dir` (the images folder) makes the default
              follow the disk: the folder is used only when `images_dir`
              holds it, so `images_dir` may be the COCO root (holding
              `train2014/`, `val2014/`) or the one folder holding a file's
              images directly.
            - `"flickr8k"`: `split_files`, a dict mapping some of `"train"`,
              `"val"`, `"test"` to files listing one image name per line.
              By default the Flickr8k lists `Flickr_8k.trainImages.txt`,
              `Flickr_8k.devImages.txt` (the `"val"` split) and
              `Flickr_8k.testImages.txt` are read from beside the token file
              when present. Images in no list get split `""`. A name with a
              numbered-copy suffix (`2258277193_586949ec62.jpg.1`, a known
              corruption of `Flickr8k.token.txt`) is read as the name without
              the suffix, unless the file also lists that name or another
              numbered copy of it.
            - `"karpathy"`: `fold_restval` (default `True`, the usual
              practice) gives the `"restval"` images split `"train"`; `False`
              keeps `"restval"`.
            - `"csv"`: none.
        split_fractions: If given, a `(train, val, test)` triple of
            fractions: when the source gives no split at all (every `split`
            is `""`), the images are split so by `assign_splits` (seed 0), and
            a warning through the `"captioning"` logger says so with the
            counts. A source that has splits is left as it is.

    Returns:
        A `pandas.DataFrame` with the columns `image`, `caption` and `split`
        (all strings) and a fresh `RangeIndex`, one row per caption in source
        order. `DataFrame.attrs["source"]` names the file(s) read;
        `DataFrame.attrs["splits_assigned"]`, when the splits were assigned,
        holds the images per split and the fractions.

    Raises:
        DatasetError: A file is missing, unreadable, malformed, of another
            format, or holds no caption.
        ConfigError: `format` or an option has a value that cannot work, or
            an option is not one of the format's options.
    """
    fmt = str(format).strip().lower()
    if fmt not in FORMATS:
        hint = " (Flickr30k token files use format 'flickr8k')" if fmt == "flickr30k" else ""
        raise ConfigError(
            f"Unknown captions format {format!r}{hint}; use one of: {', '.join(FORMATS)}."
        )
    unknown = sorted(set(options) - set(_OPTIONS[fmt]))
    if unknown:
        accepted = ", ".join(_OPTIONS[fmt]) or "none"
        raise ConfigError(
            f"read_captions() got unexpected option(s) {', '.join(unknown)} for format "
            f"{fmt!r}; it accepts: {accepted}."
        )
    if split_fractions is not None:
        _check_fractions(split_fractions)

    if isinstance(path, (list, tuple)):
        if fmt != "coco":
            raise ConfigError(
                f"Format {fmt!r} reads one file at a time; only 'coco' accepts a list of files."
            )
        if not path:
            raise ConfigError("read_captions() got an empty list of COCO captions files.")
        paths = [_captions_file(p) for p in path]
    else:
        paths = [_captions_file(path)]

    if fmt == "coco":
        prefixes = _coco_prefixes(paths, options.get("image_prefix"), options.get("images_dir"))
        table = pd.concat(
            [_read_coco(p, options.get("split"), prefix) for p, prefix in zip(paths, prefixes)],
            ignore_index=True,
        )
    elif fmt == "flickr8k":
        table = _read_flickr(paths[0], options.get("split_files"))
    elif fmt == "karpathy":
        table = _read_karpathy(paths[0], options.get("fold_restval", True))
    else:
        table = _read_csv(paths[0])
    table.attrs["source"] = ", ".join(str(p) for p in paths)
    if split_fractions is not None and table["split"].eq("").all():
        table = assign_splits(table, split_fractions)
        counts = table.attrs["splits_assigned"]["images"]
        logger.warning(
            "%s gives no train/val/test split: assigned its %d images by a hash of their "
            "names to train %d, val %d, test %d.",
            table.attrs["source"], sum(counts.values()),
            counts["train"], counts["val"], counts["test"],
        )
    return table


def assign_splits(table, fractions=DEFAULT_SPLIT_FRACTIONS, seed=0):
    """Gives a train/val/test split to the images whose captions have none.

    All captions of an image go to the same split. The images without one are
    ordered by a SHA-256 hash of `seed` and their name, and the first
    `fractions[0]` of them go to `"train"`, the next `fractions[1]` to `"val"`,
    the rest to `"test"` (counts rounded, so they add up). The outcome depends
    only on the set of image names and `seed`: the same file splits the same
    way in every run and on every machine. Images that already have a split,
    on any of their rows, keep it, and so do their rows without one.

    Args:
        table: A table from `read_captions` (`image` and `split` columns).
        fractions: The `(train, val, test)` fractions, each >= 0, adding up to
            1.
        seed: Another seed gives another split.

    Returns:
        A copy of `table` with the empty splits filled. Its
        `attrs["splits_assigned"]` holds `{"images": {split: count},
        "fractions": [...], "seed": seed}` for the images it assigned.

    Raises:
        ConfigError: `fractions` or `seed` has a value that cannot work, or
            `table` lacks the `image` or `split` column.
    """
    fractions = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}.")
    _check_columns(table, ("image", "split"), "assign_splits")
    split = table["split"].fillna("").astype(str)
    empty = split.eq("")
    known = dict(zip(table.loc[~empty, "image"], split[~empty]))
    todo = sorted(set(table.loc[empty, "image"]) - set(known),
                  key=lambda name: (_stable_hash(seed, name), name))
    bounds = [0]
    total = 0.0
    for fraction in fractions:
        total += fraction
        bounds.append(int(total * len(todo) + 0.5))
    bounds[-1] = len(todo)
    assigned = {}
    for name, start, stop in zip(SPLITS, bounds, bounds[1:]):
        assigned.update((image, name) for image in todo[start:stop])
    filled = table.copy()
    filled.attrs = dict(table.attrs)
    filled.loc[empty, "split"] = table.loc[empty, "image"].map({**assigned, **known})
    filled.attrs["splits_assigned"] = {
        "images": {name: stop - start for name, start, stop in zip(SPLITS, bounds, bounds[1:])},
        "fractions": list(fractions),
        "seed": seed,
    }
    return filled


def _stable_hash(seed, name):
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8", "surrogatepass")).digest()


def _check_fractions(fractions):
    try:
        values = tuple(fractions)
    except TypeError:
        values = ()
    if (
        len(values) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        or min(values) < 0
        or abs(sum(values) - 1.0) > 1e-6
    ):
        raise ConfigError(
            "split fractions must be three numbers >= 0 for train, val and test that add up "
            f"to 1, like (0.8, 0.1, 0.1); got {fractions!r}."
        )
    return tuple(float(v) for v in values)


def _check_columns(table, columns, caller):
    lacking = [c for c in columns if c not in getattr(table, "columns", ())]
    if lacking:
        found = list(getattr(table, "columns", []))
        raise ConfigError(
            f"{caller}() needs a table with the column(s) {', '.join(map(repr, lacking))} "
            f"(as read_captions returns); got columns {found}."
        )


def _coco_prefixes(paths, image_prefix, images_dir):
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


def check_images(table, images_dir, *, strict=False):
    """Keeps the rows of a captions table whose image file exists.

    An image counts as present when `images_dir / image` is a file. A name
    that is absolute or climbs out of `images_dir` (`..`) counts as missing.
    The outcome is reported on one line through the `"captioning"` logger.

    Args:
        table: A table from `read_captions` (any frame with an `image`
            column).
        images_dir: The folder the image names are relative to.
        strict: If `True`, a missing image raises instead of its captions
            being skipped.

    Returns:
        A tuple `(kept, missing)`: the rows whose image exists, in their
        order and with a fresh `RangeIndex`, and the sorted names of the
        missing images.

    Raises:
        DatasetError: `images_dir` is not a folder, or `strict` is `True` and
            some images are missing.
        ConfigError: `table` has no `image` column.
    """
    _check_columns(table, ("image",), "check_images")
    folder = Path(images_dir).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"Images folder not found: {folder}. Pass the folder that holds the image files."
        )

    names = table["image"].drop_duplicates().tolist()
    missing = sorted(name for name in names if not _image_exists(folder, name))
    source = table.attrs.get("source", "the captions table")
    if not missing:
        logger.info("All %d images listed in %s are present under %s.", len(names), source, folder)
        return table.reset_index(drop=True), missing

    absent = table["image"].isin(missing)
    if strict:
        shown = ", ".join(missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
        raise DatasetError(
            f"{len(missing)} of {len(names)} images listed in {source} are missing under "
            f"{folder}: {shown}. Put the images there, or drop --strict (strict=False in "
            "Python) to skip their captions."
        )
    logger.warning(
        "%d of %d images listed in %s are missing under %s; their %d captions are skipped "
        "(--strict, or strict=True in Python, stops instead).",
        len(missing), len(names), source, folder, int(absent.sum()),
    )
    kept = table.loc[~absent].reset_index(drop=True)
    kept.attrs = dict(table.attrs)
    return kept, missing


def _image_exists(folder, name):
    relative = PurePosixPath(name.replace("\\", "/"))
    if not name or relative.is_absolute() or ".." in relative.parts or Path(name).is_absolute():
        return False
    return folder.joinpath(*relative.parts).is_file()


def _captions_file(path):
    try:
        resolved = Path(os.fspath(path)).expanduser()
    except TypeError:
        raise ConfigError(
            f"A captions file must be given as a str or pathlib.Path, not {type(path).__name__}."
        ) from None
    if not resolved.exists():
        raise DatasetError(f"Captions file not found: {resolved}. Check the path.")
    if resolved.is_dir():
        raise DatasetError(
            f"{resolved} is a folder; pass the captions file inside it "
            "(for example Flickr8k.token.txt or captions_train2014.json)."
        )
    return resolved


def _read_text(path):
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"Cannot read {path}: {error.strerror or error}.") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}, line {line}: not UTF-8 text (byte {data[error.start]:#04x}). "
            "Save the file as UTF-8, or check that it is a captions file."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _looks_like_json(text):
    return text.lstrip()[:1] in ("{", "[")


def _read_json(path, fmt):
    text = _read_text(path)
    if not _looks_like_json(text):
        other = "flickr8k" if _TOKEN_LINE.match(text.lstrip()) else "csv"
        raise DatasetError(
            f"{path} is not JSON, so it cannot be read as format {fmt!r}; "
            f"if it is a {other} file, read it with format={other!r}."
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}, line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}). "
            "The file may be truncated; download or export it again."
        ) from None


def _json_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _json_field(path, obj, key, kinds, where, hint=""):
    """Returns `obj[key]`, raising when it is absent or not of `kinds`."""
    expected = " or ".join(_JSON_KINDS[kind] for kind in kinds)
    if key not in obj:
        raise DatasetError(f"{path}: {where}.{key} is missing; expected {expected}.{hint}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise DatasetError(
            f"{path}: {where}.{key} is {_json_kind(value)}; expected {expected}.{hint}"
        )
    return value


def _json_items(path, obj, key, where, hint=""):
    """Returns the objects of the array `obj[key]`, with their JSON paths."""
    items = _json_field(path, obj, key, (list,), where, hint)
    prefix = f"{where}." if where else ""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise DatasetError(
                f"{path}: {prefix}{key}[{index}] is {_json_kind(item)}; expected an object.{hint}"
            )
    return [(f"{prefix}{key}[{index}]", item) for index, item in enumerate(items)]


def _json_root(path, data, fmt, hint):
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: the top level is {_json_kind(data)}; a {fmt} captions file is an object "
            f"with an 'images' array.{hint}"
        )
    return data


def _read_coco(path, split, prefix=""):
    if split is None:
        name = path.name.lower()
        split = next((s for s in SPLITS if s in name), "")
    elif split not in SPLITS + ("",):
        raise ConfigError(f"split={split!r} is not one of 'train', 'val', 'test' or ''.")

    data = _json_root(path, _read_json(path, "coco"), "COCO", "")
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
    for where, image in _json_items(path, data, "images", ""):
        image_id = _json_field(path, image, "id", (int, str), where)
        file_name = _json_field(path, image, "file_name", (str,), where).strip()
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
    for where, annotation in _json_items(path, data, "annotations", "", hint):
        image_id = _json_field(path, annotation, "image_id", (int, str), where, hint)
        caption = _json_field(path, annotation, "caption", (str,), where, hint).strip()
        if image_id not in names:
            raise DatasetError(
                f"{path}: {where}.image_id {image_id!r} is not the id of any entry in images. "
                "Check that the file is complete."
            )
        if caption:
            rows.append((names[image_id], caption, split))
        else:
            empty.append(where)
    return _table(path, rows, empty)


def _read_flickr(path, split_files):
    text = _read_text(path)
    if _looks_like_json(text):
        raise DatasetError(
            f"{path} is JSON, not a Flickr token file; read it with format='coco' "
            "(captions_*.json) or format='karpathy' (dataset_*.json)."
        )

    entries, empty = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        match = _TOKEN_LINE.fullmatch(line.strip())
        if match is None:
            shown = line.strip()[:60]
            raise DatasetError(
                f"{path}, line {number}: expected 'NAME#N<TAB>CAPTION' (like "
                f"'1000268201_693b08cb0e.jpg#0<TAB>A child ...'), found {shown!r}. "
                "Fix the line, or pass the right format if this is not a Flickr token file."
            )
        caption = (match["caption"] or "").strip()
        if caption:
            entries.append((match["name"], caption))
        else:
            empty.append(f"line {number}")

    renamed = _repair_names({name for name, _ in entries})
    for old, new in renamed.items():
        logger.info(
            "%s: read the image name %s as %s (a numbered-copy suffix, a known corruption).",
            path, old, new,
        )
    entries = [(renamed.get(name, name), caption) for name, caption in entries]
    splits = _flickr_splits(path, split_files, renamed, {name for name, _ in entries})
    rows = [(name, caption, splits.get(name, "")) for name, caption in entries]
    return _table(path, rows, empty)


def _flickr_splits(path, split_files, renamed, captioned):
    """Maps image names to their split, as the Flickr split lists give it."""
    if split_files is None:
        beside = {s: path.with_name(f) for s, f in _FLICKR8K_SPLIT_FILES.items()}
        split_files = {s: p for s, p in beside.items() if p.is_file()}
    elif not isinstance(split_files, dict) or not set(split_files) <= set(SPLITS):
        raise ConfigError(
            "split_files must be a dict whose keys are some of 'train', 'val', 'test', "
            f"got {split_files!r}."
        )

    splits, listed_in = {}, {}
    for split, list_path in split_files.items():
        list_path = _captions_file(list_path)
        for number, name in _split_list(list_path):
            name = renamed.get(name, name)
            if name in splits and splits[name] != split:
                raise DatasetError(
                    f"{list_path}, line {number}: {name} is also listed in {listed_in[name]} "
                    f"(split {splits[name]!r}); an image belongs to one split only."
                )
            splits[name], listed_in[name] = split, list_path
        uncaptioned = sum(1 for n, p in listed_in.items() if p == list_path and n not in captioned)
        if uncaptioned:
            logger.warning(
                "%s lists %d images that have no caption in %s; they are left out.",
                list_path, uncaptioned, path,
            )
    return splits


def _repair_names(names):
    """Maps `NAME.jpg.1`-style names to `NAME.jpg` when nothing else claims it."""
    bases = {}
    for name in sorted(names):
        match = _NUMBERED_COPY.fullmatch(name)
        if match and match["name"] not in names:
            bases.setdefault(match["name"], []).append(name)
    return {copies[0]: base for base, copies in bases.items() if len(copies) == 1}


def _split_list(path):
    """Yields `(line number, image name)` for each name listed in a split file."""
    text = _read_text(path)
    for number, line in enumerate(text.split("\n"), start=1):
        name = line.strip()
        if not name:
            continue
        if any(char.isspace() for char in name) or "#" in name:
            raise DatasetError(
                f"{path}, line {number}: expected one image name per line, found {name[:60]!r}. "
                "Pass the split lists (like Flickr_8k.trainImages.txt) as split_files."
            )
        yield number, name


def _read_karpathy(path, fold_restval):
    if not isinstance(fold_restval, bool):
        raise ConfigError(f"fold_restval must be True or False, got {fold_restval!r}.")
    data = _read_json(path, "karpathy")
    hint = ""
    if isinstance(data, dict) and "annotations" in data:
        hint = " This looks like a COCO captions file; read it with format='coco'."
    data = _json_root(path, data, "Karpathy", hint)

    rows, empty = [], []
    for where, image in _json_items(path, data, "images", "", hint):
        filename = _json_field(path, image, "filename", (str,), where, hint).strip()
        if not filename:
            raise DatasetError(f"{path}: {where}.filename is empty; give the image's file name.")
        filepath = image.get("filepath")
        if filepath is not None:
            filepath = _json_field(path, image, "filepath", (str,), where).strip().strip("/")
            if filepath:
                filename = f"{filepath}/{filename}"
        split = _json_field(path, image, "split", (str,), where, hint)
        if split not in _KARPATHY_SPLITS:
            raise DatasetError(
                f"{path}: {where}.split is {split!r}; expected one of "
                f"{', '.join(_KARPATHY_SPLITS)}."
            )
        if split == "restval" and fold_restval:
            split = "train"
        for sentence_where, sentence in _json_items(path, image, "sentences", where, hint):
            caption = _json_field(path, sentence, "raw", (str,), sentence_where).strip()
            if caption:
                rows.append((filename, caption, split))
            else:
                empty.append(sentence_where)
    return _table(path, rows, empty)


def _read_csv(path):
    text = _read_text(path)
    hint = ""
    if _looks_like_json(text):
        hint = " The file is JSON: read it with format='coco' or format='karpathy'."
    elif _TOKEN_LINE.match(text.lstrip()):
        hint = " The file looks like a Flickr token file: read it with format='flickr8k'."
    reader = csv.reader(text.split("\n"))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        columns = [cell.strip().lower() for cell in header or ()]
        if "image" not in columns or "caption" not in columns:
            found = ", ".join(repr(c) for c in columns) or "nothing"
            raise DatasetError(
                f"{path}, line {reader.line_num}: the header must name the columns 'image' and "
                f"'caption' (and optionally 'split'); found {found}.{hint}"
            )
        image_at, caption_at = columns.index("image"), columns.index("caption")
        split_at = columns.index("split") if "split" in columns else None

        rows, empty = [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"line {reader.line_num}"
            if len(row) != len(columns):
                raise DatasetError(
                    f"{path}, {where}: {len(row)} fields, but the header has {len(columns)}. "
                    "Quote fields that contain commas (\"a dog, running\")."
                )
            image = row[image_at].strip()
            if not image:
                raise DatasetError(f"{path}, {where}: the image column is empty; name the image.")
            split = row[split_at].strip().lower() if split_at is not None else ""
            if split not in SPLITS + ("",):
                raise DatasetError(
                    f"{path}, {where}: split {row[split_at].strip()!r} is not one of "
                    "train, val, test or empty."
                )
            caption = row[caption_at].strip()
            if caption:
                rows.append((image, caption, split))
            else:
                empty.append(where)
    except csv.Error as error:
        raise DatasetError(f"{path}, line {reader.line_num}: malformed CSV ({error}).") from None
    return _table(path, rows, empty)


def _table(path, rows, empty):
    """Builds the table of one file, reporting its dropped empty captions."""
    if empty:
        shown = ", ".join(empty[:_SHOWN]) + (", ..." if len(empty) > _SHOWN else "")
        logger.warning("%s: dropped %d empty captions (%s).", path, len(empty), shown)
    if not rows:
        raise DatasetError(f"{path} holds no caption. Check that it is the right file.")
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS))
