"""Loading a release: `Encoder.hdf5`, `Decoder.hdf5`, `tokenizer.pickle` and `manifest.json`.

`load_release` checks every hash before it loads anything, loads the models with
`safe_mode=True, compile=False` and the tokenizer through the restricted unpickler, then
checks that the files fit together; any failure is a `ReleaseError` naming the file at fault,
and nothing is half-used. Keras is imported only when a model is loaded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.errors import CaptioningError, ReleaseError, UnsafeFileError
from captioning.models.step import StepSignature
from captioning.release.manifest import (
    DECODER_FILE,
    ENCODER_FILE,
    ROLES,
    TOKENIZER_FILE,
    read_manifest,
)
from captioning.utils.files import sha256_file


@dataclasses.dataclass
class Release:
    """A loaded, verified release."""

    encoder: object
    decoder: object
    tokenizer: object
    manifest: dict
    path: Path

    @property
    def config(self) -> CaptionConfig:
        return CaptionConfig.from_dict(self.manifest["config"])

    @property
    def image_size(self) -> int:
        return int(self.encoder.inputs[0].shape[1])


def verify_release(path) -> tuple[Path, dict, dict]:
    """Checks that every release file exists and matches its sha256.

    Returns:
        `(manifest_path, manifest, files)` with files mapping role -> absolute path.
    """
    manifest_path, manifest = read_manifest(path)
    files = {}
    for role in ROLES:
        entry = manifest["files"][role]
        file = (manifest_path.parent / entry["path"]).resolve()
        if not file.is_file():
            raise ReleaseError(f"{file.name} is missing (expected at {file}, as {manifest_path} "
                               "says)")
        if sha256_file(file) != entry["sha256"]:
            raise ReleaseError(
                f"{file.name} does not match the sha256 recorded in {manifest_path}: the file "
                "was changed or is corrupt; restore it from the original release"
            )
        files[role] = file
    return manifest_path, manifest, files


def load_release(path=None) -> Release:
    """Loads and verifies a release.

    Args:
        path: a run folder, a folder holding `saved_models/`, or a `manifest.json`; None
            loads the shipped demo release.

    Returns:
        A `Release` with the encoder and one-step decoder models and the tokenizer.
    """
    manifest_path, manifest, files = verify_release(path)
    tokenizer = load_release_tokenizer(files["tokenizer"])
    encoder, decoder = (load_model_file(files[role]) for role in ("encoder", "decoder"))
    check_fit(encoder, decoder, tokenizer)
    _check_manifest_fit(manifest_path, manifest, encoder, decoder)
    return Release(encoder=encoder, decoder=decoder, tokenizer=tokenizer, manifest=manifest,
                   path=manifest_path)


def load_release_tokenizer(path):
    """Loads a release's `tokenizer.pickle` through the restricted unpickler.

    Raises:
        UnsafeFileError: the pickle names a global that is not allowed.
        ReleaseError: the file is no tokenizer (or is corrupt).
    """
    from captioning.text import load_tokenizer

    try:
        return load_tokenizer(path)
    except UnsafeFileError:
        raise
    except CaptioningError as error:
        raise ReleaseError(f"{Path(os.fspath(path)).name}: cannot be loaded as a tokenizer "
                           f"({error})") from None


def load_model_file(path):
    """Loads a Keras 3 model file with `safe_mode=True, compile=False`.

    Raises:
        ReleaseError: Keras cannot load it; the message names the file.
    """
    import keras

    from captioning.models import layers  # noqa: F401  (registers the custom layers)

    try:
        return keras.saving.load_model(os.fspath(path), safe_mode=True, compile=False)
    except CaptioningError:
        raise
    except Exception as error:
        raise ReleaseError(f"{Path(os.fspath(path)).name}: cannot be loaded as a Keras model "
                           f"({str(error).splitlines()[0][:200]})") from None


def check_fit(encoder, decoder, tokenizer, *, names=(ENCODER_FILE, DECODER_FILE,
                                                     TOKENIZER_FILE)) -> StepSignature:
    """Checks that an encoder, a one-step decoder and a tokenizer belong together.

    Args:
        encoder, decoder: Keras models (`Encoder.hdf5`, `Decoder.hdf5`).
        tokenizer: a `CaptionTokenizer`.
        names: how the messages name the three files.

    Returns:
        The decoder's `StepSignature`.

    Raises:
        ReleaseError: the decoder is no one-step decoder, or the files do not fit together;
            the message names the files.
    """
    encoder_name, decoder_name, tokenizer_name = names
    signature = StepSignature.from_model(decoder, decoder_name)
    encoded = tuple(encoder.outputs[0].shape[1:])
    expected = signature.feature_shape(decoder)
    if encoded != expected:
        raise ReleaseError(f"{encoder_name} gives features {encoded} but {decoder_name} takes "
                           f"{expected}: the two files come from different releases")
    vocab = signature.vocab_size(decoder)
    if tokenizer.vocab_size != vocab:
        raise ReleaseError(f"{tokenizer_name} has a vocabulary of {tokenizer.vocab_size} but "
                           f"{decoder_name} predicts {vocab} words: the files come from "
                           "different releases")
    return signature


def _check_manifest_fit(manifest_path, manifest, encoder, decoder):
    encoded = tuple(encoder.outputs[0].shape[1:])
    if tuple(manifest["feature_shape"]) != encoded:
        raise ReleaseError(f"{ENCODER_FILE} gives features {encoded} but {manifest_path} "
                           f"records {tuple(manifest['feature_shape'])}")
    signature = StepSignature.from_model(decoder, DECODER_FILE)
    vocab = signature.vocab_size(decoder)
    if manifest["vocab_size"] != vocab:
        raise ReleaseError(f"{DECODER_FILE} predicts {vocab} words but {manifest_path} records "
                           f"{manifest['vocab_size']}: the files come from different releases")
    units = manifest.get("state_units")
    for name, size in signature.state_units(decoder).items():
        if units is not None and size != units:
            raise ReleaseError(f"{DECODER_FILE}: state {name} has {size} units, "
                               f"{manifest_path} records {units}")
