"""Where users train, in one command: encoder, loader, cache, training and decoding rates.

Runs on whatever Keras runs on (`KERAS_BACKEND=jax` on a GPU machine without TensorFlow;
TensorFlow by default) and prints, with the device it ran on:

- the bare encoder on device-resident uint8 batches, float32 and mixed precision (and how
  far the mixed features are from the float32 ones);
- the image loader (`load_and_resize`) on 1 thread and on `--workers` threads;
- `build_cache` on the same images, and its ratio to the limit `min(encoder, loader)`;
- training ms/step, first epoch (with compilation) and steady, for `init_state` (pooled
  features) and `attention` (grid features), on random features of the encoder's shapes;
- greedy and beam-3 captions/s for a batch of `--decode-batch` images (random weights, so
  every caption runs to `--max-length` words: the slowest case);
- the implied COCO figures: 123,287 images cached, one epoch of the Karpathy train split
  (113,287 images x 5 captions) for both decoders, the 5,000 test images captioned.

The defaults are sized for one GPU (under 8 minutes on an H200); on a CPU pass small sizes:

    KERAS_BACKEND=jax python benchmarks/bench_gpu.py                   # one GPU
    python benchmarks/bench_gpu.py --images 64 --batch-size 16 --train-steps 6 \\
        --decode-batch 32 --image-size 150                             # a laptop CPU
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COCO_IMAGES, KARPATHY_TRAIN_IMAGES, CAPTIONS_PER_IMAGE, COCO_TEST = 123_287, 113_287, 5, 5_000


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2500, help="JPEGs to decode and cache")
    p.add_argument("--image-side", type=int, default=480, help="side of the source JPEGs")
    p.add_argument("--encoder", default="inception_v3")
    p.add_argument("--image-size", type=int, default=299, help="encoder input side")
    p.add_argument("--batch-size", type=int, default=128, help="encoder batch")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode threads")
    p.add_argument("--encoder-batches", type=int, default=20, help="timed encoder batches")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=157, help="steps per timed epoch")
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--max-length", type=int, default=30, help="words per caption")
    p.add_argument("--decode-batch", type=int, default=256)
    p.add_argument("--mixed", default=None, help="mixed policy (default: mixed_bfloat16 on "
                   "GPU/TPU, none on CPU: the CPU has no fast half-precision convolutions)")
    p.add_argument("--json", help="also write the figures to this file")
    return p


def _device() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"jax {jax.__version__} on {device.platform}: {device.device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return f"tensorflow {tf.__version__} on {'GPU ' + gpus[0].name if gpus else 'CPU'}"


def _on_accelerator() -> bool:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].platform != "cpu"
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _to_device(array):
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.device_put(array)
    return keras.ops.convert_to_tensor(array)


def encoder_rate(args, mixed: str | None, pixels: np.ndarray) -> dict:
    """Images/s of the bare encoder on one device-resident uint8 batch, float32 and mixed;
    the mixed features' distance from the float32 ones on real pixels."""
    import keras

    from captioning.models.encoders import build_encoder

    keras.utils.set_random_seed(0)
    result = {}
    models = {"float32": build_encoder(args.encoder, "none", args.image_size, "pooled")}
    if mixed:
        keras.mixed_precision.set_global_policy(mixed)
        try:
            models[mixed] = build_encoder(args.encoder, "none", args.image_size, "pooled")
        finally:
            keras.mixed_precision.set_global_policy("float32")
        models[mixed].set_weights(models["float32"].get_weights())
    batch = np.resize(pixels, (args.batch_size,) + pixels.shape[1:])
    on_device = _to_device(batch)
    for name, model in models.items():
        started = time.perf_counter()
        features = np.asarray(model.predict_on_batch(on_device))
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(args.encoder_batches):
            np.asarray(model.predict_on_batch(on_device))
        rate = args.encoder_batches * args.batch_size / (time.perf_counter() - started)
        result[name] = {"images_per_s": rate, "first_batch_s": first, "features": features}
    if mixed:
        a = result["float32"]["features"].astype(np.float64)
        b = result[mixed]["features"].astype(np.float64)
        cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        result[mixed]["max_abs_diff_over_max"] = float(np.abs(a - b).max() / np.abs(a).max())
        result[mixed]["min_cosine"] = float(cosine.min())
    for entry in result.values():
        entry.pop("features")
    return result


def loader_rate(paths, size: int, workers: int) -> dict:
    """Images/s of `load_and_resize` on 1 thread and on `workers` threads."""
    from captioning.data.images import load_and_resize

    one = paths[:max(16, len(paths) // 4)]
    started = time.perf_counter()
    for path in one:
        load_and_resize(path, size)
    single = len(one) / (time.perf_counter() - started)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda path: load_and_resize(path, size), paths))
    return {"1 thread": single, f"{workers} threads": len(paths) / (time.perf_counter() - started)}


class _Steady(logging.Handler):
    """Keeps the cache's images/s after its first batch (the encoder compiles on that one)."""

    rate = None

    def emit(self, record):
        if record.getMessage().startswith("The first batch took"):
            self.rate = float(record.args[-1])


def cache_rate(args, dataset: Path, features: str) -> tuple:
    """`(whole, steady, feature shape)`: images/s of a whole `build_cache` run (encoder
    compilation included) as its manifest records it, and after its first batch."""
    from captioning.cache import build_cache
    from captioning.data.captions import read_captions

    table = read_captions(dataset / "captions.csv", format="csv")
    steady = _Steady()
    log = logging.getLogger("captioning.cache.encode")
    log.addHandler(steady)
    log.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as out:
            path = build_cache(table, dataset / "images", Path(out) / "cache",
                               encoder=args.encoder, weights="none", image_size=args.image_size,
                               features=features, batch_size=args.batch_size,
                               workers=args.workers, progress=False, dtype="float32")
            manifest = json.loads((path / "manifest.json").read_text())
    finally:
        log.removeHandler(steady)
    whole = manifest["throughput"]["images_per_second"]
    return whole, steady.rate or whole, manifest["feature_shape"]


def train_rate(args, conditioning: str, feature_shape) -> dict:
    """ms/step of the teacher-forcing model, epoch 1 (compilation included) and epoch 2."""
    import keras

    from captioning.config import CaptionConfig
    from captioning.models.decoders import build_decoder
    from captioning.training.objective import compile_for_captions, make_optimizer

    keras.utils.set_random_seed(0)
    config = CaptionConfig(conditioning=conditioning, max_length=args.max_length,
                           features="grid" if conditioning == "attention" else "pooled")
    length = args.max_length + 1
    decoder = build_decoder(config, args.vocab, feature_shape, length)
    compile_for_captions(decoder.training, make_optimizer(1e-3, 5.0))
    rng = np.random.default_rng(0)
    pool = [((rng.normal(size=(args.train_batch,) + tuple(feature_shape)).astype(np.float32),
              rng.integers(1, args.vocab, (args.train_batch, length)).astype(np.int32)),
             rng.integers(0, args.vocab, (args.train_batch, length)).astype(np.int32))
            for _ in range(4)]

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return args.train_steps

        def __getitem__(self, index):
            return pool[index % len(pool)]

    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)

    decoder.training.fit(Batches(), epochs=2, verbose=0, callbacks=[Clock()])
    first, steady = (t / args.train_steps * 1000 for t in times)
    return {"first_epoch_ms_per_step": first, "steady_ms_per_step": steady,
            "first_epoch_s": times[0]}


def decode_rate(args, feature_shape) -> dict:
    """Captions/s of the compiled greedy and beam-3 search over a batch (second call; the
    first compiles)."""
    import keras

    from captioning.config import CaptionConfig
    from captioning.models.decoders import build_decoder
    from captioning.models.search import SequenceDecoder

    keras.utils.set_random_seed(0)
    decoder = build_decoder(CaptionConfig(max_length=args.max_length), args.vocab, feature_shape)
    search = SequenceDecoder(decoder.step, start_id=1, end_id=2, max_length=args.max_length)
    features = np.random.default_rng(0).normal(
        size=(args.decode_batch,) + tuple(feature_shape)).astype(np.float32)
    result = {}
    for name, beam in (("greedy", 1), ("beam 3", 3)):
        search.decode(features, beam=beam)
        started = time.perf_counter()
        search.decode(features, beam=beam)
        result[name] = args.decode_batch / (time.perf_counter() - started)
    return result


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    import keras

    from captioning.data.synthetic import make_dataset

    mixed = args.mixed or ("mixed_bfloat16" if _on_accelerator() else None)
    mixed = None if mixed == "none" else mixed
    figures = {"device": _device(), "keras": keras.__version__, "settings": vars(args)}
    print(f"{figures['device']}; keras {keras.__version__}; {args.encoder} at "
          f"{args.image_size} px; {args.images} JPEGs of {args.image_side} px", flush=True)
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        dataset = make_dataset(Path(root) / "data", n_images=args.images, seed=0,
                               image_size=args.image_side).parent
        print(f"(wrote the JPEGs in {time.perf_counter() - started:.0f} s)", flush=True)
        paths = sorted((dataset / "images").glob("*.jpg"))
        loader = loader_rate(paths, args.image_size, args.workers)
        figures["loader_images_per_s"] = loader
        print("loader: " + ", ".join(f"{k} {v:.0f} images/s" for k, v in loader.items()),
              flush=True)
        from captioning.data.images import load_and_resize

        pixels = np.stack([load_and_resize(p, args.image_size) for p in paths[:32]]
                          ).astype(np.uint8)
        encoder = encoder_rate(args, mixed, pixels)
        figures["encoder"] = encoder
        for name, entry in encoder.items():
            extra = (f" (features vs float32: max |diff| {entry['max_abs_diff_over_max']:.2%} "
                     f"of the largest, cosine >= {entry['min_cosine']:.5f})"
                     if "min_cosine" in entry else "")
            print(f"encoder {name}: {entry['images_per_s']:.0f} images/s on device-resident "
                  f"batches of {args.batch_size} (first batch {entry['first_batch_s']:.1f} s)"
                  f"{extra}", flush=True)
        limit = min(encoder["float32"]["images_per_s"], max(loader.values()))
        rate, steady, pooled_shape = cache_rate(args, dataset, "pooled")
        grid_rate, grid_steady, grid_shape = cache_rate(args, dataset, "grid")
        figures["cache"] = {"pooled_images_per_s": rate, "pooled_steady_images_per_s": steady,
                            "grid_images_per_s": grid_rate,
                            "grid_steady_images_per_s": grid_steady,
                            "limit_images_per_s": limit, "ratio": rate / limit,
                            "steady_ratio": steady / limit}
        print(f"cache: pooled {rate:.0f} images/s whole run, {steady:.0f} after the first "
              f"batch; grid {grid_rate:.0f} / {grid_steady:.0f}; limit min(encoder, loader) "
              f"{limit:.0f} images/s: ratio {rate / limit:.2f} whole run, {steady / limit:.2f} "
              "after the first batch", flush=True)
    training = {name: train_rate(args, name, shape) for name, shape in
                (("init_state", pooled_shape), ("attention", grid_shape))}
    figures["train"] = training
    for name, entry in training.items():
        print(f"train {name} (batch {args.train_batch}, {args.train_steps} steps): epoch 1 "
              f"{entry['first_epoch_s']:.1f} s ({entry['first_epoch_ms_per_step']:.0f} ms/step), "
              f"steady {entry['steady_ms_per_step']:.1f} ms/step", flush=True)
    decoding = decode_rate(args, pooled_shape)
    figures["decode_captions_per_s"] = decoding
    print(f"decode (batch {args.decode_batch}, {args.max_length} words): " + ", ".join(
        f"{k} {v:.0f} captions/s" for k, v in decoding.items()), flush=True)
    steps = math.ceil(KARPATHY_TRAIN_IMAGES * CAPTIONS_PER_IMAGE / args.train_batch)
    coco = {"cache_minutes": COCO_IMAGES / rate / 60,
            **{f"epoch_minutes_{name}": steps * entry["steady_ms_per_step"] / 60_000
               for name, entry in training.items()},
            **{f"test_minutes_{name}": COCO_TEST / value / 60 for name, value in decoding.items()}}
    figures["coco"] = coco
    print(f"COCO: cache {COCO_IMAGES:,} images {coco['cache_minutes']:.1f} min; one Karpathy "
          f"train epoch ({steps:,} steps of {args.train_batch}) init_state "
          f"{coco['epoch_minutes_init_state']:.1f} min, attention "
          f"{coco['epoch_minutes_attention']:.1f} min; {COCO_TEST:,} test images greedy "
          f"{coco['test_minutes_greedy']:.1f} min, beam 3 {coco['test_minutes_beam 3']:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
