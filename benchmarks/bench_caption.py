"""Captioning a folder against the bare Encoder.hdf5 over the same images, as whole processes.

Side A, `caption`: a whole `python -m captioning caption FOLDER --json` process with the
shipped demo release (`saved_models/` + `tokenizer/`: hashes checked, encoder and decoder
loaded, images decoded in a thread pool, encoder, then the compiled greedy search).
Side B, `bare`: a whole process that does `import captioning` (which registers the custom
layers), loads `saved_models/Encoder.hdf5` with `keras.saving.load_model(safe_mode=True,
compile=False)` and runs PIL decode + resize + `predict_on_batch` over the same images in
batches of 32, one after the other. It writes no caption: it is the floor that the encoder
alone costs.

Each round runs both sides (the order alternates) and gives the throughput ratio
caption/bare in images per second; the median of the rounds is reported.

Usage:
    python benchmarks/bench_caption.py                   # 1000 x 128 px and 500 x 640 px
    python benchmarks/bench_caption.py --sets 2000x128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENCODER_FILE = REPO / "saved_models" / "Encoder.hdf5"
BATCH = 32

# The bare side, run as `python -c BARE images_dir`.
BARE = f"""
import os, sys
import numpy as np
from PIL import Image
import captioning
import keras

images = sys.argv[1]
model = keras.saving.load_model({str(ENCODER_FILE)!r}, safe_mode=True, compile=False)
size = int(model.inputs[0].shape[1])
names = sorted(n for n in os.listdir(images) if n.endswith(".jpg"))
count = 0
for i in range(0, len(names), {BATCH}):
    batch = np.stack([
        np.asarray(Image.open(os.path.join(images, n)).convert("RGB")
                   .resize((size, size), Image.BILINEAR), np.float32)
        for n in names[i:i + {BATCH}]])
    count += len(np.asarray(model.predict_on_batch(batch)))
print(count)
"""


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _run(command) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, command))}\n"
                 f"{done.stderr[-3000:]}")
    return seconds, done.stdout


def run_set(count: int, image_size: int, repeats: int, work: Path) -> dict:
    from captioning.data.synthetic import make_dataset

    data = work / f"shapes-{count}x{image_size}"
    if not (data / "captions.csv").exists():
        make_dataset(data, n_images=count, seed=7, format="csv", image_size=image_size)
    images = data / "images"
    truth = json.loads((data / "metadata.json").read_text())
    print(f"\n{count} synthetic JPEGs at {image_size} px, shipped demo release "
          f"(inception_v3_mixed2 at 128 px, GRU init_state, greedy), {repeats} rounds")
    caption_command = [sys.executable, "-m", "captioning", "caption", str(images), "--json"]
    bare_command = [sys.executable, "-c", BARE, str(images)]
    rounds = []
    for r in range(repeats):
        sides = [("caption", caption_command), ("bare", bare_command)]
        if r % 2:
            sides.reverse()
        seconds, outputs = {}, {}
        for name, command in sides:
            seconds[name], outputs[name] = _run(command)
        lines = [json.loads(line) for line in outputs["caption"].splitlines() if line.strip()]
        captioned = sum("caption" in line for line in lines)
        if captioned != count or int(outputs["bare"].split()[-1]) != count:
            sys.exit(f"expected {count} images on both sides, got {captioned} captions and "
                     f"{outputs['bare'].split()[-1]} encoded")
        ratio = seconds["bare"] / seconds["caption"]
        rounds.append({"caption_s": seconds["caption"], "bare_s": seconds["bare"],
                       "ratio": ratio})
        print(f"  round {r + 1} ({' then '.join(n for n, _ in sides)}): caption "
              f"{seconds['caption']:.2f} s ({count / seconds['caption']:.1f} img/s), bare "
              f"{seconds['bare']:.2f} s ({count / seconds['bare']:.1f} img/s), "
              f"caption/bare throughput {ratio:.3f}")
    # The captions are right, so the compared work is real: colour and kind named.
    right = 0
    for line in lines:
        info = _lookup(truth, Path(line["image"]).name)
        shape = info["shapes"][0] if info and info.get("shapes") else None
        right += bool(shape) and shape["colour"] in line["caption"] and \
            shape["shape"] in line["caption"]
    ratios = [x["ratio"] for x in rounds]
    result = {"images": count, "image_size": image_size, "rounds": rounds,
              "median_ratio": statistics.median(ratios),
              "median_caption_img_s": statistics.median(count / x["caption_s"] for x in rounds),
              "median_bare_img_s": statistics.median(count / x["bare_s"] for x in rounds),
              "colour_and_shape_right": right / count}
    print(f"  median caption/bare throughput ratio: {result['median_ratio']:.3f} "
          f"(target >= 0.8: {'met' if result['median_ratio'] >= 0.8 else 'NOT met'}); medians "
          f"{result['median_caption_img_s']:.1f} vs {result['median_bare_img_s']:.1f} img/s; "
          f"captions naming the right colour and shape: {right}/{count}")
    return result


def _lookup(truth, name):
    """The metadata record of one image (metadata.json is keyed or listed by file name)."""
    if isinstance(truth, dict) and "images" in truth:
        truth = truth["images"]
    if isinstance(truth, dict):
        return truth.get(name)
    for record in truth:
        if record.get("file_name", record.get("image")) == name:
            return record
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["1000x128", "500x640"],
                        help="COUNTxPIXELS synthetic image sets (default 1000x128 500x640)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", help="keep the data here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_caption-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_caption: {os.cpu_count()} CPU cores, work folder {work}")
    results = []
    try:
        for spec in args.sets:
            count, pixels = (int(x) for x in spec.lower().split("x"))
            results.append(run_set(count, pixels, args.repeats, work))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
