"""Caption quality on real photographs: `vi_photos` with real ImageNet MobileNetV2 features.

The table every quality change is measured against. It trains on the `train` split of
`shared/data/vi_photos` (2,314 photographs, about five Vietnamese captions each) and scores
the `val` split (325 photographs, 1,624 captions) with the COCO metrics (BLEU-1..4, METEOR,
ROUGE-L, CIDEr), greedy and with a beam of 3, for:

- pooled features + `init_state`, with the settings before and after this benchmark's sweep;
- grid features + attention;
- the same two with random encoder weights (`--weights none`): the floor set by what random
  features tell the decoder about the image.

The encoder is `keras.applications.MobileNetV2` (alpha 1.0, 224 px) with the real ImageNet
weights of `shared/data/weights/`. Each of the four caches (real or random weights, pooled
or grid) is made once. Each run picks its best epoch (and stops early) by its own settings'
monitor: `val_bleu_4` on 200 `val` images before the sweep, val CIDEr-D on all of them after;
the scores are on all 325 (so the epoch choice has seen the images it is scored on, which
favours the settings whose score swings more between epochs; `--sweep` measures without
that choice on `test`).

`--sweep` measures the training defaults instead (dropout, learning rate and its schedule,
epochs and early stopping) without touching `val`: it splits `train` by a hash of the image
name into 2,000-odd training images and a `dev` part that plays `val`'s role (and the real
`val` becomes `test`), caches that once, and scores `dev` and then `test`, the real `val`,
which neither the runs' training nor their epoch choice saw: the held-out measurement of a
setting, once `dev` has chosen it (`--split val` or `--split test` scores one of them).

Every command goes through the CLI, under `nice`. Finished cells are kept in
`WORK/results.json` (`WORK/sweep.json` for `--sweep`) and skipped on the next run, so an
interrupted benchmark resumes where it stopped; each train command resumes its own run too.

Usage:
    python benchmarks/real_photos.py --work build/real_photos
    python benchmarks/real_photos.py --work build/real_photos --sweep
    python benchmarks/real_photos.py --work build/real_photos --only pooled-real-old --seeds 0 1
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_FILE = "weights/mobilenet_v2_1.0_224_notop.weights.h5"
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

# The settings before this benchmark (tuned on synthetic shapes), and the cross-entropy ones
# its sweep chose; both without SCST, whatever the defaults say.
OLD = {"epochs": 12, "learning_rate": 2e-3, "lr_schedule": "cosine", "dropout": 0.1,
       "early_stopping": 0, "monitor": "val_bleu_4", "val_images": 200, "scst_epochs": 0,
       "units": 256}
NEW = {"epochs": 12, "learning_rate": 2e-3, "lr_schedule": "cosine", "dropout": 0.5,
       "early_stopping": 3, "monitor": "val_cider", "val_images": 500, "scst_epochs": 0,
       "units": 256}


@dataclasses.dataclass(frozen=True)
class Cache:
    weights: str  # "real" or "none"
    features: str  # "pooled" or "grid"
    captions: str = "vi_photos"  # or "dev": the `--sweep` split of `train`

    @property
    def name(self) -> str:
        prefix = "cache" if self.captions == "vi_photos" else f"cache-{self.captions}"
        return f"{prefix}-{self.weights}-{self.features}"


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str
    cache: Cache
    conditioning: str
    settings: dict
    label: str
    decode: tuple = ()  # evaluate flags as (name, value) pairs, e.g. (("block_ngram_repeat", 3),)
    trains: str = ""  # the cell whose run this one scores (decoding only); default its own

    @property
    def run_name(self) -> str:
        return self.trains or self.name


# The cross-entropy settings above, then 6 SCST epochs at lr 2e-4: the defaults until
# session nine (2026-12-07), which made them 10 SCST epochs (today's defaults).
SCST_6 = {**NEW, "scst_epochs": 6, "scst_learning_rate": 2e-4}
DEFAULTS = {**SCST_6, "scst_epochs": 10}

CELLS = (
    Cell("pooled-real-old", Cache("real", "pooled"), "init_state", OLD, "before"),
    Cell("pooled-real-new", Cache("real", "pooled"), "init_state", NEW,
         "after, cross-entropy only"),
    Cell("pooled-real-default", Cache("real", "pooled"), "init_state", DEFAULTS,
         "after, then 10 SCST epochs (the defaults)"),
    Cell("pooled-real-scst-6", Cache("real", "pooled"), "init_state", SCST_6,
         "after, then 6 SCST epochs (the defaults until 2026-12-07)"),
    Cell("pooled-real-scst-5e-4-cosine", Cache("real", "pooled"), "init_state",
         {**SCST_6, "scst_learning_rate": 5e-4, "scst_lr_schedule": "cosine"},
         "after, then 6 SCST epochs at lr 5e-4, cosine"),
    Cell("pooled-real-units-512", Cache("real", "pooled"), "init_state",
         {**SCST_6, "units": 512}, "after, 512 units, then 6 SCST epochs"),
    Cell("pooled-real-finetune-4", Cache("real", "pooled"), "init_state",
         {**SCST_6, "fine_tune": 4},
         "after, fine-tuning the top 4 CNN layers, then 6 SCST epochs"),
    Cell("pooled-real-smoothing", Cache("real", "pooled"), "init_state",
         {**NEW, "label_smoothing": 0.1}, "after, label smoothing 0.1, cross-entropy only"),
    Cell("attention-real-new", Cache("real", "grid"), "attention", NEW, "after"),
    Cell("pooled-none-new", Cache("none", "pooled"), "init_state", NEW, "after"),
    Cell("attention-none-new", Cache("none", "grid"), "attention", NEW, "after"),
)

DEV = Cache("real", "pooled", captions="dev")
SWEEP = tuple(
    Cell(name, DEV, "init_state", {**OLD, **changes}, label)
    for name, changes, label in (
        ("base", {}, "before"),
        ("dropout-0.5", {"dropout": 0.5, "early_stopping": 4}, "dropout 0.5"),
        ("dropout-0.3", {"dropout": 0.3, "early_stopping": 4}, "dropout 0.3"),
        ("dropout-0.5-lr-1e-3", {"dropout": 0.5, "learning_rate": 1e-3, "epochs": 20,
                                 "early_stopping": 4}, "dropout 0.5, lr 1e-3, 20 epochs"),
        ("dropout-0.5-constant", {"dropout": 0.5, "lr_schedule": "constant",
                                  "early_stopping": 4}, "dropout 0.5, constant lr"),
        ("dropout-0.5-lr-5e-4", {"dropout": 0.5, "learning_rate": 5e-4, "epochs": 30,
                                 "early_stopping": 4}, "dropout 0.5, lr 5e-4, 30 epochs"),
        ("dropout-0.5-6ep", {"dropout": 0.5, "epochs": 6, "early_stopping": 4},
         "dropout 0.5, 6 epochs"),
        ("dropout-0.5-smoothing-0.1", {"dropout": 0.5, "label_smoothing": 0.1,
                                       "early_stopping": 4},
         "dropout 0.5, label smoothing 0.1"),
        ("new", NEW, "dropout 0.5, early stopping 3 on val CIDEr-D of all dev images"),
        ("new-6ep", {**NEW, "epochs": 6}, "the same, cosine over 6 epochs"),
        ("new-feature-dropout-0.5", {**NEW, "feature_dropout": 0.5},
         "the same, feature dropout 0.5"),
        ("new-min-count-5", {**NEW, "min_count": 5}, "the same, words seen 5+ times"),
        ("new-units-128", {**NEW, "units": 128}, "the same, 128 units"),
        ("new-units-512", {**NEW, "units": 512}, "the same, 512 units"),
        ("new-ema-0.99", {**NEW, "ema": 0.99}, "the same, weights averaged (EMA 0.99)"),
        ("new-ema-0.995", {**NEW, "ema": 0.995}, "the same, weights averaged (EMA 0.995)"),
        ("new-scst-3", {**NEW, "scst_epochs": 3}, "the same, then 3 SCST epochs"),
        ("new-scst-3-lr-2e-4", {**NEW, "scst_epochs": 3, "scst_learning_rate": 2e-4},
         "the same, then 3 SCST epochs at lr 2e-4"),
        ("new-scst-6-lr-2e-4", {**NEW, "scst_epochs": 6, "scst_learning_rate": 2e-4},
         "the same, then 6 SCST epochs at lr 2e-4"),
        ("new-scst-6-lr-5e-4", {**NEW, "scst_epochs": 6, "scst_learning_rate": 5e-4},
         "the same, then 6 SCST epochs at lr 5e-4"),
        ("new-scst-10-lr-2e-4", {**NEW, "scst_epochs": 10, "scst_learning_rate": 2e-4},
         "the same, then 10 SCST epochs at lr 2e-4"),
        ("new-scst-6-lr-2e-4-samples-10", {**NEW, "scst_epochs": 6, "scst_learning_rate": 2e-4,
                                           "scst_samples": 10},
         "the same, then 6 SCST epochs at lr 2e-4, 10 samples per image"),
        ("new-units-128-scst", {**NEW, "units": 128, "scst_epochs": 6,
                                "scst_learning_rate": 2e-4},
         "the same, 128 units, then 6 SCST epochs at lr 2e-4"),
        ("new-units-512-scst", {**NEW, "units": 512, "scst_epochs": 6,
                                "scst_learning_rate": 2e-4},
         "the same, 512 units, then 6 SCST epochs at lr 2e-4"),
        ("new-lstm-scst", {**NEW, "cell": "lstm", "scst_epochs": 6,
                           "scst_learning_rate": 2e-4},
         "the same, LSTM, then 6 SCST epochs at lr 2e-4"),
        ("new-embedding-256-scst", {**NEW, "embedding_dim": 256, "scst_epochs": 6,
                                    "scst_learning_rate": 2e-4},
         "the same, embeddings of 256, then 6 SCST epochs at lr 2e-4"),
        ("new-scst-6-lr-2e-4-cosine", {**NEW, "scst_epochs": 6, "scst_learning_rate": 2e-4,
                                       "scst_lr_schedule": "cosine"},
         "the same, then 6 SCST epochs at lr 2e-4, cosine"),
        ("new-scst-6-lr-5e-4-cosine", {**NEW, "scst_epochs": 6, "scst_learning_rate": 5e-4,
                                       "scst_lr_schedule": "cosine"},
         "the same, then 6 SCST epochs at lr 5e-4, cosine"),
        ("new-finetune-4-scst", {**NEW, "fine_tune": 4, "scst_epochs": 6,
                                 "scst_learning_rate": 2e-4},
         "the same, 2 epochs fine-tuning the top 4 CNN layers, then 6 SCST epochs at lr 2e-4"),
        ("new-scst-6-lr-2e-4-greedy", {**NEW, "scst_epochs": 6, "scst_learning_rate": 2e-4,
                                       "scst_baseline": "greedy"},
         "the same, then 6 SCST epochs at lr 2e-4, greedy baseline"),
    )
) + (Cell("new-every-step", DEV, "every_step", NEW, "the same, image at every step"),) + tuple(
    Cell(f"new-scst-6-lr-2e-4-block-{n}", DEV, "init_state",
         {**NEW, "scst_epochs": 6, "scst_learning_rate": 2e-4},
         "the same, then 6 SCST epochs at lr 2e-4", decode=(("block_ngram_repeat", n),),
         trains="new-scst-6-lr-2e-4")
    for n in (2, 3))


def default_data_dir() -> Path:
    """`../shared/data` next to the repository, else `/work/shared/data`."""
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "vi_photos" / "captions.csv").exists():
            return candidate
    return REPO.parent / "shared" / "data"


def cli(*arguments, log: Path) -> None:
    """Runs `python -m captioning ARGUMENTS` under `nice -n 10`, appending its output to `log`."""
    command = ["nice", "-n", "10", sys.executable, "-m", "captioning", *map(str, arguments)]
    print("$", " ".join(command[3:]), flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with log.open("a", encoding="utf-8") as out:
        completed = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   check=False)
    if completed.returncode:
        tail = log.read_text(encoding="utf-8").splitlines()[-5:]
        sys.exit(f"failed ({completed.returncode}), see {log}:\n" + "\n".join(tail))


def dev_captions(data: Path, out: Path) -> Path:
    """`vi_photos`' captions with one train image in 8 (by a sha256 of its name) as `val`,
    the other train images as `train` and the real `val` as `test`."""
    if out.exists():
        return out
    rows = list(csv.DictReader((data / "vi_photos" / "captions.csv").open(encoding="utf-8")))
    for row in rows:
        if row["split"] == "val":
            row["split"] = "test"
        elif int(hashlib.sha256(row["image"].encode()).hexdigest(), 16) % 8 == 0:
            row["split"] = "val"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["image", "caption", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def make_cache(cache: Cache, data: Path, work: Path) -> Path:
    """The finished cache (made, or resumed, when it is not)."""
    out = work / cache.name
    manifest = out / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("complete"):
        return out
    captions = (data / "vi_photos" / "captions.csv" if cache.captions == "vi_photos"
                else dev_captions(data, work / "dev" / "captions.csv"))
    weights = data / WEIGHTS_FILE if cache.weights == "real" else "none"
    # Random MobileNetV2 features are far below float16's range (benchmarks/README.md).
    dtype = "float16" if cache.weights == "real" else "float32"
    cli("cache", "--format", "csv", "--captions", captions, "--images",
        data / "vi_photos" / "images", "--out", out, "--encoder", "mobilenet_v2",
        "--weights", weights, "--image-size", 224, "--features", cache.features,
        "--dtype", dtype, "--workers", 2, log=work / f"{cache.name}.log")
    return out


def flags(settings: dict) -> list:
    return [item for name, value in settings.items()
            for item in (f"--{name.replace('_', '-')}", value)]


def run_cell(cell: Cell, seed: int, beams, data: Path, work: Path, results: dict,
             results_file: Path, splits=("val",)) -> None:
    """Trains the cell's run (or resumes it) and scores each of `splits` with each beam
    width."""
    # Rows of the monitored split keep their first keys; other splits are named in theirs.
    keys = {(beam, split): f"{cell.name}/s{seed}/beam{beam}" + ("" if split == "val" else
                                                                f"/{split}")
            for split in splits for beam in beams}
    for key in keys.values():  # scored before `coco_scores` named its tokenizer: again
        if key in results and not results[key].get("tokenizer"):
            del results[key]
    if all(key in results for key in keys.values()):
        return
    cache = make_cache(cell.cache, data, work)
    prefix = "" if cell.cache.captions == "vi_photos" else f"{cell.cache.captions}-"
    run = work / "runs" / f"{prefix}{cell.run_name}-s{seed}"
    run.parent.mkdir(parents=True, exist_ok=True)
    log = run.parent / f"{run.name}.log"
    start = time.time()
    cli("train", "--cache", cache, "--out", run, "--conditioning", cell.conditioning,
        *flags(cell.settings), "--seed", seed, "--quiet", log=log)
    train_s = time.time() - start
    history = list(csv.DictReader((run / "history.csv").open(encoding="utf-8")))
    bleu = [float(row["val_bleu_4"]) for row in history]
    cider = [float(row["val_cider"]) for row in history if row.get("val_cider")]
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    for (beam, split), key in keys.items():
        if key in results:
            continue
        stem = f"{split}-beam{beam}" + "".join(f"-{name}-{value}" for name, value in cell.decode)
        scores_file = run / f"{stem}.json"
        # A fine-tuned encoder computes other features than the cache's: from the images.
        from_images = (["--images", data / "vi_photos" / "images"]
                       if cell.settings.get("fine_tune") else [])
        cli("evaluate", "--release", run, "--cache", cache, "--split", split, "--beam", beam,
            *from_images, *flags(dict(cell.decode)), "--json", scores_file,
            "--predictions", run / f"{stem}-captions.json", "--no-spice", log=log)
        scores = json.loads(scores_file.read_text(encoding="utf-8"))
        results[key] = {
            "cell": cell.name, "seed": seed, "beam": beam, "split": split, "label": cell.label,
            "features": cell.cache.features, "weights": cell.cache.weights,
            "conditioning": cell.conditioning, "settings": cell.settings,
            "decode": dict(cell.decode),
            **{name: scores[name] for name in METRICS}, "n_images": scores.get("n_images"),
            "tokenizer": scores.get("tokenizer"),
            "best_epoch": int(manifest.get("best_epoch", 0)), "epochs_run": len(bleu),
            "val_bleu_4": bleu, "val_cider": cider, "train_s": round(train_s),
        }
        save_result(results_file, key, results[key])
        print(key, {name: round(results[key][name], 3) for name in METRICS}, flush=True)


def save_result(results_file: Path, key: str, row: dict) -> None:
    """Adds `row` to `results_file` as it is now, so benchmarks running side by side (other
    cells) keep each other's results."""
    results = (json.loads(results_file.read_text(encoding="utf-8"))
               if results_file.exists() else {})
    results[key] = row
    partial = results_file.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    os.replace(partial, results_file)


def needed_patience(scores) -> int:
    """The smallest early-stopping patience that still reaches the best of `scores` (one
    per epoch): the longest run of epochs between two successive new bests."""
    best, best_epoch, gap = None, 0, 0
    for epoch, score in enumerate(scores, 1):
        if best is None or score > best:
            gap = max(gap, epoch - best_epoch) if best is not None else gap
            best, best_epoch = score, epoch
    return gap


def _mean(rows, name):
    return statistics.mean(row[name] for row in rows)


def table(results: dict, cells, beams, title: str, split: str = "val") -> str:
    """The Markdown table of the finished cells scored on `split`, the mean over seeds."""
    lines = [title, "",
             "| features | conditioning | weights | settings | decoding | " + " | ".join(METRICS)
             + " | best epoch / run | seeds |",
             "| --- " * (len(METRICS) + 7) + "|"]
    for cell in cells:
        for beam in beams:
            rows = [row for key, row in results.items()
                    if row["cell"] == cell.name and row["beam"] == beam
                    and row.get("split", "val") == split]
            if not rows:
                continue
            scores = " | ".join(f"{_mean(rows, name):.3f}" for name in METRICS)
            if len(rows) > 1:
                low = min(row["CIDEr"] for row in rows)
                high = max(row["CIDEr"] for row in rows)
                scores += f" ({low:.3f}-{high:.3f})"
            epochs = ", ".join(f"{row['best_epoch']}/{row['epochs_run']}" for row in rows)
            decoding = "greedy" if beam == 1 else f"beam {beam}"
            if dict(cell.decode).get("block_ngram_repeat"):
                decoding += f", no {dict(cell.decode)['block_ngram_repeat']}-gram twice"
            lines.append(f"| {cell.cache.features} | {cell.conditioning} | {cell.cache.weights} "
                         f"| {cell.label} | {decoding} | {scores} | {epochs} | {len(rows)} |")
    return "\n".join(lines) + "\n"


def patience_lines(results: dict) -> str:
    """Per run: the patience its monitored curve (val CIDEr-D where the run measured it,
    else val_bleu_4) needed to reach its best epoch."""
    lines = []
    for key, row in sorted(results.items()):
        if row["beam"] != 1 or row.get("decode") or row.get("split", "val") != "val":
            continue
        name = "val_cider" if row.get("val_cider") else "val_bleu_4"
        curve = " ".join(f"{value:.3f}" for value in row[name])
        lines.append(f"- {row['cell']} seed {row['seed']}: best epoch {row['best_epoch']} of "
                     f"{row['epochs_run']} (early stopping "
                     f"{row['settings'].get('early_stopping', 0)}), patience needed "
                     f"{needed_patience(row[name])} ({name}: {curve})")
    return "\n".join(lines) + ("\n" if lines else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "real_photos")
    parser.add_argument("--data", type=Path, default=None,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--sweep", action="store_true",
                        help="measure the training settings on the dev part of train")
    parser.add_argument("--only", nargs="+", help="run only these cells (by name)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--beams", type=int, nargs="+", default=None,
                        help="beam widths to score (default: 1 3; --sweep: 1)")
    parser.add_argument("--split", choices=("val", "test"), nargs="+", default=None,
                        help="with --sweep: score dev (val) and/or the real val (test), which "
                             "the runs never saw; default both (without --sweep: val)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    data = args.data or default_data_dir()
    if not (data / "vi_photos" / "captions.csv").exists():
        sys.exit(f"{data}: no vi_photos/captions.csv; pass --data SHARED_DATA_FOLDER")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cells = SWEEP if args.sweep else CELLS
    if args.only:
        unknown = sorted(set(args.only) - {cell.name for cell in cells})
        if unknown:
            sys.exit(f"unknown cells {unknown}; choose from {[cell.name for cell in cells]}")
        cells = tuple(cell for cell in cells if cell.name in args.only)
    beams = args.beams or ((1,) if args.sweep else (1, 3))
    results_file = work / ("sweep.json" if args.sweep else "results.json")
    results = (json.loads(results_file.read_text(encoding="utf-8"))
               if results_file.exists() else {})
    if args.split and "test" in args.split and not args.sweep:
        sys.exit("--split test scores the --sweep runs on the real val; add --sweep")
    # In the dev cache `val` is the dev part of train and `test` the real val.
    splits = tuple(args.split or (("val", "test") if args.sweep else ("val",)))
    for cell in cells:
        for seed in args.seeds:
            run_cell(cell, seed, beams, data, work, results, results_file, splits)
    if results_file.exists():  # with what benchmarks beside this one added
        results = json.loads(results_file.read_text(encoding="utf-8"))
    every = SWEEP if args.sweep else CELLS
    beams_scored = sorted({row["beam"] for row in results.values()})
    text = ""
    for split in splits:
        scored = ("the other 1/8 (dev)" if split == "val" else "the real `val` (325 "
                  "photographs), which neither training nor the epoch choice saw")
        title = (f"Sweep: pooled + init_state, real weights, trained on 7/8 of `train`, scored "
                 f"on {scored}, greedy:" if args.sweep else
                 "vi_photos `val` (325 photographs), MobileNetV2 at 224 px, GRU 256:")
        text += table(results, every, beams_scored, title, split) + "\n"
    text += patience_lines(results)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
