"""`read_dataset`: a captions file and its images folder, read the one way the CLI's `cache`
and the notebook `01_cache_features` both read them.

It is `read_captions` with the options that the images folder implies, then `check_images`:

- a source without a train/val/test split (an own CSV without a `split` column, Flickr30k's
  token file) gets the 80/10/10 split by image (`assign_splits`, logged);
- a COCO captions file is matched to the folder given: the COCO root holding `train2014/`
  and `val2014/`, or the one folder holding the file's images (`val2014/` itself);
- a Karpathy file's `restval` images join `train` unless `fold_restval=False`.
"""

from __future__ import annotations

from captioning.data.captions import read_captions
from captioning.data.splits import DEFAULT_SPLIT_FRACTIONS
from captioning.data.table import check_images

__all__ = ["read_dataset"]


def read_dataset(captions, format: str, images_dir, *, strict: bool = False,
                 fold_restval: bool = True, split_fractions=DEFAULT_SPLIT_FRACTIONS):
    """Reads a captions file and keeps the captions whose image is under `images_dir`.

    Args:
        captions: the captions file, or a list of COCO captions files.
        format: its `read_captions` format: `"csv"`, `"coco"`, `"flickr8k"` or `"karpathy"`.
        images_dir: the folder the image names are relative to (for COCO, also the COCO
            root holding `train2014/` and `val2014/`).
        strict: stop at the first listed image that is missing instead of skipping it.
        fold_restval: Karpathy files: give the `restval` images the `train` split.
        split_fractions: the `(train, val, test)` fractions given to a source without any
            split.

    Returns:
        `(table, missing)`: the captions table (`image`, `caption`, `split`) of the images
        that are there, and the sorted names of the listed images that are not.

    Raises:
        DatasetError: the captions file or the images folder is missing or malformed, or
            (`strict`) an image is missing.
        ConfigError: `format` is not a known format.
    """
    options = {}
    fmt = str(format).strip().lower()
    if fmt == "karpathy":
        options["fold_restval"] = fold_restval
    if fmt == "coco":
        options["images_dir"] = images_dir
    if isinstance(captions, (list, tuple)) and len(captions) == 1:
        captions = captions[0]
    table = read_captions(captions, format=fmt, split_fractions=split_fractions, **options)
    return check_images(table, images_dir, strict=strict)
