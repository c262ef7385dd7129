"""Tests for captioning.inference.inputs: what the captioners take, and downloaded images."""

from __future__ import annotations

import numpy as np
import pytest

from captioning.data.images import load_image
from captioning.errors import ConfigError, ImageError
from captioning.inference.inputs import as_rgb, download_image, image_list, load_pixels


def test_image_list_takes_one_path_one_array_a_batch_or_a_list(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    assert image_list("a.jpg") == ["a.jpg"]
    assert image_list(tmp_path) == [tmp_path]
    assert len(image_list(rgb)) == 1 and len(image_list(rgb[..., 0])) == 1
    assert len(image_list(np.stack([rgb] * 3))) == 3
    assert image_list(["a.jpg", rgb])[0] == "a.jpg"
    with pytest.raises(ConfigError, match=r"\(1, 1, 2, 2, 3\)"):
        image_list(np.zeros((1, 1, 2, 2, 3)))


def test_as_rgb_repeats_grey_and_drops_alpha():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(as_rgb(grey)[..., 2], grey)
    np.testing.assert_array_equal(as_rgb(grey[..., None]), as_rgb(grey))
    rgba = np.dstack([as_rgb(grey), np.full((2, 3), 7, np.uint8)])
    np.testing.assert_array_equal(as_rgb(rgba), as_rgb(grey))
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        as_rgb(np.zeros((2, 2, 5)))


def test_load_pixels_gives_pixels_or_the_error_line(tmp_path):
    assert load_pixels(np.zeros((9, 7, 3), np.uint8), (4, 6)).shape == (4, 6, 3)
    message = load_pixels(tmp_path / "missing.jpg", 4)
    assert isinstance(message, str) and "missing.jpg" in message


def test_download_image_names_files_by_the_whole_url(tmp_path):
    from PIL import Image

    first, second = tmp_path / "a" / "image.jpg", tmp_path / "b" / "image.jpg"
    for path, color in ((first, (255, 0, 0)), (second, (0, 0, 255))):
        path.parent.mkdir()
        Image.new("RGB", (8, 8), color).save(path)
    cache = tmp_path / "cache"
    got = [download_image(path.as_uri(), cache) for path in (first, second)]
    assert got[0] != got[1] and got[0].suffix == got[1].suffix == ".jpg"
    assert [p.read_bytes() for p in got] == [first.read_bytes(), second.read_bytes()]
    red, blue = (load_image(path)[0, 0].astype(int) for path in got)
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]  # not the first image again
    assert download_image(first.as_uri(), cache) == got[0]  # cached
    with pytest.raises(ImageError, match="missing.jpg"):
        download_image((tmp_path / "missing.jpg").as_uri(), cache)


def test_download_image_of_a_url_ending_in_a_slash(tmp_path, monkeypatch):
    import keras

    served = {"https://example.com/cat/": b"cat", "https://example.com/dog/": b"dog"}

    def get_file(fname, origin, cache_dir, cache_subdir, force_download):
        target = tmp_path / cache_subdir / fname
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(served[origin])
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    cat, dog = (download_image(url) for url in served)
    assert cat != dog and cat.suffix == "" and dog.suffix == ""
    assert (cat.read_bytes(), dog.read_bytes()) == (b"cat", b"dog")
