"""Tests for `captioning.data.synthetic`: the shapes dataset and its on-disk formats."""

import csv
import json
import pathlib
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from captioning.data import shapes, synthetic
from captioning.errors import ConfigError

SMALL = {"n_images": 30, "image_size": 64}


def _metadata(out_dir):
    path = pathlib.Path(out_dir) / synthetic.METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def _read_lines(path):
    return pathlib.Path(path).read_text(encoding="utf-8").splitlines()


def _check_image(path, size):
    with Image.open(path) as image:
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        assert image.size == (size, size)


def _patch_mean(pixels, center, radius=1):
    x, y = (int(round(v)) for v in center)
    patch = pixels[y - radius : y + radius + 1, x - radius : x + radius + 1]
    return patch.reshape(-1, 3).mean(axis=0)


def _nearest_colour(rgb):
    return min(
        shapes.COLOURS,
        key=lambda name: np.abs(np.subtract(shapes.COLOURS[name], rgb)).sum(),
    )


def test_csv_format(tmp_path):
    path = synthetic.make_dataset(tmp_path, format="csv", **SMALL)
    assert path == tmp_path / "captions.csv"
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["image", "caption", "split"]
    assert frame["image"].nunique() == SMALL["n_images"]
    assert set(frame["split"]) == set(synthetic.SPLITS)
    for name, group in frame.groupby("image"):
        assert group["caption"].nunique() >= 5
        assert group["split"].nunique() == 1
        _check_image(tmp_path / "images" / name, SMALL["image_size"])
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(frame) == SMALL["n_images"] * shapes.CAPTIONS_PER_IMAGE


def test_flickr8k_format(tmp_path):
    path = synthetic.make_dataset(tmp_path, format="flickr8k", **SMALL)
    assert path == tmp_path / "Flickr8k.token.txt"
    captions = {}
    for line in _read_lines(path):
        key, caption = line.split("\t")
        name, number = key.split("#")
        captions.setdefault(name, []).append((int(number), caption))
    assert len(captions) == SMALL["n_images"]
    for name, numbered in captions.items():
        assert [n for n, _ in numbered] == list(range(len(numbered)))
        assert len({caption for _, caption in numbered}) >= 5
        _check_image(tmp_path / "images" / name, SMALL["image_size"])
    split_lists = {
        split: _read_lines(tmp_path / f"Flickr_8k.{stem}Images.txt")
        for split, stem in (("train", "train"), ("val", "dev"), ("test", "test"))
    }
    assert all(split_lists.values())
    listed = [name for names in split_lists.values() for name in names]
    assert sorted(listed) == sorted(captions)
    recorded = {r["file_name"]: r["split"] for r in _metadata(tmp_path)["images"]}
    for split, names in split_lists.items():
        assert all(recorded[name] == split for name in names)


def test_coco_format(tmp_path):
    path = synthetic.make_dataset(tmp_path, format="coco", **SMALL)
    assert path == tmp_path / "annotations" / "captions_train.json"
    image_ids, annotation_ids = set(), set()
    for split in synthetic.SPLITS:
        path = tmp_path / "annotations" / f"captions_{split}.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        assert set(data) == {"info", "licenses", "images", "annotations"}
        assert isinstance(data["info"], dict) and data["licenses"] == []
        assert data["images"]
        ids = {image["id"] for image in data["images"]}
        assert not ids & image_ids
        image_ids |= ids
        for image in data["images"]:
            assert isinstance(image["id"], int)
            assert image["width"] == image["height"] == SMALL["image_size"]
            _check_image(tmp_path / "images" / image["file_name"], SMALL["image_size"])
        by_image = {}
        for annotation in data["annotations"]:
            assert isinstance(annotation["id"], int)
            assert annotation["id"] not in annotation_ids
            annotation_ids.add(annotation["id"])
            assert annotation["image_id"] in ids
            captions = by_image.setdefault(annotation["image_id"], set())
            captions.add(annotation["caption"])
        assert set(by_image) == ids
        assert all(len(captions) >= 5 for captions in by_image.values())
    assert len(image_ids) == SMALL["n_images"]


def _snapshot(out_dir):
    return {
        str(path.relative_to(out_dir)): path.read_bytes()
        for path in sorted(pathlib.Path(out_dir).rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("format", synthetic.FORMATS)
def test_deterministic(tmp_path, format):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synthetic.make_dataset(tmp_path / name, seed=seed, format=format, **SMALL)
        runs.append(_snapshot(tmp_path / name))
    assert runs[0] == runs[1]
    assert runs[0].keys() == runs[2].keys()
    differing = [name for name in runs[0] if runs[0][name] != runs[2][name]]
    assert any(name.startswith("images") for name in differing)
    assert any(not name.startswith("images") for name in differing)


def test_split_proportions(tmp_path):
    synthetic.make_dataset(tmp_path, n_images=200, image_size=32, format="csv")
    frame = pd.read_csv(tmp_path / "captions.csv").drop_duplicates("image")
    counts = frame["split"].value_counts()
    assert counts["train"] == 160
    assert counts["val"] == 20
    assert counts["test"] == 20


@pytest.mark.parametrize("n_images", [10, 11, 14])
def test_every_split_non_empty(tmp_path, n_images):
    synthetic.make_dataset(tmp_path, n_images=n_images, image_size=32)
    splits = {record["split"] for record in _metadata(tmp_path)["images"]}
    assert splits == set(synthetic.SPLITS)


def test_simple_captions_match_drawing(tmp_path):
    synthetic.make_dataset(tmp_path, n_images=60, image_size=64)
    records = _metadata(tmp_path)["images"]
    seen = {"colour": set(), "shape": set(), "size": set()}
    for record in records:
        (shape,) = record["shapes"]
        for key in seen:
            seen[key].add(shape[key])
        with Image.open(tmp_path / "images" / record["file_name"]) as image:
            pixels = np.asarray(image, dtype=np.float64)
        centre = _patch_mean(pixels, shape["center"])
        assert np.abs(centre - shapes.COLOURS[shape["colour"]]).max() < 40
        assert _nearest_colour(centre) == shape["colour"]
        corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.mean() < 90
        expected_extent = {"small": 0.25, "large": 0.55}[shape["size"]] * 64
        assert abs(shape["extent"] - expected_extent) <= 0.1 * expected_extent
        big = {"small": "little", "large": "big"}[shape["size"]]
        first = f"a {shape['size']} {shape['colour']} {shape['shape']}"
        assert record["captions"][0] == first
        for caption in record["captions"]:
            words = caption.split()
            assert shape["colour"] in words
            assert shape["shape"] in words
            assert shape["size"] in words or big in words
            assert not {"left", "right", "top", "bottom"} & set(words)
    assert seen["colour"] == set(shapes.COLOURS)
    assert seen["shape"] == set(shapes.SHAPES)
    assert seen["size"] == {"small", "large"}


def test_simple_vocabulary_is_small(tmp_path):
    synthetic.make_dataset(tmp_path, n_images=200, image_size=32)
    words = {
        word for record in _metadata(tmp_path)["images"]
        for caption in record["captions"] for word in caption.split()
    }
    assert words <= set(shapes.vocabulary(1))
    assert len(shapes.vocabulary(1)) < 60


@pytest.mark.parametrize("shapes_per_image", [2, 3])
def test_hard_captions_match_layout(tmp_path, shapes_per_image):
    synthetic.make_dataset(tmp_path, shapes_per_image=shapes_per_image, **SMALL)
    for record in _metadata(tmp_path)["images"]:
        shapes = sorted(record["shapes"], key=lambda s: s["center"][0])
        assert len(shapes) == shapes_per_image
        phrases = [f"{s['colour']} {s['shape']}" for s in shapes]
        assert len(set(phrases)) == shapes_per_image
        for left, right in zip(shapes, shapes[1:]):
            gap = (right["center"][0] - right["extent"] / 2) - (
                left["center"][0] + left["extent"] / 2
            )
            assert gap > 0
        with Image.open(tmp_path / "images" / record["file_name"]) as image:
            pixels = np.asarray(image, dtype=np.float64)
        for shape in shapes:
            centre = _patch_mean(pixels, shape["center"])
            assert _nearest_colour(centre) == shape["colour"]
        captions = record["captions"]
        assert len(set(captions)) == 5
        if shapes_per_image == 2:
            left, right = phrases
            assert captions[0] == f"a {left} to the left of a {right}"
            assert captions[1] == f"a {right} to the right of a {left}"
        else:
            left, middle, right = phrases
            assert captions[0] == (
                f"a {left} , a {middle} and a {right} from left to right"
            )
            assert captions[2] == (
                f"a {left} on the left , a {middle} in the middle"
                f" and a {right} on the right"
            )
        for caption in captions:
            assert all(phrase in caption for phrase in phrases)


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"n_images": 9}, "9"),
        ({"n_images": 10.0}, "10.0"),
        ({"n_images": True}, "True"),
        ({"image_size": 31}, "31"),
        ({"format": "tsv"}, "'tsv'"),
        ({"shapes_per_image": 0}, "0"),
        ({"shapes_per_image": 4}, "4"),
        ({"seed": -1}, "-1"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, shown):
    with pytest.raises(ConfigError, match=re.escape(f"got {shown}") + "$") as caught:
        synthetic.make_dataset(tmp_path / "out", **{**SMALL, **kwargs})
    assert str(caught.value).startswith(next(iter(kwargs)))  # names the argument
    assert not (tmp_path / "out").exists()


def test_out_dir_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ConfigError, match="file.txt"):
        synthetic.make_dataset(target, **SMALL)
