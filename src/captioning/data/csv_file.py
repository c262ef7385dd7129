"""The plain CSV format: a header naming the columns `image`, `caption` and optionally
`split`, one caption per row (extra columns are ignored)."""

import csv

from captioning.data.sources import TOKEN_LINE, looks_like_json, read_text
from captioning.data.table import SPLITS, captions_table
from captioning.errors import DatasetError


def read_csv(path):
    """The table of a captions CSV file."""
    text = read_text(path)
    hint = ""
    if looks_like_json(text):
        hint = " The file is JSON: read it with format='coco' or format='karpathy'."
    elif TOKEN_LINE.match(text.lstrip()):
        hint = " The file looks like a Flickr token file: read it with format='flickr8k'."
    reader = csv.reader(text.split("\n"))
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        columns = [cell.strip().lower() for cell in header or ()]
        if "image" not in columns or "caption" not in columns:
            found = ", ".join(repr(c) for c in columns) or "nothing"
            raise DatasetError(
                f"{path}, line {reader.line_num}: the header must name the columns 'image' and "
                f"'caption' (and optionally 'split'); found {found}.{hint}"
            )
        image_at, caption_at = columns.index("image"), columns.index("caption")
        split_at = columns.index("split") if "split" in columns else None

        rows, empty = [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"line {reader.line_num}"
            if len(row) != len(columns):
                raise DatasetError(
                    f"{path}, {where}: {len(row)} fields, but the header has {len(columns)}. "
                    "Quote fields that contain commas (\"a dog, running\")."
                )
            image = row[image_at].strip()
            if not image:
                raise DatasetError(f"{path}, {where}: the image column is empty; name the image.")
            split = row[split_at].strip().lower() if split_at is not None else ""
            if split not in SPLITS + ("",):
                raise DatasetError(
                    f"{path}, {where}: split {row[split_at].strip()!r} is not one of "
                    "train, val, test or empty."
                )
            caption = row[caption_at].strip()
            if caption:
                rows.append((image, caption, split))
            else:
                empty.append(where)
    except csv.Error as error:
        raise DatasetError(f"{path}, line {reader.line_num}: malformed CSV ({error}).") from None
    return captions_table(path, rows, empty)
