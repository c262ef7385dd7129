"""Captioning images with a release: one captioner loop for this project and the earlier one.

- `captioner`: `caption_images` (the loop), the `CaptionModel` it drives, `Caption`, and
  `Captioner` (this project's release);
- `inputs`: image paths and arrays as the loop reads them, `download_image`;
- `legacy`: `LegacyCaptioner` (the earlier Keras project's files) and `caption_with_files`.
"""

from captioning.inference.captioner import (  # noqa: F401
    Caption,
    CaptionModel,
    Captioner,
    caption_images,
)
from captioning.inference.inputs import download_image, image_list  # noqa: F401
from captioning.inference.legacy import LegacyCaptioner, caption_with_files  # noqa: F401

__all__ = [
    "Caption",
    "CaptionModel",
    "Captioner",
    "LegacyCaptioner",
    "caption_images",
    "caption_with_files",
    "download_image",
    "image_list",
]
