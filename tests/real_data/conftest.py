"""Real-data tests: the project's shared data folder (`../shared/data`, see its README).

Every test here is marked `real_data` and is skipped, with the folders it looked in, when
the shared data is absent; CI has it. Nothing from it is copied into the repository.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

DATA_CANDIDATES = (REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data"))
VI_PHOTOS = "vi_photos"
WEIGHTS = "weights/mobilenet_v2_1.0_224_notop.weights.h5"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_data: needs the shared data folder (../shared/data); skipped without it")


def find_shared_data() -> Path | None:
    """The shared data folder holding `vi_photos/captions.csv`, or None."""
    for candidate in DATA_CANDIDATES:
        if (candidate / VI_PHOTOS / "captions.csv").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = find_shared_data()
    if folder is None:
        looked = " and ".join(str(path) for path in DATA_CANDIDATES)
        pytest.skip(f"real data absent: no vi_photos/captions.csv in {looked}")
    return folder


@pytest.fixture(scope="session")
def vi_rows(shared_data) -> list[dict]:
    """Every row of `vi_photos/captions.csv` (image, caption, split), as read by `csv`."""
    with (shared_data / VI_PHOTOS / "captions.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="session")
def vi_references(vi_rows) -> dict[str, dict[str, list[str]]]:
    """`{split: {image: [captions]}}` of vi_photos."""
    splits: dict[str, dict[str, list[str]]] = {}
    for row in vi_rows:
        splits.setdefault(row["split"], {}).setdefault(row["image"], []).append(row["caption"])
    return splits


@pytest.fixture(scope="session")
def vi_images(shared_data) -> Path:
    return shared_data / VI_PHOTOS / "images"


@pytest.fixture(scope="session")
def real_weights(shared_data) -> Path:
    path = shared_data / WEIGHTS
    if not path.is_file():
        pytest.skip(f"real data absent: no {path}")
    return path
