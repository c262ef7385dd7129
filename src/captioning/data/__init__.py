"""Reading the data: images, caption formats, splits, downloads and the synthetic set.

- `images`: image files into RGB pixels, the one way the toolkit reads them.
- `captions`: `read_captions`, one table from any supported format; the formats' readers
  are `coco`, `flickr`, `karpathy` and `csv_file`, on the shared `sources` helpers.
- `table`: the captions table's columns, and `check_images` against an images folder.
- `splits`: `assign_splits` for a source that has no train/val/test split.
- `dataset`: `read_dataset`, a captions file and its images folder read as the CLI and the
  notebooks read them (the default split, COCO folders, missing images).
- `downloads`: the registry of downloadable datasets (Flickr8k, COCO, the Karpathy splits)
  and their download, on `transfer` (resumable HTTP) and `archives` (checked, resumable
  unpacking, completion markers).
- `shapes` and `synthetic`: the synthetic shapes dataset, drawn and written to disk.
"""

from captioning.data.images import (  # noqa: F401
    IMAGE_EXTENSIONS,
    load_image,
    resize_image,
    load_and_resize,
    find_images,
)
from captioning.data.table import COLUMNS, SPLITS, check_images  # noqa: F401
from captioning.data.splits import DEFAULT_SPLIT_FRACTIONS, assign_splits  # noqa: F401
from captioning.data.captions import FORMATS, read_captions  # noqa: F401
from captioning.data.dataset import read_dataset  # noqa: F401
from captioning.data.downloads import DOWNLOADS, download_dataset  # noqa: F401
from captioning.data.synthetic import (  # noqa: F401
    make_dataset,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_SPLIT_FRACTIONS",
    "DOWNLOADS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "assign_splits",
    "check_images",
    "download_dataset",
    "find_images",
    "load_and_resize",
    "load_image",
    "make_dataset",
    "read_captions",
    "read_dataset",
    "resize_image",
]
