"""Tests for captioning.release.load: verified loading, and the checks that the files fit."""

from __future__ import annotations

import os
import pickle
import re

import pytest

from tests.helpers import CACHE_SETTINGS, tiny_config
from tests.release.helpers import ROLES, caption_exit, flip_one_byte, rehash
from captioning.errors import CaptioningError, ReleaseError, UnsafeFileError
from captioning.release import load_release
from captioning.text.tokenizer import CaptionTokenizer


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


@pytest.mark.parametrize("name", sorted(ROLES))
def test_one_changed_byte_is_caught_and_named(copy_run, name):
    flip_one_byte(copy_run / name)
    with pytest.raises(ReleaseError, match=re.escape(name)) as caught:
        load_release(copy_run)
    assert "sha256" in str(caught.value)


def test_a_code_running_tokenizer_pickle_is_refused_before_it_runs(copy_run, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (copy_run / "tokenizer.pickle").write_bytes(pickle.dumps(Payload()))
    rehash(copy_run)  # the hashes match: only the restricted unpickler stands in the way
    with pytest.raises(UnsafeFileError, match="tokenizer.pickle") as caught:
        load_release(copy_run)
    assert "system" in str(caught.value)
    assert not marker.exists()


def test_a_tokenizer_of_another_vocabulary_is_named(copy_run):
    other = CaptionTokenizer(max_length=12).fit(["one two three", "four five six seven"])
    assert other.vocab_size != load_release(copy_run).tokenizer.vocab_size
    other.save(copy_run / "tokenizer.pickle")
    rehash(copy_run)
    with pytest.raises(ReleaseError, match="tokenizer.pickle"):
        load_release(copy_run)


def test_an_encoder_of_another_feature_shape_is_named(copy_run):
    from captioning.models.encoders import build_encoder

    settings = dict(CACHE_SETTINGS, features="grid")
    build_encoder(**settings).save(copy_run / "Encoder.hdf5")
    rehash(copy_run)
    with pytest.raises(ReleaseError, match="Encoder.hdf5"):
        load_release(copy_run)


def test_a_tokenizer_that_is_no_tokenizer_is_a_release_error(copy_run):
    (copy_run / "tokenizer.pickle").write_bytes(pickle.dumps({"hello": [1, 2, 3]}))
    rehash(copy_run)
    with pytest.raises(ReleaseError, match="tokenizer.pickle"):
        load_release(copy_run)


def test_a_decoder_that_is_no_model_is_named(copy_run):
    (copy_run / "Decoder.hdf5").write_bytes(b"not an HDF5 file at all")
    rehash(copy_run)
    with pytest.raises(ReleaseError, match="Decoder.hdf5"):
        load_release(copy_run)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_a_missing_file_is_named(copy_run, name):
    (copy_run / name).unlink()
    with pytest.raises(ReleaseError, match=re.escape(name) + ".*missing"):
        load_release(copy_run)


def test_release_errors_are_captioning_errors():
    assert issubclass(ReleaseError, CaptioningError)
    assert issubclass(UnsafeFileError, CaptioningError)


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
    rehash(copy_run)
    code, err = caption_exit(copy_run, image, capsys)
    assert code == 2
    assert "Decoder.hdf5" in err and "log_probs" in err
