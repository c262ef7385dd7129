"""Tests for `captioning.training`: history, release files, resuming, refusals, seeds."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pandas as pd
import pytest

from conftest import run_python, tiny_config
from captioning.errors import ConfigError
from captioning.training import train

RELEASE_FILES = ("Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle", "manifest.json")


def _history(run_dir):
    return pd.read_csv(run_dir / "history.csv")


def test_history_has_one_row_per_epoch(run):
    history = _history(run)
    for column in ("epoch", "loss", "val_loss", "val_bleu_4"):
        assert column in history.columns, column
    assert list(history["epoch"]) == [1, 2]
    assert history[["loss", "val_loss", "val_bleu_4"]].notna().all().all()
    assert (history["loss"] > 0).all()
    assert history["val_bleu_4"].between(0, 1).all()


def test_the_release_files_are_written(run):
    for name in RELEASE_FILES:
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format"] == "captioning.release"
    assert manifest["config"] == tiny_config().to_dict()
    assert manifest["best_epoch"] in (1, 2)
    assert manifest["dataset"] == "synthetic-test"
    assert set(manifest["files"]) == {"encoder", "decoder", "tokenizer"}
    assert (run / "run.json").is_file()


def test_encoder_in_release_is_the_cache_encoder(run, cache):
    # Byte for byte: the release computes exactly the features the decoder was trained on.
    manifest = json.loads((run / "manifest.json").read_text())
    cache_manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["files"]["encoder"]["sha256"] == cache_manifest["encoder_sha256"]
    assert manifest["encoder"]["encoder"] == cache_manifest["encoder"]


def test_rerunning_a_finished_run_trains_nothing(copy_run, cache, capsys):
    before = _history(copy_run)
    result = train(cache, copy_run, tiny_config(), progress=False)
    assert "Resuming" in capsys.readouterr().out
    pd.testing.assert_frame_equal(_history(copy_run), before)
    assert list(result.history["epoch"]) == [1, 2]
    assert result.best_epoch in (1, 2)


def test_resume_continues_after_the_last_finished_epoch(cache, tmp_path, capsys):
    out = tmp_path / "run"
    first = train(cache, out, tiny_config(epochs=1), progress=False)
    assert list(first.history["epoch"]) == [1]
    one = _history(out)
    capsys.readouterr()

    second = train(cache, out, tiny_config(epochs=2), progress=False)

    printed = capsys.readouterr().out
    assert "Resuming" in printed and "after epoch 1" in printed
    assert "Epoch 1/" not in printed  # epoch 1 was not trained again
    history = _history(out)
    assert list(history["epoch"]) == [1, 2]
    pd.testing.assert_frame_equal(history.iloc[:1], one)
    assert list(second.history["epoch"]) == [1, 2]


@pytest.mark.parametrize("change", [dict(units=24), dict(cell="lstm"), dict(max_length=10)])
def test_a_changed_setting_on_an_existing_run_is_refused(copy_run, cache, change):
    run_json = (copy_run / "run.json").read_text()
    name = next(iter(change))
    with pytest.raises(ConfigError, match=name):
        train(cache, copy_run, tiny_config(**change), progress=False)
    assert (copy_run / "run.json").read_text() == run_json


def test_attention_on_a_pooled_cache_is_refused(cache, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="--features grid"):
        train(cache, out, tiny_config(conditioning="attention"), progress=False)
    assert not out.exists()


def test_the_same_seed_gives_the_same_losses(run, cache, tmp_path):
    # The shared run used seed 0; train it again in another folder.
    again = train(cache, tmp_path / "again", tiny_config(), progress=False)
    first = _history(run)
    # On CPU the TensorFlow kernels used here are deterministic: identical numbers.
    np.testing.assert_array_equal(again.history["loss"].to_numpy(float),
                                  first["loss"].to_numpy(float))
    np.testing.assert_array_equal(again.history["val_loss"].to_numpy(float),
                                  first["val_loss"].to_numpy(float))
    # And the seed is what decides: another one trains differently.
    other = train(cache, tmp_path / "other", tiny_config(seed=1), progress=False)
    assert not np.array_equal(other.history["loss"].to_numpy(float),
                              first["loss"].to_numpy(float))


_TRAIN_SCRIPT = r"""
import json, sys, time
from captioning import training
from captioning.config import CaptionConfig

cache, out, settings, delay = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
original = training.CaptionBatches.__getitem__
def slow(self, index):
    # Slow batches down so that the parent can kill us in the middle of an epoch.
    time.sleep(delay)
    return original(self, index)
training.CaptionBatches.__getitem__ = slow
training.train(cache, out, CaptionConfig(**settings), progress=False)
"""


@pytest.mark.slow
def test_a_real_kill_during_training_resumes(cache, tmp_path, capsys):
    config = tiny_config(epochs=3)
    out = tmp_path / "run"
    process = run_python(_TRAIN_SCRIPT, cache, out, json.dumps(config.to_dict()), 0.1)
    history = out / "history.csv"
    deadline = time.monotonic() + 180
    while not history.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "epoch 1 did not finish in 180 s"
        time.sleep(0.02)
    time.sleep(0.3)  # into epoch 2 (an epoch takes over a second here)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert list(_history(out)["epoch"]) == [1]

    capsys.readouterr()
    result = train(cache, out, config, progress=False)
    assert "after epoch 1 of 3" in capsys.readouterr().out
    assert list(_history(out)["epoch"]) == [1, 2, 3]
    assert list(result.history["epoch"]) == [1, 2, 3]
    for name in RELEASE_FILES:
        assert (out / name).is_file()

    # The optimizer state came back with the weights: the learning-rate schedule goes on
    # where it stopped, as in an uninterrupted run.
    reference = train(cache, tmp_path / "reference", config, progress=False)
    np.testing.assert_allclose(_history(out)["learning_rate"],
                               reference.history["learning_rate"].to_numpy(float), rtol=1e-6)
