"""`build_cache`: a new cache, its resume after a kill, unreadable images, disk space."""

from __future__ import annotations

import collections
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pytest

from captioning.cache import FeatureCache, build_cache, load_features
from captioning.errors import CacheError, ConfigError
from tests.cache.helpers import (
    as_array,
    assert_close_f16,
    encode,
    logged,
    read_manifest,
    simulate_kill,
    warned,
)
from tests.helpers import CACHE_SETTINGS, ENCODER, FEATURE_DIM, run_python


def test_resume_after_a_kill_computes_only_the_missing_shards(
        sharded_cache, dataset, table, tmp_path, info):
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    _, before = as_array(work)
    manifest = simulate_kill(work, lost_shard=2)
    lost = work / "shards" / manifest["shards"][2]["file"]
    (work / "shards" / (lost.name + ".tmp")).write_bytes(b"half a shard")  # a stray temp file
    kept = {s["file"]: (work / "shards" / s["file"]).stat().st_mtime_ns
            for i, s in enumerate(manifest["shards"]) if i != 2}

    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)

    printed = logged(info)
    assert "Resuming" in printed and "4 of 5 shards" in printed
    # The bytes still to write: one shard of 8 float16 feature vectors.
    assert f"{8 * FEATURE_DIM * 2 / 1024:.1f} KiB still to write" in printed
    assert lost.is_file()
    assert list(work.glob("shards/*.tmp")) == []
    assert read_manifest(work)["complete"] is True
    for file, mtime in kept.items():
        assert (work / "shards" / file).stat().st_mtime_ns == mtime, f"{file} was recomputed"
    _, after = as_array(work)
    np.testing.assert_array_equal(after, before)
    pd.testing.assert_frame_equal(FeatureCache(work).captions(),
                                  FeatureCache(sharded_cache).captions())


def test_a_complete_cache_is_not_recomputed(sharded_cache, dataset, table, tmp_path, info):
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    stamp = (work / "manifest.json").stat().st_mtime_ns
    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)
    assert "already complete" in logged(info) and "Resuming" not in logged(info)
    assert (work / "manifest.json").stat().st_mtime_ns == stamp


def test_a_complete_cache_with_a_lost_shard_is_repaired(
        sharded_cache, dataset, table, tmp_path, info):
    # FeatureCache says "run the `cache` command again" when a shard is missing: doing so
    # must recompute it rather than report the cache complete.
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    _, before = as_array(work)
    lost = work / "shards" / read_manifest(work)["shards"][4]["file"]
    lost.unlink()
    with pytest.raises(CacheError, match="missing"):
        FeatureCache(work)
    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)
    assert "Resuming" in logged(info)
    np.testing.assert_array_equal(as_array(work)[1], before)


@pytest.mark.parametrize("change, named", [
    (dict(encoder="mobilenet_v2", image_size=64), "encoder"),
    (dict(image_size=96), "image_size"),
    (dict(features="grid"), "features"),
    (dict(dtype="float32"), "dtype"),
    ("fewer images", "image list"),
])
def test_resuming_with_other_settings_is_refused(cache, dataset, table, tmp_path, change,
                                                 named):
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    simulate_kill(work)
    settings = dict(CACHE_SETTINGS)
    if change == "fewer images":
        table = table[table["image"] != table["image"].iloc[0]]
    else:
        settings.update(change)
    with pytest.raises(CacheError, match=named) as caught:
        build_cache(table, dataset / "images", work, progress=False, **settings)
    assert str(work) in str(caught.value)
    assert not (work / "captions.csv").exists()  # nothing was (re)written


@pytest.mark.parametrize("change, message", [
    (dict(dtype="float64"), "dtype must be one of float16, float32, got 'float64'"),
    (dict(features="mean"), "features must be one of pooled, grid, got 'mean'"),
    (dict(workers=0), "workers must be a positive integer or None, got 0"),
    (dict(batch_size=2.5), "batch_size must be a positive integer, got 2.5"),
    (dict(progress="yes"), "progress must be True, False, 'bar' or 'log', got 'yes'"),
    (dict(shard=(2, 2)), "shard must be I/N with 0 <= I < N, got 2/2"),
    (dict(shard=3), "shard must be a pair (index, count), got 3"),
])
def test_bad_arguments_are_refused_before_anything_is_written(dataset, table, tmp_path,
                                                              change, message):
    settings = dict(CACHE_SETTINGS, progress=False)
    settings.update(change)
    with pytest.raises(ConfigError) as caught:
        build_cache(table, dataset / "images", tmp_path / "cache", **settings)
    assert str(caught.value) == message
    assert not (tmp_path / "cache").exists()


_NOT_A_PICTURE = "<html>this is not a picture</html>\n"


def _copy_images(dataset, table, folder, count) -> list:
    """Copies the dataset's first `count` images into `folder`; returns their names."""
    folder.mkdir()
    names = sorted(set(table["image"]))[:count]
    for name in names:
        shutil.copy(dataset / "images" / name, folder / name)
    return names


def test_bad_image_is_listed_in_failed_csv_and_its_captions_dropped(dataset, table, tmp_path,
                                                                    info):
    images = tmp_path / "images"
    good = _copy_images(dataset, table, images, 6)
    (images / "broken.jpg").write_text(_NOT_A_PICTURE)
    rows = table[table["image"].isin(good)]
    bad_rows = pd.DataFrame({"image": ["broken.jpg"] * 2, "caption": ["a red circle"] * 2,
                             "split": ["train"] * 2})
    mixed = pd.concat([rows, bad_rows], ignore_index=True)

    out = build_cache(mixed, images, tmp_path / "cache", progress=False, **CACHE_SETTINGS)

    failed = pd.read_csv(out / "failed.csv")
    assert list(failed["image"]) == ["broken.jpg"]
    assert "broken.jpg" in failed["reason"][0]
    manifest = read_manifest(out)
    assert manifest["complete"] is True and manifest["n_failed"] == 1
    assert warned(info) == [f"1 of 7 images could not be read and were skipped (listed in "
                            f"{out / 'failed.csv'})"]
    reader = FeatureCache(out)
    captions = reader.captions()
    assert "broken.jpg" not in set(captions["image"])
    assert len(captions) == len(rows)
    array = reader.gather(reader.rows(good))
    assert_close_f16(array, encode(out, images, good))


def test_strict_stops_at_an_unreadable_image_and_resumes_once_it_is_fixed(dataset, table,
                                                                           tmp_path):
    images = tmp_path / "images"
    names = _copy_images(dataset, table, images, 4)
    (images / names[-1]).write_text(_NOT_A_PICTURE)
    rows = table[table["image"].isin(names)]

    with pytest.raises(CacheError, match=f"{names[-1]}.*drop --strict"):
        build_cache(rows, images, tmp_path / "cache", progress=False, strict=True,
                    **CACHE_SETTINGS)
    assert not (tmp_path / "cache" / "failed.csv").exists()

    shutil.copy(dataset / "images" / names[-1], images / names[-1])
    out = build_cache(rows, images, tmp_path / "cache", progress=False, strict=True,
                      **CACHE_SETTINGS)
    assert read_manifest(out)["complete"] is True and read_manifest(out)["n_failed"] == 0
    assert len(FeatureCache(out).captions()) == len(rows)


def test_too_little_disk_space_is_refused_before_writing(dataset, table, tmp_path,
                                                         monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    out = tmp_path / "cache"
    with pytest.raises(CacheError, match="free"):
        build_cache(table, dataset / "images", out, progress=False, **CACHE_SETTINGS)
    assert not (out / "shards").exists()
    assert not (out / "manifest.json").exists()
    assert not (out / "encoder.hdf5").exists()


def test_a_float32_cache_logs_progress_and_its_throughput(dataset, table, tmp_path, info,
                                                          capsys):
    part = table[table["image"].isin(sorted(set(table["image"]))[:16])]
    out = build_cache(part, dataset / "images", tmp_path / "cache", dtype="float32",
                      shard_size=8, batch_size=4, workers=3, progress="log", **CACHE_SETTINGS)
    shard = np.load(out / "shards" / read_manifest(out)["shards"][0]["file"], mmap_mode="r")
    assert shard.dtype == np.float32 and shard.shape == (8, FEATURE_DIM)
    names, features = load_features(out)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.asarray(features), encode(out, dataset / "images", names),
                               rtol=1e-5, atol=1e-6)
    lines = [line for line in logged(info).splitlines() if line.startswith("caching: ")]
    # Every 10% of 16 images in batches of 4: after 4, 8, 12 and 16 images.
    assert [line.split()[1] for line in lines] == ["4/16", "8/16", "12/16", "16/16"]
    assert all("images/s" in line and "left" in line for line in lines)
    throughput = read_manifest(out)["throughput"]
    assert throughput["images"] == 16 and throughput["images_per_second"] > 0
    assert f"16 images in {throughput['seconds']:.1f} s" in logged(info)
    assert capsys.readouterr().out == ""  # the library logs; it prints nothing


def test_a_damaged_shard_is_named_when_read_and_recomputed_on_resume(
        sharded_cache, dataset, table, tmp_path, info):
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    _, before = as_array(work)
    shards = [work / "shards" / s["file"] for s in read_manifest(work)["shards"]]
    cut = shards[1].read_bytes()
    shards[1].write_bytes(cut[:len(cut) // 2])  # a shard cut short
    np.save(shards[3], np.zeros((8, FEATURE_DIM), np.float32))  # the wrong dtype
    with pytest.raises(CacheError, match=shards[1].name) as caught:
        FeatureCache(work)
    assert "cut short" in str(caught.value) and "again" in str(caught.value)
    shards[1].write_bytes(cut)
    with pytest.raises(CacheError, match=f"{shards[3].name}: holds float32"):
        load_features(work)
    shards[1].write_bytes(cut[:len(cut) // 2])

    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)

    printed = logged(info)
    assert "Resuming" in printed and "3 of 5 shards" in printed
    recomputed = [line.split(":")[0] for line in warned(info)]
    assert recomputed == [f"Recomputing {shards[1].name}", f"Recomputing {shards[3].name}"]
    np.testing.assert_array_equal(as_array(work)[1], before)


def test_a_full_disk_is_a_cache_error_and_the_same_command_resumes(
        sharded_cache, dataset, table, tmp_path, monkeypatch, info):
    import errno
    import io

    original = np.save
    calls = []

    def fill_the_disk(file, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # half of the third shard reaches the disk, then it is full
            buffer = io.BytesIO()
            original(buffer, array, *args, **kwargs)
            file.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", fill_the_disk)
    out = tmp_path / "cache"
    with pytest.raises(CacheError, match="free some space and run the same command again"):
        build_cache(table, dataset / "images", out, shard_size=8, batch_size=8,
                    progress=False, **CACHE_SETTINGS)
    assert list(out.glob("shards/*.tmp")) == []
    assert len(list(out.glob("shards/*.npy"))) == 2
    monkeypatch.setattr(np, "save", original)
    info.clear()

    build_cache(table, dataset / "images", out, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)

    assert "2 of 5 shards" in logged(info)
    np.testing.assert_array_equal(as_array(out)[1], as_array(sharded_cache)[1])


_CACHE_SCRIPT = r"""
import logging, sys, time
import keras
import captioning.data.images
from captioning.data.captions import read_captions
from captioning.cache import build_cache

logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
dataset, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
if delay:
    # Slow the image reads down so that the parent can kill us between two shards.
    original = captioning.data.images.load_and_resize
    def slow(path, size):
        time.sleep(delay)
        return original(path, size)
    captioning.data.images.load_and_resize = slow
keras.utils.set_random_seed(0)  # random weights, the same in every run of this script
table = read_captions(dataset + "/captions.csv", format="csv")
build_cache(table, dataset + "/images", out, encoder=sys.argv[4], weights="none",
            image_size=75, shard_size=8, batch_size=8, progress=False)
"""


def _cache_process(dataset, out, delay):
    return run_python(_CACHE_SCRIPT, dataset, out, delay, ENCODER)


@pytest.mark.slow
def test_a_real_kill_then_rerun_equals_an_uninterrupted_cache(tmp_path):
    from captioning.data.synthetic import make_dataset

    data = tmp_path / "data"
    make_dataset(data, n_images=120, seed=3, image_size=64, format="csv")
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    uninterrupted = _cache_process(data, reference, 0)  # runs alongside

    process = _cache_process(data, killed, 0.03)
    deadline = time.monotonic() + 120
    while not list((killed / "shards").glob("*.npy")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no shard was written in 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    manifest = read_manifest(killed)
    assert manifest["complete"] is False
    done = [s for s in manifest["shards"] if (killed / "shards" / s["file"]).exists()]
    assert 1 <= len(done) < len(manifest["shards"]) == 15

    rerun = _cache_process(data, killed, 0)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "INFO: Resuming the cache" in err
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err

    assert read_manifest(killed)["complete"] is True
    names_killed, killed_array = as_array(killed)
    names_reference, reference_array = as_array(reference)
    assert names_killed == names_reference
    # The same seed gives the same random encoder, so the features must agree exactly.
    np.testing.assert_array_equal(killed_array, reference_array)
    assert list(killed.glob("shards/*.tmp")) == []


_HANG_SCRIPT = r"""
import io, logging, sys, time
import numpy as np
from captioning.data.captions import read_captions
from captioning.cache import build_cache

logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
dataset, out, encoder, hang = sys.argv[1:5]
if hang == "1":
    original, calls = np.save, []
    def half_then_hang(file, array, *args, **kwargs):
        # The third shard: half of it reaches the temporary file, then the parent kills us.
        calls.append(1)
        if len(calls) < 3:
            return original(file, array, *args, **kwargs)
        buffer = io.BytesIO()
        original(buffer, array, *args, **kwargs)
        file.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        file.flush()
        time.sleep(600)
    np.save = half_then_hang
table = read_captions(dataset + "/captions.csv", format="csv")
build_cache(table, dataset + "/images", out, encoder=encoder, weights="none", image_size=75,
            shard_size=8, batch_size=8, progress=False)
"""


@pytest.mark.slow
def test_a_kill_while_a_shard_is_written_then_rerun_equals_an_uninterrupted_cache(
        dataset, sharded_cache, tmp_path):
    out = tmp_path / "cache"
    process = run_python(_HANG_SCRIPT, dataset, out, ENCODER, 1)
    deadline = time.monotonic() + 120
    third = out / "shards" / "features-00002-of-00005.npy.tmp"
    while not (third.exists() and third.stat().st_size > 0):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no shard was being written after 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert len(list(out.glob("shards/*.npy"))) == 2

    rerun = run_python(_HANG_SCRIPT, dataset, out, ENCODER, 0)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "INFO: Resuming the cache" in err and "2 of 5 shards" in err
    assert list(out.glob("shards/*.tmp")) == []
    names, features = as_array(out)
    reference_names, reference = as_array(sharded_cache)
    assert names == reference_names
    np.testing.assert_array_equal(features, reference)
