"""Joining the slices of a sharded cache (`cache --shard I/N`, then `cache --merge`)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from captioning.cache.identity import (
    ENCODER_FILE,
    MANIFEST_FILE,
    SLICE_KEYS,
    describe_differences,
    read_manifest,
    write_manifest,
)
from captioning.cache.shards import (
    SHARDS_DIR,
    collect_failed,
    copy_file,
    entry_problem,
    failed_sidecar,
    remove_temporary,
    write_captions,
)
from captioning.cache.space import check_space, human_bytes
from captioning.errors import CacheError
from captioning.utils.files import sha256_file

logger = logging.getLogger(__name__)


def merge_caches(slices, out_dir) -> Path:
    """Joins finished slices of a sharded cache (`build_cache(..., shard=(i, n))`).

    Every slice must come from the same image list, encoder settings and encoder weights;
    together they must hold every shard. Shard files are copied, never moved. A merge that
    was interrupted is resumed: shards already copied whole are kept.

    Args:
        slices: the slice folders.
        out_dir: the merged cache folder: new, empty, or an unfinished merge of the same
            slices.

    Returns:
        The merged cache folder.
    """
    slices = [Path(s) for s in slices]
    if not slices:
        raise CacheError("give the slice folders to merge")
    out = Path(out_dir)
    first = _read_slices(slices, out)
    merged = {k: v for k, v in first.items() if k not in ("slice", "throughput", "n_failed")}
    merged.update({"complete": False, "merged_from": len(slices)})
    resuming = _check_target(out, merged)
    copies = _shards_to_copy(slices, first, out, resuming)
    need = sum(source.stat().st_size for source, _ in copies)
    need += (slices[0] / ENCODER_FILE).stat().st_size
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    remove_temporary(out)
    free = shutil.disk_usage(out).free
    logger.info("Merging %d slices into %s: %d of %d shards to copy, %s to write, %s free.",
                len(slices), out, len(copies), len(first["shards"]), human_bytes(need),
                human_bytes(free))
    check_space(out, need, free, what="the merged shards")
    write_manifest(out, merged)
    for source, target in copies:
        copy_file(failed_sidecar(source), failed_sidecar(target))
        copy_file(source, target)
    for name in ("images.txt", ENCODER_FILE):
        copy_file(slices[0] / name, out / name)
    merged["encoder_sha256"] = sha256_file(out / ENCODER_FILE)
    failed = collect_failed(out, merged)
    table = pd.read_csv(slices[0] / "captions.all.csv", dtype=str, keep_default_na=False)
    write_captions(out, table, failed)
    merged.update({"complete": True, "n_failed": len(failed)})
    write_manifest(out, merged)
    logger.info("Merged %d slices into %s (%d images).", len(slices), out, merged["n_images"])
    return out


def _read_slices(slices: list, out: Path) -> dict:
    """Checks that the folders are finished slices of one cache; returns the first manifest."""
    manifests = []
    for path in slices:
        if out.exists() and path.exists() and os.path.samefile(path, out):
            raise CacheError(f"{out} is one of the slices being merged; merge into a new "
                             "folder (another --out)")
    for path in slices:
        manifest = read_manifest(path)
        if not manifest.get("slice"):
            raise CacheError(f"{path} is a whole cache, not a slice (it was made without "
                             "--shard); merge only folders written by `cache --shard I/N`")
        index, count = manifest["slice"]
        if not manifest.get("complete") or not (path / "captions.all.csv").exists():
            raise CacheError(f"{path} is an unfinished slice {index}/{count}; run its "
                             f"`cache --shard {index}/{count}` command again to finish it, "
                             "then merge")
        manifests.append(manifest)
    first = manifests[0]
    for path, manifest in zip(slices[1:], manifests[1:]):
        differences = describe_differences(manifest, first, keys=SLICE_KEYS,
                                           found_name=path.name, expected_name=slices[0].name)
        if manifest["slice"][1] != first["slice"][1]:
            differences.append(f"slice count: {path.name} {manifest['slice'][1]} vs "
                               f"{slices[0].name} {first['slice'][1]}")
        if differences:
            raise CacheError(f"{path} was made differently from {slices[0]} "
                             f"({'; '.join(differences)}); slices must come from the "
                             "same `cache --shard I/N` command")
    return first


def _check_target(out: Path, merged: dict) -> bool:
    """Refuses a target folder that holds something else; True if it is a merge to resume."""
    if (out / MANIFEST_FILE).exists():
        existing = read_manifest(out)
        differences = describe_differences(existing, merged, keys=SLICE_KEYS,
                                           found_name=out.name, expected_name="slices")
        if existing.get("slice"):
            differences.append(f"{out.name} is slice {existing['slice'][0]}/"
                               f"{existing['slice'][1]} itself")
        if differences:
            raise CacheError(f"{out} already holds a cache made differently from the slices "
                             f"({'; '.join(differences)}); merge into a new folder or delete "
                             f"{out}")
        return True
    if (out / SHARDS_DIR).is_dir() and any((out / SHARDS_DIR).iterdir()):
        raise CacheError(f"{out / SHARDS_DIR} already holds files but {out} has no "
                         f"{MANIFEST_FILE}; merge into a new or empty folder")
    return False


def _shards_to_copy(slices: list, manifest: dict, out: Path, resuming: bool) -> list:
    """`(source, target)` of every shard the merged folder does not hold already."""
    copies = []
    for entry in manifest["shards"]:
        source = next((s / SHARDS_DIR / entry["file"] for s in slices
                       if entry_problem(s, entry, manifest) is None), None)
        if source is None:
            raise CacheError(f"no slice holds {entry['file']} whole; finish every slice (run "
                             "its `cache --shard I/N` command again) before merging")
        target = out / SHARDS_DIR / entry["file"]
        if not (resuming and _same_file_bytes(source, target)):
            copies.append((source, target))
    return copies


def _same_file_bytes(a: Path, b: Path, chunk: int = 2**20) -> bool:
    """Whether two files exist and hold the same bytes."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as left, open(b, "rb") as right:
            while True:
                block = left.read(chunk)
                if block != right.read(chunk):
                    return False
                if not block:
                    return True
    except FileNotFoundError:
        return False
