"""Reading image files into pixels, the one way the whole toolkit does it.

Feature caching, training from images and prediction all go through
`load_and_resize`, so a picture reaches the model identically whichever of them
reads it. Every decoded image is normalised to RGB `uint8` the same way:

* the first frame of an animation (GIF, WebP, APNG) or the first page of a
  multi-page TIFF is used;
* the EXIF orientation is applied, so the picture is upright as a viewer shows it;
* transparency (alpha channels and palette or colour-key transparency) is
  composited on white;
* grayscale, 1-bit, palette and CMYK images are converted to RGB;
* 16-bit grayscale is scaled to 8 bits (65535 becomes 255, 32768 becomes 128)
  rather than clipped.

Only JPEG (and its MPO variant written by many cameras), PNG, GIF, BMP, WebP and
TIFF content is decoded, whatever the file is called. Files that cannot be
decoded (truncated, empty, text or HTML saved under an image name, more pixels
than `PIL.Image.MAX_IMAGE_PIXELS`, ...) raise `ImageError` with a one-line
message that names the file.
"""

import codecs
import errno
import glob
import os
import stat
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from captioning.errors import ConfigError
from captioning.errors import ImageError
from captioning.utils.checks import is_int
from captioning.utils.files import file_kind, open_regular

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
)

_PILLOW_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
_FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP or TIFF"
_WHITE = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_SNIFF_BYTES = 512
# JPEGs are decoded at a reduced DCT scale only down to this multiple of the
# target size, so the final antialiased resize still does the real reduction.
_DRAFT_MARGIN = 2


def load_image(path):
    """Reads an image file as RGB pixels.

    Args:
        path: Path of the image file (`str` or path-like).

    Returns:
        A `uint8` NumPy array of shape `(height, width, 3)`, upright according
        to the file's EXIF orientation.

    Raises:
        ImageError: If the path is missing or not a file, or the file is not a
            readable JPEG, PNG, GIF, BMP, WebP or TIFF image.
    """
    return _read_rgb(path)


def resize_image(pixels, size):
    """Resizes RGB pixels to the model's input size.

    The whole picture is squashed to the target shape (no cropping, no
    letterboxing), like `tf.image.resize`, using Pillow's bilinear filter,
    which is antialiased when shrinking.

    Args:
        pixels: Array of shape `(height, width, 3)` with values in 0..255,
            normally the result of `load_image`. Other dtypes than `uint8` are
            rounded to `uint8` first.
        size: Target size, an `int` for a square or a `(height, width)` pair.

    Returns:
        A `float32` NumPy array of shape `(height, width, 3)` with values in
        0..255.

    Raises:
        ConfigError: If `size` is not a positive int or a pair of them.
        ImageError: If `pixels` is not an RGB array with values in 0..255.
    """
    height, width = _target_size(size)
    pixels = _as_rgb_uint8(pixels)
    image = Image.fromarray(pixels, mode="RGB")
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def load_and_resize(path, size):
    """Reads an image file and resizes it to the model's input size.

    This is what feature caching, training and prediction use. It gives the
    same result as `resize_image(load_image(path), size)` except for large
    JPEGs: those are decoded with libjpeg's DCT scaling (Pillow's draft mode)
    at 1/2, 1/4 or 1/8 of their size, never below twice the target size, which
    is several times faster. The result differs from a full decode by less
    than one level on average and a few levels at most (libjpeg's scaled IDCT
    averages blocks where the full decode keeps every pixel), and is the same
    on every call.

    Args:
        path: Path of the image file (`str` or path-like).
        size: Target size, an `int` for a square or a `(height, width)` pair.

    Returns:
        A `float32` NumPy array of shape `(height, width, 3)` with values in
        0..255.

    Raises:
        ImageError: As `load_image`.
        ConfigError: If `size` is not a positive int or a pair of them.
    """
    height, width = _target_size(size)
    # Target sides may swap under EXIF rotation, so the draft keeps the longer
    # one on both axes.
    side = _DRAFT_MARGIN * max(height, width)
    return resize_image(_read_rgb(path, draft_size=(side, side)), (height, width))


def find_images(paths, *, recursive=False):
    """Expands files, folders and glob patterns into a list of image files.

    Folders contribute the files whose extension is in `IMAGE_EXTENSIONS`
    (case-insensitively), skipping hidden entries such as macOS `._*` files.
    Patterns contribute the matching image files, and the images in matching
    folders. A `**` in a pattern always matches across folder levels. Files
    named explicitly are kept whatever their extension, so that `load_image`
    can report what is wrong with them.

    Args:
        paths: A path, folder or glob pattern, or a sequence of them.
        recursive: Whether folders are searched including their subfolders.

    Returns:
        A tuple `(files, errors)`: `files` is the sorted list of image paths
        without duplicates; `errors` lists `(path, message)` for every input
        that is missing, a pattern that matches no image, a folder without
        images, and every entry of a folder (or pattern) that is named like an
        image but is no regular file: a broken symbolic link, a symbolic link
        loop, a FIFO, a device, or (unless `recursive`) a folder.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    found = set()
    errors = []
    for entry in paths:
        entry = os.fsdecode(entry)
        if os.path.isdir(entry):
            images, problems = _list_folder(entry, recursive)
            errors.extend(problems)
        elif os.path.lexists(entry):
            images = [entry]
        elif glob.has_magic(entry):
            images, problems = _expand_pattern(entry, recursive)
            errors.extend(problems)
            if not images and not problems:
                errors.append((entry, "pattern matches no image files"))
        else:
            errors.append((entry, "no such file or folder"))
            continue
        found.update(os.path.normpath(image) for image in images)
    return sorted(found), errors


def file_problem(path):
    """Why `path` is no image file to read, or None when it is a regular file.

    Returns:
        `"no such file"`, `"a broken symbolic link ..."`, `"a symbolic link loop ..."`,
        `"is a folder, not an image file"`, `"not a regular file (a named pipe (FIFO))"`,
        ..., or None.
    """
    try:
        mode = os.stat(path).st_mode
    except ValueError:
        return "a path with a NUL byte"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop, not an image file"
        if error.errno == errno.ENOENT and os.path.islink(path):
            return "a broken symbolic link (what it points to does not exist)"
        if error.errno == errno.ENOENT:
            return "no such file"
        return f"cannot be opened ({error.strerror or error})"
    if stat.S_ISDIR(mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(mode):
        return f"not a regular file ({file_kind(mode)}), not an image file"
    return None


def _read_rgb(path, draft_size=None):
    """Decodes `path` to RGB `uint8`, optionally at a reduced JPEG scale."""
    path = os.fsdecode(path)
    problem = file_problem(path)
    if problem:
        raise ImageError(_one_line(f"{path}: {problem}"))
    # Opened without blocking and checked again: a FIFO put in its place is refused too.
    handle = open_regular(path, what="image", error=ImageError)
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise _unreadable(path, "empty file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(handle, formats=_PILLOW_FORMATS) as image:
                    _check_pixel_limit(image)
                    if draft_size is not None:
                        image.draft(image.mode, draft_size)
                    image.load()
                    ImageOps.exif_transpose(image, in_place=True)
                    return _to_rgb(image)
        except MemoryError:
            raise  # Not the file's fault: the image fits Pillow's pixel limit.
        except UnidentifiedImageError:
            handle.seek(0)
            reason = _describe_unidentified(handle.read(_SNIFF_BYTES))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise _unreadable(
                path,
                "more pixels than PIL.Image.MAX_IMAGE_PIXELS = "
                f"{Image.MAX_IMAGE_PIXELS}, a possible decompression bomb",
                "raise that limit only if the file is trusted",
            ) from None
        # Pillow's decoders raise many types on malformed data (OSError,
        # SyntaxError, EOFError, struct.error, ValueError, IndexError, ...).
        except Exception as error:
            reason = _describe_decode_error(error)
    raise _unreadable(path, reason)


def _check_pixel_limit(image):
    """Refuses images over Pillow's limit without relying on warning filters.

    `warnings.catch_warnings` changes process-wide state and is not
    thread-safe, so a loader running in several threads could see its filter
    undone by another; this check holds regardless.
    """
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise Image.DecompressionBombError(f"{width * height} pixels")


def _to_rgb(image):
    """Converts a decoded image of any mode to an RGB `uint8` array."""
    if image.mode in _SIXTEEN_BIT_MODES:
        levels = np.asarray(image).astype(np.int64)
        gray = (np.clip(levels, 0, 65535) * 255 + 32767) // 65535
        key = image.info.get("transparency")
        if isinstance(key, int) and not isinstance(key, bool):
            # Colour-key transparency (a PNG tRNS chunk): that exact level is see-through.
            gray = np.where(levels == key, 255, gray)
        gray = gray.astype(np.uint8)
        return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    has_alpha = "A" in image.mode or "a" in image.mode
    if has_alpha or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        image = Image.alpha_composite(background, rgba)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _describe_unidentified(head):
    """Says what the first bytes of a file that is no supported image hold."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return f"an HTML page, not a {_FORMAT_NAMES} image"
    try:
        decoded = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and all(c.isprintable() or c in "\t\r\n\f" for c in decoded):
        return f"text, not a {_FORMAT_NAMES} image"
    return f"not a {_FORMAT_NAMES} image"


def _describe_decode_error(error):
    """Turns a Pillow decoding exception into a short reason."""
    message = str(error)
    if isinstance(error, EOFError) or "truncat" in message.lower():
        return "truncated file"
    if message:
        return f"corrupt data: {message}"
    return f"corrupt data: {type(error).__name__}"


def _unreadable(path, reason, advice=None):
    if advice is None:
        advice = "re-save it from the original or remove it from the input"
    return ImageError(
        _one_line(f"{path}: not a readable image ({reason}); {advice}")
    )


def _one_line(message):
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _target_size(size):
    """Returns `(height, width)` from an int or a pair of ints."""
    pair = (size, size) if is_int(size) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(is_int(side) and side >= 1 for side in pair)
    ):
        raise ConfigError(
            "Image size must be a positive int or a (height, width) pair of "
            f"them; got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def _as_rgb_uint8(pixels):
    """Validates an RGB array and returns it as C-contiguous `uint8`."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ImageError(
            "Image pixels must be an RGB array of shape (height, width, 3); "
            f"got shape {pixels.shape}"
        )
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    if pixels.dtype == np.bool_ or not (
        np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)
    ):
        raise ImageError(f"Image pixels must be numbers; got dtype {pixels.dtype}")
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise ImageError("Image pixel values must lie in 0..255")
    return np.rint(pixels).astype(np.uint8)


def _list_folder(folder, recursive):
    """Returns `(images, errors)` for the image files in `folder`: `errors` lists
    `(path, message)` for the folder itself (unreadable, no images) and for each entry named
    like an image that is no regular file."""
    images, errors = [], []
    skipped_subfolders = False
    try:
        for root, subfolders, names in os.walk(folder, onerror=_raise):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            if not recursive:
                skipped_subfolders = bool(subfolders)
                names = names + [name for name in subfolders if _is_image_name(name)]
                subfolders.clear()
            for name in sorted(names):
                if not _is_image_name(name):
                    continue
                path = os.path.join(root, name)
                problem = file_problem(path)
                if problem:
                    errors.append((path, problem))
                else:
                    images.append(path)
    except OSError as error:
        return [], [(folder, f"cannot list {error.filename} ({error.strerror or error})")]
    if images or errors:
        return images, errors
    if skipped_subfolders:
        return [], [(folder, "folder has no image files (its subfolders were not searched)")]
    return [], [(folder, f"folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")]


def _expand_pattern(pattern, recursive):
    images, errors = [], []
    for match in glob.glob(pattern, recursive=True):
        if os.path.isdir(match):
            found, problems = _list_folder(match, recursive)
            images.extend(found)
            errors.extend(problem for problem in problems if problem[0] != match)
        elif _is_image_name(os.path.basename(match)):
            problem = file_problem(match)
            if problem:
                errors.append((match, problem))
            else:
                images.append(match)
    return images, errors


def _is_image_name(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _raise(error):
    raise error
