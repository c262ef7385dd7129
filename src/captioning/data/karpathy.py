"""The Karpathy split files: `dataset_coco.json`, `dataset_flickr8k.json`,
`dataset_flickr30k.json`."""

from captioning.data.sources import json_field, json_items, json_root, read_json
from captioning.data.table import captions_table
from captioning.errors import DatasetError
from captioning.utils.checks import check_bool

_KARPATHY_SPLITS = ("train", "val", "test", "restval")


def read_karpathy(path, fold_restval):
    """The table of a Karpathy file; `fold_restval` gives the `restval` images `train`."""
    check_bool("fold_restval", fold_restval)
    data = read_json(path, "karpathy")
    hint = ""
    if isinstance(data, dict) and "annotations" in data:
        hint = " This looks like a COCO captions file; read it with format='coco'."
    data = json_root(path, data, "Karpathy", hint)

    rows, empty = [], []
    for where, image in json_items(path, data, "images", "", hint):
        filename = json_field(path, image, "filename", (str,), where, hint).strip()
        if not filename:
            raise DatasetError(f"{path}: {where}.filename is empty; give the image's file name.")
        filepath = image.get("filepath")
        if filepath is not None:
            filepath = json_field(path, image, "filepath", (str,), where).strip().strip("/")
            if filepath:
                filename = f"{filepath}/{filename}"
        split = json_field(path, image, "split", (str,), where, hint)
        if split not in _KARPATHY_SPLITS:
            raise DatasetError(
                f"{path}: {where}.split is {split!r}; expected one of "
                f"{', '.join(_KARPATHY_SPLITS)}."
            )
        if split == "restval" and fold_restval:
            split = "train"
        for sentence_where, sentence in json_items(path, image, "sentences", where, hint):
            caption = json_field(path, sentence, "raw", (str,), sentence_where).strip()
            if caption:
                rows.append((filename, caption, split))
            else:
                empty.append(sentence_where)
    return captions_table(path, rows, empty)
