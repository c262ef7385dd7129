"""What a captioner takes: image paths and RGB arrays, read at the model's input size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from captioning.errors import CaptioningError, ConfigError, ImageError


def image_list(images) -> list:
    """The images of `Captioner.caption`'s argument, as a list of paths and arrays.

    Args:
        images: a path (`str`, `bytes` or `os.PathLike`); one image array, `(H, W)` grey
            or `(H, W, C)`; a batch array `(N, H, W, C)`; or an iterable of paths and
            image arrays.

    Returns:
        A list with one item per image.

    Raises:
        ConfigError: an array that is not 2-, 3- or 4-dimensional.
    """
    if isinstance(images, (str, bytes, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ConfigError(f"an image array must be (H, W), (H, W, 3) or a batch (N, H, W, 3), "
                          f"got shape {images.shape}")
    return list(images)


def image_name(item) -> str:
    """How a result names its image: the path, or `<array>`."""
    return "<array>" if isinstance(item, np.ndarray) else os.fsdecode(item)


def as_rgb(array: np.ndarray) -> np.ndarray:
    """An image array as `(H, W, 3)`: grey `(H, W)` or `(H, W, 1)` repeated, alpha dropped."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageError(f"an image array must be (H, W, 3) RGB, got shape {array.shape}")
    return array[..., :3]


def load_pixels(item, size):
    """One image (a path or an array) as RGB pixels of `size` (an int or `(height, width)`),
    or the message of the `CaptioningError` that stopped it."""
    from captioning.data.images import load_and_resize, resize_image

    try:
        if isinstance(item, np.ndarray):
            return resize_image(as_rgb(item), size)
        return load_and_resize(item, size)
    except CaptioningError as error:
        return str(error)


def download_image(url: str, cache_dir=None, *, force: bool = False) -> Path:
    """Downloads an image once into the Keras cache and returns its path.

    The file is named after a hash of the whole URL (plus the URL's image extension, if
    it has one), so two URLs that end in the same name, or in `/`, are two files, and the
    same URL is read from the cache the next time.

    Args:
        url: an `http(s)://` (or `file://`) URL of an image.
        cache_dir: the cache root (default `~/.keras`); files go in its `images/` folder.
        force: download again even when the file is cached.

    Returns:
        The `Path` of the downloaded file.

    Raises:
        ImageError: the URL is not a string or the download failed.
    """
    import hashlib
    import urllib.parse

    import keras

    from captioning.data.images import IMAGE_EXTENSIONS

    if not isinstance(url, str) or not url.strip():
        raise ImageError(f"an image URL must be a non-empty string, got {url!r}")
    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
    name = hashlib.sha256(url.encode()).hexdigest()[:20]
    name += suffix if suffix in IMAGE_EXTENSIONS else ""
    try:
        path = keras.utils.get_file(fname=name, origin=url, cache_dir=cache_dir,
                                    cache_subdir="images", force_download=force)
    except Exception as error:  # get_file raises a bare Exception for URL failures
        raise ImageError(f"cannot download {url}: {' '.join(str(error).split())}; check the "
                         "URL, or download the image yourself and give its path") from None
    return Path(path)
