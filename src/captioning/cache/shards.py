"""The files of a cache folder beside its manifest: shards, failed images, captions.

Each shard `shards/features-IIIII-of-NNNNN.npy` holds the features of a run of rows, with a
sidecar `.failed.json` naming the images of those rows that could not be read. Every file
is written to a temporary name, flushed and renamed, and a shard's `.npy` header (shape,
dtype, length) is checked before it is trusted, so a half-written file is never read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib import format as npy_format

from captioning.cache.identity import RESUME
from captioning.errors import CacheError
from captioning.utils.files import atomic_write, atomic_write_text

SHARDS_DIR = "shards"


def shard_name(index: int, count: int) -> str:
    """The file name of shard `index` of `count`."""
    return f"features-{index:05d}-of-{count:05d}.npy"


def shard_table(n_images: int, shard_size: int) -> list:
    """The manifest's shard entries: `file`, and the rows `start` to `stop` it holds."""
    count = -(-n_images // shard_size)
    return [{"file": shard_name(i, count), "start": i * shard_size,
             "stop": min((i + 1) * shard_size, n_images)} for i in range(count)]


def own_shards(manifest: dict) -> list:
    """The shards a cache folder computes: all of them, or its slice's."""
    part = manifest.get("slice")
    return [s for i, s in enumerate(manifest["shards"])
            if part is None or i % part[1] == part[0]]


def shard_problem(path: Path, rows: int, feature_shape, dtype) -> str | None:
    """What is wrong with a shard file, from its `.npy` header and size; None if nothing."""
    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            read_header = {(1, 0): npy_format.read_array_header_1_0,
                           (2, 0): npy_format.read_array_header_2_0}.get(version)
            if read_header is None:
                return f"unknown .npy version {version}"
            shape, fortran, found = read_header(handle)
            offset = handle.tell()
        length = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as error:
        return f"not a whole .npy file ({' '.join(str(error).split())[:120]})"
    expected = (rows, *map(int, feature_shape))
    if tuple(shape) != expected or found != np.dtype(dtype) or fortran:
        return (f"holds {found} {'x'.join(map(str, shape))}, expected {np.dtype(dtype)} "
                f"{'x'.join(map(str, expected))}")
    want = offset + int(np.prod(expected)) * np.dtype(dtype).itemsize
    if length != want:
        return f"{length} bytes instead of {want} (cut short)"
    return None


def entry_problem(cache_dir: Path, entry: dict, manifest: dict) -> str | None:
    """`shard_problem` of the shard a manifest entry names."""
    return shard_problem(Path(cache_dir) / SHARDS_DIR / entry["file"],
                         entry["stop"] - entry["start"], manifest["feature_shape"],
                         manifest["dtype"])


def failed_sidecar(shard: Path) -> Path:
    """The `.failed.json` file beside a shard."""
    return shard.with_name(shard.name[:-4] + ".failed.json")


def write_file(path: Path, write, suffix: str = ".tmp") -> None:
    """`atomic_write` that fails with a `CacheError` telling the user to resume."""
    atomic_write(path, write, error=CacheError, again=RESUME, suffix=suffix)


def copy_file(source: Path, target: Path) -> None:
    """Copies `source` to `target` whole or not at all."""
    write_file(target, lambda tmp: shutil.copyfile(source, tmp))


def write_shard(cache_dir: Path, entry: dict, data: np.ndarray, failed: dict) -> None:
    """Writes a shard's features and its failed images (name: reason), each atomically.

    The sidecar goes first, so that a shard that is whole always has its own.
    """
    path = Path(cache_dir) / SHARDS_DIR / entry["file"]
    atomic_write_text(failed_sidecar(path), json.dumps(failed), error=CacheError,
                      again=RESUME)
    write_file(path, lambda tmp: _save_npy(tmp, data))


def _save_npy(path: Path, data: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would add ".npy" to the name
        np.save(handle, data)


def remove_temporary(cache_dir: Path) -> None:
    """Removes the temporary shard files a killed run left behind."""
    for stale in (Path(cache_dir) / SHARDS_DIR).glob("*.tmp"):
        stale.unlink()


def collect_failed(cache_dir: Path, manifest: dict) -> dict:
    """The images (name: reason) that could not be read, from every shard's sidecar."""
    failed = {}
    for entry in manifest["shards"]:
        sidecar = failed_sidecar(Path(cache_dir) / SHARDS_DIR / entry["file"])
        if sidecar.exists():
            failed.update(json.loads(sidecar.read_text()))
    return failed


def write_captions(cache_dir: Path, table: pd.DataFrame, failed: dict) -> None:
    """Writes `captions.csv` (the rows of `table` whose image was read) and `failed.csv`."""
    cache_dir = Path(cache_dir)
    kept = table[~table["image"].astype(str).isin(set(failed))]
    write_file(cache_dir / "captions.csv", lambda tmp: kept.to_csv(tmp, index=False))
    failed_table = pd.DataFrame(sorted(failed.items()), columns=["image", "reason"])
    write_file(cache_dir / "failed.csv", lambda tmp: failed_table.to_csv(tmp, index=False))
