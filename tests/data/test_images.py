"""Tests for `captioning.images`, on small pictures written with Pillow."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from captioning.data import images
from captioning.errors import CaptioningError
from captioning.errors import ConfigError
from captioning.errors import ImageError

LEVELS = np.array([0, 85, 170, 255], dtype=np.uint8)


def _picture(height=12, width=20, seed=0):
    """An asymmetric RGB picture of at most 64 colours, exact in GIF too."""
    rng = np.random.default_rng(seed)
    return LEVELS[rng.integers(0, 4, size=(height, width, 3))]


def _smooth_picture(height=48, width=64):
    """A gradient that JPEG keeps within a few levels."""
    y, x = np.mgrid[0:height, 0:width]
    red = x * 255 // (width - 1)
    green = y * 255 // (height - 1)
    blue = 255 - (x + y) * 255 // (width + height - 2)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def _save(pixels_or_image, path, **kwargs):
    image = pixels_or_image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **kwargs)
    return str(path)


def _assert_close(actual, expected, mean_tolerance, max_tolerance):
    assert actual.shape == expected.shape
    difference = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    assert difference.mean() <= mean_tolerance
    assert difference.max() <= max_tolerance


# Loading every format and mode.


@pytest.mark.parametrize(
    "name, options",
    [
        ("photo.png", {}),
        ("photo.PNG", {}),
        ("photo.gif", {}),
        ("photo.bmp", {}),
        ("photo.BMP", {}),
        ("photo.webp", {"lossless": True}),
        ("photo.tif", {}),
        ("photo.TIFF", {"compression": "tiff_lzw"}),
    ],
)
def test_lossless_formats_load_exactly(tmp_path, name, options):
    pixels = _picture()
    path = _save(pixels, tmp_path / name, **options)

    loaded = images.load_image(path)

    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, pixels)


@pytest.mark.parametrize("name", ["photo.jpg", "photo.jpeg", "PHOTO.JPG", "photo.webp"])
def test_lossy_formats_load_close_to_the_original(tmp_path, name):
    pixels = _smooth_picture()
    path = _save(pixels, tmp_path / name, quality=95)

    loaded = images.load_image(path)

    assert loaded.dtype == np.uint8
    _assert_close(loaded, pixels, mean_tolerance=2, max_tolerance=16)


def test_accepts_path_objects(tmp_path):
    pixels = _picture()
    _save(pixels, tmp_path / "photo.png")

    np.testing.assert_array_equal(images.load_image(tmp_path / "photo.png"), pixels)


def test_content_decides_the_format_not_the_extension(tmp_path):
    pixels = _picture()
    path = _save(pixels, tmp_path / "really_a_png.jpg", format="PNG")

    np.testing.assert_array_equal(images.load_image(path), pixels)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _picture()[:, :, 0]
    path = _save(Image.fromarray(gray, mode="L"), tmp_path / "gray.png")

    loaded = images.load_image(path)

    np.testing.assert_array_equal(loaded, np.stack([gray] * 3, axis=-1))


@pytest.mark.parametrize("name", ["bits.png", "bits.bmp", "bits.tif"])
def test_one_bit_images_are_black_and_white(tmp_path, name):
    mask = _picture()[:, :, 0] > 100
    path = _save(Image.fromarray(mask), tmp_path / name)

    loaded = images.load_image(path)

    expected = np.where(mask, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(loaded, np.stack([expected] * 3, axis=-1))


def test_palette_image_matches_its_rgb_twin(tmp_path):
    pixels = _picture()
    palette_image = Image.fromarray(pixels).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=256
    )
    np.testing.assert_array_equal(np.asarray(palette_image.convert("RGB")), pixels)
    path = _save(palette_image, tmp_path / "palette.png")

    np.testing.assert_array_equal(images.load_image(path), pixels)


@pytest.mark.parametrize("name", ["cmyk.jpg", "cmyk.tif"])
def test_cmyk_image_matches_its_rgb_twin(tmp_path, name):
    pixels = _smooth_picture()
    cmyk = Image.fromarray(pixels).convert("CMYK")
    path = _save(cmyk, tmp_path / name, **({"quality": 95} if name.endswith(".jpg") else {}))

    loaded = images.load_image(path)

    _assert_close(loaded, pixels, mean_tolerance=2, max_tolerance=16)


def test_cmyk_black_channel_darkens_the_colour(tmp_path):
    cmyk = np.array(
        [[[0, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128], [255, 0, 0, 0], [0, 128, 0, 128]]],
        dtype=np.uint8,
    )
    path = _save(Image.fromarray(cmyk, mode="CMYK"), tmp_path / "cmyk.tif")

    loaded = images.load_image(path)

    expected = [[[255, 255, 255], [0, 0, 0], [127, 127, 127], [0, 255, 255], [127, 63, 127]]]
    np.testing.assert_allclose(loaded, expected, atol=1)


# 16-bit grayscale.


@pytest.mark.parametrize(
    "name, dtype", [("deep.png", np.uint16), ("deep.tif", np.uint16), ("deep.tif", np.int32)]
)
def test_sixteen_bit_gray_matches_its_eight_bit_twin(tmp_path, name, dtype):
    gray = _smooth_picture()[:, :, 1]
    deep = Image.fromarray(gray.astype(dtype) * 257)
    assert deep.mode == ("I;16" if dtype == np.uint16 else "I")
    path = _save(deep, tmp_path / name)

    loaded = images.load_image(path)

    np.testing.assert_array_equal(loaded, np.stack([gray] * 3, axis=-1))


@pytest.mark.parametrize("name", ["levels.png", "levels.tif"])
def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path, name):
    values = np.array([[0, 1000, 32768, 40000, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / name)

    loaded = images.load_image(path)

    np.testing.assert_allclose(loaded[0, :, 0], [0, 4, 128, 156, 255], atol=1)
    assert loaded[0, 1, 0] < 10


def test_sixteen_bit_gray_colour_key_matches_its_eight_bit_twin(tmp_path):
    # The same picture as 16-bit and 8-bit grayscale PNGs, each with a tRNS chunk making one
    # gray level transparent: both must read alike, white where transparent.
    gray = _smooth_picture()[:, :, 1].copy()
    key = int(gray[0, 0])
    gray[:, 5:10] = key
    deep = _save(Image.fromarray(gray.astype(np.uint16) * 257), tmp_path / "deep.png",
                 transparency=key * 257)
    plain = _save(Image.fromarray(gray), tmp_path / "plain.png", transparency=key)
    with Image.open(deep) as opened:
        assert opened.mode == "I;16" and opened.info["transparency"] == key * 257

    loaded = images.load_image(deep)

    np.testing.assert_array_equal(loaded, images.load_image(plain))
    assert (loaded[:, 5:10] == 255).all()
    opaque = gray != key
    np.testing.assert_array_equal(loaded[opaque], np.stack([gray[opaque]] * 3, axis=-1))


# Transparency is composited on white.


def _with_transparent_stripe(pixels):
    """Returns the alpha mask hiding the middle columns, and the white-filled twin."""
    alpha = np.full(pixels.shape[:2], 255, dtype=np.uint8)
    alpha[:, 5:10] = 0
    twin = pixels.copy()
    twin[alpha == 0] = 255
    return alpha, twin


@pytest.mark.parametrize("name", ["clear.png", "clear.webp", "clear.tif"])
def test_rgba_is_composited_on_white(tmp_path, name):
    pixels = _picture()
    alpha, twin = _with_transparent_stripe(pixels)
    rgba = np.dstack([pixels, alpha])
    twin_path = _save(twin, tmp_path / "twin.png")
    path = _save(rgba, tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))

    np.testing.assert_array_equal(images.load_image(path), images.load_image(twin_path))


def test_half_transparent_red_turns_pink_not_dark(tmp_path):
    rgba = np.array([[[255, 0, 0, 128]]], dtype=np.uint8)
    path = _save(rgba, tmp_path / "pink.png")

    np.testing.assert_allclose(images.load_image(path)[0, 0], [255, 127, 127], atol=1)


def test_gray_with_alpha_is_composited_on_white(tmp_path):
    gray = _picture()[:, :, 0]
    alpha, twin = _with_transparent_stripe(np.stack([gray] * 3, axis=-1))
    path = _save(Image.fromarray(np.dstack([gray, alpha]), mode="LA"), tmp_path / "la.png")

    np.testing.assert_array_equal(images.load_image(path), twin)


@pytest.mark.parametrize("name", ["palette.png", "palette.gif"])
def test_palette_transparency_is_composited_on_white(tmp_path, name):
    colours = _picture(height=8, width=1).reshape(8, 3)
    colours[0] = (0, 0, 0)
    indices = np.random.default_rng(1).integers(1, 8, size=(12, 20)).astype(np.uint8)
    indices[:, 5:10] = 0
    palette_image = Image.fromarray(indices, mode="P")
    palette_image.putpalette(colours.flatten().tolist())
    twin = colours[indices]
    twin[:, 5:10] = 255
    path = _save(palette_image, tmp_path / name, transparency=0)

    np.testing.assert_array_equal(images.load_image(path), twin)


def test_colour_key_transparency_is_composited_on_white(tmp_path):
    pixels = _picture()
    key = (85, 170, 0)
    pixels[:, 5:10] = key
    twin = pixels.copy()
    twin[np.all(pixels == key, axis=-1)] = 255
    path = _save(pixels, tmp_path / "keyed.png", transparency=key)

    np.testing.assert_array_equal(images.load_image(path), twin)


# EXIF orientation.

# Stored pixels for each EXIF orientation, from the upright picture, following
# the tag's definition (where the stored row 0 and column 0 are shown).
_STORED_FROM_UPRIGHT = {
    1: lambda up: up,
    2: lambda up: up[:, ::-1],
    3: lambda up: up[::-1, ::-1],
    4: lambda up: up[::-1, :],
    5: lambda up: up.transpose(1, 0, 2),
    6: lambda up: np.rot90(up, 1),
    7: lambda up: up[::-1, ::-1].transpose(1, 0, 2),
    8: lambda up: np.rot90(up, -1),
}


def _save_with_orientation(upright, path, orientation, **kwargs):
    stored = np.ascontiguousarray(_STORED_FROM_UPRIGHT[orientation](upright))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, path, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    upright = _picture(height=6, width=10)
    twin_path = _save(upright, tmp_path / "twin.png")
    path = _save_with_orientation(upright, tmp_path / "turned.png", orientation)

    np.testing.assert_array_equal(images.load_image(path), images.load_image(twin_path))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_of_a_phone_jpeg(tmp_path, orientation):
    upright = _smooth_picture(height=32, width=64)
    path = _save_with_orientation(upright, tmp_path / "phone.jpg", orientation, quality=95)

    _assert_close(images.load_image(path), upright, mean_tolerance=2, max_tolerance=16)
    _assert_close(
        images.load_and_resize(path, (16, 32)),
        images.resize_image(upright, (16, 32)),
        mean_tolerance=2,
        max_tolerance=16,
    )


# Animations use their first frame.


@pytest.mark.parametrize(
    "name, options",
    [
        ("moving.gif", {"duration": 50, "loop": 0}),
        ("moving.webp", {"lossless": True, "duration": 50}),
        ("moving.png", {"duration": 50}),
        ("pages.tif", {}),
    ],
)
def test_animation_returns_its_first_frame(tmp_path, name, options):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (8, 6), colour) for colour in colours]
    path = str(tmp_path / name)
    frames[0].save(path, save_all=True, append_images=frames[1:], **options)
    with Image.open(path) as written:
        assert written.n_frames == 3

    loaded = images.load_image(path)

    assert loaded.shape == (6, 8, 3)
    assert np.all(loaded == (255, 0, 0))


# Extreme aspect ratios.


@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("name", ["long.png", "long.jpg"])
def test_very_wide_or_tall_images_load_and_resize(tmp_path, tall, name):
    wide = np.zeros((40, 8000, 3), dtype=np.uint8)
    wide[:, 4000:] = 255
    pixels = wide.transpose(1, 0, 2) if tall else wide
    path = _save(np.ascontiguousarray(pixels), tmp_path / name)

    assert images.load_image(path).shape == pixels.shape
    resized = images.load_and_resize(path, 32)

    assert resized.shape == (32, 32, 3)
    if tall:
        resized = resized.transpose(1, 0, 2)
    assert resized[:, :15].max() < 20
    assert resized[:, 17:].min() > 235


# Unreadable files.

LOADERS = {
    "load_image": images.load_image,
    "load_and_resize": lambda path: images.load_and_resize(path, 8),
}


def _truncated_jpeg(path):
    _save(_smooth_picture(), path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_png(path):
    _save(_picture(64, 64), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _empty(path):
    path.write_bytes(b"")


def _html(path):
    path.write_text("<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n")


def _text(path):
    path.write_text("a dog runs on the grass\n")


def _noise(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())


def _unsupported_format(path):
    _save(_picture(), path, format="PPM")


def _folder(path):
    path.mkdir()


def _missing(path):
    pass


@pytest.mark.parametrize(
    "make, name, reason",
    [
        (_truncated_jpeg, "cut.jpg", "truncated"),
        (_truncated_png, "cut.png", "truncated"),
        (_empty, "empty.jpg", "empty"),
        (_html, "page.jpg", "HTML"),
        (_text, "caption.jpg", "text"),
        (_text, "caption.txt", "text"),
        (_noise, "noise.png", "not a JPEG"),
        (_unsupported_format, "pixmap.jpg", "not a JPEG"),
        (_folder, "photos.jpg", "folder"),
        (_missing, "gone.jpg", "no such file"),
    ],
)
@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS.keys())
def test_unreadable_files_raise_a_one_line_image_error(tmp_path, make, name, reason, load):
    path = tmp_path / name
    make(path)

    with pytest.raises(ImageError) as caught:
        load(str(path))

    message = str(caught.value)
    assert isinstance(caught.value, CaptioningError)
    assert name in message
    assert reason in message
    assert "\n" not in message


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    under = _save(np.zeros((30, 30, 3), dtype=np.uint8), tmp_path / "under.png")
    warned = _save(np.zeros((40, 40, 3), dtype=np.uint8), tmp_path / "warned.png")
    refused = _save(np.zeros((50, 50, 3), dtype=np.uint8), tmp_path / "refused.png")
    filters_before = list(warnings.filters)

    assert images.load_image(under).shape == (30, 30, 3)
    for path in (warned, refused):
        for load in LOADERS.values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS") as caught:
                    load(path)
            assert os.path.basename(path) in str(caught.value)
    assert warnings.filters == filters_before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)

    with pytest.raises(ImageError, match="pipe.jpg: not a regular file"):
        images.load_image(pipe)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_no_file_handles_are_left_open(tmp_path):
    good = _save(_picture(), tmp_path / "good.png")
    pages = str(tmp_path / "pages.tif")
    Image.new("RGB", (4, 4)).save(pages, save_all=True, append_images=[Image.new("RGB", (4, 4))])
    bad = tmp_path / "cut.jpg"
    _truncated_jpeg(bad)
    html = tmp_path / "page.jpg"
    _html(html)
    open_before = len(os.listdir("/proc/self/fd"))

    for _ in range(5):
        images.load_image(good)
        images.load_and_resize(pages, 4)
        for path in (bad, html):
            with pytest.raises(ImageError):
                images.load_image(path)

    assert len(os.listdir("/proc/self/fd")) == open_before


# Resizing.


@pytest.mark.parametrize("size, shape", [(7, (7, 7, 3)), ((5, 9), (5, 9, 3)), ([9, 5], (9, 5, 3))])
def test_resize_image_returns_float32_of_the_requested_shape(size, shape):
    resized = images.resize_image(_picture(), size)

    assert resized.dtype == np.float32
    assert resized.shape == shape
    assert resized.min() >= 0 and resized.max() <= 255


def test_resize_image_squashes_the_whole_picture():
    pixels = np.zeros((40, 120, 3), dtype=np.uint8)
    pixels[:, :60] = (255, 0, 0)
    pixels[:, 60:] = (0, 0, 255)

    resized = images.resize_image(pixels, 10)

    np.testing.assert_array_equal(resized[:, :4], np.broadcast_to([255, 0, 0], (10, 4, 3)))
    np.testing.assert_array_equal(resized[:, 6:], np.broadcast_to([0, 0, 255], (10, 4, 3)))
    np.testing.assert_array_equal(resized, np.broadcast_to(resized[:1], resized.shape))


def test_resize_image_antialiases_when_shrinking():
    lines = np.zeros((64, 64, 3), dtype=np.uint8)
    lines[:, ::3] = 255

    resized = images.resize_image(lines, 8)

    np.testing.assert_allclose(resized[:, 1:-1], 85, atol=3)


def test_resize_image_accepts_float_pixels_in_range():
    pixels = _picture()

    np.testing.assert_array_equal(
        images.resize_image(pixels.astype(np.float32), 6), images.resize_image(pixels, 6)
    )


@pytest.mark.parametrize("size", [0, -3, 2.5, True, (4,), (4, 0), "224", None])
def test_resize_image_rejects_bad_sizes(size):
    with pytest.raises(ConfigError):
        images.resize_image(_picture(), size)


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 4), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
        np.full((4, 4, 3), 300.0),
        np.full((4, 4, 3), np.nan),
        np.full((4, 4, 3), -1),
        np.ones((4, 4, 3), dtype=bool),
    ],
)
def test_resize_image_rejects_bad_pixels(pixels):
    with pytest.raises(ImageError):
        images.resize_image(pixels, 4)


@pytest.mark.parametrize("name", ["photo.png", "photo.gif", "small.jpg"])
def test_load_and_resize_equals_resize_of_load(tmp_path, name):
    path = _save(_smooth_picture(), tmp_path / name)

    np.testing.assert_array_equal(
        images.load_and_resize(path, 16), images.resize_image(images.load_image(path), 16)
    )


def test_load_and_resize_of_a_big_jpeg_is_close_to_a_full_decode(tmp_path):
    path = _save(_smooth_picture(1200, 1600), tmp_path / "big.jpg", quality=90)

    fast = images.load_and_resize(path, 64)
    full = images.resize_image(images.load_image(path), 64)

    _assert_close(fast, full, mean_tolerance=1, max_tolerance=8)
    np.testing.assert_array_equal(images.load_and_resize(path, 64), fast)


# Finding images.


IMAGE_NAMES = ["b.jpg", "A.JPG", "c.Png", "d.TIFF", "e.jpeg", "f.webp", "g.gif", "h.bmp", "i.tif"]


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / ".thumbnails").mkdir()
    for name in IMAGE_NAMES:
        (folder / name).write_bytes(b"x")
    for name in ["notes.txt", "captions.csv", ".hidden.jpg", "._b.jpg", "jpg"]:
        (folder / name).write_bytes(b"x")
    (folder / "nested" / "deep.jpg").write_bytes(b"x")
    (folder / ".thumbnails" / "thumb.jpg").write_bytes(b"x")
    (folder / "album.png").mkdir()
    return folder


def test_find_images_lists_a_folder_sorted_by_extension(photo_folder):
    files, errors = images.find_images([str(photo_folder)])

    assert files == [str(photo_folder / name) for name in sorted(IMAGE_NAMES)]
    # A folder named like an image is not skipped silently (issue 14).
    assert errors == [(str(photo_folder / "album.png"), "is a folder, not an image file")]


def test_find_images_recursive_includes_subfolders(photo_folder):
    files, errors = images.find_images([photo_folder], recursive=True)

    assert str(photo_folder / "nested" / "deep.jpg") in files
    assert all(".thumbnails" not in path for path in files)
    assert len(files) == 10
    assert errors == []


def test_find_images_keeps_explicit_files_and_reports_missing_paths(photo_folder, tmp_path):
    notes = str(photo_folder / "notes.txt")
    missing = str(tmp_path / "missing.jpg")

    files, errors = images.find_images(
        [missing, notes, str(photo_folder / "b.jpg"), str(photo_folder)]
    )

    assert notes in files
    assert files.count(str(photo_folder / "b.jpg")) == 1
    assert files == sorted(files)
    assert errors == [(missing, "no such file or folder"),
                      (str(photo_folder / "album.png"), "is a folder, not an image file")]


def test_find_images_expands_glob_patterns(photo_folder, tmp_path):
    files_pattern = str(photo_folder / "[bcd]*")
    folder_pattern = str(tmp_path / "phot*")
    nothing = str(tmp_path / "*.png")

    files, errors = images.find_images([files_pattern, nothing])
    folder_files, folder_errors = images.find_images(folder_pattern)

    assert files == [str(photo_folder / name) for name in ["b.jpg", "c.Png", "d.TIFF"]]
    assert [path for path, _ in errors] == [nothing]
    assert "matches no image" in errors[0][1]
    assert folder_files == images.find_images(str(photo_folder))[0]
    assert len(folder_files) == 9
    assert folder_errors == [(str(photo_folder / "album.png"), "is a folder, not an image file")]


def test_find_images_double_star_pattern_searches_subfolders(photo_folder):
    files, _ = images.find_images(str(photo_folder / "**" / "*.jpg"))

    assert str(photo_folder / "nested" / "deep.jpg") in files
    assert str(photo_folder / "b.jpg") in files
    assert str(photo_folder / "notes.txt") not in files


def test_find_images_reports_folders_without_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    only_text = tmp_path / "text"
    (only_text / "inner").mkdir(parents=True)
    (only_text / "notes.txt").write_text("hello")
    (only_text / "inner" / "photo.jpg").write_bytes(b"x")

    files, errors = images.find_images([str(empty), str(only_text)])

    assert files == []
    assert [path for path, _ in errors] == [str(empty), str(only_text)]
    assert "no image files" in errors[0][1]
    assert "subfolders were not searched" in errors[1][1]
