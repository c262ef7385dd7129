"""Peak memory of encoding images eagerly: one encoder call on every image against
`encode_images` (`ENCODE_BATCH` images per call).

Fine-tuning scores val CIDEr-D after each epoch, and SCST after fine-tuning re-encodes the
training images, both with the encoder called eagerly outside `fit`. An eager call keeps
every layer's activations of its batch alive at once, so its peak grows with the batch. Each
variant runs in a child process (MobileNetV2, random weights, `--images` random images at
`--size` px) and its peak resident set (`ru_maxrss`, read with `os.wait4`) is reported, with
the ratio of the one-call peak to the batched one.

Usage:
    python benchmarks/bench_encode_memory.py [--images 128] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CHILD = """
import sys
import numpy as np
from captioning.models.encoders import build_encoder
from captioning.training.batches import ENCODE_BATCH, encode_images

variant, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
encoder = build_encoder("mobilenet_v2", "none", size)
pixels = np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype("float32")
if variant == "built":
    features = np.zeros((count, 1280))
elif variant == "one call":
    features = np.asarray(encoder(pixels, training=False))
else:
    features = encode_images(encoder, list(range(count)),
                             lambda part: pixels[part[0]:part[-1] + 1])
assert features.shape == (count, 1280), features.shape
"""


def peak_gb(variant: str, images: int, size: int) -> float:
    """The child's peak resident set in GB."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, variant, str(images), str(size)])
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"the {variant!r} child failed")
    return usage.ru_maxrss / 1e6  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    from captioning.training.batches import ENCODE_BATCH

    peaks = {variant: peak_gb(variant, args.images, args.size)
             for variant in ("built", "one call", "encode_images")}
    print(f"MobileNetV2 at {args.size} px, {args.images} images:")
    print(f"- model and pixels only: {peaks['built']:.2f} GB")
    print(f"- one eager call: {peaks['one call']:.2f} GB")
    print(f"- encode_images, {ENCODE_BATCH} per call: {peaks['encode_images']:.2f} GB")
    print(f"one call / encode_images: {peaks['one call'] / peaks['encode_images']:.1f}x")


if __name__ == "__main__":
    main()
