"""Tests for captioning.release.legacy: the earlier Keras project's `.hdf5` files, told apart
from Keras 3 files and checked against the allow-lists before tf-keras loads anything.

The files are rebuilt in miniature by `tests.release.legacy_files`.
"""

from __future__ import annotations

import json
import shutil
import sys

import h5py
import pytest

from tests.release.legacy_files import (
    SEED_VOCAB,
    SIZE,
    legacy_decoder,
    legacy_encoder,
    make_files,
    save,
    tf_keras,
)
from captioning.errors import CaptioningError, ReleaseError, UnsafeFileError
from captioning.release.legacy import (
    TF_KERAS_MISSING,
    check_legacy_model,
    is_legacy_model,
    load_legacy_model,
    load_legacy_models,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("legacy"))


# ---------------------------------------------------------------------------------------------
# Telling the formats apart.


def test_is_legacy_model_reads_only_the_attributes(files, tmp_path):
    for style in ("tf22", "tf24"):
        assert is_legacy_model(files[style] / "Encoder.hdf5")
        assert is_legacy_model(files[style] / "Decoder.hdf5")
    with h5py.File(files["tf22"] / "Decoder.hdf5") as file:
        assert file.attrs["keras_version"] in (b"2.3.0-tf", "2.3.0-tf")
        assert "TensorFlowOpLayer" in str(file.attrs["model_config"])
    # Without a version, the classes Keras 3 lacks still tell.
    copy = shutil.copyfile(files["tf24"] / "Decoder.hdf5", tmp_path / "noversion.hdf5")
    with h5py.File(copy, "r+") as file:
        del file.attrs["keras_version"]
    assert is_legacy_model(copy)


def test_is_legacy_model_false_for_keras3_and_errors_for_non_models(files, tmp_path):
    import keras

    inputs = keras.Input((4,), name="features")
    keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs)).save(tmp_path / "k3.hdf5")
    assert not is_legacy_model(tmp_path / "k3.hdf5")

    weights_only = tmp_path / "weights.h5"
    legacy_encoder().save_weights(weights_only)
    with pytest.raises(ReleaseError, match="only weights"):
        is_legacy_model(weights_only)
    text = tmp_path / "Decoder.hdf5"
    text.write_text("not HDF5")
    with pytest.raises(ReleaseError, match="Decoder.hdf5"):
        is_legacy_model(text)
    with pytest.raises(ReleaseError, match="no such file"):
        is_legacy_model(tmp_path / "missing.hdf5")


# ---------------------------------------------------------------------------------------------
# Safety: refused before anything runs.


def test_lambda_layer_is_refused_before_it_runs(files, tmp_path):
    marker = tmp_path / "lambda_ran"
    touch = tf_keras.layers.Lambda(
        lambda x, p=str(marker): (__import__("pathlib").Path(p).touch(), x)[1])
    decoder = legacy_decoder(SEED_VOCAB, units=8, embedding=4, extra=touch)
    save(decoder, tmp_path / "Decoder.hdf5")
    marker.unlink()  # building and saving called it here

    with pytest.raises(UnsafeFileError, match=r"Decoder\.hdf5.*Lambda layer") as refused:
        load_legacy_model(tmp_path / "Decoder.hdf5")
    assert str(tmp_path / "Decoder.hdf5") in str(refused.value)
    assert not marker.exists()
    # Both files are checked before either is loaded.
    with pytest.raises(UnsafeFileError):
        load_legacy_models(files["tf24"] / "Encoder.hdf5", tmp_path / "Decoder.hdf5")
    assert not marker.exists()

    # Why the check matters: tf-keras 2.21 itself runs the bytecode of an .hdf5 file, even
    # with safe_mode=True (it applies that to .keras files only).
    try:
        tf_keras.models.load_model(tmp_path / "Decoder.hdf5", compile=False, safe_mode=True)
    except Exception:  # a newer tf-keras that refuses by itself
        return
    assert marker.exists()


def _edit_layer(config, class_name, change):
    def walk(value):
        if isinstance(value, dict):
            if value.get("class_name") == class_name and "inbound_nodes" in value:
                change(value)
                return True
            return any(walk(v) for v in value.values())
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    assert walk(config), class_name


def _write_op(layer):
    layer["config"]["node_def"]["op"] = "WriteFile"


def _tf_function(layer):
    layer["config"]["function"] = "io.write_file"


def _unknown_class(layer):
    layer["class_name"] = "MyCustomLayer"


def _module(layer):
    layer["config"]["kernel_initializer"] = {"module": "os", "class_name": "GlorotUniform",
                                             "config": {}, "registered_name": None}


def _object(layer):
    layer["config"]["kernel_initializer"] = {"class_name": "Popen", "config": {}}


def _activation(layer):
    layer["config"]["activation"] = "deserialize"


def _constants(layer):
    layer["config"]["constants"] = {"1": {"class_name": "Zeros", "config": {}}}


@pytest.mark.parametrize("style, class_name, change, message", [
    ("tf22", "TensorFlowOpLayer", _write_op, "op 'WriteFile'"),
    ("tf24", "TFOpLambda", _tf_function, "tf.'io.write_file'"),
    ("tf22", "Concatenate", _unknown_class, "'MyCustomLayer'"),
    ("tf22", "Dense", _module, "module 'os'"),
    ("tf24", "Dense", _object, "'Popen'"),
    ("tf22", "Dense", _activation, "activation 'deserialize'"),
    ("tf22", "TensorFlowOpLayer", _constants, "constants"),
])
def test_configs_outside_the_allow_lists_are_refused(files, tmp_path, style, class_name,
                                                     change, message):
    path = shutil.copyfile(files[style] / "Decoder.hdf5", tmp_path / "Decoder.hdf5")
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        _edit_layer(config, class_name, change)
        file.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(UnsafeFileError, match="Decoder.hdf5") as refused:
        check_legacy_model(path)
    assert message in str(refused.value)


def test_nested_models_are_checked(files, tmp_path):
    path = shutil.copyfile(files["tf22"] / "Encoder.hdf5", tmp_path / "Encoder.hdf5")
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        _edit_layer(config, "Conv2D", _unknown_class)  # inside the nested inception_v3
        file.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(UnsafeFileError, match="MyCustomLayer"):
        load_legacy_model(path)
    assert check_legacy_model(files["tf22"] / "Encoder.hdf5")["class_name"] == "Model"


@pytest.mark.parametrize("style", ["tf22", "tf24"])
def test_checked_files_load_with_tf_keras(files, style):
    encoder, decoder = load_legacy_models(files[style] / "Encoder.hdf5",
                                          files[style] / "Decoder.hdf5")
    assert len(encoder.inputs) == 1 and tuple(encoder.inputs[0].shape[1:]) == (SIZE, SIZE, 3)
    assert len(decoder.inputs) == 4 and len(decoder.outputs) == 3
    assert int(decoder.outputs[0].shape[-1]) == SEED_VOCAB


def test_missing_tf_keras_gives_the_clear_message(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # `import tf_keras` now fails
    with pytest.raises(CaptioningError) as error:
        load_legacy_model(files["tf22"] / "Decoder.hdf5")
    assert str(error.value) == TF_KERAS_MISSING
    assert "pip install tf-keras" in str(error.value)
