"""Feature caching against the bare encoder, as whole processes, on the same images.

Side A, `cache`: a whole `python -m captioning cache --format csv ... --encoder
inception_v3_mixed2 --weights none --image-size 128` process (a fresh --out each time).
Side B, `bare`: a whole process running the minimal loop a user would write by hand: build the
same encoder (`build_encoder`, same arguments, same seed), open each image with PIL
(`Image.open(p).convert("RGB").resize((128, 128), BILINEAR)`), batches of 32,
`predict_on_batch`, one after the other, then `np.save` of all the features.

Each round runs both sides (the order alternates between rounds) and gives the throughput
ratio cache/bare in images per second; the median of the rounds is reported. The machine is
shared, so only ratios measured within one run mean anything.

It also reports the bytes the cache writes (float16 shards) against a float32 per-image
`.npy` layout like the TensorFlow captioning tutorial's (one file per image), written here
from the bare side's features so its size on disk is measured rather than estimated.

Usage:
    python benchmarks/bench_cache.py                     # 1000 x 128 px and 500 x 640 px
    python benchmarks/bench_cache.py --sets 2000x128 --repeats 3
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

ENCODER, WEIGHTS, SIZE, BATCH, SEED = "inception_v3_mixed2", "none", 128, 32, 0

# The bare side, run as `python -c BARE images_dir out.npy`.
BARE = f"""
import os, sys
import numpy as np
from PIL import Image
import keras
from captioning.models.encoders import build_encoder

images, out = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed({SEED})
model = build_encoder({ENCODER!r}, {WEIGHTS!r}, {SIZE}, "pooled")
names = sorted(n for n in os.listdir(images) if n.endswith(".jpg"))
features = []
for i in range(0, len(names), {BATCH}):
    batch = np.stack([
        np.asarray(Image.open(os.path.join(images, n)).convert("RGB")
                   .resize(({SIZE}, {SIZE}), Image.BILINEAR), np.float32)
        for n in names[i:i + {BATCH}]])
    features.append(np.asarray(model.predict_on_batch(batch)))
np.save(out, np.concatenate(features))
"""


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def _timed(command) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, command))}\n{done.stderr[-3000:]}")
    return seconds


def _cache_command(data: Path, out: Path):
    return [sys.executable, "-m", "captioning", "cache", "--format", "csv",
            "--captions", str(data / "captions.csv"), "--images", str(data / "images"),
            "--out", str(out), "--encoder", ENCODER, "--weights", WEIGHTS,
            "--image-size", str(SIZE)]


def _bare_command(data: Path, out: Path):
    return [sys.executable, "-c", BARE, str(data / "images"), str(out)]


def _disk(paths) -> tuple[int, int]:
    """(bytes in the files, bytes allocated on disk) of files and folders."""
    size = blocks = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            stat = file.stat()
            size += stat.st_size
            blocks += stat.st_blocks * 512
    return size, blocks


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def run_set(count: int, image_size: int, repeats: int, work: Path) -> dict:
    import numpy as np

    from captioning.cache import load_features
    from captioning.data.synthetic import make_dataset

    data = work / f"shapes-{count}x{image_size}"
    if not (data / "captions.csv").exists():
        make_dataset(data, n_images=count, seed=7, format="csv", image_size=image_size)
    jpeg_bytes = sum(p.stat().st_size for p in (data / "images").glob("*.jpg"))
    print(f"\n{count} synthetic JPEGs at {image_size} px ({_human(jpeg_bytes)}), encoder "
          f"{ENCODER} at {SIZE} px, pooled features, {repeats} rounds")
    rounds = []
    for r in range(repeats):
        cache_out, bare_out = work / f"cache-{r}", work / f"bare-{r}.npy"
        shutil.rmtree(cache_out, ignore_errors=True)
        bare_out.unlink(missing_ok=True)
        sides = [("cache", _cache_command(data, cache_out)), ("bare", _bare_command(data, bare_out))]
        if r % 2:
            sides.reverse()
        seconds = {name: _timed(command) for name, command in sides}
        ratio = seconds["bare"] / seconds["cache"]  # (n / cache s) / (n / bare s)
        rounds.append({"cache_s": seconds["cache"], "bare_s": seconds["bare"], "ratio": ratio})
        print(f"  round {r + 1} ({' then '.join(n for n, _ in sides)}): cache "
              f"{seconds['cache']:.2f} s ({count / seconds['cache']:.1f} img/s), bare "
              f"{seconds['bare']:.2f} s ({count / seconds['bare']:.1f} img/s), "
              f"cache/bare throughput {ratio:.3f}")

    # Same images, same encoder weights: the two sides' features agree up to float16 and
    # the JPEG draft decode of large images.
    names, cached = load_features(cache_out)
    cached = np.asarray(cached, np.float32)
    bare = np.load(bare_out)
    relative = float(np.linalg.norm(cached - bare) / np.linalg.norm(bare))

    # Bytes: the cache's float16 shards vs one float32 .npy per image (the tutorial's layout).
    shards = sorted((cache_out / "shards").glob("*.npy"))
    shard_bytes, shard_alloc = _disk(shards)
    cache_bytes, cache_alloc = _disk([cache_out])
    per_image = work / "per-image-npy"
    shutil.rmtree(per_image, ignore_errors=True)
    per_image.mkdir()
    for name, row in zip(names, bare):
        np.save(per_image / f"{name}.npy", row.astype(np.float32))
    tutorial_bytes, tutorial_alloc = _disk([per_image])
    shutil.rmtree(per_image)
    for r in range(repeats):
        shutil.rmtree(work / f"cache-{r}", ignore_errors=True)
        (work / f"bare-{r}.npy").unlink(missing_ok=True)

    ratios = [x["ratio"] for x in rounds]
    result = {
        "images": count, "image_size": image_size, "rounds": rounds,
        "median_ratio": statistics.median(ratios),
        "median_cache_img_s": statistics.median(count / x["cache_s"] for x in rounds),
        "median_bare_img_s": statistics.median(count / x["bare_s"] for x in rounds),
        "feature_relative_difference": relative,
        "shard_bytes": shard_bytes, "shard_allocated": shard_alloc,
        "cache_folder_bytes": cache_bytes, "cache_folder_allocated": cache_alloc,
        "per_image_float32_bytes": tutorial_bytes, "per_image_float32_allocated": tutorial_alloc,
    }
    print(f"  median cache/bare throughput ratio: {result['median_ratio']:.3f} "
          f"(target >= 0.9: {'met' if result['median_ratio'] >= 0.9 else 'NOT met'}); "
          f"medians {result['median_cache_img_s']:.1f} vs {result['median_bare_img_s']:.1f} img/s")
    print(f"  features agree: relative difference {relative:.2e} (float16 rounding"
          f"{', JPEG draft decode' if image_size > 2 * SIZE else ''})")
    print(f"  bytes: float16 shards {shard_bytes:,} ({_human(shard_alloc)} on disk); whole "
          f"cache folder {cache_bytes:,} ({_human(cache_alloc)} on disk, encoder.hdf5 "
          f"included); float32 per-image .npy {tutorial_bytes:,} in {len(names)} files "
          f"({_human(tutorial_alloc)} on disk); features {tutorial_bytes / shard_bytes:.2f}x "
          f"smaller, {tutorial_alloc / shard_alloc:.1f}x less disk")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["1000x128", "500x640"],
                        help="COUNTxPIXELS synthetic image sets (default 1000x128 500x640)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", help="keep the data here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_cache-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_cache: {os.cpu_count()} CPU cores, work folder {work}")
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
