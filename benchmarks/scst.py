"""Self-critical training (SCST) against cross-entropy alone, at the same total epochs.

On the synthetic set with several shapes per image (captions naming their left-to-right
order) and a GRU with attention on grid features, two runs from the same seed:

- `cross-entropy`: E cross-entropy epochs (the best by val BLEU-4 exported);
- `scst`: E - S cross-entropy epochs, then S SCST epochs (the best by val CIDEr-D exported).

Both are scored on the test split with the COCO metrics (`captioning.evaluation`, greedy
captions), with the share of captions that name every shape right and of wholly true
captions (see `architectures.py`). Then the cost of one SCST step is timed against one
cross-entropy step, in one process, alternating the two over rounds (median): a step trains
on `batch_size` captions in both phases, the SCST step's being `batch_size // samples`
images times `samples` captions sampled, scored with CIDEr-D and weighted by their
advantage. Finished runs are kept in `--work/results.json`, so an interrupted run resumes
(with the same settings; other settings need another `--work`).

Usage:
    python benchmarks/scst.py --work build/scst
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from architectures import truth_shares
from captioning.cache import FeatureCache, build_cache
from captioning.config import CaptionConfig
from captioning.data.captions import read_captions
from captioning.data.synthetic import METADATA_FILE, make_dataset
from captioning.evaluation import evaluate_release
from captioning.training.train import train
from captioning.utils.logs import show_logs

ENCODER = "inception_v3_mixed2"
METRICS = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def step_ratio(cache_dir: Path, run: Path, config: CaptionConfig, rounds: int,
               steps: int) -> dict:
    """Median seconds of an SCST step and of a cross-entropy step on the same number of
    captions, with the run's exported weights; and their ratio."""
    import keras

    from captioning.models.decoders import build_decoder
    from captioning.release.load import load_release
    from captioning.training.objective import compile_for_captions, make_optimizer
    from captioning.training.scst import ScstTrainer

    release = load_release(run)
    tokenizer = release.tokenizer
    cache = FeatureCache(cache_dir)
    table = cache.captions()
    train_part = table[table["split"] == "train"]
    images = sorted(set(train_part["image"]))
    references = train_part.groupby("image")["caption"].apply(list).loc[images].tolist()
    rows = cache.rows(images)
    stats = cache.statistics(rows)

    def decoder():
        made = build_decoder(config, tokenizer.vocab_size, cache.feature_shape,
                             config.max_length + 1, feature_stats=stats)
        made.step.set_weights(release.decoder.get_weights())
        return made

    scst = ScstTrainer(decoder(), tokenizer, references, lambda i: cache.gather(rows[i]),
                       config)
    ce = decoder()
    compile_for_captions(ce.training, make_optimizer(config.learning_rate, config.clipnorm))
    per_step = scst.images_per_step
    captions = per_step * config.scst_samples
    sequences = tokenizer.to_matrix(train_part["caption"].tolist(), config.max_length + 2)
    caption_rows = cache.rows(train_part["image"])
    rng = np.random.default_rng(0)

    def ce_step():
        picked = rng.choice(len(sequences), captions, replace=False)
        tokens = sequences[picked]
        ce.training.train_on_batch([cache.gather(caption_rows[picked]), tokens[:, :-1]],
                                   tokens[:, 1:])

    def scst_step():
        scst.step(rng.choice(len(images), per_step, replace=False))

    def timed(step):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps

    timed(ce_step), timed(scst_step)  # compile both first
    times = {"ce": [], "scst": []}
    for index in range(rounds):
        order = ("ce", "scst") if index % 2 == 0 else ("scst", "ce")
        for name in order:
            times[name].append(timed(ce_step if name == "ce" else scst_step))
    ce_s, scst_s = statistics.median(times["ce"]), statistics.median(times["scst"])
    keras.backend.clear_session()
    return {"ce_step_s": ce_s, "scst_step_s": scst_s, "ratio": scst_s / ce_s,
            "captions_per_step": captions, "images_per_scst_step": per_step}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="build/scst")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--shapes", type=int, default=3, choices=(2, 3))
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10, help="E: total epochs of each run")
    parser.add_argument("--scst-epochs", type=int, default=3, help="S: the last S are SCST")
    parser.add_argument("--scst-samples", type=int, default=5)
    parser.add_argument("--scst-baseline", default="mean", choices=("mean", "greedy"))
    parser.add_argument("--scst-learning-rate", type=float, default=5e-5)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (median)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timing round")
    args = parser.parse_args()
    if not 0 < args.scst_epochs < args.epochs:
        parser.error(f"--scst-epochs must be between 1 and --epochs - 1 ({args.epochs - 1}), "
                     f"got {args.scst_epochs}")
    show_logs()
    work = Path(args.work)
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    # The data, cache and runs under --work are reused: only with the settings that made them.
    settings = {name: value for name, value in vars(args).items()
                if name not in ("work", "rounds", "steps")}
    if results.get("settings", settings) != settings:
        parser.error(f"{results_file} holds results of other settings ({results['settings']});"
                     " give another --work")
    results["settings"] = settings
    work.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=1))
    data = work / "data"
    if not (data / "captions.csv").exists():
        make_dataset(data, n_images=args.images, seed=7, image_size=128,
                     shapes_per_image=args.shapes)
    table = read_captions(data / "captions.csv", format="csv")
    cache = build_cache(table, data / "images", work / "cache", encoder=ENCODER,
                        weights="none", image_size=args.image_size, features="grid",
                        progress=False)
    base = CaptionConfig(cell="gru", conditioning="attention", max_length=20,
                         max_decode_length=20, seed=0, scst_epochs=0,
                         scst_samples=args.scst_samples,
                         scst_baseline=args.scst_baseline,
                         scst_learning_rate=args.scst_learning_rate)
    runs = {"cross-entropy": base.replace(epochs=args.epochs),
            "scst": base.replace(epochs=args.epochs - args.scst_epochs,
                                 scst_epochs=args.scst_epochs)}
    for name, config in runs.items():
        if name in results:
            continue
        run = work / f"run-{name}"
        start = time.time()
        result = train(cache, run, config, progress=False)
        seconds = time.time() - start
        predictions = run / "test_predictions.json"
        scores = evaluate_release(run, cache, split="test", predictions_path=predictions,
                                  spice=False)
        results[name] = {**{metric: scores[metric] for metric in METRICS},
                         **truth_shares(predictions, data / METADATA_FILE),
                         "best_epoch": result.best_epoch, "train_s": seconds,
                         "n_images": scores["n_images"]}
        results_file.write_text(json.dumps(results, indent=1))
        print(name, results[name], flush=True)
    if "steps" not in results:
        results["steps"] = step_ratio(cache, work / "run-scst", runs["scst"], args.rounds,
                                      args.steps)
        results_file.write_text(json.dumps(results, indent=1))
    print(report(results, args, FeatureCache(cache).feature_shape))


def report(results: dict, args, grid) -> str:
    """The Markdown table of the two runs and the step cost."""
    ce, scst, steps = results["cross-entropy"], results["scst"], results["steps"]
    lines = [
        f"Synthetic, {args.shapes} shapes per image ({args.images} images, seed 7), {ENCODER} "
        f"random weights at {args.image_size} px (grid: {grid[0]} regions of {grid[1]}), GRU "
        f"with attention, {args.epochs} epochs in all, SCST: {args.scst_samples} samples, "
        f"{args.scst_baseline} baseline, learning rate {args.scst_learning_rate:g}; greedy "
        f"decoding, test split ({ce['n_images']} images):",
        "",
        "| run | Bleu_4 | METEOR | ROUGE_L | CIDEr | shapes named | true captions "
        "| exported epoch | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in (("cross-entropy", f"cross-entropy, {args.epochs} epochs"),
                        ("scst", f"cross-entropy {args.epochs - args.scst_epochs} + SCST "
                                 f"{args.scst_epochs}")):
        r = results[name]
        lines.append(f"| {label} | {r['Bleu_4']:.3f} | {r['METEOR']:.3f} | {r['ROUGE_L']:.3f} "
                     f"| {r['CIDEr']:.3f} | {r['named']:.1%} | {r['true']:.1%} "
                     f"| {r['best_epoch']} | {r['train_s']:.0f} |")
    gain = scst["CIDEr"] / ce["CIDEr"] - 1 if ce["CIDEr"] else float("inf")
    bleu = scst["Bleu_4"] - ce["Bleu_4"]
    lines += [
        "",
        f"- CIDEr {gain:+.1%} with SCST (target >= +5%: {'met' if gain >= 0.05 else 'missed'})",
        f"- Bleu_4 {bleu:+.3f} (target > -0.02: {'met' if bleu > -0.02 else 'missed'})",
        f"- one SCST step ({steps['images_per_scst_step']} images x {args.scst_samples} "
        f"samples) {steps['scst_step_s'] * 1000:.0f} ms against a cross-entropy step of the "
        f"same {steps['captions_per_step']} captions {steps['ce_step_s'] * 1000:.0f} ms: "
        f"{steps['ratio']:.2f}x (median of {args.rounds} rounds; target <= 4x: "
        f"{'met' if steps['ratio'] <= 4 else 'missed'})",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
