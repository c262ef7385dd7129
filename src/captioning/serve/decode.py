"""An uploaded file into the model's pixels, by the toolkit's one image loader.

`captioning.data.images.load_and_resize` decodes it exactly as `python -m captioning caption`
does (so the server's captions are the CLI's), with the same defences: only JPEG, PNG, GIF,
BMP, WebP and TIFF content, truncated and corrupt files refused, and no more pixels than
`PIL.Image.MAX_IMAGE_PIXELS` (which `pixel_limit` sets to `--max-pixels`), so a
decompression bomb is refused from its header, before it is decoded. Its `ImageError` is
turned into an `UploadError` with the HTTP status that says what was wrong.
"""

from __future__ import annotations

import contextlib

import numpy as np
from PIL import Image

from captioning.data.images import load_and_resize
from captioning.errors import ImageError
from captioning.serve.uploads import Upload, UploadError

_NOT_AN_IMAGE = ("not a JPEG", "text, not a", "an HTML page, not a")


@contextlib.contextmanager
def pixel_limit(max_pixels: int):
    """Sets `PIL.Image.MAX_IMAGE_PIXELS` (read by the loader) for the server's lifetime."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = int(max_pixels)
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def upload_pixels(upload: Upload, size) -> np.ndarray:
    """The upload's pixels at the model's input `size`, float32 `(height, width, 3)`.

    Raises:
        UploadError: empty (400), not an image (415), too many pixels, truncated or
            corrupt (422); its message names the client's file name, not the server's path.
    """
    if upload.size == 0:
        raise UploadError(f"{upload.name} is empty (0 bytes); send an image file")
    try:
        return load_and_resize(upload.path, size)
    except ImageError as error:
        raise _upload_error(str(error), upload) from None


def _upload_error(message: str, upload: Upload) -> UploadError:
    reason = message.replace(str(upload.path), "").lstrip(": ")
    reason = reason.removeprefix("not a readable image (").split(");", 1)[0]
    if "MAX_IMAGE_PIXELS" in reason:
        return UploadError(f"{upload.name} has too many pixels: more than "
                           f"{Image.MAX_IMAGE_PIXELS:,} (--max-pixels), possibly a "
                           "decompression bomb; send a smaller image", status=422)
    if reason.startswith(_NOT_AN_IMAGE):
        return UploadError(f"{upload.name} is {reason}", status=415)
    if reason == "truncated file":
        return UploadError(f"{upload.name} is truncated (the file ends early); send the "
                           "whole file", status=422)
    return UploadError(f"{upload.name} cannot be decoded ({reason}); re-save it from the "
                       "original", status=422)
