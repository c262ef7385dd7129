"""Peak memory of a training run on a cache of N images against one of 10N images.

Two caches are written in the real cache format (`captioning.features`): a small real cache
is first built with `build_cache` (20 synthetic images, `inception_v3_mixed2`, random weights,
85 px, grid features: 8x8 = 64 regions of 288), and its `manifest.json`, `encoder.hdf5` and
layout are the template for two large caches of N and 10N images whose float16 shards hold
random features: `manifest.json` (the template's fields, with `n_images`,
`images_fingerprint`, `images_dir` and the shard table of the new image list), `images.txt`,
`captions.csv` (5 synthetic captions per image, 80/10/10 train/val/test), `encoder.hdf5`
(the real one, copied), `shards/features-*.npy` (each with its `.failed.json` sidecar) and
`failed.csv`. Each cache is checked by opening it with `FeatureCache`.

Then `python -m captioning train --cache C --out R --epochs 1 --quiet --config small.json`
(a GRU with Bahdanau attention over the 64 regions, small units, max_length 12, val_images
20) runs once per cache per round, as a child process, and its memory is read:

- `ru_maxrss`: the child's peak resident set (`os.wait4`), which counts the pages of the
  memory-mapped shards it has touched (file-backed, clean, reclaimable page cache);
- `peak RssAnon`: the peak of its anonymous (private, unreclaimable) memory, polled from
  `/proc/PID/status` every 20 ms; `peak RssFile` likewise for file-backed pages.

The growth from N to 10N of each is reported (median over the rounds).

`--phases` also runs the same training once per cache with its phases marked (in a child
process that wraps `keras.Model.fit`), and gives the peak anonymous memory before `fit`
(cache opening, captions, tokenizer, `FeatureCache.statistics`) and from `fit` to the end
(the epoch, validation BLEU, export), to tell which part grows.

Usage:
    python benchmarks/bench_memory.py [--images 2000] [--factor 10] [--repeats 3] [--phases]
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
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IMAGE_SIZE, FEATURES = 85, "grid"  # inception_v3_mixed2 at 85 px: 8x8 regions of 288
CONFIG = {
    "encoder": "inception_v3_mixed2", "weights": "none", "image_size": IMAGE_SIZE,
    "features": FEATURES, "conditioning": "attention", "cell": "gru", "units": 32,
    "embedding_dim": 16, "attention_units": 32, "max_length": 12, "max_decode_length": 12,
    "val_images": 20, "batch_size": 128, "epochs": 1, "scst_epochs": 0,
}


def template_cache(work: Path) -> Path:
    """A small real cache made by build_cache: the template of the large ones."""
    from captioning.data.captions import read_captions
    from captioning.cache import build_cache
    from captioning.data.synthetic import make_dataset

    data = work / "shapes"
    make_dataset(data, n_images=200, seed=7, format="csv", image_size=IMAGE_SIZE)
    table = read_captions(data / "captions.csv", format="csv")
    first = sorted(set(table["image"]))[:20]
    out = build_cache(table[table["image"].isin(first)], data / "images", work / "template",
                      encoder="inception_v3_mixed2", weights="none", image_size=IMAGE_SIZE,
                      features=FEATURES, progress=False)
    return out


def write_cache(template: Path, out: Path, n_images: int, seed: int = 0) -> int:
    """A cache of `n_images` in the template's format, with random float16 features."""
    import numpy as np
    import pandas as pd

    from captioning.cache import FeatureCache, images_fingerprint

    manifest = json.loads((template / "manifest.json").read_text())
    pool = pd.read_csv(template.parent / "shapes" / "captions.csv", dtype=str,
                       keep_default_na=False)
    pool = pool.groupby("image")["caption"].apply(list).tolist()  # 200 images x 5 captions
    images = [f"image_{i:07d}.jpg" for i in range(n_images)]  # already sorted
    splits = np.where(np.arange(n_images) % 10 < 8, "train",
                      np.where(np.arange(n_images) % 10 == 8, "val", "test"))
    rows = [(name, caption, split) for i, (name, split) in enumerate(zip(images, splits))
            for caption in pool[i % len(pool)]]
    shard_size = manifest["shard_size"]  # build_cache's choice for this feature shape
    count = -(-n_images // shard_size)
    shape = tuple(manifest["feature_shape"])
    shutil.rmtree(out, ignore_errors=True)
    (out / "shards").mkdir(parents=True)
    shutil.copyfile(template / "encoder.hdf5", out / "encoder.hdf5")
    (out / "images.txt").write_text("\n".join(images) + "\n")
    pd.DataFrame(rows, columns=["image", "caption", "split"]).to_csv(out / "captions.csv",
                                                                     index=False)
    pd.DataFrame([], columns=["image", "reason"]).to_csv(out / "failed.csv", index=False)
    rng = np.random.default_rng(seed)
    shards = []
    for i in range(count):
        start, stop = i * shard_size, min((i + 1) * shard_size, n_images)
        name = f"features-{i:05d}-of-{count:05d}.npy"
        tmp = out / "shards" / (name + ".tmp")
        data = np.lib.format.open_memmap(tmp, mode="w+", dtype=manifest["dtype"],
                                         shape=(stop - start,) + shape)
        for j in range(0, stop - start, 256):
            block = rng.standard_normal((min(256, stop - start - j),) + shape, np.float32)
            data[j:j + len(block)] = np.abs(block)  # like ReLU features
        data.flush()
        del data
        os.replace(tmp, out / "shards" / name)
        (out / "shards" / (name[:-4] + ".failed.json")).write_text("{}")
        shards.append({"file": name, "start": start, "stop": stop})
    manifest.update({"n_images": n_images, "images_fingerprint": images_fingerprint(images),
                     "images_dir": str((out / "images").resolve()), "shards": shards,
                     "complete": True, "n_failed": 0})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    FeatureCache(out)  # the reader accepts it
    return sum(p.stat().st_size for p in (out / "shards").glob("*.npy"))


# `python -c PHASES cache run config`: train in-process, peak RssAnon before and after `fit`.
PHASES = """
import json, os, sys, threading, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
from captioning.config import CaptionConfig
from captioning.training.train import train

def anon():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) * 1024

peaks, phase = {"before fit": 0, "fit to end": 0}, ["before fit"]
def sample():
    while True:
        peaks[phase[0]] = max(peaks[phase[0]], anon())
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
fit = keras.Model.fit
def marked(self, *args, **kwargs):
    phase[0] = "fit to end"
    return fit(self, *args, **kwargs)
keras.Model.fit = marked
train(sys.argv[1], sys.argv[2], CaptionConfig.load(sys.argv[3]), progress=False)
time.sleep(0.05)
print("PHASES " + json.dumps(peaks))
"""


def train_phases(cache: Path, run: Path, config: Path) -> dict:
    shutil.rmtree(run, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", PHASES, str(cache), str(run), str(config)],
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PHASES ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"train (phases) failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return json.loads(lines[-1][len("PHASES "):])


def _status(pid: int) -> dict:
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    values[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values


def train_peak(cache: Path, run: Path, config: Path) -> dict:
    """Runs `train` as a child process; its peak memory figures in bytes, and seconds."""
    shutil.rmtree(run, ignore_errors=True)
    command = [sys.executable, "-m", "captioning", "train", "--cache", str(cache), "--out",
               str(run), "--epochs", "1", "--quiet", "--config", str(config)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    done = threading.Event()

    def poll():
        while not done.is_set():
            for key, value in _status(child.pid).items():
                if key in peaks:
                    peaks[key] = max(peaks[key], value)
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    poller.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        sys.exit(f"train failed ({child.returncode}):\n{output.decode()[-3000:]}")
    return {"ru_maxrss": usage.ru_maxrss * 1024, "peak_rss_anon": peaks["RssAnon"],
            "peak_rss_file": peaks["RssFile"], "peak_vm_rss_polled": peaks["VmRSS"],
            "seconds": seconds, "last_line": output.decode().strip().splitlines()[-1]}


def _mib(n):
    return f"{n / 2**20:.0f} MiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="N (default 2000)")
    parser.add_argument("--factor", type=int, default=10, help="the large cache has N x this")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (each trains on both)")
    parser.add_argument("--phases", action="store_true",
                        help="also attribute the peak anonymous memory to before/after fit")
    parser.add_argument("--workdir", help="keep the caches here (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        template = template_cache(work)
        config = work / "config.json"
        config.write_text(json.dumps(CONFIG, indent=2) + "\n")
        sizes = {"N": args.images, f"{args.factor}N": args.images * args.factor}
        caches, shard_bytes = {}, {}
        for label, n in sizes.items():
            start = time.perf_counter()
            caches[label] = work / f"cache-{n}"
            shard_bytes[label] = write_cache(template, caches[label], n)
            print(f"cache {label}: {n} images, grid {json.loads((template / 'manifest.json').read_text())['feature_shape']}"
                  f" float16, shards {_mib(shard_bytes[label])} (written in "
                  f"{time.perf_counter() - start:.0f} s)")
        from captioning.release.load import load_release

        print(f"bench_memory: {os.cpu_count()} CPU cores; train --epochs 1 with {CONFIG}")
        rounds = []
        for r in range(args.repeats):
            order = list(sizes) if r % 2 == 0 else list(reversed(sizes))
            figures = {label: train_peak(caches[label], work / f"run-{label}", config)
                       for label in order}
            rounds.append(figures)
            for label in order:
                f = figures[label]
                print(f"  round {r + 1}, {label}: ru_maxrss {_mib(f['ru_maxrss'])}, peak RssAnon "
                      f"{_mib(f['peak_rss_anon'])}, peak RssFile {_mib(f['peak_rss_file'])}, "
                      f"{f['seconds']:.0f} s ({f['last_line'][:80]})")
        release = load_release(work / f"run-{list(sizes)[0]}")
        model_bytes = sum(int(w.numpy().nbytes) for w in release.decoder.weights)
        large = list(sizes)[1]
        summary = {}
        for key in ("ru_maxrss", "peak_rss_anon", "peak_rss_file"):
            small = statistics.median(r["N"][key] for r in rounds)
            big = statistics.median(r[large][key] for r in rounds)
            summary[key] = {"N": small, large: big, "growth": big / small - 1}
        print(f"decoder weights {model_bytes / 1024:.0f} KiB; shards N {_mib(shard_bytes['N'])}, "
              f"{large} {_mib(shard_bytes[large])}")
        for key, label in (("ru_maxrss", "peak RSS (ru_maxrss, file-backed mmap pages included)"),
                           ("peak_rss_anon", "peak anonymous memory (RssAnon)"),
                           ("peak_rss_file", "peak file-backed resident (RssFile)")):
            s = summary[key]
            verdict = ""
            if key != "peak_rss_file":
                verdict = f" (target < 10%: {'met' if s['growth'] < 0.10 else 'NOT met'})"
            print(f"{label}: N {_mib(s['N'])}, {large} {_mib(s[large])}, growth "
                  f"{100 * s['growth']:+.1f}%{verdict}")
        phases = None
        if args.phases:
            phases = {label: train_phases(caches[label], work / f"phases-{label}", config)
                      for label in sizes}
            for name in phases["N"]:
                small, big = phases["N"][name], phases[large][name]
                print(f"peak anonymous memory, {name}: N {_mib(small)}, {large} {_mib(big)}, "
                      f"growth {100 * (big / small - 1):+.1f}%")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"rounds": rounds, "summary": summary, "phases": phases, "shard_bytes": shard_bytes,
                 "decoder_weight_bytes": model_bytes, "config": CONFIG}, indent=2) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
