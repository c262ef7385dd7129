"""Shared test helpers and settings (the session fixtures built from them are in conftest.py).

The fixtures: one tiny synthetic dataset, its feature cache and a tiny trained run.

They are session-scoped and built once (about 15 s on two CPU cores): 40 synthetic 64 px
images, a random-weight InceptionV3 cache at 75 px (pooled, float16; see `_pick_encoder`) and
a 2-epoch GRU decoder with 16 units. Tests that change files copy them first (`copy_run`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

def _pick_encoder():
    # A random-weight MobileNetV2 gives pooled features of about 1e-11, which float16 (the
    # cache's default dtype) flushes to zero: useless for tests. InceptionV3 at 75 px gives
    # usable random features; its first three blocks (`inception_v3_mixed2`, 4 MB) where
    # the package has them are faster still than the full model (88 MB).
    from captioning.models.encoders import ENCODER_SPECS

    return "inception_v3_mixed2" if "inception_v3_mixed2" in ENCODER_SPECS else "inception_v3"


ENCODER = _pick_encoder()
FEATURE_DIM = {"inception_v3_mixed2": 288, "inception_v3": 2048}[ENCODER]
IMAGE_SIZE = 75
# What every cache in these tests uses: fast and offline.
CACHE_SETTINGS = dict(encoder=ENCODER, weights="none", image_size=IMAGE_SIZE)


def tiny_config(**changes):
    """The tiny training settings of the shared run, with `changes`. Dropout is the light
    0.1 the tests were sized with: 16-unit models trained for an epoch or two need to say
    something, and 0.5 (the default, chosen on real photos) is for real data. No SCST
    phase unless a test asks for one (the default's, chosen on real photos, costs more than
    the cross-entropy epochs of a tiny run)."""
    from captioning.config import CaptionConfig

    settings = dict(epochs=2, units=16, embedding_dim=8, batch_size=16, val_images=8,
                    max_length=12, max_decode_length=12, dropout=0.1, scst_epochs=0)
    settings.update(changes)
    return CaptionConfig(**settings)


def read_table(dataset_dir: Path):
    from captioning.data.captions import read_captions

    return read_captions(dataset_dir / "captions.csv", format="csv")


def run_cli(*args, cwd=None, timeout=300):
    """Runs `python -m captioning ARGS` in a fresh process; returns (code, stdout, stderr)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONWARNINGS"] = "ignore"
    completed = subprocess.run(
        [sys.executable, "-m", "captioning", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or REPO_ROOT, env=env, timeout=timeout,
    )
    return completed.returncode, completed.stdout, completed.stderr


def run_python(code, *args, **popen):
    """Starts `python -c CODE ARGS` with pipes for stdout and stderr, without waiting for it
    (to kill it, for instance); returns the `subprocess.Popen`."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
