"""Tests for `captioning.training.workspace`: the notebooks' default folders."""

import json
import os
import shutil

import pandas as pd
import pytest

from captioning.config import CaptionConfig
from captioning.errors import CacheError
from captioning.release.manifest import DEFAULT_RELEASE
from captioning.training.workspace import (
    cache_dataset,
    cache_folder,
    last_cache,
    last_release,
    pick_release,
    run_folder,
)

SETTING = "inception_v3-299px-imagenet-pooled-float16"
ENCODER = dict(encoder="inception_v3", weights="imagenet", image_size=None,
               features="pooled", dtype="float16")


def _table(n):
    return pd.DataFrame({"image": [f"{i}.jpg" for i in range(n) for _ in range(2)],
                         "caption": "a b", "split": "train"})


def test_each_dataset_and_encoder_setting_has_its_own_cache(tmp_path):
    work = tmp_path / "work"
    synthetic = cache_folder(work, "synthetic", _table(2000), **ENCODER)
    assert synthetic == work / "synthetic-2000" / SETTING / "cache"
    flickr = cache_folder(work, "flickr8k", _table(8091), **ENCODER)
    assert flickr == work / "flickr8k-8091" / SETTING / "cache"
    grid = cache_folder(work, "flickr8k", _table(8091), **{**ENCODER, "features": "grid",
                                                           "image_size": 299})
    assert grid.parent.name == "inception_v3-299px-imagenet-grid-float16"
    fewer = cache_folder(work, "synthetic", _table(500), **ENCODER)
    weights = cache_folder(work, "own", _table(3), **{**ENCODER, "weights": "/w/my weights.h5"})
    assert weights.parent.parent.name == "own-3"
    assert weights.parent.name == "inception_v3-299px-my_weights-pooled-float16"
    assert len({synthetic, flickr, grid, fewer, weights}) == 5


def test_02_finds_the_cache_01_used_last_and_its_dataset(tmp_path):
    work = tmp_path / "work"
    with pytest.raises(CacheError, match="run 01_cache_features first, or set CACHE_DIR"):
        last_cache(work)
    first = cache_folder(work, "synthetic", _table(40), **ENCODER)
    mine = cache_folder(work, "own", _table(10), **ENCODER, cache_dir=tmp_path / "mine")
    first.mkdir(parents=True)
    mine.mkdir()
    assert last_cache(work) == mine.resolve()
    cache_folder(work, "synthetic", _table(40), **ENCODER)  # 01 run again on the first
    assert last_cache(work) == first.resolve()
    assert cache_dataset(work, first) == "synthetic" and cache_dataset(work, mine) == "own"
    assert cache_dataset(work, tmp_path / "elsewhere") is None
    assert json.loads((work / "caches.json").read_text())["latest"] == str(first.resolve())


def test_a_run_folder_per_decoder_setting(tmp_path):
    cache = tmp_path / "flickr8k-8091" / "setting" / "cache"
    base = run_folder(cache, CaptionConfig())
    assert base.parent == cache.parent and base.name.startswith("run-gru-init_state-")
    assert run_folder(cache, CaptionConfig(epochs=30, beam=3)) == base  # resumable settings
    assert run_folder(cache, CaptionConfig(units=512)) != base
    assert run_folder(cache, CaptionConfig(cell="lstm")).name.startswith("run-lstm-init_state-")


def _fake_release(folder, mtime):
    folder.mkdir(parents=True)
    manifest = json.loads(DEFAULT_RELEASE.read_text())
    manifest["dataset"] = "flickr8k"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "Decoder.hdf5").write_bytes(b"")
    os.utime(folder / "manifest.json", (mtime, mtime))


def test_03_uses_the_release_02_wrote_last_and_says_so(tmp_path, caplog):
    work = tmp_path / "work"
    work.mkdir()
    assert last_release(work) is None
    with caplog.at_level("INFO", logger="captioning"):
        assert pick_release(None, work) == DEFAULT_RELEASE
    assert "Captioning with the shipped demo release" in caplog.text

    (work / "d" / "setting" / "cache").mkdir(parents=True)
    shutil.copy(DEFAULT_RELEASE, work / "d" / "setting" / "cache" / "manifest.json")  # no model
    _fake_release(work / "d" / "setting" / "run-gru-a", 1_000_000)
    _fake_release(work / "d" / "setting" / "run-lstm-b", 2_000_000)
    assert last_release(work) == work / "d" / "setting" / "run-lstm-b"
    caplog.clear()
    with caplog.at_level("INFO", logger="captioning"):
        assert pick_release(None, work) == work / "d" / "setting" / "run-lstm-b" / "manifest.json"
    assert (f"Captioning with the release in {work / 'd' / 'setting' / 'run-lstm-b'} (trained "
            "on flickr8k; the newest one under") in caplog.text

    chosen = work / "d" / "setting" / "run-gru-a"
    assert pick_release(str(chosen), work) == chosen / "manifest.json"

