"""Tests for `captioning.features`: the resumable on-disk feature cache."""

from __future__ import annotations

import collections
import json
import shutil
import signal
import time

import numpy as np
import pandas as pd
import pytest

from tests.helpers import CACHE_SETTINGS, ENCODER, FEATURE_DIM, IMAGE_SIZE, run_python
from captioning.errors import CacheError
from captioning.cache.build import (
    FeatureCache,
    build_cache,
    describe_differences,
    images_fingerprint,
    load_features,
    sha256_file,
)

# float16 keeps 11 significant bits: a relative step of about 1e-3.
F16_RTOL = 2e-3


def _manifest(cache_dir):
    return json.loads((cache_dir / "manifest.json").read_text())


def _write_manifest(cache_dir, manifest):
    (cache_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _array(cache_dir):
    names, features = load_features(cache_dir)
    return names, np.asarray(features)


def _encode(cache_dir, image_dir, names):
    """What the cache's own saved encoder computes for the images, float32."""
    import keras

    from captioning.data.images import load_and_resize

    model = keras.saving.load_model(cache_dir / "encoder.hdf5", safe_mode=True, compile=False)
    pixels = np.stack([load_and_resize(image_dir / name, IMAGE_SIZE) for name in names])
    return np.asarray(model.predict_on_batch(pixels), np.float32)


def _assert_close_f16(actual, expected):
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=F16_RTOL, atol=1e-3 * scale)


def _simulate_kill(cache_dir, lost_shard=None):
    """Puts a finished cache back into the state a killed `cache` run leaves: not complete,
    no captions.csv/failed.csv, optionally one shard never written."""
    manifest = _manifest(cache_dir)
    manifest["complete"] = False
    manifest.pop("n_failed", None)
    _write_manifest(cache_dir, manifest)
    (cache_dir / "captions.csv").unlink()
    (cache_dir / "failed.csv").unlink()
    if lost_shard is not None:
        (cache_dir / "shards" / manifest["shards"][lost_shard]["file"]).unlink()
    return manifest


@pytest.fixture(scope="module")
def sharded_cache(tmp_path_factory, dataset, table):
    """The dataset cached in five shards of 8 images."""
    out = tmp_path_factory.mktemp("sharded") / "cache"
    return build_cache(table, dataset / "images", out, shard_size=8, batch_size=8,
                       progress=False, **CACHE_SETTINGS)


def test_manifest_records_how_the_cache_was_made(cache, table):
    manifest = _manifest(cache)
    assert manifest["format"] == "captioning.features"
    assert manifest["encoder"] == ENCODER
    assert manifest["weights"] == "none"
    assert manifest["image_size"] == IMAGE_SIZE
    assert manifest["features"] == "pooled"
    assert manifest["dtype"] == "float16"
    assert manifest["feature_shape"] == [FEATURE_DIM]
    assert manifest["n_images"] == 40
    assert manifest["complete"] is True
    assert manifest["n_failed"] == 0
    assert manifest["images_fingerprint"] == images_fingerprint(table["image"])
    assert manifest["encoder_sha256"] == sha256_file(cache / "encoder.hdf5")
    for name in ("images.txt", "captions.csv", "failed.csv", "encoder.hdf5"):
        assert (cache / name).is_file(), name
    shard = np.load(cache / "shards" / manifest["shards"][0]["file"], mmap_mode="r")
    assert shard.dtype == np.float16 and shard.shape == (40, FEATURE_DIM)


def test_load_features_equal_the_saved_encoder_on_the_images(cache, dataset, table):
    names, features = load_features(cache)
    assert names == sorted(set(table["image"]))
    assert features.shape == (40, FEATURE_DIM) and len(features) == 40
    array = np.asarray(features)
    assert array.dtype == np.float32
    assert np.isfinite(array).all() and array.std() > 0
    _assert_close_f16(array, _encode(cache, dataset / "images", names))
    # Lazy indexing reads the same rows.
    np.testing.assert_array_equal(features[3], array[3])
    np.testing.assert_array_equal(features[5:17:3], array[5:17:3])


def test_captions_csv_holds_the_cached_captions(cache, table):
    captions = FeatureCache(cache).captions()
    assert list(captions.columns) == ["image", "caption", "split"]
    assert len(captions) == len(table)
    assert set(captions["split"]) == {"train", "val", "test"}


def test_several_shards_read_back_in_order(sharded_cache, cache, dataset):
    manifest = _manifest(sharded_cache)
    shards = manifest["shards"]
    assert len(shards) == 5
    assert [(s["start"], s["stop"]) for s in shards] == [(i, i + 8) for i in range(0, 40, 8)]
    names, array = _array(sharded_cache)
    assert names == _array(cache)[0]
    _assert_close_f16(array, _encode(sharded_cache, dataset / "images", names))
    for shard in shards:
        stored = np.load(sharded_cache / "shards" / shard["file"])
        np.testing.assert_array_equal(stored.astype(np.float32), array[shard["start"]:shard["stop"]])
    # Rows gathered across shards in any order come back in the order asked for.
    reader = FeatureCache(sharded_cache)
    rows = np.random.default_rng(0).permutation(40)[:23]
    np.testing.assert_array_equal(reader.gather(rows), array[rows])
    np.testing.assert_array_equal(reader.gather(reader.rows([names[9], names[2]])),
                                  array[[9, 2]])


def test_resume_after_a_kill_computes_only_the_missing_shards(
        sharded_cache, dataset, table, tmp_path, capsys):
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    _, before = _array(work)
    manifest = _simulate_kill(work, lost_shard=2)
    lost = work / "shards" / manifest["shards"][2]["file"]
    (work / "shards" / (lost.name + ".tmp")).write_bytes(b"half a shard")  # a stray temp file
    kept = {s["file"]: (work / "shards" / s["file"]).stat().st_mtime_ns
            for i, s in enumerate(manifest["shards"]) if i != 2}
    capsys.readouterr()

    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)

    printed = capsys.readouterr().out
    assert "Resuming" in printed and "4 of 5 shards" in printed
    # The bytes still to write: one shard of 8 float16 feature vectors.
    assert f"{8 * FEATURE_DIM * 2 / 1024:.1f} KiB still to write" in printed
    assert lost.is_file()
    assert list(work.glob("shards/*.tmp")) == []
    assert _manifest(work)["complete"] is True
    for file, mtime in kept.items():
        assert (work / "shards" / file).stat().st_mtime_ns == mtime, f"{file} was recomputed"
    _, after = _array(work)
    np.testing.assert_array_equal(after, before)
    pd.testing.assert_frame_equal(FeatureCache(work).captions(),
                                  FeatureCache(sharded_cache).captions())


def test_a_complete_cache_is_not_recomputed(sharded_cache, dataset, table, tmp_path, capsys):
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    stamp = (work / "manifest.json").stat().st_mtime_ns
    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)
    assert "Resuming" not in capsys.readouterr().out
    assert (work / "manifest.json").stat().st_mtime_ns == stamp


def test_a_complete_cache_with_a_lost_shard_is_repaired(
        sharded_cache, dataset, table, tmp_path, capsys):
    # FeatureCache says "run the `cache` command again" when a shard is missing: doing so
    # must recompute it rather than report the cache complete.
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    _, before = _array(work)
    lost = work / "shards" / _manifest(work)["shards"][4]["file"]
    lost.unlink()
    with pytest.raises(CacheError, match="missing"):
        FeatureCache(work)
    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)
    assert "Resuming" in capsys.readouterr().out
    np.testing.assert_array_equal(_array(work)[1], before)


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
    _simulate_kill(work)
    settings = dict(CACHE_SETTINGS)
    if change == "fewer images":
        table = table[table["image"] != table["image"].iloc[0]]
    else:
        settings.update(change)
    with pytest.raises(CacheError, match=named) as caught:
        build_cache(table, dataset / "images", work, progress=False, **settings)
    assert str(work) in str(caught.value)
    assert not (work / "captions.csv").exists()  # nothing was (re)written


def test_bad_image_is_listed_in_failed_csv_and_its_captions_dropped(dataset, table, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    good = sorted(set(table["image"]))[:6]
    for name in good:
        shutil.copy(dataset / "images" / name, images / name)
    (images / "broken.jpg").write_text("<html>this is not a picture</html>\n")
    rows = table[table["image"].isin(good)]
    bad_rows = pd.DataFrame({"image": ["broken.jpg"] * 2, "caption": ["a red circle"] * 2,
                             "split": ["train"] * 2})
    mixed = pd.concat([rows, bad_rows], ignore_index=True)

    out = build_cache(mixed, images, tmp_path / "cache", progress=False, **CACHE_SETTINGS)

    failed = pd.read_csv(out / "failed.csv")
    assert list(failed["image"]) == ["broken.jpg"]
    assert "broken.jpg" in failed["reason"][0]
    manifest = _manifest(out)
    assert manifest["complete"] is True and manifest["n_failed"] == 1
    reader = FeatureCache(out)
    captions = reader.captions()
    assert "broken.jpg" not in set(captions["image"])
    assert len(captions) == len(rows)
    array = reader.gather(reader.rows(good))
    _assert_close_f16(array, _encode(out, images, good))


def test_strict_stops_at_an_unreadable_image_and_resumes_once_it_is_fixed(dataset, table,
                                                                           tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = sorted(set(table["image"]))[:4]
    for name in names:
        shutil.copy(dataset / "images" / name, images / name)
    (images / names[-1]).write_text("<html>this is not a picture</html>\n")
    rows = table[table["image"].isin(names)]

    with pytest.raises(CacheError, match=f"{names[-1]}.*drop --strict"):
        build_cache(rows, images, tmp_path / "cache", progress=False, strict=True,
                    **CACHE_SETTINGS)
    assert not (tmp_path / "cache" / "failed.csv").exists()

    shutil.copy(dataset / "images" / names[-1], images / names[-1])
    out = build_cache(rows, images, tmp_path / "cache", progress=False, strict=True,
                      **CACHE_SETTINGS)
    assert _manifest(out)["complete"] is True and _manifest(out)["n_failed"] == 0
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


def test_statistics_match_numpy(sharded_cache):
    reader = FeatureCache(sharded_cache)
    array = np.asarray(load_features(sharded_cache)[1]).astype(np.float64)
    mean, variance = reader.statistics(chunk_values=7 * FEATURE_DIM)  # chunks of 7 images
    assert mean.shape == variance.shape == (FEATURE_DIM,)
    np.testing.assert_allclose(mean, array.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, array.var(0), rtol=1e-4, atol=1e-6)
    rows = [3, 17, 17, 30, 8]
    mean, variance = reader.statistics(rows)
    subset = array[np.unique(rows)]
    np.testing.assert_allclose(mean, subset.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, subset.var(0), rtol=1e-4, atol=1e-6)


def test_feature_cache_refuses_an_unfinished_cache(cache, tmp_path):
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    _simulate_kill(work)
    with pytest.raises(CacheError, match="unfinished"):
        FeatureCache(work)
    with pytest.raises(CacheError, match="unfinished"):
        load_features(work)


def test_feature_cache_refuses_a_folder_without_manifest(tmp_path):
    with pytest.raises(CacheError, match="not a feature cache"):
        FeatureCache(tmp_path)


def test_slices_merge_into_the_same_cache(sharded_cache, dataset, table, tmp_path, capsys):
    from captioning.cache.build import merge_caches

    slices = []
    for index in range(2):
        out = build_cache(table, dataset / "images", tmp_path / f"slice{index}", shard_size=8,
                          batch_size=8, progress=False, shard=(index, 2), **CACHE_SETTINGS)
        with pytest.raises(CacheError, match="slice"):
            FeatureCache(out)
        slices.append(out)
    # A finished slice run again does nothing (its other shards belong to the other slice).
    capsys.readouterr()
    build_cache(table, dataset / "images", slices[0], shard_size=8, batch_size=8,
                progress=False, shard=(0, 2), **CACHE_SETTINGS)
    assert "Resuming" not in capsys.readouterr().out
    merged = merge_caches(slices, tmp_path / "merged")
    names, array = _array(merged)
    # Random encoder weights are seeded, so every run builds the same encoder.
    reference_names, reference = _array(sharded_cache)
    assert names == reference_names
    np.testing.assert_array_equal(array, reference)
    pd.testing.assert_frame_equal(FeatureCache(merged).captions(),
                                  FeatureCache(sharded_cache).captions())


def test_unknown_image_names_are_reported(cache):
    with pytest.raises(CacheError, match="nope.jpg"):
        FeatureCache(cache).rows(["nope.jpg"])


_CACHE_SCRIPT = r"""
import sys, time
import keras
import captioning.data.images
from captioning.data.captions import read_captions
from captioning.cache.build import build_cache

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
    manifest = _manifest(killed)
    assert manifest["complete"] is False
    done = [s for s in manifest["shards"] if (killed / "shards" / s["file"]).exists()]
    assert 1 <= len(done) < len(manifest["shards"]) == 15

    rerun = _cache_process(data, killed, 0)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "Resuming" in out
    out, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err

    assert _manifest(killed)["complete"] is True
    names_killed, killed_array = _array(killed)
    names_reference, reference_array = _array(reference)
    assert names_killed == names_reference
    # The same seed gives the same random encoder, so the features must agree exactly.
    np.testing.assert_array_equal(killed_array, reference_array)
    assert list(killed.glob("shards/*.tmp")) == []


def test_a_float32_cache_logs_progress_and_its_throughput(dataset, table, tmp_path, capsys):
    part = table[table["image"].isin(sorted(set(table["image"]))[:16])]
    out = build_cache(part, dataset / "images", tmp_path / "cache", dtype="float32",
                      shard_size=8, batch_size=4, workers=3, progress="log", **CACHE_SETTINGS)
    shard = np.load(out / "shards" / _manifest(out)["shards"][0]["file"], mmap_mode="r")
    assert shard.dtype == np.float32 and shard.shape == (8, FEATURE_DIM)
    names, features = load_features(out)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.asarray(features), _encode(out, dataset / "images", names),
                               rtol=1e-5, atol=1e-6)
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.startswith("caching: ")]
    # Every 10% of 16 images in batches of 4: after 4, 8, 12 and 16 images.
    assert [line.split()[1] for line in lines] == ["4/16", "8/16", "12/16", "16/16"]
    assert all("images/s" in line and "left" in line for line in lines)
    throughput = _manifest(out)["throughput"]
    assert throughput["images"] == 16 and throughput["images_per_second"] > 0
    assert f"16 images in {throughput['seconds']:.1f} s" in printed.out


def test_features_index_like_a_numpy_array(sharded_cache):
    _, features = load_features(sharded_cache)
    array = np.asarray(features)
    assert features.dtype == array.dtype == features[0].dtype == np.float32
    assert features.stored_dtype == np.float16
    mask = np.zeros(40, bool)
    mask[[1, 9, 30]] = True
    for key in [(0, slice(None, 3)), (slice(None), 0), (slice(5, 20, 4), slice(1, 3)),
                ([3, 12, 3], [0, 2, 4]), ([[1, 2], [30, 39]],), (mask,), (mask, 7),
                (Ellipsis, 5), (-1,), (np.int64(17), -1)]:
        np.testing.assert_array_equal(features[key], array[key], err_msg=str(key))
    with pytest.raises(IndexError):
        features[40]


def test_a_damaged_shard_is_named_when_read_and_recomputed_on_resume(
        sharded_cache, dataset, table, tmp_path, capsys):
    work = tmp_path / "cache"
    shutil.copytree(sharded_cache, work)
    _, before = _array(work)
    shards = [work / "shards" / s["file"] for s in _manifest(work)["shards"]]
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
    capsys.readouterr()

    build_cache(table, dataset / "images", work, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)

    printed = capsys.readouterr().out
    assert "Resuming" in printed and "3 of 5 shards" in printed
    assert f"Recomputing {shards[1].name}" in printed and f"Recomputing {shards[3].name}" in printed
    np.testing.assert_array_equal(_array(work)[1], before)


def test_a_full_disk_is_a_cache_error_and_the_same_command_resumes(
        sharded_cache, dataset, table, tmp_path, monkeypatch, capsys):
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
    capsys.readouterr()

    build_cache(table, dataset / "images", out, shard_size=8, batch_size=8, progress=False,
                **CACHE_SETTINGS)

    assert "2 of 5 shards" in capsys.readouterr().out
    np.testing.assert_array_equal(_array(out)[1], _array(sharded_cache)[1])


def test_describe_differences_names_each_key_with_both_values():
    cache = {"encoder": "inception_v3", "image_size": 75, "feature_shape": [2048],
             "images_fingerprint": "a" * 64, "dtype": "float16"}
    expected = {"encoder": "inception_v3", "image_size": 80, "feature_shape": (64, 2048),
                "images_fingerprint": "b" * 64}
    lines = describe_differences(cache, expected, expected_name="run")
    assert lines == ["image_size: cache 75 vs run 80",
                     "feature_shape: cache 2048 vs run 64x2048",
                     f"image list (fingerprint): cache {'a' * 12}... vs run {'b' * 12}..."]
    # A key the expected side does not record is not compared; tuples equal lists.
    assert describe_differences(cache, {"feature_shape": (2048,), "encoder": "inception_v3"}
                                ) == []


def test_training_resumed_on_another_cache_says_what_differs(copy_run, cache, tmp_path):
    from captioning.errors import ConfigError
    from captioning.training.train import train

    from tests.helpers import tiny_config

    other = tmp_path / "other"
    shutil.copytree(cache, other)
    manifest = _manifest(other)
    manifest["image_size"] = 80
    manifest["encoder_weights_sha256"] = "0" * 64
    _write_manifest(other, manifest)
    with pytest.raises(ConfigError) as caught:
        train(other, copy_run, tiny_config(), progress=False)
    message = str(caught.value)
    assert f"image_size: cache 80 vs run {IMAGE_SIZE}" in message
    assert "encoder weights (fingerprint): cache 000000000000..." in message


def test_evaluation_checks_the_encoder_weights_not_the_file(run, cache, sharded_cache,
                                                            tmp_path):
    from captioning.evaluation.metrics import evaluate_release

    # Built again with the same seed: the same weights in another encoder.hdf5 file.
    assert (_manifest(sharded_cache)["encoder_weights_sha256"]
            == _manifest(cache)["encoder_weights_sha256"])
    with pytest.raises(CacheError, match="no images in split 'nope'"):
        evaluate_release(run, sharded_cache, split="nope")  # the encoder check passed
    other = tmp_path / "other"
    shutil.copytree(cache, other)
    manifest = _manifest(other)
    manifest["features"] = "grid"
    _write_manifest(other, manifest)
    with pytest.raises(CacheError, match="features: cache 'grid' vs release 'pooled'"):
        evaluate_release(run, other, split="test")


_HANG_SCRIPT = r"""
import io, sys, time
import numpy as np
from captioning.data.captions import read_captions
from captioning.cache.build import build_cache

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
    printed, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "Resuming" in printed and "2 of 5 shards" in printed
    assert list(out.glob("shards/*.tmp")) == []
    names, features = _array(out)
    reference_names, reference = _array(sharded_cache)
    assert names == reference_names
    np.testing.assert_array_equal(features, reference)
