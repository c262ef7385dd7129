"""Fine-tuning: the second phase trains from images with the top CNN layers unfrozen."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from captioning.errors import CacheError, ConfigError
from captioning.evaluation import evaluate_release
from captioning.training.finetune import unfreeze_top
from captioning.plots import plot_history
from captioning.release.load import load_release
from captioning.training.train import train
from tests.evaluation.helpers import needs_java
from tests.helpers import run_cli, tiny_config


@pytest.fixture(scope="module")
def encoder():
    from captioning.models.encoders import build_encoder

    return build_encoder("inception_v3_mixed2", "none", 75)


def _kernel_layers(backbone):
    return [layer for layer in backbone.layers
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("count", [1, 2, 4, 6])
def test_unfreeze_top_unfreezes_n_layers_and_leaves_batchnorm_frozen(encoder, count):
    chosen = unfreeze_top(encoder, count)
    backbone = encoder.get_layer("inception_v3_mixed2")
    assert len(chosen) == count
    assert chosen == [layer.name for layer in _kernel_layers(backbone)[-count:]]
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable == chosen
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
                   for layer in backbone.layers)
    assert len(encoder.trainable_weights) == sum(len(backbone.get_layer(n).trainable_weights)
                                                 for n in chosen)


def test_unfreeze_more_layers_than_the_cnn_has_is_refused(encoder):
    available = len(_kernel_layers(encoder.get_layer("inception_v3_mixed2")))
    assert len(unfreeze_top(encoder, available)) == available
    with pytest.raises(ConfigError, match=f"fine_tune={available + 1} .* only {available} "):
        unfreeze_top(encoder, available + 1)
    with pytest.raises(ConfigError, match="got 0"):
        unfreeze_top(encoder, 0)


FINE_TUNE_CONFIG = tiny_config(epochs=1, fine_tune=8, fine_tune_epochs=1)


@pytest.fixture(scope="module")
def fine_tuned(cache, tmp_path_factory):
    """A run whose second phase fine-tuned the top 8 CNN layers (its `TrainResult`)."""
    return train(cache, tmp_path_factory.mktemp("fine_tuned") / "run", FINE_TUNE_CONFIG,
                 progress=False)


@pytest.mark.slow
def test_fine_tune_trains_from_images_and_exports_the_new_encoder(cache, fine_tuned):
    config, result = FINE_TUNE_CONFIG, fine_tuned
    release = load_release(result.run_dir)
    before = keras.saving.load_model(cache / "encoder.hdf5", safe_mode=True, compile=False)
    changed = [
        layer.name for layer in release.encoder.get_layer("inception_v3_mixed2").layers
        if layer.weights and not all(
            np.array_equal(a, b) for a, b in zip(
                layer.get_weights(),
                before.get_layer("inception_v3_mixed2").get_layer(layer.name).get_weights()))
    ]
    assert changed, "fine-tuning changed no CNN weight"
    assert set(changed) <= set(unfreeze_top(before, 8))
    state = (result.run_dir / "checkpoints" / "fine_tune" / "state.json").read_text()
    assert '"epoch": 1' in state
    # The fine-tuning epoch is history.csv's last row, numbered after the first phase's.
    history = pd.read_csv(result.run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert list(history["phase"]) == ["frozen", "fine_tune"]
    assert history[["loss", "accuracy", "val_loss", "val_bleu_4"]].notna().all().all()
    assert history["learning_rate"].iloc[1] == pytest.approx(config.fine_tune_learning_rate)
    pd.testing.assert_frame_equal(result.history.reset_index(drop=True), history)
    assert len(plot_history(result.run_dir).axes) == 3  # the notebook's plot reads it



@pytest.mark.slow
@needs_java
def test_a_fine_tuned_release_is_scored_from_the_images_not_the_stale_cache(
        cache, dataset, fine_tuned, tmp_path):
    with pytest.raises(CacheError, match="another encoder.*--images .*images"):
        evaluate_release(fine_tuned.run_dir, cache)
    json_path = tmp_path / "scores.json"
    code, _, err = run_cli("evaluate", "--release", fine_tuned.run_dir, "--cache", cache,
                           "--images", dataset / "images", "--json", json_path, "--no-spice")
    assert code == 0, err
    scores = json.loads(json_path.read_text(encoding="utf-8"))
    assert scores["n_images"] > 0 and scores["CIDEr"] >= 0 and scores["split"] == "test"
