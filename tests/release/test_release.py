"""Tests for `captioning.release`: loading, verifying and copying a release."""

from __future__ import annotations

import json
import os
import pickle
import re

import h5py
import numpy as np
import pytest

from tests.helpers import CACHE_SETTINGS, tiny_config
from captioning.errors import CaptioningError, ReleaseError, UnsafeFileError
from captioning.release.load import copy_release, load_release, read_manifest, write_manifest
from captioning.text.tokenizer import CaptionTokenizer

ROLES = {"Encoder.hdf5": "encoder", "Decoder.hdf5": "decoder", "tokenizer.pickle": "tokenizer"}


def _flip_one_byte(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def _rehash(run_dir):
    """Records the current files' sha256 in manifest.json, as a careful forger would."""
    path, manifest = read_manifest(run_dir)
    files = {role: run_dir / entry["path"] for role, entry in manifest["files"].items()}
    write_manifest(path, manifest, files)


def _model_configs(path):
    with h5py.File(path, "r") as handle:
        return json.loads(handle.attrs["model_config"])


def _walk_layers(config):
    """Every layer config in a saved model config, nested models included."""
    for layer in config["config"]["layers"]:
        yield layer
        if "layers" in layer.get("config", {}):
            yield from _walk_layers(layer)


def test_load_release_of_a_run(run):
    release = load_release(run)
    assert release.path == run / "manifest.json"
    # The encoder settings of a run are its cache's.
    assert release.config == tiny_config(**CACHE_SETTINGS)
    assert release.image_size == CACHE_SETTINGS["image_size"]
    assert release.manifest["vocab_size"] == release.tokenizer.vocab_size
    assert [t.name for t in release.decoder.inputs][:2] == ["features", "token"]
    assert tuple(release.encoder.outputs[0].shape[1:]) == tuple(release.manifest["feature_shape"])
    # The same release through its manifest path.
    assert load_release(run / "manifest.json").manifest == release.manifest


def test_release_manifest_records_versions_and_hashes(run):
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["versions"]) >= {"captioning", "keras", "tensorflow"}
    assert {entry["path"] for entry in manifest["files"].values()} == set(ROLES)
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in manifest["files"].values())
    assert manifest["encoder"]["weights"] == "none"


@pytest.mark.parametrize("name", sorted(ROLES))
def test_one_changed_byte_is_caught_and_named(copy_run, name):
    _flip_one_byte(copy_run / name)
    with pytest.raises(ReleaseError, match=re.escape(name)) as caught:
        load_release(copy_run)
    assert "sha256" in str(caught.value)


def test_a_code_running_tokenizer_pickle_is_refused_before_it_runs(copy_run, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (copy_run / "tokenizer.pickle").write_bytes(pickle.dumps(Payload()))
    _rehash(copy_run)  # the hashes match: only the restricted unpickler stands in the way
    with pytest.raises(UnsafeFileError, match="tokenizer.pickle") as caught:
        load_release(copy_run)
    assert "system" in str(caught.value)
    assert not marker.exists()


def test_a_tokenizer_of_another_vocabulary_is_named(copy_run):
    other = CaptionTokenizer(max_length=12).fit(["one two three", "four five six seven"])
    assert other.vocab_size != load_release(copy_run).tokenizer.vocab_size
    other.save(copy_run / "tokenizer.pickle")
    _rehash(copy_run)
    with pytest.raises(ReleaseError, match="tokenizer.pickle"):
        load_release(copy_run)


def test_an_encoder_of_another_feature_shape_is_named(copy_run):
    from captioning.models.encoders import build_encoder

    settings = dict(CACHE_SETTINGS, features="grid")
    build_encoder(**settings).save(copy_run / "Encoder.hdf5")
    _rehash(copy_run)
    with pytest.raises(ReleaseError, match="Encoder.hdf5"):
        load_release(copy_run)


def test_a_tokenizer_that_is_no_tokenizer_is_a_release_error(copy_run):
    (copy_run / "tokenizer.pickle").write_bytes(pickle.dumps({"hello": [1, 2, 3]}))
    _rehash(copy_run)
    with pytest.raises(ReleaseError, match="tokenizer.pickle"):
        load_release(copy_run)


def test_a_decoder_that_is_no_model_is_named(copy_run):
    (copy_run / "Decoder.hdf5").write_bytes(b"not an HDF5 file at all")
    _rehash(copy_run)
    with pytest.raises(ReleaseError, match="Decoder.hdf5"):
        load_release(copy_run)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_a_missing_file_is_named(copy_run, name):
    (copy_run / name).unlink()
    with pytest.raises(ReleaseError, match=re.escape(name) + ".*missing"):
        load_release(copy_run)


def test_a_missing_manifest_is_reported(tmp_path):
    with pytest.raises(ReleaseError, match="no release manifest"):
        load_release(tmp_path)
    with pytest.raises(ReleaseError, match="no release manifest"):
        load_release(tmp_path / "nowhere" / "manifest.json")


def test_a_foreign_manifest_is_refused(copy_run):
    (copy_run / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ReleaseError, match="not a captioning release"):
        load_release(copy_run)
    (copy_run / "manifest.json").write_text("{ not json")
    with pytest.raises(ReleaseError, match="manifest"):
        load_release(copy_run)


def test_copy_release_to_the_repository_layout_loads(run, tmp_path):
    manifest = copy_release(run / "manifest.json", tmp_path / "saved_models",
                            tmp_path / "tokenizer")
    assert manifest == tmp_path / "saved_models" / "manifest.json"
    for path in ("saved_models/Encoder.hdf5", "saved_models/Decoder.hdf5",
                 "tokenizer/tokenizer.pickle"):
        assert (tmp_path / path).is_file(), path
    recorded = json.loads(manifest.read_text())["files"]
    assert recorded["tokenizer"]["path"] == "../tokenizer/tokenizer.pickle"
    # A folder holding saved_models/ is a release too.
    copied = load_release(tmp_path)
    original = load_release(run)
    assert copied.tokenizer.to_dict() == original.tokenizer.to_dict()
    for a, b in zip(copied.decoder.get_weights(), original.decoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    # And the copy is still guarded.
    _flip_one_byte(tmp_path / "tokenizer" / "tokenizer.pickle")
    with pytest.raises(ReleaseError, match="tokenizer.pickle"):
        load_release(tmp_path)


def test_copy_release_refuses_a_tampered_source(copy_run, tmp_path):
    # Copying re-hashes the files: an unchecked copy would launder a changed file.
    _flip_one_byte(copy_run / "Decoder.hdf5")
    with pytest.raises(ReleaseError, match="Decoder.hdf5"):
        copy_release(copy_run, tmp_path / "saved_models", tmp_path / "tokenizer")
    assert not (tmp_path / "saved_models" / "manifest.json").exists()


def test_copy_release_onto_itself(run, tmp_path):
    models, tokenizer = tmp_path / "saved_models", tmp_path / "tokenizer"
    copy_release(run, models, tokenizer)
    again = copy_release(models, models, tokenizer)  # `export --release saved_models`
    assert load_release(again).manifest["files"] == load_release(models).manifest["files"]


@pytest.mark.parametrize("name", ["Encoder.hdf5", "Decoder.hdf5"])
def test_exported_models_have_no_lambda_layer(run, name):
    config = _model_configs(run / name)
    assert config["class_name"] == "Functional"
    classes = {layer["class_name"] for layer in _walk_layers(config)}
    assert "Lambda" not in classes


def test_decoder_layers_are_all_named(run):
    from captioning.models.decoders import build_decoder

    layers = list(_walk_layers(_model_configs(run / "Decoder.hdf5")))
    names = [layer["config"]["name"] for layer in layers]
    assert all(names) and len(set(names)) == len(names)
    # A layer Keras names itself gets another name each time it is built (`reshape`,
    # `reshape_1`, ...); one the code names keeps it. Build the decoder twice and compare.
    release = load_release(run)
    args = (release.config, release.tokenizer.vocab_size, tuple(release.manifest["feature_shape"]))
    first, second = (build_decoder(*args).step for _ in range(2))
    assert len(first.layers) == len(names)
    unnamed = [f"{a.__class__.__name__} {a.name!r}" for a, b in zip(first.layers, second.layers)
               if a.name != b.name]
    assert not unnamed, f"layers named by Keras, not by build_decoder: {unnamed}"


@pytest.mark.parametrize("conditioning", ["init_state", "first_input", "every_step",
                                          "attention"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_every_decoder_names_all_its_layers(cell, conditioning):
    # DESIGN.md: exported models name every layer, so two builds give the same names.
    from captioning.config import CaptionConfig
    from captioning.models.decoders import build_decoder

    config = CaptionConfig(cell=cell, conditioning=conditioning, units=8, embedding_dim=4,
                           attention_units=8, num_layers=2)
    shape = (9, 16) if conditioning == "attention" else (16,)
    first, second = (build_decoder(config, 20, shape).step for _ in range(2))
    names = [layer.name for layer in first.layers]
    assert len(set(names)) == len(names)
    assert names == [layer.name for layer in second.layers]


def test_release_errors_are_captioning_errors():
    assert issubclass(ReleaseError, CaptioningError)
    assert issubclass(UnsafeFileError, CaptioningError)


# A bad release through the CLI: exit 2 and one line naming the file, never a traceback.


def _caption_exit(release, image, capsys):
    from captioning import cli

    code = cli.main(["caption", str(image), "--release", str(release)])
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return code, err


def _edit_manifest(run_dir, edit):
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.fixture
def image(dataset):
    return next((dataset / "images").glob("*.jpg"))


@pytest.mark.parametrize("content, said", [
    (b"\x89HDF\r\n\x1a\n\xff\xfe\x00binary", "not a readable release manifest"),
    (b'["format", "captioning.release"]', "top level is a JSON list"),
])
def test_cli_refuses_a_manifest_that_is_no_json_object(copy_run, image, capsys, content, said):
    (copy_run / "manifest.json").write_bytes(content)
    code, err = _caption_exit(copy_run, image, capsys)
    assert code == 2
    assert "manifest.json" in err and said in err


@pytest.mark.parametrize("edit, said", [
    (lambda m: m["files"]["encoder"].pop("path"), "files.encoder.path is missing"),
    (lambda m: m["files"].pop("tokenizer"), "files.tokenizer is missing"),
    (lambda m: m.pop("files"), "'files' is missing"),
    (lambda m: m.pop("feature_shape"), "'feature_shape' is None"),
    (lambda m: m.update(vocab_size="31"), "'vocab_size' is '31'"),
    (lambda m: m["config"].update(units=0), "units must be a positive integer"),
], ids=["encoder path", "tokenizer entry", "files", "feature_shape", "vocab_size", "config"])
def test_cli_names_what_a_manifest_lacks(copy_run, image, capsys, edit, said):
    _edit_manifest(copy_run, edit)
    code, err = _caption_exit(copy_run, image, capsys)
    assert code == 2
    assert "manifest.json" in err and said in err
    with pytest.raises(ReleaseError, match="manifest.json"):
        load_release(copy_run)


def test_cli_names_a_decoder_without_the_step_outputs(copy_run, image, capsys):
    import keras

    release = load_release(copy_run)
    inputs = [keras.Input(t.shape[1:], dtype=t.dtype, name=t.name)
              for t in release.decoder.inputs]
    # The right inputs, but a plain softmax named "probs" instead of log_probs, next_h0, ...
    by_name = {t.name: t for t in inputs}
    vocab = release.tokenizer.vocab_size
    embedded = keras.layers.Flatten(name="flat")(
        keras.layers.Embedding(vocab, 4, name="embed")(by_name["token"]))
    flat = keras.layers.Concatenate(name="joined")(
        [embedded] + [t for name, t in by_name.items() if name != "token"])
    probs = keras.layers.Dense(vocab, activation="softmax", name="probs")(flat)
    keras.Model(inputs, probs).save(copy_run / "Decoder.hdf5")
    _rehash(copy_run)
    code, err = _caption_exit(copy_run, image, capsys)
    assert code == 2
    assert "Decoder.hdf5" in err and "log_probs" in err


def test_missing_shipped_release_says_pass_release_or_install_editable(tmp_path, monkeypatch):
    from captioning.release import load as release

    monkeypatch.setattr(release, "DEFAULT_RELEASE", tmp_path / "saved_models" / "manifest.json")
    with pytest.raises(ReleaseError, match="--release") as caught:
        load_release(None)
    assert "pip install -e ." in str(caught.value)
