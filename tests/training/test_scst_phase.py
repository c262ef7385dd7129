"""The SCST phase of `train`: history rows, the best epoch by val CIDEr exported, resuming."""

from __future__ import annotations

import json
import logging
import signal
import time

import keras
import numpy as np
import pandas as pd
import pytest

from captioning.training import scst_phase
from captioning.training.train import train
from tests.helpers import run_python, tiny_config

# Dropout off: an SCST epoch then depends only on the weights it starts from and its seed.
SCST = dict(epochs=1, scst_epochs=2, scst_samples=3, scst_learning_rate=1e-3, dropout=0.0)


@pytest.fixture
def info(caplog):
    caplog.set_level(logging.INFO, logger="captioning")
    return caplog


def _history(run_dir):
    return pd.read_csv(run_dir / "history.csv")


def _decoder_weights(path):
    return keras.saving.load_model(path, safe_mode=True, compile=False).get_weights()


def _step_weights(run_dir, checkpoint):
    """The one-step model's weights of a training checkpoint of the run."""
    from captioning.models.decoders import build_decoder
    from captioning.release.load import load_release

    release = load_release(run_dir)
    decoder = build_decoder(release.config, release.tokenizer.vocab_size,
                            tuple(release.manifest["feature_shape"]),
                            release.config.max_length + 1)
    decoder.training.load_weights(checkpoint)
    return decoder.step.get_weights()


@pytest.fixture(scope="module")
def scst_run(cache, tmp_path_factory):
    """A run of one cross-entropy epoch then two SCST epochs whose val CIDEr falls (the
    scores patched), so the best SCST epoch is the first; returns its folder, result and
    INFO lines."""
    values = iter([0.9, 0.8, 0.4])  # before SCST, after its epoch 1, after its epoch 2

    class Falling(scst_phase.ValidationScores):  # the SCST phase's only
        def __call__(self, features_of):
            scores = super().__call__(features_of)
            assert 0 <= scores["val_cider"] and 0 <= scores["val_bleu_4"] <= 1
            return {**scores, "val_cider": next(values)}

    out = tmp_path_factory.mktemp("scst") / "run"
    handler = _Lines()
    package = logging.getLogger("captioning")
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(scst_phase, "ValidationScores", Falling)
            result = train(cache, out, tiny_config(**SCST), progress=False)
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
    return out, result, handler.lines


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_scst_epochs_are_history_rows_after_cross_entropy(scst_run):
    out, result, lines = scst_run
    history = _history(out)
    assert list(history["epoch"]) == [1, 2, 3]
    assert list(history["phase"]) == ["frozen", "scst", "scst"]
    scst = history[history["phase"] == "scst"]
    assert list(scst["val_cider"]) == [0.8, 0.4]
    assert scst["val_bleu_4"].between(0, 1).all()
    assert (scst["reward"] >= 0).all() and scst["reward"].notna().all()
    np.testing.assert_allclose(scst["learning_rate"], SCST["scst_learning_rate"], rtol=1e-6)
    assert history["val_cider"].iloc[:1].notna().all()  # measured in every phase
    assert scst["loss"].isna().all()
    pd.testing.assert_frame_equal(result.history.reset_index(drop=True), history)
    # One INFO line per SCST epoch with its reward, baseline, val CIDEr-D and BLEU-4.
    epochs = [line for line in lines if line.startswith("SCST epoch")]
    assert len(epochs) == 2
    assert epochs[0].startswith("SCST epoch 1 (run epoch 2): reward ")
    for line in epochs:
        assert "baseline" in line and "val CIDEr-D" in line and "val BLEU-4" in line
    assert any("val CIDEr-D before: 0.9000" in line for line in lines)


def test_the_best_scst_epoch_by_val_cider_is_exported(scst_run):
    out, result, _ = scst_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert result.best_epoch == manifest["best_epoch"] == 2
    assert manifest["validation"]["phase"] == "scst"
    assert manifest["validation"]["val_cider"] == pytest.approx(0.8)
    exported = _decoder_weights(out / "Decoder.hdf5")
    folder = out / "checkpoints" / "scst"
    best = _step_weights(out, folder / "best-0001.weights.h5")
    last = _step_weights(out, folder / "epoch-0002.weights.h5")
    first_phase = _step_weights(out, out / "checkpoints" / "best-0001.weights.h5")
    for a, b in zip(exported, best, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(exported, last))
    assert not all(np.array_equal(a, b) for a, b in zip(exported, first_phase))


def test_rerunning_a_finished_scst_run_trains_nothing(scst_run, cache, tmp_path, info):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(scst_run[0], out)
    before = _history(out)
    result = train(cache, out, tiny_config(**SCST), progress=False)
    assert "Resuming SCST after its epoch 2 of 2" in info.text
    assert "SCST epoch" not in info.text
    pd.testing.assert_frame_equal(_history(out), before)
    assert result.best_epoch == 2
    for a, b in zip(_decoder_weights(out / "Decoder.hdf5"),
                    _decoder_weights(scst_run[0] / "Decoder.hdf5")):
        np.testing.assert_array_equal(a, b)


def test_scst_resumes_where_an_uninterrupted_run_would_be(scst_run, cache, tmp_path, info):
    # SCST added to a finished cross-entropy run, one epoch at a time, then compared with
    # the shared run, which did both SCST epochs at once (only its val CIDEr was patched).
    out = tmp_path / "run"
    train(cache, out, tiny_config(**{**SCST, "scst_epochs": 0}), progress=False)
    first = train(cache, out, tiny_config(**{**SCST, "scst_epochs": 1}), progress=False)
    assert list(first.history["phase"]) == ["frozen", "scst"]
    assert "Resuming " in info.text  # the first phase was not trained again
    info.clear()
    second = train(cache, out, tiny_config(**SCST), progress=False)
    assert "Resuming SCST after its epoch 1 of 2" in info.text
    assert "SCST epoch 1 " not in info.text and "SCST epoch 2 " in info.text
    pd.testing.assert_frame_equal(second.history.iloc[:2], first.history)

    columns = ["reward", "val_bleu_4", "learning_rate"]
    np.testing.assert_allclose(second.history[columns].to_numpy(float),
                               scst_run[1].history[columns].to_numpy(float), rtol=1e-5,
                               equal_nan=True)


def test_other_sampling_settings_start_scst_over(scst_run, cache, tmp_path, info):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(scst_run[0], out)
    result = train(cache, out, tiny_config(**{**SCST, "scst_samples": 2, "scst_epochs": 1}),
                   progress=False)
    assert "SCST starts over" in info.text and "samples 3 -> 2" in info.text
    assert list(result.history["phase"]) == ["frozen", "scst"]
    assert sorted(p.name for p in (out / "checkpoints" / "scst").glob("*.h5")) == [
        "best-0001.weights.h5", "epoch-0001.weights.h5"]


def test_a_resumed_cosine_keeps_its_first_length(cache, tmp_path, info):
    out = tmp_path / "run"
    cosine = {**SCST, "scst_lr_schedule": "cosine", "scst_learning_rate": 1e-3}
    train(cache, out, tiny_config(**{**cosine, "scst_epochs": 1}), progress=False)
    state = json.loads((out / "checkpoints" / "scst" / "state.json").read_text())
    assert state["lr_schedule"] == "cosine" and state["decay_epochs"] == 1
    result = train(cache, out, tiny_config(**{**cosine, "scst_epochs": 2}), progress=False)
    assert "Resuming SCST after its epoch 1 of 2" in info.text
    rates = result.history.loc[result.history["phase"] == "scst", "learning_rate"].tolist()
    assert rates == pytest.approx([1e-3 * 0.05] * 2, rel=1e-4)  # the floor from epoch 1 on


_SCST_SCRIPT = r"""
import json, sys, time
from captioning.config import CaptionConfig
from captioning.training import scst, train

cache, out, settings, delay = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
original = scst.ScstTrainer.step
def slow(self, images):
    # Slow SCST steps down so that the parent can kill us in the middle of an epoch.
    time.sleep(delay)
    return original(self, images)
scst.ScstTrainer.step = slow
train(cache, out, CaptionConfig(**settings), progress=False)
"""


@pytest.mark.slow
def test_a_real_kill_during_scst_resumes(cache, tmp_path, info):
    config = tiny_config(**{**SCST, "scst_epochs": 3})
    out = tmp_path / "run"
    process = run_python(_SCST_SCRIPT, cache, out, json.dumps(config.to_dict()), 0.5)
    state = out / "checkpoints" / "scst" / "state.json"
    deadline = time.monotonic() + 240
    while not state.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "SCST epoch 1 did not finish in 240 s"
        time.sleep(0.02)
    time.sleep(0.6)  # into SCST epoch 2 (two slowed steps per epoch)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert list(_history(out)["phase"]) == ["frozen", "scst"]

    result = train(cache, out, config, progress=False)
    assert "Resuming SCST after its epoch 1 of 3" in info.text
    assert list(_history(out)["epoch"]) == [1, 2, 3, 4]
    assert list(result.history["phase"]) == ["frozen", "scst", "scst", "scst"]
    reference = train(cache, tmp_path / "reference", config, progress=False)
    columns = ["reward", "val_cider", "learning_rate"]
    np.testing.assert_allclose(result.history[columns].to_numpy(float),
                               reference.history[columns].to_numpy(float), rtol=1e-5,
                               equal_nan=True)


@pytest.mark.slow
def test_scst_after_fine_tuning_reads_the_fine_tuned_encoder(cache, tmp_path):
    from captioning.release.load import load_release

    config = tiny_config(**{**SCST, "scst_epochs": 1, "fine_tune": 2, "fine_tune_epochs": 1})
    result = train(cache, tmp_path / "run", config, progress=False)
    assert list(result.history["phase"]) == ["frozen", "fine_tune", "scst"]
    assert result.best_epoch == 3
    folder = result.run_dir / "checkpoints" / "scst"
    (features,) = folder.glob("features-*.npy")
    release = load_release(result.run_dir)
    encoded = np.load(features)
    from captioning.cache import FeatureCache

    store = FeatureCache(cache)
    table = store.captions()
    images = sorted(set(table[table["split"] == "train"]["image"]))
    assert encoded.shape == (len(images), *store.feature_shape)
    assert encoded.dtype == np.dtype(store.settings["dtype"])
    # The features SCST trained on are the fine-tuned encoder's, not the cache's.
    from captioning.training.batches import load_pixels

    pixels = load_pixels(store.manifest["images_dir"], images[:2], store.settings["image_size"])
    np.testing.assert_allclose(encoded[:2].astype(np.float32),
                               keras.ops.convert_to_numpy(release.encoder(pixels)),
                               rtol=2e-2, atol=2e-3)
    assert not np.allclose(encoded[:2].astype(np.float32), store.gather(store.rows(images[:2])),
                           rtol=2e-2, atol=2e-3)
