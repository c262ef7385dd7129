"""Reading the data: images, caption files in the real formats, splits and the synthetic set."""

from captioning.data.images import (  # noqa: F401
    IMAGE_EXTENSIONS,
    load_image,
    resize_image,
    load_and_resize,
    find_images,
)
from captioning.data.captions import (  # noqa: F401
    COLUMNS,
    DEFAULT_SPLIT_FRACTIONS,
    FORMATS,
    SPLITS,
    assign_splits,
    check_images,
    read_captions,
)
from captioning.data.synthetic import (  # noqa: F401
    make_dataset,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_SPLIT_FRACTIONS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "assign_splits",
    "check_images",
    "find_images",
    "load_and_resize",
    "load_image",
    "make_dataset",
    "read_captions",
    "resize_image",
]
