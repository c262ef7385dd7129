"""Tests for captioning.encoders: shapes per family, refusals, offline weights, naming,
.hdf5 save/reload."""

import urllib.error

import keras
import numpy as np
import pytest

import captioning.models.layers  # noqa: F401  (registers the custom layers)
from captioning.models.encoders import ENCODER_SPECS, OFFLINE_HINT, build_encoder, encoder_spec
from captioning.errors import CaptioningError, ConfigError
from captioning.models.layers import ImagePreprocessing


def inception_grid_side(size, blocks="mixed10"):
    """Spatial side of InceptionV3's feature map (valid convolutions and pools)."""
    down = lambda n: (n - 3) // 2 + 1  # 3x3 stride 2, valid
    side = down(size) - 2  # conv 3x3 s2, conv 3x3 valid, conv 3x3 same
    side = down(side) - 2  # max pool, conv 1x1, conv 3x3 valid
    side = down(side)  # max pool -> mixed0..mixed2
    if blocks == "mixed2":
        return side
    return down(down(side))  # mixed3 and mixed8 reduce


def test_inception_grid_formula_matches_the_known_299_map():
    assert inception_grid_side(299) == 8  # the 8x8x2048 map -> (64, 2048)
    assert inception_grid_side(75) == 1


# family, image size, features, expected output shape (without batch)
SHAPES = [
    ("inception_v3", 75, "pooled", (2048,)),
    ("inception_v3", 107, "grid", (inception_grid_side(107) ** 2, 2048)),
    ("inception_v3_mixed2", 75, "grid", (inception_grid_side(75, "mixed2") ** 2, 288)),
    ("inception_v3_mixed2", 75, "pooled", (288,)),
    ("vgg16", 64, "grid", (4, 512)),
    ("resnet50", 64, "pooled", (2048,)),
    ("resnet50", 64, "grid", (4, 2048)),
    ("mobilenet_v2", 32, "pooled", (1280,)),
    ("mobilenet_v2", 64, "grid", (4, 1280)),
]


@pytest.mark.parametrize("family,size,features,shape", SHAPES,
                         ids=[f"{f}-{s}-{k}" for f, s, k, _ in SHAPES])
def test_output_shapes(family, size, features, shape):
    model = build_encoder(family, weights="none", image_size=size, features=features)
    assert model.name == "encoder"
    assert tuple(model.input.shape) == (None, size, size, 3)
    assert tuple(model.output.shape) == (None, *shape)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    out = model(pixels, training=False)
    assert tuple(out.shape) == (2, *shape)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))
    # every layer is named after what it does; preprocessing is a registered layer, no Lambda
    names = [layer.name for layer in model.layers]
    assert names[0] == "image" and names[1] == "preprocessing" and names[-1] == "features"
    assert isinstance(model.get_layer("preprocessing"), ImagePreprocessing)
    assert model.get_layer("preprocessing").mode == ENCODER_SPECS[family].preprocessing
    assert len(set(names)) == len(names)
    all_layers = list(model._flatten_layers(include_self=False, recursive=True))
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in all_layers)


def test_vgg16_pooled_is_fc2_at_224():
    model = build_encoder("vgg16", weights="none", image_size=224, features="pooled")
    assert tuple(model.output.shape) == (None, 4096)
    assert model.layers[2].layers[-1].name == "fc2"


def test_vgg16_pooled_refuses_other_sizes():
    with pytest.raises(ConfigError, match="224") as info:
        build_encoder("vgg16", weights="none", image_size=64, features="pooled")
    assert "--features grid" in str(info.value)


def test_default_sizes():
    assert encoder_spec("inception_v3").default_size == 299
    assert encoder_spec("vgg16").default_size == 224


def test_unknown_family():
    with pytest.raises(ConfigError, match="alexnet") as info:
        build_encoder("alexnet", weights="none")
    assert "inception_v3" in str(info.value)


def test_unknown_features():
    with pytest.raises(ConfigError, match="'dense'"):
        build_encoder("vgg16", weights="none", image_size=32, features="dense")


@pytest.mark.parametrize("family,size", [("inception_v3", 74), ("inception_v3_mixed2", 60),
                                         ("vgg16", 31), ("resnet50", 16)])
def test_too_small_image(family, size):
    with pytest.raises(ConfigError, match=str(size)):
        build_encoder(family, weights="none", image_size=size)


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "no_such_weights.h5"
    with pytest.raises(ConfigError, match="no_such_weights.h5"):
        build_encoder("vgg16", weights=str(missing), image_size=32, features="grid")


def test_weights_file_that_is_not_weights(tmp_path):
    bogus = tmp_path / "bogus_weights.h5"
    bogus.write_text("not an HDF5 file")
    with pytest.raises(CaptioningError, match="bogus_weights.h5"):
        build_encoder("vgg16", weights=str(bogus), image_size=32, features="grid")


def test_local_weights_file_is_loaded(tmp_path):
    source = build_encoder("vgg16", weights="none", image_size=32, features="grid")
    backbone = source.get_layer("vgg16")
    path = tmp_path / "vgg16_notop.weights.h5"
    backbone.save_weights(path)
    model = build_encoder("vgg16", weights=str(path), image_size=32, features="grid")
    for a, b in zip(backbone.get_weights(), model.get_layer("vgg16").get_weights()):
        np.testing.assert_array_equal(a, b)


def _fake_offline_get_file(*args, **kwargs):
    # What keras.utils.get_file raises when urlretrieve cannot reach the host.
    origin = kwargs.get("origin") or (args[1] if len(args) > 1 else "https://storage")
    error = urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    raise Exception(f"URL fetch failure on {origin}: None -- {error.reason}")


@pytest.mark.parametrize("family", ["inception_v3", "inception_v3_mixed2"])
def test_imagenet_weights_offline_gives_a_clear_error(monkeypatch, family):
    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", _fake_offline_get_file)
    with pytest.raises(CaptioningError) as info:
        build_encoder(family, weights="imagenet", image_size=75)
    message = str(info.value)
    assert "--weights none" in message
    assert OFFLINE_HINT in message
    assert "URL fetch failure" in message


def test_imagenet_offline_through_keras_get_file(monkeypatch, tmp_path):
    """The real keras get_file, with urlretrieve failing as it does without a network."""
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    real_get_file = file_utils.get_file
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(file_utils, "get_file",
                        lambda *a, **k: real_get_file(*a, **{**k, "cache_dir": str(tmp_path)}))
    with pytest.raises(CaptioningError, match="--weights none"):
        build_encoder("inception_v3", weights="imagenet", image_size=75)


@pytest.mark.parametrize("family,size,features", [("inception_v3_mixed2", 75, "grid"),
                                                  ("vgg16", 32, "grid"),
                                                  ("mobilenet_v2", 32, "pooled")])
def test_hdf5_save_reload_gives_same_outputs(tmp_path, family, size, features):
    model = build_encoder(family, weights="none", image_size=size, features=features)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(pixels, training=False))
    path = tmp_path / "Encoder.hdf5"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    got = keras.ops.convert_to_numpy(loaded(pixels, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
