"""The README's real photo: one vi_photos `val` photograph, its caption and where an
attention model looked for each word.

The photo is not picked by hand: every `val` photograph is captioned (greedy) and scored
with the COCO metrics, and the one whose caption has the median CIDEr is shown, so the
figure shows a typical caption, neither the best nor the worst. `--image` shows another.

Usage (after `benchmarks/real_photos.py` trained its attention run):
    python scripts/real_photo_figure.py \
        --release build/real_photos/runs/attention-real-new-s0 \
        --out docs/real_photo_attention.png
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "vi_photos" / "captions.csv").exists():
            return candidate
    return REPO.parent / "shared" / "data"


def val_references(data: Path) -> dict:
    references: dict[str, list[str]] = {}
    with (data / "vi_photos" / "captions.csv").open(encoding="utf-8", newline="") as file:
        for row in csv.DictReader(file):
            if row["split"] == "val":
                references.setdefault(row["image"], []).append(row["caption"])
    return references


def median_image(per_image: dict) -> str:
    """The image whose CIDEr is the median (the lower middle one; ties by name)."""
    ranked = sorted(per_image, key=lambda image: (per_image[image]["CIDEr"], image))
    return ranked[(len(ranked) - 1) // 2]


def save_small_png(figure, path: Path, dpi: int) -> None:
    """Saves the figure as a PNG of at most 256 colours (a third of the size)."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", required=True, help="a run folder of an attention model")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "real_photo_attention.png")
    parser.add_argument("--data", type=Path, default=None,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--image", help="show this val photo instead of the median one")
    parser.add_argument("--dpi", type=int, default=60)
    args = parser.parse_args()
    data = args.data or default_data_dir()
    images_dir = data / "vi_photos" / "images"
    if not images_dir.is_dir():
        sys.exit(f"{data}: no vi_photos/images; pass --data SHARED_DATA_FOLDER")

    from captioning.evaluation import coco_scores
    from captioning.inference import Captioner
    from captioning.plots import show_attention

    references = val_references(data)
    names = sorted(references)
    captioner = Captioner.load(args.release)
    results = dict(zip(names, captioner.caption([images_dir / name for name in names])))
    predictions = {name: result.caption for name, result in results.items()}
    scores, per_image = coco_scores(predictions, references, return_per_image=True)
    image = args.image or median_image(per_image)
    result = results[image]
    if result.attention is None:
        sys.exit(f"{args.release} has no attention (train with --conditioning attention)")
    figure = show_attention(images_dir / image, result.words, result.attention, ncols=5)
    cider = per_image[image]["CIDEr"]
    median = statistics.median(row["CIDEr"] for row in per_image.values())
    figure.suptitle(f"{image} (vi_photos val), greedy caption, CIDEr {cider:.2f} "
                    f"(median of val {median:.2f}):\n{result.caption}\n"
                    f"a human caption: {references[image][0]}", fontsize=10)
    save_small_png(figure, args.out, args.dpi)
    print(json.dumps({"image": image, "caption": result.caption, "CIDEr": round(cider, 3),
                      "val_CIDEr": round(scores["CIDEr"], 3), "tokenizer": scores["tokenizer"],
                      "references": references[image], "figure": str(args.out)},
                     ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
