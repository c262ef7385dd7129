"""Captioning images with a release: one captioner loop for this project and the earlier one."""

from captioning.inference.captioner import (  # noqa: F401
    Caption,
    Captioner,
    image_list,
    download_image,
)

__all__ = [
    "Caption",
    "Captioner",
    "download_image",
    "image_list",
]
