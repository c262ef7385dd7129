"""Tests for `captioning.data.splits`: train/val/test splits for sources without any."""

import json
import logging
import os

import pandas as pd
import pytest

from captioning.data.captions import read_captions
from captioning.data.splits import assign_splits
from captioning.errors import ConfigError


def write(path, text):
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _unsplit_csv(path, n_images, captions_per_image=2):
    lines = ["image,caption"] + [f"img_{i:03d}.jpg,Caption {c} of picture {i} ."
                                 for i in range(n_images) for c in range(captions_per_image)]
    return write(path, "\n".join(lines) + "\n")


def test_assign_splits_by_image_80_10_10_and_stable(tmp_path):
    table = read_captions(_unsplit_csv(tmp_path / "c.csv", 50), "csv")
    assert set(table["split"]) == {""}
    split = assign_splits(table)
    by_image = split.groupby("image")["split"].agg(set)
    assert by_image.map(len).eq(1).all()  # every caption of an image in one split
    counts = by_image.map(lambda s: next(iter(s))).value_counts().to_dict()
    assert counts == {"train": 40, "val": 5, "test": 5}
    assert split.attrs["splits_assigned"]["images"] == counts
    assert split["caption"].tolist() == table["caption"].tolist()  # rows kept in order
    # The same names give the same splits whatever the row order, not so another seed.
    shuffled = assign_splits(table.sample(frac=1, random_state=3))
    assert shuffled.set_index("caption")["split"].to_dict() == \
        split.set_index("caption")["split"].to_dict()
    assert not assign_splits(table, seed=1)["split"].equals(split["split"])


def test_assign_splits_does_not_depend_on_the_process(tmp_path):
    # Python's hash() of a str changes with every process; the split must not.
    import subprocess
    import sys

    path = _unsplit_csv(tmp_path / "c.csv", 20)
    code = ("import sys, json; from captioning.data import assign_splits, read_captions; "
            "t = assign_splits(read_captions(sys.argv[1], 'csv')); "
            "print(json.dumps(t['split'].tolist()))")
    outputs = {
        subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                       check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == assign_splits(read_captions(path, "csv"))["split"].tolist()


def test_assign_splits_keeps_existing_splits(tmp_path):
    table = pd.DataFrame({"image": ["a.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg"],
                          "caption": list("12345"),
                          "split": ["val", "", "", "", "test"]})
    filled = assign_splits(table, fractions=(1.0, 0.0, 0.0))
    assert filled["split"].tolist() == ["val", "val", "train", "train", "test"]
    assert table["split"].tolist() == ["val", "", "", "", "test"]  # the input is untouched


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1),
                                       "0.8,0.1,0.1", (0.8, 0.1, None)])
def test_assign_splits_refuses_bad_fractions(fractions):
    table = pd.DataFrame({"image": ["a.jpg"], "caption": ["A"], "split": [""]})
    with pytest.raises(ConfigError, match="add up to 1") as caught:
        assign_splits(table, fractions)
    assert repr(fractions) in str(caught.value)


def test_read_captions_assigns_splits_only_when_there_are_none(tmp_path, caplog):
    path = _unsplit_csv(tmp_path / "c.csv", 10)
    with caplog.at_level(logging.WARNING, logger="captioning"):
        table = read_captions(path, "csv", split_fractions=(0.8, 0.1, 0.1))
    assert table.drop_duplicates("image")["split"].value_counts().to_dict() == {
        "train": 8, "val": 1, "test": 1}
    [record] = caplog.records
    assert str(path) in record.getMessage()
    assert "train 8, val 1, test 1" in record.getMessage()
    split = write(tmp_path / "s.csv", "image,caption,split\na.jpg,A .,test\nb.jpg,B .,\n")
    assert read_captions(split, "csv", split_fractions=(0.8, 0.1, 0.1))[
        "split"].tolist() == ["test", ""]
    assert set(read_captions(path, "csv")["split"]) == {""}  # not asked: left empty


def test_cli_cache_of_a_csv_without_splits_has_train_val_test(tmp_path, dataset, capsys):
    # `cache --format csv` on an image,caption CSV: the cached table can be trained.
    from captioning import cli
    from tests.helpers import CACHE_SETTINGS, read_table

    table = read_table(dataset).drop(columns="split")
    csv_path = tmp_path / "captions.csv"
    table.to_csv(csv_path, index=False)
    args = ["cache", "--format", "csv", "--captions", str(csv_path), "--images",
            str(dataset / "images"), "--encoder", CACHE_SETTINGS["encoder"], "--weights",
            "none", "--image-size", str(CACHE_SETTINGS["image_size"])]
    assert cli.main(args + ["--out", str(tmp_path / "cache")]) == 0
    cached = pd.read_csv(tmp_path / "cache" / "captions.csv", keep_default_na=False)
    per_image = cached.drop_duplicates("image")["split"].value_counts().to_dict()
    n = table["image"].nunique()
    assert per_image == {"train": round(0.8 * n), "val": round(0.1 * n),
                         "test": n - round(0.8 * n) - round(0.1 * n)}
    assert cached.groupby("image")["split"].nunique().eq(1).all()
    # Another run of the command splits the same way.
    again = cli._read_table(cli._parser().parse_args(args + ["--out", str(tmp_path / "x")]))
    assert dict(zip(again["image"], again["split"])) == dict(zip(cached["image"],
                                                                 cached["split"]))
