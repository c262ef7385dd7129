"""Tests for `captioning.training`: history, release files, resuming, refusals, seeds."""

from __future__ import annotations

import importlib
import json
import logging
import signal
import time

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ENCODER, IMAGE_SIZE, run_python, tiny_config
from captioning.errors import ConfigError
from captioning.training.train import train

# The module (`captioning.training.train` is the function, re-exported by the package).
training = importlib.import_module("captioning.training.train")

RELEASE_FILES = ("Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle", "manifest.json")


@pytest.fixture
def info(caplog):
    """The INFO lines of the package, as a user running with logging on sees them."""
    caplog.set_level(logging.INFO, logger="captioning")
    return caplog


def _history(run_dir):
    return pd.read_csv(run_dir / "history.csv")


def test_history_has_one_row_per_epoch(run):
    history = _history(run)
    for column in ("epoch", "loss", "val_loss", "val_bleu_4", "val_cider"):
        assert column in history.columns, column
    assert list(history["epoch"]) == [1, 2]
    assert list(history["phase"]) == ["frozen", "frozen"]
    assert history[["loss", "val_loss", "val_bleu_4", "val_cider"]].notna().all().all()
    assert (history["val_cider"] >= 0).all()
    assert (history["loss"] > 0).all()
    assert history["val_bleu_4"].between(0, 1).all()


def test_the_release_files_are_written(run):
    for name in RELEASE_FILES:
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format"] == "captioning.release"
    # The encoder settings recorded are the cache's (the config left them at their defaults).
    assert manifest["config"] == tiny_config(encoder=ENCODER, weights="none",
                                             image_size=IMAGE_SIZE).to_dict()
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


def test_rerunning_a_finished_run_trains_nothing(copy_run, cache, capsys, info):
    before = _history(copy_run)
    result = train(cache, copy_run, tiny_config(), progress=False)
    assert "Resuming" in info.text
    assert "Epoch " not in capsys.readouterr().out
    pd.testing.assert_frame_equal(_history(copy_run), before)
    assert list(result.history["epoch"]) == [1, 2]
    assert result.best_epoch in (1, 2)


def test_resume_continues_after_the_last_finished_epoch(cache, tmp_path, capsys, info):
    out = tmp_path / "run"
    first = train(cache, out, tiny_config(epochs=1), progress=False)
    assert list(first.history["epoch"]) == [1]
    one = _history(out)
    capsys.readouterr()
    info.clear()

    second = train(cache, out, tiny_config(epochs=2), progress=False)

    assert "Resuming" in info.text and "after epoch 1 of 2" in info.text
    printed = capsys.readouterr().out
    assert "Epoch 2/2" in printed and "Epoch 1/" not in printed  # epoch 1 not trained again
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
from captioning.config import CaptionConfig
from captioning.training import batches, train

cache, out, settings, delay = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
original = batches.CaptionBatches.__getitem__
def slow(self, index):
    # Slow batches down so that the parent can kill us in the middle of an epoch.
    time.sleep(delay)
    return original(self, index)
batches.CaptionBatches.__getitem__ = slow
train(cache, out, CaptionConfig(**settings), progress=False)
"""


@pytest.mark.slow
def test_a_real_kill_during_training_resumes(cache, tmp_path, info):
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

    result = train(cache, out, config, progress=False)
    assert "after epoch 1 of 3" in info.text
    assert list(_history(out)["epoch"]) == [1, 2, 3]
    assert list(result.history["epoch"]) == [1, 2, 3]
    for name in RELEASE_FILES:
        assert (out / name).is_file()

    # The optimizer state came back with the weights: the learning-rate schedule goes on
    # where it stopped, as in an uninterrupted run.
    reference = train(cache, tmp_path / "reference", config, progress=False)
    np.testing.assert_allclose(_history(out)["learning_rate"],
                               reference.history["learning_rate"].to_numpy(float), rtol=1e-6)


def test_history_csv_is_rewritten_from_the_state_on_a_rerun(copy_run, cache, capsys):
    # A kill after state.json was renamed, before history.csv was: the rerun trains nothing
    # (state.json says every epoch is done) yet history.csv must list both epochs.
    full = _history(copy_run)
    full.iloc[:1].to_csv(copy_run / "history.csv", index=False)
    train(cache, copy_run, tiny_config(), progress=False)
    assert "Epoch " not in capsys.readouterr().out
    pd.testing.assert_frame_equal(_history(copy_run), full)


def test_more_epochs_on_resume_keep_the_learning_rate_schedule(cache, tmp_path, monkeypatch,
                                                               info):
    steps = []
    original = training.make_optimizer

    def spy(*args, **kwargs):
        steps.append(kwargs["decay_steps"])
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "make_optimizer", spy)
    out = tmp_path / "run"
    train(cache, out, tiny_config(epochs=1), progress=False)
    second = train(cache, out, tiny_config(epochs=2), progress=False)
    # The cosine schedule spans the one epoch the run started with, before and after: a
    # schedule stretched to two epochs would raise the rate again in epoch 2.
    assert steps[0] == steps[1] > 0
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["schedule_steps"] == steps[0]
    assert "epochs 2..2 run at its final rate" in info.text
    rates = second.history["learning_rate"].to_numpy(float)
    np.testing.assert_allclose(rates, tiny_config().learning_rate * 0.05, rtol=1e-5)


def test_learning_rate_schedules_show_in_the_history(run, cache, tmp_path, monkeypatch):
    optimizers = []
    original = training.make_optimizer

    def spy(*args, **kwargs):
        optimizers.append(original(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(training, "make_optimizer", spy)
    config = tiny_config(lr_schedule="constant", clipnorm=2.5, learning_rate=1e-3)
    constant = train(cache, tmp_path / "constant", config, progress=False)
    np.testing.assert_allclose(_history(tmp_path / "constant")["learning_rate"], 1e-3, rtol=1e-6)
    assert list(constant.history["epoch"]) == [1, 2]
    # clipnorm reaches the optimizer that trained the model.
    assert [opt.global_clipnorm for opt in optimizers] == [2.5]
    # The shared run used the default cosine schedule: falling, to 5% at the last step.
    cosine = _history(run)["learning_rate"].to_numpy(float)
    assert cosine[0] < tiny_config().learning_rate and np.all(np.diff(cosine) < 0)
    np.testing.assert_allclose(cosine[-1], tiny_config().learning_rate * 0.05, rtol=1e-5)


def test_ema_validates_the_average_and_leaves_training_as_it_was(run, cache, tmp_path):
    averaged = train(cache, tmp_path / "ema", tiny_config(ema=0.9), progress=False)
    plain = _history(run)  # the same settings and seed, without the average
    # The average is swapped in only from an epoch's end to the next one's start: the steps
    # train the same weights, so the training losses are the same numbers.
    np.testing.assert_array_equal(averaged.history["loss"].to_numpy(float),
                                  plain["loss"].to_numpy(float))
    # What is validated (and kept) is the average.
    assert not np.allclose(averaged.history["val_loss"].to_numpy(float),
                           plain["val_loss"].to_numpy(float))


def test_an_ema_run_resumes_training_the_last_steps_weights(cache, tmp_path):
    def resumed(name, ema):
        config = tiny_config(ema=ema, lr_schedule="constant")
        train(cache, tmp_path / name, config.replace(epochs=1), progress=False)
        return train(cache, tmp_path / name, config, progress=False).history

    averaged, plain = resumed("ema", 0.9), resumed("plain", 0.0)
    # Epoch 1 was saved holding the average: resuming swaps it back out, so epoch 2 trains
    # the last step's weights, as the run without the average does (the same losses).
    np.testing.assert_array_equal(averaged["loss"].to_numpy(float),
                                  plain["loss"].to_numpy(float))
    assert not np.allclose(averaged["val_loss"].to_numpy(float),
                           plain["val_loss"].to_numpy(float))


def test_clipnorm_zero_or_none_means_no_clipping():
    from captioning.training.objective import make_optimizer

    assert make_optimizer(1e-3, 0.0).global_clipnorm is None
    assert make_optimizer(1e-3, None, schedule="cosine", decay_steps=10).global_clipnorm is None
    assert make_optimizer(1e-3, 2.5).global_clipnorm == 2.5


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def stopped_run(cache, tmp_path_factory):
    """A run whose val_bleu_4 falls every epoch (the scores patched): early stopping with
    patience 2 ends it after epoch 3, the best epoch being 1. Returns its folder, result and
    log lines."""
    from captioning.training import callbacks

    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    out = tmp_path_factory.mktemp("stopped") / "run"
    lines, package = _Lines(), logging.getLogger("captioning")
    level = package.level
    package.addHandler(lines)
    package.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(callbacks, "bleu4", lambda predictions, references: next(scores))
            result = train(cache, out, tiny_config(epochs=6, early_stopping=2,
                                                   monitor="val_bleu_4"), progress=False)
    finally:
        package.removeHandler(lines)
        package.setLevel(level)
    return out, result, "\n".join(lines.lines)


def test_the_best_epoch_is_picked_by_val_cider_by_default(cache, tmp_path):
    """val CIDEr-D and val BLEU-4 disagree (patched): the default exports CIDEr-D's best."""
    from captioning.training import callbacks

    ciders, bleus = iter([0.2, 0.9, 0.5]), iter([0.3, 0.1, 0.6])

    def scores(self, features_of):
        return {"val_cider": next(ciders), "val_bleu_4": next(bleus)}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(callbacks.ValidationScores, "__call__", scores)
        result = train(cache, tmp_path / "run", tiny_config(epochs=3), progress=False)
    assert result.best_epoch == 2
    history = _history(tmp_path / "run")
    assert list(history["val_cider"]) == [0.2, 0.9, 0.5]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["best_epoch"] == 2


def test_early_stopping_stops_after_patience_epochs(stopped_run, cache, capsys):
    out, result, printed = stopped_run
    assert list(_history(out)["epoch"]) == [1, 2, 3]
    assert result.best_epoch == 1
    assert "Early stopping: val_bleu_4 has not improved for 2 epochs" in printed
    assert json.loads((out / "checkpoints" / "state.json").read_text())["stopped"] is True
    before = _history(out)
    again = train(cache, out, tiny_config(epochs=6, early_stopping=2, monitor="val_bleu_4"),
                  progress=False)
    assert "Epoch " not in capsys.readouterr().out  # nothing trained
    pd.testing.assert_frame_equal(_history(out), before)
    assert again.best_epoch == 1


def test_the_best_epoch_is_exported_not_the_last(stopped_run):
    import keras

    from captioning.models.decoders import build_decoder
    from captioning.release.load import load_release

    out, result, _ = stopped_run
    release = load_release(out)
    config = release.config
    shape = tuple(release.manifest["feature_shape"])

    def step_weights(checkpoint):
        decoder = build_decoder(config, release.tokenizer.vocab_size, shape,
                                config.max_length + 1)
        decoder.training.load_weights(checkpoint)
        return decoder.step.get_weights()

    exported = keras.saving.load_model(out / "Decoder.hdf5", safe_mode=True,
                                       compile=False).get_weights()
    best = step_weights(out / "checkpoints" / "best-0001.weights.h5")
    last = step_weights(out / "checkpoints" / "epoch-0003.weights.h5")
    assert len(exported) == len(best)
    for a, b in zip(exported, best):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(exported, last))


def test_early_stopping_without_validation_names_the_training_loss(cache, tmp_path,
                                                                    monkeypatch, info):
    import shutil

    from captioning.training import callbacks

    no_val = tmp_path / "cache"
    shutil.copytree(cache, no_val)
    captions = pd.read_csv(no_val / "captions.csv")
    captions = captions[captions["split"] != "val"]
    captions.to_csv(no_val / "captions.csv", index=False)
    # The training loss, as the callbacks after the first see it, rises every epoch.
    losses = iter([1.0, 2.0, 3.0, 4.0])
    original = callbacks.BleuMonitor.on_epoch_end

    def rising(self, epoch, logs=None):
        logs["loss"] = next(losses)
        return original(self, epoch, logs)

    monkeypatch.setattr(callbacks.BleuMonitor, "on_epoch_end", rising)
    result = train(no_val, tmp_path / "run", tiny_config(epochs=4, early_stopping=1),
                   progress=False)
    assert "Early stopping: loss has not improved for 1 epochs" in info.text
    assert "val_bleu_4" not in info.text
    assert result.best_epoch == 1
    assert list(result.history["epoch"]) == [1, 2]


def test_a_validation_split_smaller_than_a_static_batch_trains_without_val_batches(
        cache, tmp_path, monkeypatch, caplog):
    # On a TPU batches keep static shapes (drop_remainder): 20 validation captions make no
    # batch of 32. Without a TPU here, the strategy is told it is one.
    from captioning.cache import FeatureCache
    from captioning.training.batches import CaptionBatches, usable_validation

    val = FeatureCache(cache).captions().query("split == 'val'")
    batch = len(val) + 1
    batches = CaptionBatches.from_cache(FeatureCache(cache), np.zeros(len(val), int),
                                        np.zeros((len(val), 14), np.int32), batch,
                                        drop_remainder=True)
    assert len(batches) == 0
    with caplog.at_level(logging.WARNING, logger="captioning"):
        assert usable_validation(batches, "training") is None
    assert "no full batch" in caplog.text and "--batch-size" in caplog.text

    monkeypatch.setattr(training, "drops_remainder", lambda strategy: True)
    result = train(cache, tmp_path / "run", tiny_config(epochs=1, batch_size=batch),
                   progress=False)
    row = result.history.iloc[0]
    assert pd.isna(row["val_loss"])
    assert 0 <= row["val_bleu_4"] <= 1  # still measured on the validation images


def test_the_encoder_settings_come_from_the_cache(cache, tmp_path):
    from captioning.cache import FeatureCache

    settings = FeatureCache(cache).settings
    for change, cached in ((dict(encoder="vgg16"), settings["encoder"]),
                           (dict(image_size=99), settings["image_size"]),
                           (dict(features="grid", conditioning="attention"),
                            settings["features"]),
                           (dict(weights="imagenet_v2.h5"), settings["weights"])):
        out = tmp_path / next(iter(change))
        name, value = next(iter(change.items()))
        with pytest.raises(ConfigError) as caught:
            train(cache, out, tiny_config(**change), progress=False)
        message = str(caught.value)
        assert name in message and repr(value) in message and repr(cached) in message
        assert not out.exists()
