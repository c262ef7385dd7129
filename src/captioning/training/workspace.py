"""The notebooks' default folders under one work folder: a cache per dataset and encoder
setting, a run per decoder setting, and the newest release.

```
WORK_DIR/
  caches.json                                    the caches 01 used, the newest last
  flickr8k-8091/                                 <dataset>-<images>
    inception_v3-299px-imagenet-pooled-float16/  <encoder>-<size>-<weights>-<features>-<dtype>
      cache/                                     01_cache_features writes the features here
      run-gru-init_state-1f3a9c/                 02_train: <cell>-<conditioning>-<settings>
```

Changing `DATASET`, `N_IMAGES` or an encoder setting in 01 gives another cache folder, and
changing a decoder setting in 02 another run folder (the last part is a digest of the
settings a run cannot be resumed with), so no run of a notebook finds a folder made
differently. `02_train` trains on the cache 01 used last and `03_predict` captions with the
release written last, unless they are given folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.errors import CacheError, ConfigError
from captioning.release.manifest import DEFAULT_RELEASE, MANIFEST_FILE, read_manifest
from captioning.training.run_state import RESUMABLE
from captioning.utils.files import atomic_write_json

__all__ = ["RECORD_FILE", "cache_dataset", "cache_folder", "last_cache", "last_release",
           "pick_release", "run_folder"]

logger = logging.getLogger(__name__)

RECORD_FILE = "caches.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_folder(work_dir, dataset: str, table, *, encoder: str, weights, image_size,
                 features: str, dtype: str, cache_dir=None) -> Path:
    """The cache folder of notebook 01, remembered as the newest cache of `work_dir`.

    Args:
        work_dir: the notebooks' work folder (`WORK_DIR`).
        dataset: the dataset's name (`DATASET`: `"synthetic"`, `"flickr8k"`, ...).
        table: the captions table to cache (its number of images names the folder too).
        encoder, weights, image_size, features, dtype: the encoder settings of the cache.
        cache_dir: a folder chosen by the user (`CACHE_DIR`), used as it is; None for the
            default `work_dir/<dataset>-<images>/<encoder setting>/cache`.

    Returns:
        The cache folder. `work_dir/caches.json` records it with its dataset.
    """
    if cache_dir is None:
        from captioning.models.encoders import encoder_spec

        size = image_size or encoder_spec(encoder).default_size
        weights_name = Path(str(weights)).stem if weights not in (None, "none") else "none"
        setting = f"{encoder}-{size}px-{weights_name}-{features}-{dtype}"
        images = table["image"].nunique()
        cache_dir = Path(work_dir) / _safe(f"{dataset}-{images}") / _safe(setting) / "cache"
    cache_dir = Path(cache_dir)
    record = _read_record(work_dir)
    record.setdefault("datasets", {})[str(cache_dir.resolve())] = str(dataset)
    record["latest"] = str(cache_dir.resolve())
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(work_dir) / RECORD_FILE, record, error=CacheError)
    logger.info("The cache goes to %s (02_train reads the newest cache by default).",
                cache_dir)
    return cache_dir


def last_cache(work_dir) -> Path:
    """The cache folder notebook 01 used last under `work_dir`.

    Raises:
        CacheError: 01 has not run with this work folder (or its cache folder is gone).
    """
    latest = _read_record(work_dir).get("latest")
    if not latest or not Path(latest).is_dir():
        where = f" ({latest} is gone)" if latest else ""
        raise CacheError(f"no cache made by 01_cache_features under {work_dir}{where}; run "
                         "01_cache_features first, or set CACHE_DIR to a cache folder")
    return Path(latest)


def cache_dataset(work_dir, cache_dir) -> str | None:
    """The dataset name notebook 01 recorded for `cache_dir`, or None."""
    datasets = _read_record(work_dir).get("datasets", {})
    return datasets.get(str(Path(cache_dir).resolve()))


def run_folder(cache_dir, config: CaptionConfig) -> Path:
    """The default run folder of notebook 02: beside the cache, one per decoder setting.

    Its name is `run-<cell>-<conditioning>-<digest>`, the digest of the settings that a run
    cannot be resumed with (more `epochs`, another `beam`, ... keep the folder).
    """
    if not isinstance(config, CaptionConfig):
        raise ConfigError(f"config must be a CaptionConfig, got {type(config).__name__}")
    fixed = {key: value for key, value in config.to_dict().items() if key not in RESUMABLE}
    digest = hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:6]
    return Path(cache_dir).parent / f"run-{config.cell}-{config.conditioning}-{digest}"


def last_release(work_dir) -> Path | None:
    """The run folder under `work_dir` whose release was written last, or None."""
    found = []
    for manifest in Path(work_dir).glob(f"**/{MANIFEST_FILE}"):
        if (manifest.parent / "Decoder.hdf5").is_file():
            found.append((manifest.stat().st_mtime, str(manifest.parent)))
    return Path(max(found)[1]) if found else None


def pick_release(release, work_dir) -> Path:
    """The release notebook 03 captions with, said in an INFO line: `release` when given,
    else the one 02 wrote last under `work_dir`, else the shipped demo release."""
    chosen = release if release is not None else last_release(work_dir)
    path, manifest = read_manifest(chosen)
    if Path(path).resolve() == DEFAULT_RELEASE.resolve():
        logger.info("Captioning with the shipped demo release (%s): it knows the synthetic "
                    "shapes only. Train on your data with 02_train, or set RELEASE.", path)
    else:
        dataset = manifest.get("dataset") or "unknown data"
        logger.info("Captioning with the release in %s (trained on %s%s).", path.parent,
                    dataset, "" if release is not None else "; the newest one under "
                    f"{work_dir}, set RELEASE for another")
    return path


def _read_record(work_dir) -> dict:
    try:
        record = json.loads((Path(work_dir) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("_") or "dataset"
