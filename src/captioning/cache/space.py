"""Disk space: what a cache takes, and the refusal to start what would not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from captioning.errors import CacheError


def estimate_bytes(n_images: int, feature_shape, dtype: str) -> int:
    """Bytes the features of `n_images` take on disk."""
    return int(n_images * int(np.prod(feature_shape)) * np.dtype(dtype).itemsize)


def weight_bytes(model) -> int:
    """About what a saved model file takes: its parameters' bytes."""
    return int(sum(int(np.prod(w.shape)) * np.dtype(str(w.dtype)).itemsize
                   for w in model.weights))


def space_needed(n_bytes: int) -> int:
    """Free bytes that writing `n_bytes` asks for (a margin for file system overhead)."""
    return int(n_bytes * 1.05) + 2**20


def check_space(out: Path, n_bytes: int, free: int, what: str = "the features") -> None:
    """Refuses to write `n_bytes` into `out` when only `free` bytes are free there."""
    if space_needed(n_bytes) > free:
        raise CacheError(
            f"{out}: {what} need {human_bytes(n_bytes)} but only {human_bytes(free)} is free; "
            "free some space, cache to a bigger disk (Google Drive in Colab), use --features "
            "pooled, or keep float16"
        )


def human_bytes(n: float) -> str:
    """`n` bytes for people: `"512 B"`, `"1.5 MiB"`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
