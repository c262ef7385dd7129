"""Tests for `captioning.data.dataset.read_dataset`: one way to read for the CLI and 01."""

import json
import shutil

import pytest

from captioning.data.dataset import read_dataset
from captioning.data.synthetic import make_dataset
from captioning.errors import DatasetError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    make_dataset(folder, n_images=30, seed=2, image_size=32, format="csv")
    return folder


def test_an_own_csv_without_split_gets_80_10_10(shapes, tmp_path):
    lines = (shapes / "captions.csv").read_text().splitlines()
    (tmp_path / "mine.csv").write_text(
        "\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    table, missing = read_dataset(tmp_path / "mine.csv", "csv", shapes / "images")
    assert missing == []
    assert table.groupby("split")["image"].nunique().to_dict() == {"train": 24, "val": 3,
                                                                   "test": 3}


def _coco(shapes, folder):
    records = json.loads((shapes / "metadata.json").read_text())["images"]
    (folder / "val2014").mkdir(parents=True)
    for record in records:
        shutil.copyfile(shapes / "images" / record["file_name"],
                        folder / "val2014" / record["file_name"])
    (folder / "captions_val2014.json").write_text(json.dumps({
        "images": [{"id": r["id"], "file_name": r["file_name"]} for r in records],
        "annotations": [{"id": 10 * r["id"] + n, "image_id": r["id"], "caption": c}
                        for r in records for n, c in enumerate(r["captions"])]}))
    return folder / "captions_val2014.json"


@pytest.mark.parametrize("images", ["root", "val2014"])
def test_a_coco_file_finds_its_images_in_the_root_or_in_val2014(shapes, tmp_path, images):
    captions = _coco(shapes, tmp_path)
    folder = tmp_path if images == "root" else tmp_path / "val2014"
    table, missing = read_dataset([captions], "coco", folder)
    assert missing == [] and table["image"].nunique() == 30
    assert set(table["split"]) == {"val"}
    assert table["image"].iloc[0].startswith("val2014/" if images == "root" else "")


def test_missing_images_are_skipped_or_stop_a_strict_read(shapes, tmp_path):
    shutil.copytree(shapes / "images", tmp_path / "images")
    first = sorted((tmp_path / "images").iterdir())[0]
    first.unlink()
    table, missing = read_dataset(shapes / "captions.csv", "csv", tmp_path / "images")
    assert missing == [first.name] and table["image"].nunique() == 29
    with pytest.raises(DatasetError, match="1 of 30 images listed"):
        read_dataset(shapes / "captions.csv", "csv", tmp_path / "images", strict=True)


def test_karpathy_restval_is_folded_unless_asked(tmp_path, shapes):
    records = json.loads((shapes / "metadata.json").read_text())["images"]
    karpathy = {"images": [{"filename": r["file_name"], "split": "restval",
                            "sentences": [{"raw": c} for c in r["captions"]]} for r in records]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    folded, _ = read_dataset(tmp_path / "dataset_coco.json", "karpathy", shapes / "images")
    kept, _ = read_dataset(tmp_path / "dataset_coco.json", "karpathy", shapes / "images",
                           fold_restval=False)
    assert set(folded["split"]) == {"train"} and set(kept["split"]) == {"restval"}
