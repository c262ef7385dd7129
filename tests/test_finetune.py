"""Fine-tuning: the second phase trains from images with the top CNN layers unfrozen."""

import keras
import numpy as np
import pytest

from captioning.errors import ConfigError
from captioning.finetune import unfreeze_top
from captioning.release import load_release
from captioning.training import train
from conftest import tiny_config


def test_unfreeze_top_leaves_batchnorm_frozen():
    from captioning.encoders import build_encoder

    encoder = build_encoder("inception_v3_mixed2", "none", 75)
    chosen = unfreeze_top(encoder, 6)
    backbone = encoder.get_layer("inception_v3_mixed2")
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable == chosen and 0 < len(chosen) <= 6
    assert not any(isinstance(backbone.get_layer(n), keras.layers.BatchNormalization)
                   for n in chosen)
    first_conv = next(layer for layer in backbone.layers if layer.weights)
    assert not first_conv.trainable


def test_unfreeze_more_layers_than_the_cnn_has_is_refused():
    from captioning.encoders import build_encoder

    with pytest.raises(ConfigError, match="fine_tune=100000"):
        unfreeze_top(build_encoder("inception_v3_mixed2", "none", 75), 100000)


@pytest.mark.slow
def test_fine_tune_trains_from_images_and_exports_the_new_encoder(cache, tmp_path):
    config = tiny_config(epochs=1, fine_tune=8, fine_tune_epochs=1)
    result = train(cache, tmp_path / "run", config, progress=False)
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
    state = (result.run_dir / "checkpoints" / "fine_tune" / "state.json").read_text()
    assert '"epoch": 1' in state
