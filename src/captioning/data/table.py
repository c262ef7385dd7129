"""The captions table every format is read into, and its check against an images folder.

One `pandas.DataFrame` with exactly the columns `COLUMNS` (`image`, `caption`, `split`), one
row per caption, in the order the source lists them. `split` is one of `SPLITS`, or `""` when
the source does not say.
"""

import logging
from pathlib import Path, PurePosixPath

import pandas as pd

from captioning.errors import ConfigError, DatasetError

__all__ = ["COLUMNS", "SPLITS", "check_images"]

COLUMNS = ("image", "caption", "split")
SPLITS = ("train", "val", "test")
_SHOWN = 5

logger = logging.getLogger(__name__)


def shown(items) -> str:
    """The first few of `items`, comma-separated, with `...` when there are more."""
    items = list(items)
    return ", ".join(map(str, items[:_SHOWN])) + (", ..." if len(items) > _SHOWN else "")


def captions_table(path, rows, empty):
    """The table of one captions file from its `(image, caption, split)` rows.

    `empty` lists where the captions that were empty once stripped were (line numbers or
    JSON paths); they are reported as one warning.

    Raises:
        DatasetError: the file yields no caption at all.
    """
    if empty:
        logger.warning("%s: dropped %d empty captions (%s).", path, len(empty), shown(empty))
    if not rows:
        raise DatasetError(f"{path} holds no caption. Check that it is the right file.")
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS))


def check_columns(table, columns, caller):
    """Refuses a table that lacks some of `columns`, naming the function that needs them."""
    lacking = [c for c in columns if c not in getattr(table, "columns", ())]
    if lacking:
        found = list(getattr(table, "columns", []))
        raise ConfigError(
            f"{caller}() needs a table with the column(s) {', '.join(map(repr, lacking))} "
            f"(as read_captions returns); got columns {found}."
        )


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
    check_columns(table, ("image",), "check_images")
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
        raise DatasetError(
            f"{len(missing)} of {len(names)} images listed in {source} are missing under "
            f"{folder}: {shown(missing)}. Put the images there, or drop --strict "
            "(strict=False in Python) to skip their captions."
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
