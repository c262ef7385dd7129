"""Loading a release: `Encoder.hdf5`, `Decoder.hdf5`, `tokenizer.pickle` and `manifest.json`.

`load_release` checks every hash before it loads anything (each file must be a regular file
within its size limit), checks each model file's declared sizes, classes, names and
activations before Keras allocates anything for it (`captioning.release.model_file`), loads
the models with `safe_mode=True, compile=False` and the tokenizer through the restricted
unpickler, then checks that the files fit together; any failure is a `ReleaseError` naming
the file at fault, and nothing is half-used. Keras is imported only when a model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.errors import CaptioningError, ReleaseError, UnsafeFileError
from captioning.models.step import StepSignature
from captioning.release.limits import MAX_MODEL_BYTES
from captioning.release.manifest import (
    DECODER_FILE,
    ENCODER_FILE,
    ROLES,
    TOKENIZER_FILE,
    read_manifest,
)
from captioning.release.model_file import check_model_file
from captioning.text.tokenizer_file import MAX_TOKENIZER_BYTES
from captioning.utils.backends import tensorflow_left_alone
from captioning.utils.files import (
    describe_os_error,
    display_path,
    format_size,
    open_regular,
)

_SIZE_LIMITS = {"encoder": MAX_MODEL_BYTES, "decoder": MAX_MODEL_BYTES,
                "tokenizer": MAX_TOKENIZER_BYTES}


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
    """Checks that every release file exists, is a regular file within its size limit, and
    matches its sha256.

    Returns:
        `(manifest_path, manifest, files)` with files mapping role -> absolute path.
    """
    manifest_path, manifest = read_manifest(path)
    files = {}
    for role in ROLES:
        entry = manifest["files"][role]
        file = manifest_path.parent / entry["path"]
        try:
            file = file.resolve()
        except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop (< 3.13)
            reason = (describe_os_error(error) if isinstance(error, OSError)
                      else "a symbolic link loop")
            raise ReleaseError(f"{display_path(file)}: cannot be read, as {manifest_path} "
                               f"names it ({reason}); restore the release's files") from None
        if not os.path.lexists(file):
            raise ReleaseError(f"{file.name} is missing (expected at {file}, as {manifest_path} "
                               "says)")
        if _sha256(file, _SIZE_LIMITS[role], role) != entry["sha256"]:
            raise ReleaseError(
                f"{file.name} does not match the sha256 recorded in {manifest_path}: the file "
                "was changed or is corrupt; restore it from the original release"
            )
        files[role] = file
    return manifest_path, manifest, files


def _sha256(path, limit, role) -> str:
    """The sha256 of a regular file of at most `limit` bytes, read once."""
    digest = hashlib.sha256()
    with open_regular(path, what=f"{role} file", error=ReleaseError) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise ReleaseError(f"{display_path(path)}: the {role} file is {format_size(size)}, "
                               f"more than the {format_size(limit)} a release {role} may have")
        read = 0
        while block := handle.read(2**20):
            read += len(block)
            if read > limit:
                raise ReleaseError(f"{display_path(path)}: the {role} file is over "
                                   f"{format_size(limit)}; refusing to read it")
            digest.update(block)
    return digest.hexdigest()


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
    encoder = load_model_file(files["encoder"])
    _check_image_input(encoder, ENCODER_FILE)
    decoder = load_model_file(files["decoder"])
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
    """Loads a Keras 3 model file with `safe_mode=True, compile=False`, after
    `check_model_file` has checked everything it declares.

    Raises:
        ReleaseError: the file declares sizes beyond the limits or the file, or Keras cannot
            load it; the message names the file.
        UnsafeFileError: a Sequential model, or an activation that is not a built-in one.
    """
    import keras

    from captioning.models import layers  # noqa: F401  (registers the custom layers)

    name = Path(os.fspath(path)).name
    check_model_file(path, name)
    try:
        with tensorflow_left_alone():  # Keras' .hdf5 reader would import TensorFlow on JAX
            return keras.saving.load_model(os.fspath(path), safe_mode=True, compile=False)
    except CaptioningError:
        raise
    except Exception as error:
        raise ReleaseError(f"{name}: cannot be loaded as a Keras model "
                           f"({str(error).splitlines()[0][:200]})") from None


def _check_image_input(encoder, name):
    """The encoder takes one batch of RGB images of a fixed size."""
    shape = tuple(encoder.inputs[0].shape) if len(encoder.inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[-1] != 3 or None in shape[1:]:
        raise ReleaseError(f"{name}: its input is {shape if shape else encoder.inputs}, not one "
                           "batch of RGB images of a fixed size (batch, height, width, 3)")


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
