"""Tests for `captioning.data.table`: `check_images` against an images folder."""

import logging

import pandas as pd
import pytest

from captioning.data.captions import read_captions
from captioning.data.table import check_images
from captioning.errors import ConfigError, DatasetError


@pytest.fixture
def table():
    return pd.DataFrame(
        {
            "image": ["a.jpg", "a.jpg", "b.jpg", "sub/c.jpg", "d.jpg", "d.jpg", "../e.jpg"],
            "caption": ["A 1", "A 2", "B", "C", "D 1", "D 2", "E"],
            "split": ["train"] * 7,
        }
    )


def test_check_images_skips_missing(tmp_path, table, caplog):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/c.jpg"):
        (images / name).touch()
    (tmp_path / "e.jpg").touch()
    (images / "b.jpg").mkdir()
    with caplog.at_level(logging.WARNING, logger="captioning"):
        kept, missing = check_images(table, images)
    assert missing == ["../e.jpg", "b.jpg", "d.jpg"]
    assert list(kept.itertuples(index=False, name=None)) == [
        ("a.jpg", "A 1", "train"), ("a.jpg", "A 2", "train"), ("sub/c.jpg", "C", "train")]
    assert list(kept.index) == [0, 1, 2]
    [record] = caplog.records
    assert record.name == "captioning.data.table"
    assert record.getMessage() == (
        f"3 of 5 images listed in the captions table are missing under {images}; "
        "their 4 captions are skipped (--strict, or strict=True in Python, stops instead)."
    )


def test_check_images_all_present(tmp_path, table):
    for name in ("a.jpg", "b.jpg", "d.jpg"):
        (tmp_path / name).touch()
    kept, missing = check_images(table.iloc[[0, 1, 2, 4, 5]], tmp_path, strict=True)
    assert missing == []
    assert kept["caption"].tolist() == ["A 1", "A 2", "B", "D 1", "D 2"]


def test_check_images_strict_raises(tmp_path, table):
    (tmp_path / "a.jpg").touch()
    with pytest.raises(DatasetError) as caught:
        check_images(table, tmp_path, strict=True)
    message = str(caught.value)
    assert message.startswith("4 of 5 images listed in the captions table are missing under")
    assert str(tmp_path) in message
    assert "../e.jpg, b.jpg, d.jpg, sub/c.jpg" in message
    # Worded for the CLI and for Python alike.
    assert "drop --strict" in message and "strict=False" in message


def test_check_images_names_source_and_folder(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("image,caption\na.jpg,A .\n")
    with pytest.raises(DatasetError, match=r"c\.csv are missing under"):
        check_images(read_captions(path, "csv"), tmp_path, strict=True)
    with pytest.raises(DatasetError, match="Images folder not found"):
        check_images(read_captions(path, "csv"), tmp_path / "images")


def test_check_images_needs_an_image_column(tmp_path):
    with pytest.raises(ConfigError, match=r"'image'.*\['name', 'caption'\]"):
        check_images(pd.DataFrame({"name": ["a.jpg"], "caption": ["A"]}), tmp_path)
