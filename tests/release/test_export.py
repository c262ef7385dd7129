"""Tests for captioning.release.export: what a release holds, and copying it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.release.helpers import flip_one_byte, model_configs, walk_layers
from captioning.errors import ReleaseError
from captioning.release import copy_release, load_release


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
    flip_one_byte(tmp_path / "tokenizer" / "tokenizer.pickle")
    with pytest.raises(ReleaseError, match="tokenizer.pickle"):
        load_release(tmp_path)


def test_copy_release_refuses_a_tampered_source(copy_run, tmp_path):
    # Copying re-hashes the files: an unchecked copy would launder a changed file.
    flip_one_byte(copy_run / "Decoder.hdf5")
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
    config = model_configs(run / name)
    assert config["class_name"] == "Functional"
    classes = {layer["class_name"] for layer in walk_layers(config)}
    assert "Lambda" not in classes


def test_decoder_layers_are_all_named(run):
    from captioning.models.decoders import build_decoder

    layers = list(walk_layers(model_configs(run / "Decoder.hdf5")))
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
