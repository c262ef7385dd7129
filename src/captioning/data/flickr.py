"""The Flickr token format: `Flickr8k.token.txt` (and Flickr30k's `results_20130124.token`).

One `NAME#N<TAB>CAPTION` per line; the Flickr8k split lists (`Flickr_8k.trainImages.txt`, ...)
found beside the token file give the splits.
"""

import logging
import re

from captioning.data.sources import TOKEN_LINE, captions_file, looks_like_json, read_text
from captioning.data.table import SPLITS, captions_table
from captioning.errors import ConfigError, DatasetError

FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
"""The Flickr8k split lists, one image name per line, by the split they hold."""

_NUMBERED_COPY = re.compile(r"(?P<name>.+\.(?:jpe?g|png|gif|bmp))\.\d+", re.IGNORECASE)

logger = logging.getLogger(__name__)


def read_flickr(path, split_files):
    """The table of a Flickr token file, its splits from `split_files` or the lists beside it."""
    text = read_text(path)
    if looks_like_json(text):
        raise DatasetError(
            f"{path} is JSON, not a Flickr token file; read it with format='coco' "
            "(captions_*.json) or format='karpathy' (dataset_*.json)."
        )

    entries, empty = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        match = TOKEN_LINE.fullmatch(line.strip())
        if match is None:
            found = line.strip()[:60]
            raise DatasetError(
                f"{path}, line {number}: expected 'NAME#N<TAB>CAPTION' (like "
                f"'1000268201_693b08cb0e.jpg#0<TAB>A child ...'), found {found!r}. "
                "Fix the line, or pass the right format if this is not a Flickr token file."
            )
        caption = (match["caption"] or "").strip()
        if caption:
            entries.append((match["name"], caption))
        else:
            empty.append(f"line {number}")

    renamed = _repair_names({name for name, _ in entries})
    for old, new in renamed.items():
        logger.info(
            "%s: read the image name %s as %s (a numbered-copy suffix, a known corruption).",
            path, old, new,
        )
    entries = [(renamed.get(name, name), caption) for name, caption in entries]
    splits = _flickr_splits(path, split_files, renamed, {name for name, _ in entries})
    rows = [(name, caption, splits.get(name, "")) for name, caption in entries]
    return captions_table(path, rows, empty)


def _flickr_splits(path, split_files, renamed, captioned):
    """Maps image names to their split, as the Flickr split lists give it."""
    if split_files is None:
        beside = {s: path.with_name(f) for s, f in FLICKR8K_SPLIT_FILES.items()}
        split_files = {s: p for s, p in beside.items() if p.is_file()}
    elif not isinstance(split_files, dict) or not set(split_files) <= set(SPLITS):
        raise ConfigError(
            "split_files must be a dict whose keys are some of 'train', 'val', 'test', "
            f"got {split_files!r}."
        )

    splits, listed_in = {}, {}
    for split, list_path in split_files.items():
        list_path = captions_file(list_path)
        for number, name in _split_list(list_path):
            name = renamed.get(name, name)
            if name in splits and splits[name] != split:
                raise DatasetError(
                    f"{list_path}, line {number}: {name} is also listed in {listed_in[name]} "
                    f"(split {splits[name]!r}); an image belongs to one split only."
                )
            splits[name], listed_in[name] = split, list_path
        uncaptioned = sum(1 for n, p in listed_in.items() if p == list_path and n not in captioned)
        if uncaptioned:
            logger.warning(
                "%s lists %d images that have no caption in %s; they are left out.",
                list_path, uncaptioned, path,
            )
    return splits


def _repair_names(names):
    """Maps `NAME.jpg.1`-style names to `NAME.jpg` when nothing else claims it."""
    bases = {}
    for name in sorted(names):
        match = _NUMBERED_COPY.fullmatch(name)
        if match and match["name"] not in names:
            bases.setdefault(match["name"], []).append(name)
    return {copies[0]: base for base, copies in bases.items() if len(copies) == 1}


def _split_list(path):
    """Yields `(line number, image name)` for each name listed in a split file."""
    text = read_text(path)
    for number, line in enumerate(text.split("\n"), start=1):
        name = line.strip()
        if not name:
            continue
        if any(char.isspace() for char in name) or "#" in name:
            raise DatasetError(
                f"{path}, line {number}: expected one image name per line, found {name[:60]!r}. "
                "Pass the split lists (like Flickr_8k.trainImages.txt) as split_files."
            )
        yield number, name
