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

Formats (`FORMATS`), each read by its own module:

- `"coco"` (`captioning.data.coco`): the COCO captions JSON files
  (`captions_train2014.json`, `captions_val2017.json`, ...); several files may be read at
  once. COCO keeps each file's images in a folder named after it (`train2014/`, `val2014/`)
  under one root, so names get that folder unless the images folder passed as
  `images_dir` holds the images directly (see `read_captions`).
- `"flickr8k"` (`captioning.data.flickr`): the Flickr token files (`Flickr8k.token.txt`,
  and Flickr30k's `results_20130124.token`), one `NAME#N<TAB>CAPTION` per line, with the
  Flickr8k split lists found beside them.
- `"karpathy"` (`captioning.data.karpathy`): the Karpathy split files
  (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`).
- `"csv"` (`captioning.data.csv_file`): a CSV file with a header naming the columns
  `image`, `caption` and optionally `split`.

Captions that are empty once stripped are dropped and their count is reported
through the `"captioning"` logger; a file that yields no caption at all is an
error. Malformed input raises `DatasetError` naming the file and the line (text
formats) or the JSON path (JSON formats), what is wrong and what to do.

`check_images` (`captioning.data.table`) then matches a table against an images folder,
and `assign_splits` (`captioning.data.splits`) gives train/val/test splits to a source
that has none (an own CSV, Flickr30k's token file).

Example:

```python
table = read_captions(["annotations/captions_train2014.json",
                       "annotations/captions_val2014.json"], format="coco",
                      images_dir="coco")
table.iloc[0]["image"]   # 'train2014/COCO_train2014_000000318556.jpg'
table, missing = check_images(table, "coco")
```
"""

import logging

import pandas as pd

from captioning.config import CAPTION_FORMATS
from captioning.data.coco import coco_prefixes, read_coco
from captioning.data.csv_file import read_csv
from captioning.data.flickr import read_flickr
from captioning.data.karpathy import read_karpathy
from captioning.data.sources import captions_file
from captioning.data.splits import assign_splits, check_fractions
from captioning.errors import ConfigError

__all__ = ["FORMATS", "read_captions"]

FORMATS = CAPTION_FORMATS

logger = logging.getLogger(__name__)

_OPTIONS = {
    "coco": ("split", "image_prefix", "images_dir"),
    "flickr8k": ("split_files",),
    "karpathy": ("fold_restval",),
    "csv": (),
}


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
        check_fractions(split_fractions)

    if isinstance(path, (list, tuple)):
        if fmt != "coco":
            raise ConfigError(
                f"Format {fmt!r} reads one file at a time; only 'coco' accepts a list of files."
            )
        if not path:
            raise ConfigError("read_captions() got an empty list of COCO captions files.")
        paths = [captions_file(p) for p in path]
    else:
        paths = [captions_file(path)]

    if fmt == "coco":
        prefixes = coco_prefixes(paths, options.get("image_prefix"), options.get("images_dir"))
        table = pd.concat(
            [read_coco(p, options.get("split"), prefix) for p, prefix in zip(paths, prefixes)],
            ignore_index=True,
        )
    elif fmt == "flickr8k":
        table = read_flickr(paths[0], options.get("split_files"))
    elif fmt == "karpathy":
        table = read_karpathy(paths[0], options.get("fold_restval", True))
    else:
        table = read_csv(paths[0])
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
