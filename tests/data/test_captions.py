"""Tests for `read_captions` and the format readers (`captioning.data.captions`, `coco`,
`flickr`, `karpathy`, `csv_file`, `sources`)."""

import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from captioning.data.captions import FORMATS, read_captions
from captioning.data.table import COLUMNS, check_images
from captioning.errors import CaptioningError, ConfigError, DatasetError

FLICKR8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k"
needs_flickr8k = pytest.mark.skipif(
    not (FLICKR8K / "Flickr8k.token.txt").is_file(),
    reason=f"the real Flickr8k caption files are not at {FLICKR8K}",
)
SPACE_SEPARATED = {
    ("1000268201_693b08cb0e.jpg", 0): (
        "A child in a pink dress is climbing up a set of stairs in an entry way ."
    ),
    ("1001773457_577c3a7d70.jpg", 0): "A black dog and a spotted dog are fighting",
    ("1002674143_1b742ab4b8.jpg", 1): (
        "A little girl is sitting in front of a large painted rainbow ."
    ),
}


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding, newline="")
    return path


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def rows(table):
    return list(table.itertuples(index=False, name=None))


def coco(images, annotations):
    return {
        "info": {},
        "images": [{"id": i, "file_name": name} for i, name in images],
        "annotations": [
            {"id": n, "image_id": i, "caption": caption}
            for n, (i, caption) in enumerate(annotations)
        ],
    }


# Real Flickr8k files.


@pytest.fixture(scope="module")
def flickr8k():
    return read_captions(FLICKR8K / "Flickr8k.token.txt", "flickr8k")


@needs_flickr8k
def test_real_flickr8k_counts(flickr8k):
    assert list(flickr8k.columns) == list(COLUMNS)
    assert len(flickr8k) == 40460
    assert flickr8k["image"].nunique() == 8092
    per_image = flickr8k.drop_duplicates("image")["split"].value_counts().to_dict()
    assert per_image == {"train": 6000, "val": 1000, "test": 1000, "": 92}
    assert flickr8k["split"].value_counts().to_dict() == {
        "train": 30000, "val": 5000, "test": 5000, "": 460,
    }
    assert (flickr8k.groupby("image").size() == 5).all()
    assert list(flickr8k.index) == list(range(40460))


@needs_flickr8k
def test_real_flickr8k_rows_match_split_files(flickr8k):
    by_image = flickr8k.drop_duplicates("image").set_index("image")["split"]
    for split, name in [("train", "trainImages"), ("val", "devImages"), ("test", "testImages")]:
        listed = (FLICKR8K / f"Flickr_8k.{name}.txt").read_text().split()
        assert set(by_image[listed]) == {split}


@needs_flickr8k
def test_real_flickr8k_space_separated_lines(flickr8k):
    numbered = flickr8k.set_index(["image", flickr8k.groupby("image").cumcount()])
    for key, caption in SPACE_SEPARATED.items():
        assert numbered.loc[key, "caption"] == caption
    assert not flickr8k["image"].str.contains("#| |\t").any()
    assert not flickr8k["caption"].str.contains("\t").any()
    assert flickr8k.iloc[0]["split"] == "train"


@needs_flickr8k
def test_real_flickr8k_numbered_copy_name(flickr8k):
    assert "2258277193_586949ec62.jpg.1" not in set(flickr8k["image"])
    entry = flickr8k[flickr8k["image"] == "2258277193_586949ec62.jpg"]
    assert list(entry.index) == list(range(6730, 6735))
    assert entry["caption"].tolist()[0] == "people waiting for the subway"
    assert entry["caption"].tolist()[4] == "two woman and one man standing near train tracks ."
    assert set(entry["split"]) == {""}
    neighbours = flickr8k.loc[[6729, 6735], "image"].tolist()
    assert "2258277193_586949ec62.jpg" not in neighbours


@needs_flickr8k
def test_real_flickr8k_crlf_bom_copy_reads_the_same(tmp_path, flickr8k):
    for source in FLICKR8K.iterdir():
        text = source.read_text(encoding="utf-8").replace("\n", "\r\n")
        write(tmp_path / source.name, "\ufeff" + text)
    assert (tmp_path / "Flickr8k.token.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    copy = read_captions(tmp_path / "Flickr8k.token.txt", "flickr8k")
    pd.testing.assert_frame_equal(copy, flickr8k)


@needs_flickr8k
def test_real_flickr8k_without_split_files_leaves_split_empty(tmp_path):
    token = shutil.copy(FLICKR8K / "Flickr8k.token.txt", tmp_path / "results_20130124.token")
    table = read_captions(token, "flickr8k")
    assert len(table) == 40460
    assert set(table["split"]) == {""}


@needs_flickr8k
def test_real_flickr8k_check_images(tmp_path, flickr8k, caplog):
    test_split = flickr8k[flickr8k["split"] == "test"]
    names = test_split["image"].drop_duplicates().tolist()
    for name in names[12:]:
        (tmp_path / name).touch()
    with caplog.at_level(logging.WARNING, logger="captioning"):
        kept, missing = check_images(test_split, tmp_path)
    assert missing == sorted(names[:12])
    assert len(kept) == 5000 - 60
    assert set(kept["image"]) == set(names[12:])
    assert f"12 of 1000 images listed in {FLICKR8K / 'Flickr8k.token.txt'}" in caplog.text
    assert "their 60 captions are skipped" in caplog.text


# Flickr token files.


def test_flickr_token_file_with_split_files_beside(tmp_path):
    token = write(
        tmp_path / "Flickr8k.token.txt",
        "a.jpg#0\tA dog runs .\n"
        "a.jpg#1 A dog is running .\n"
        "b.jpg#0\t  Two cats  \n"
        "\n"
        "c.jpg#0\tA bird .\n",
    )
    write(tmp_path / "Flickr_8k.trainImages.txt", "a.jpg\n")
    write(tmp_path / "Flickr_8k.devImages.txt", "b.jpg\n")
    write(tmp_path / "Flickr_8k.testImages.txt", "")
    assert rows(read_captions(token, "flickr8k")) == [
        ("a.jpg", "A dog runs .", "train"),
        ("a.jpg", "A dog is running .", "train"),
        ("b.jpg", "Two cats", "val"),
        ("c.jpg", "A bird .", ""),
    ]


def test_flickr_split_files_option_overrides_those_beside(tmp_path):
    token = write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tA dog .\nb.jpg#0\tA cat .\n")
    write(tmp_path / "Flickr_8k.trainImages.txt", "a.jpg\nb.jpg\n")
    other = write(tmp_path / "mine.txt", "b.jpg\n")
    table = read_captions(token, "flickr8k", split_files={"test": other})
    assert table["split"].tolist() == ["", "test"]


def test_flickr_numbered_copy_kept_when_the_plain_name_is_taken(tmp_path):
    token = write(
        tmp_path / "captions.token",
        "x.jpg#0\tOne .\nx.jpg.1#0\tTwo .\ny.jpg.2#0\tThree .\nz.png.1#0\tFour .\n"
        "z.png.2#0\tFive .\n",
    )
    assert read_captions(token, "flickr8k")["image"].tolist() == [
        "x.jpg", "x.jpg.1", "y.jpg", "z.png.1", "z.png.2",
    ]


def test_flickr_numbered_copy_name_in_split_file_is_repaired_too(tmp_path):
    token = write(tmp_path / "Flickr8k.token.txt", "y.jpg.1#0\tA cat .\n")
    write(tmp_path / "Flickr_8k.testImages.txt", "y.jpg.1\n")
    assert rows(read_captions(token, "flickr8k")) == [("y.jpg", "A cat .", "test")]


def test_flickr_empty_captions_dropped_and_counted(tmp_path, caplog):
    token = write(tmp_path / "t.token", "a.jpg#0\tA dog .\na.jpg#1\t \na.jpg#2\n")
    with caplog.at_level(logging.WARNING, logger="captioning"):
        table = read_captions(token, "flickr8k")
    assert table["caption"].tolist() == ["A dog ."]
    assert "dropped 2 empty captions (line 2, line 3)" in caplog.text


def test_flickr_malformed_line_names_file_and_line(tmp_path):
    token = write(tmp_path / "t.token", "a.jpg#0\tA dog .\n\r\nb.jpg\tno index here\n")
    with pytest.raises(DatasetError, match=r"t\.token, line 3: expected 'NAME#N<TAB>CAPTION'"):
        read_captions(token, "flickr8k")


def test_flickr_given_json_says_which_format(tmp_path):
    path = write_json(tmp_path / "captions_val2014.json", coco([(1, "a.jpg")], [(1, "x")]))
    with pytest.raises(DatasetError, match="is JSON, not a Flickr token file.*format='coco'"):
        read_captions(path, "flickr8k")


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_flickr_not_utf8_names_line_and_byte(tmp_path, bom):
    path = tmp_path / "t.token"
    path.write_bytes(bom + b"a.jpg#0\tA dog .\nb.jpg#0\tA caf\xe9 .\n")
    with pytest.raises(DatasetError, match=r"t\.token, line 2: not UTF-8 text \(byte 0xe9\)"):
        read_captions(path, "flickr8k")


def test_flickr_image_in_two_split_files(tmp_path):
    token = write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tA dog .\n")
    write(tmp_path / "Flickr_8k.trainImages.txt", "a.jpg\n")
    write(tmp_path / "Flickr_8k.testImages.txt", "b.jpg\na.jpg\n")
    with pytest.raises(DatasetError, match=r"testImages\.txt, line 2: a\.jpg is also listed in"):
        read_captions(token, "flickr8k")


def test_flickr_bad_split_files_option(tmp_path):
    token = write(tmp_path / "t.token", "a.jpg#0\tA dog .\n")
    with pytest.raises(ConfigError, match="split_files"):
        read_captions(token, "flickr8k", split_files={"dev": token})
    with pytest.raises(DatasetError, match="not found: .*nope.txt"):
        read_captions(token, "flickr8k", split_files={"val": tmp_path / "nope.txt"})


# COCO.


def test_coco_two_files_with_split_from_names(tmp_path):
    train = write_json(
        tmp_path / "captions_train2014.json",
        coco(
            [(9, "COCO_train2014_9.jpg"), (3, "COCO_train2014_3.jpg")],
            [(3, "A man . "), (9, "A dog ."), (3, "A hat .")],
        ),
    )
    val = write_json(
        tmp_path / "captions_val2017.json", coco([(5, "000005.jpg")], [(5, "A cow .")])
    )
    table = read_captions([train, str(val)], "coco")
    # COCO's layout: each file's images in the folder named after it, under one root.
    assert rows(table) == [
        ("train2014/COCO_train2014_3.jpg", "A man .", "train"),
        ("train2014/COCO_train2014_9.jpg", "A dog .", "train"),
        ("train2014/COCO_train2014_3.jpg", "A hat .", "train"),
        ("val2017/000005.jpg", "A cow .", "val"),
    ]
    assert list(table.index) == [0, 1, 2, 3]
    assert table.attrs["source"] == f"{train}, {val}"


def test_coco_split_option_and_unknown_name(tmp_path):
    path = write_json(tmp_path / "captions.json", coco([(1, "a.jpg")], [(1, "A dog .")]))
    assert read_captions(path, "coco")["split"].tolist() == [""]
    assert read_captions(path, "coco", split="test")["split"].tolist() == ["test"]
    with pytest.raises(ConfigError, match="split='dev'"):
        read_captions(path, "coco", split="dev")


def test_coco_bad_caption_names_json_path(tmp_path):
    data = coco([(1, "a.jpg")], [(1, "A dog .")] * 17 + [(1, None)])
    path = write_json(tmp_path / "captions_val2014.json", data)
    with pytest.raises(
        DatasetError, match=r"captions_val2014\.json: annotations\[17\]\.caption is null"
    ):
        read_captions(path, "coco")


def test_coco_unknown_image_id_names_json_path(tmp_path):
    path = write_json(tmp_path / "c.json", coco([(1, "a.jpg")], [(1, "A ."), (2, "B .")]))
    with pytest.raises(DatasetError, match=r"annotations\[1\]\.image_id 2 is not the id"):
        read_captions(path, "coco")


def test_coco_missing_file_name_names_json_path(tmp_path):
    path = write_json(tmp_path / "c.json", {"images": [{"id": 1}], "annotations": []})
    with pytest.raises(DatasetError, match=r"c\.json: images\[0\]\.file_name is missing"):
        read_captions(path, "coco")


def test_coco_invalid_json_names_line(tmp_path):
    path = write(tmp_path / "c.json", '{"images": [],\n "annotations": [\n')
    with pytest.raises(DatasetError, match=r"c\.json, line 3, column 1: invalid JSON"):
        read_captions(path, "coco")


def test_coco_given_karpathy_or_instances_or_text(tmp_path):
    karpathy = write_json(
        tmp_path / "dataset_coco.json",
        {"images": [{"filename": "a.jpg", "split": "train", "sentences": []}]},
    )
    with pytest.raises(DatasetError, match="format='karpathy'"):
        read_captions(karpathy, "coco")
    instances = write_json(
        tmp_path / "instances_val2014.json",
        {"images": [{"id": 1, "file_name": "a.jpg"}],
         "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]},
    )
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.caption is missing.*instances_"):
        read_captions(instances, "coco")
    token = write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tA dog .\n")
    with pytest.raises(DatasetError, match="is not JSON.*format='flickr8k'"):
        read_captions(token, "coco")


def test_coco_empty_captions_dropped_with_json_paths(tmp_path, caplog):
    path = write_json(tmp_path / "c.json", coco([(1, "a.jpg")], [(1, "A ."), (1, "  ")]))
    with caplog.at_level(logging.WARNING, logger="captioning"):
        assert read_captions(path, "coco")["caption"].tolist() == ["A ."]
    assert "dropped 1 empty captions (annotations[1])" in caplog.text


def test_no_caption_at_all_is_an_error(tmp_path):
    path = write_json(tmp_path / "c.json", coco([(1, "a.jpg")], [(1, "")]))
    with pytest.raises(DatasetError, match="holds no caption"):
        read_captions(path, "coco")


# Karpathy.


@pytest.fixture
def karpathy_file(tmp_path):
    sentences = lambda *raw: [{"raw": r, "tokens": r.lower().split()} for r in raw]
    return write_json(
        tmp_path / "dataset_coco.json",
        {
            "dataset": "coco",
            "images": [
                {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                 "split": "test", "sentences": sentences("A man on a bike .", "A rider .")},
                {"filepath": "train2014", "filename": "COCO_train2014_1.jpg",
                 "split": "restval", "sentences": sentences(" A cat . ")},
                {"filename": "2.jpg", "split": "val", "sentences": sentences("A dog .")},
                {"filepath": "", "filename": "3.jpg", "split": "train",
                 "sentences": sentences("A cow .")},
            ],
        },
    )


def test_karpathy_folds_restval_by_default(karpathy_file):
    assert rows(read_captions(karpathy_file, "karpathy")) == [
        ("val2014/COCO_val2014_000000391895.jpg", "A man on a bike .", "test"),
        ("val2014/COCO_val2014_000000391895.jpg", "A rider .", "test"),
        ("train2014/COCO_train2014_1.jpg", "A cat .", "train"),
        ("2.jpg", "A dog .", "val"),
        ("3.jpg", "A cow .", "train"),
    ]


def test_karpathy_keeps_restval_when_asked(karpathy_file):
    table = read_captions(karpathy_file, "karpathy", fold_restval=False)
    assert table["split"].tolist() == ["test", "test", "restval", "val", "train"]


def test_karpathy_missing_raw_names_json_path(tmp_path):
    path = write_json(
        tmp_path / "dataset_flickr8k.json",
        {"images": [{"filename": "a.jpg", "split": "train",
                     "sentences": [{"raw": "A ."}, {"tokens": ["a"]}]}]},
    )
    with pytest.raises(DatasetError, match=r"images\[0\]\.sentences\[1\]\.raw is missing"):
        read_captions(path, "karpathy")


def test_karpathy_unknown_split_names_json_path(tmp_path):
    path = write_json(
        tmp_path / "dataset_flickr30k.json",
        {"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A ."}]},
                    {"filename": "b.jpg", "split": "dev", "sentences": [{"raw": "B ."}]}]},
    )
    with pytest.raises(DatasetError, match=r"images\[1\]\.split is 'dev'"):
        read_captions(path, "karpathy")


def test_karpathy_given_coco_says_which_format(tmp_path):
    path = write_json(tmp_path / "captions_val2014.json", coco([(1, "a.jpg")], [(1, "A .")]))
    with pytest.raises(DatasetError, match=r"images\[0\]\.filename is missing.*format='coco'"):
        read_captions(path, "karpathy")


# CSV.


def test_csv_with_split_extra_columns_and_whitespace(tmp_path):
    path = write(
        tmp_path / "captions.csv",
        "\ufeffid, Image ,caption,split\r\n"
        '1, a.jpg ,"A dog, running . ",train\r\n'
        "2,b.jpg,A cat .,\r\n"
        "\r\n"
        "3,c.jpg, A cow . , Val \r\n",
    )
    assert rows(read_captions(path, "csv")) == [
        ("a.jpg", "A dog, running .", "train"),
        ("b.jpg", "A cat .", ""),
        ("c.jpg", "A cow .", "val"),
    ]


def test_csv_without_split(tmp_path):
    path = write(tmp_path / "c.csv", "caption,image\nA dog .,a.jpg\nA cat .,b.jpg\n")
    assert rows(read_captions(path, "csv")) == [("a.jpg", "A dog .", ""), ("b.jpg", "A cat .", "")]


def test_csv_without_header(tmp_path):
    path = write(tmp_path / "c.csv", "a.jpg,A dog .\n")
    with pytest.raises(DatasetError, match=r"c\.csv, line 1: the header must name the columns"):
        read_captions(path, "csv")


def test_csv_unquoted_comma_names_line(tmp_path):
    path = write(tmp_path / "c.csv", "image,caption\na.jpg,A dog .\nb.jpg,A cat, sitting .\n")
    with pytest.raises(DatasetError, match=r"c\.csv, line 3: 3 fields, but the header has 2"):
        read_captions(path, "csv")


def test_csv_bad_split_and_empty_image_name_line(tmp_path):
    path = write(tmp_path / "c.csv", "image,caption,split\na.jpg,A .,train\nb.jpg,B .,dev\n")
    with pytest.raises(DatasetError, match=r"c\.csv, line 3: split 'dev' is not one of"):
        read_captions(path, "csv")
    path = write(tmp_path / "d.csv", "image,caption\n , A .\n")
    with pytest.raises(DatasetError, match=r"d\.csv, line 2: the image column is empty"):
        read_captions(path, "csv")


def test_csv_given_token_file_says_which_format(tmp_path):
    path = write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tA dog .\n")
    with pytest.raises(DatasetError, match="format='flickr8k'"):
        read_captions(path, "csv")


# Common checks.


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"not found: .*nope\.txt") as caught:
        read_captions(tmp_path / "nope.txt", "flickr8k")
    assert isinstance(caught.value, CaptioningError)
    with pytest.raises(DatasetError, match="is a folder"):
        read_captions(tmp_path, "csv")


def test_unknown_format_and_options(tmp_path):
    path = write(tmp_path / "c.csv", "image,caption\na.jpg,A .\n")
    assert FORMATS == ("coco", "flickr8k", "karpathy", "csv")
    with pytest.raises(ConfigError, match="Unknown captions format 'flickr30k'.*'flickr8k'"):
        read_captions(path, "flickr30k")
    with pytest.raises(ConfigError, match="fold_restval.*'csv'"):
        read_captions(path, "csv", fold_restval=False)
    with pytest.raises(ConfigError, match="only 'coco' accepts a list"):
        read_captions([path], "csv")


# COCO's folders: train2014/, val2014/ under one root, or the images folder itself.


def _coco_2014(root):
    """COCO 2014's layout: annotations/ and one image folder per captions file."""
    (root / "annotations").mkdir(parents=True)
    files = []
    for split, ids in (("train", (1, 2)), ("val", (3,))):
        names = [(i, f"COCO_{split}2014_{i:012d}.jpg") for i in ids]
        files.append(write_json(root / "annotations" / f"captions_{split}2014.json",
                                coco(names, [(i, f"Picture {i} .") for i, _ in names])))
        (root / f"{split}2014").mkdir()
        for _, name in names:
            (root / f"{split}2014" / name).touch()
    return files


def test_coco_files_read_together_find_their_folders_under_one_root(tmp_path):
    files = _coco_2014(tmp_path / "coco")
    table = read_captions(files, "coco", images_dir=tmp_path / "coco")
    assert table["image"].tolist() == [
        "train2014/COCO_train2014_000000000001.jpg",
        "train2014/COCO_train2014_000000000002.jpg",
        "val2014/COCO_val2014_000000000003.jpg",
    ]
    assert table["split"].tolist() == ["train", "train", "val"]
    kept, missing = check_images(table, tmp_path / "coco", strict=True)
    assert missing == [] and len(kept) == 3


def test_coco_images_folder_holding_the_images_directly(tmp_path):
    # `--images coco/val2014`: that folder holds the images, not a val2014/ folder.
    files = _coco_2014(tmp_path / "coco")
    table = read_captions(files[1], "coco", images_dir=tmp_path / "coco" / "val2014")
    assert table["image"].tolist() == ["COCO_val2014_000000000003.jpg"]
    kept, missing = check_images(table, tmp_path / "coco" / "val2014", strict=True)
    assert missing == [] and len(kept) == 1


def test_coco_image_prefix_option(tmp_path):
    files = _coco_2014(tmp_path / "coco")
    assert read_captions(files[1], "coco", image_prefix="")["image"].tolist() == [
        "COCO_val2014_000000000003.jpg"]
    table = read_captions(files, "coco", image_prefix=["a", "b/"])
    assert [name.split("/")[0] for name in table["image"]] == ["a", "a", "b"]
    with pytest.raises(ConfigError, match=r"one str per COCO file \(2 files\); got \['a'\]"):
        read_captions(files, "coco", image_prefix=["a"])


def test_cli_cache_reads_coco_2014_files_under_one_root(tmp_path):
    from captioning import cli

    files = _coco_2014(tmp_path / "coco")
    args = cli._parser().parse_args(
        ["cache", "--format", "coco", "--captions", *map(str, files),
         "--images", str(tmp_path / "coco"), "--out", str(tmp_path / "cache"), "--strict"])
    table = cli._read_table(args)
    assert sorted(table["image"].str.split("/").str[0].unique()) == ["train2014", "val2014"]
    assert len(table) == 3
