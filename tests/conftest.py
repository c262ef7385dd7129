"""Session fixtures: the tiny synthetic dataset, its cache and run (see tests/helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import CACHE_SETTINGS, read_table, run_cli, tiny_config


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """A 40-image synthetic dataset (CSV format): `captions.csv` and `images/`."""
    from captioning.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("dataset")
    make_dataset(root, n_images=40, seed=1, image_size=64, format="csv")
    return root


@pytest.fixture(scope="session")
def table(dataset):
    return read_table(dataset)


@pytest.fixture(scope="session")
def cache(tmp_path_factory, dataset, table) -> Path:
    """A finished feature cache of `dataset` (one shard)."""
    from captioning.cache import build_cache

    out = tmp_path_factory.mktemp("cache") / "cache"
    return build_cache(table, dataset / "images", out, progress=False, **CACHE_SETTINGS)


@pytest.fixture(scope="session")
def run(tmp_path_factory, cache) -> Path:
    """A finished 2-epoch training run on `cache`, holding its release."""
    from captioning.training.train import train

    out = tmp_path_factory.mktemp("run") / "run"
    train(cache, out, tiny_config(), progress=False, dataset="synthetic-test")
    return out


@pytest.fixture(scope="session")
def captioner(run):
    from captioning.inference.captioner import Captioner

    return Captioner.load(run)


@pytest.fixture
def copy_run(run, tmp_path):
    """A private copy of the shared run folder (for tests that change files)."""
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


@pytest.fixture
def bad_image(tmp_path) -> Path:
    """A text file saved under an image name."""
    path = tmp_path / "not_a_picture.jpg"
    path.write_text("this is not a JPEG, just some text\n")
    return path


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """`run_cli` as a fixture, for tests that prefer fixtures to imports."""
    return run_cli
