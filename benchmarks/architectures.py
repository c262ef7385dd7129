"""Every cell x conditioning combination on the harder synthetic configuration.

Two (or three) shapes per image, captions naming their left-to-right order. Pooled features
average the spatial map away, so the order must come from what survives the pooling; attention
over grid features can look at each region. Writes a Markdown table of the test split to stdout
and to --out:

- `Bleu_4`, `CIDEr`: the COCO metrics (pycocoevalcap) of the greedy captions;
- `shapes named`: the share of test images whose caption names each of its shapes with the
  right colour ("red circle"), wherever it puts them;
- `true`: the share of test images whose caption is one of the image's own true captions
  (word for word), which BLEU does not measure: "a red circle to the left of a blue star" and
  "a blue star to the left of a red circle" differ by little in n-grams, but one is false;
- `val_loss`: the validation loss (masked cross-entropy per word) of the exported epoch.

Each finished combination is kept in `--work/results.json`, so an interrupted run resumes.

Usage:
    python benchmarks/architectures.py --work build/arch --out benchmarks/architectures.md
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.data.captions import read_captions
from captioning.evaluation import evaluate_release
from captioning.cache import build_cache
from captioning.data.synthetic import METADATA_FILE, make_dataset
from captioning.training.train import train

ENCODER, SIZE = "inception_v3_mixed2", 96
CELLS = ("gru", "lstm")
CONDITIONINGS = ("init_state", "first_input", "every_step", "attention")


def _words(text: str) -> tuple[str, ...]:
    return tuple(word for word in text.lower().split() if word.isalnum())


def truth_shares(predictions_file: Path, metadata_file: Path) -> dict:
    """How many predicted captions name every shape right, and how many are wholly true."""
    records = {record["file_name"]: record
               for record in json.loads(metadata_file.read_text())["images"]}
    predictions = json.loads(predictions_file.read_text())
    named = true = 0
    for item in predictions:
        record, words = records[item["image_id"]], _words(item["caption"])
        pairs = set(zip(words, words[1:]))
        named += all((shape["colour"], shape["shape"]) in pairs for shape in record["shapes"])
        true += words in {_words(caption) for caption in record["captions"]}
    return {"named": named / len(predictions), "true": true / len(predictions)}


def exported_val_loss(run: Path) -> float:
    """The validation loss of the epoch the run exported (the best by val_bleu_4)."""
    history = list(csv.DictReader((run / "history.csv").open()))
    best = max(history, key=lambda row: float(row["val_bleu_4"]))
    return float(best["val_loss"])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="build/arch")
    parser.add_argument("--out", default="benchmarks/architectures.md")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shapes", type=int, default=2, choices=(2, 3))
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    work = Path(args.work)
    data = work / "data"
    if not (data / "captions.csv").exists():
        make_dataset(data, n_images=args.images, seed=7, image_size=128,
                     shapes_per_image=args.shapes)
    table = read_captions(data / "captions.csv", format="csv")
    caches = {kind: build_cache(table, data / "images", work / f"cache-{kind}", encoder=ENCODER,
                                weights="none", image_size=SIZE, features=kind, progress=False)
              for kind in ("pooled", "grid")}
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for cell in CELLS:
        for conditioning in CONDITIONINGS:
            name = f"{cell}-{conditioning}"
            run = work / f"run-{name}"
            if name in results:
                continue
            kind = "grid" if conditioning == "attention" else "pooled"
            config = CaptionConfig(cell=cell, conditioning=conditioning, epochs=args.epochs,
                                   max_length=16, max_decode_length=16, seed=0,
                                   scst_epochs=0)
            start = time.time()
            train(caches[kind], run, config, progress=False)
            seconds = time.time() - start
            predictions = run / "test_predictions.json"
            scores = evaluate_release(run, caches[kind], split="test",
                                      predictions_path=predictions)
            results[name] = {"cell": cell, "conditioning": conditioning, "features": kind,
                             "Bleu_4": scores["Bleu_4"], "CIDEr": scores["CIDEr"],
                             **truth_shares(predictions, data / METADATA_FILE),
                             "val_loss": exported_val_loss(run), "train_s": seconds}
            results_file.write_text(json.dumps(results, indent=1))
            print(name, results[name], flush=True)
    grid = json.loads((work / "cache-grid" / "manifest.json").read_text())["feature_shape"]
    lines = [
        f"Synthetic, {args.shapes} shapes per image ({args.images} images, seed 7), {ENCODER} "
        f"random weights at {SIZE} px (grid: {grid[0]} regions of {grid[1]}), {args.epochs} "
        "epochs, max_length 16, otherwise default decoder settings, greedy decoding, test split:",
        "",
        "| cell | conditioning | features | Bleu_4 | CIDEr | shapes named | true captions "
        "| val_loss | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ] + [f"| {r['cell']} | {r['conditioning']} | {r['features']} | {r['Bleu_4']:.3f} | "
         f"{r['CIDEr']:.2f} | {r['named']:.1%} | {r['true']:.1%} | {r['val_loss']:.3f} | "
         f"{r['train_s']:.0f} |"
         for r in (results[f"{c}-{k}"] for c in CELLS for k in CONDITIONINGS)]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
