"""Copies a few test-split synthetic images into examples/, named after what they show.

Usage: python scripts/pick_examples.py DATASET_DIR examples
"""

import json
import shutil
import sys
from pathlib import Path


def main(dataset: str, out: str, count: int = 6) -> None:
    meta = json.loads((Path(dataset) / "metadata.json").read_text())
    out_dir = Path(out)
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("*.jpg"):
        old.unlink()
    seen = set()
    for image in meta["images"]:
        shape = image["shapes"][0]
        key = (shape["colour"], shape["shape"])
        if image["split"] != "test" or key in seen or shape["colour"] in {c for c, _ in seen}:
            continue
        seen.add(key)
        name = f"{shape['size']}_{shape['colour']}_{shape['shape']}.jpg"
        shutil.copyfile(Path(dataset) / "images" / image["file_name"], out_dir / name)
        if len(seen) == count:
            break


if __name__ == "__main__":
    main(*sys.argv[1:3])
