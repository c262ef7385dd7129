"""Fixtures: running servers (the shipped demo release; a tiny attention release)."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import REPO_ROOT
from tests.serve.running import RunningServer

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.jpg"))
# The demo server's limits: small, so the tests can pass them with small files.
MAX_UPLOAD_MB = 1
MAX_PIXELS = 200_000


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shipped demo release, served with small upload and pixel limits."""
    running = RunningServer("--max-upload-mb", MAX_UPLOAD_MB, "--max-pixels", MAX_PIXELS,
                            "--max-batch", 8, "--max-wait-ms", 10,
                            tmpdir=tmp_path_factory.mktemp("server-tmp"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def attention_release(tmp_path_factory, dataset, table):
    """A tiny release of an attention model (grid features), trained for one epoch."""
    from captioning.cache import build_cache
    from captioning.training.train import train
    from tests.helpers import CACHE_SETTINGS, tiny_config

    cache = build_cache(table, dataset / "images", tmp_path_factory.mktemp("grid") / "cache",
                        features="grid", progress=False, **CACHE_SETTINGS)
    config = tiny_config(conditioning="attention", epochs=3, units=16, embedding_dim=8,
                         attention_units=8, val_images=4, learning_rate=2e-2,
                         lr_schedule="constant")
    result = train(cache, tmp_path_factory.mktemp("attention") / "run", config,
                   progress=False)
    shutil.rmtree(cache, ignore_errors=True)
    return result.run_dir


@pytest.fixture(scope="session")
def attention_server(tmp_path_factory, attention_release):
    running = RunningServer("--release", attention_release, "--warm-beams", 1,
                            tmpdir=tmp_path_factory.mktemp("attention-tmp"))
    yield running
    running.stop()
