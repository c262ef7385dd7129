"""`manifest.json`: the release's format, versions, file hashes, config and shapes.

Reading and checking a manifest imports neither Keras nor TensorFlow, so the CLI refuses a
missing or damaged manifest before anything heavy loads. The manifest is read only from a
regular file of at most `MAX_MANIFEST_BYTES`, as JSON within the limits of
`captioning.release.limits` (depth, integer digits, string lengths), and every size it
records is checked against those limits: a hostile manifest is refused on one line.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import re
import sys
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.errors import CaptioningError, ConfigError, ReleaseError
from captioning.release.limits import (
    MAX_DECODE_LENGTH,
    MAX_FEATURE_ELEMENTS,
    MAX_JSON_DEPTH,
    MAX_JSON_INT_DIGITS,
    MAX_MANIFEST_BYTES,
    MAX_STATE_UNITS,
    MAX_STRING_LENGTH,
    MAX_VOCAB_SIZE,
)
from captioning.release.switch import finish_switch
from captioning.utils.backends import has_tensorflow
from captioning.utils.checks import is_int
from captioning.utils.files import (
    JsonLimitError,
    atomic_write_json,
    display_path,
    parse_json_limited,
    read_limited,
    sha256_file,
)

RELEASE_FORMAT = "captioning.release"
RELEASE_VERSION = 1
ENCODER_FILE, DECODER_FILE = "Encoder.hdf5", "Decoder.hdf5"
TOKENIZER_FILE, MANIFEST_FILE = "tokenizer.pickle", "manifest.json"
ROLES = ("encoder", "decoder", "tokenizer")
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RELEASE = REPO_ROOT / "saved_models" / MANIFEST_FILE

_TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos",
                             "tf-nightly")


def versions() -> dict:
    """What made a release: package, Keras and its backend, TensorFlow (None when it is not
    installed; never imported here) and Python."""
    import keras

    from captioning import __version__

    return {"captioning": __version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "tensorflow": _tensorflow_version(),
            "python": platform.python_version()}


def _tensorflow_version() -> str | None:
    if "tensorflow" in sys.modules:
        return getattr(sys.modules["tensorflow"], "__version__", None)
    if not has_tensorflow():
        return None
    for name in _TENSORFLOW_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def write_manifest(path, manifest: dict, files: dict) -> Path:
    """Records `files` (role -> path) with their sha256 in `manifest` and writes it."""
    path = Path(path)
    manifest = dict(manifest)
    manifest["files"] = {
        role: {"path": os.path.relpath(file, path.parent).replace(os.sep, "/"),
               "sha256": sha256_file(file)}
        for role, file in files.items()
    }
    return atomic_write_json(path, manifest, error=ReleaseError)


def record_scores(path, split: str, scores: dict) -> Path:
    """Adds evaluation scores to a release manifest under `scores[split]`."""
    manifest_path, manifest = read_manifest(path)
    manifest.setdefault("scores", {})[split] = scores
    return atomic_write_json(manifest_path, manifest, error=ReleaseError)


def resolve_manifest(path) -> Path:
    """The `manifest.json` of a run folder, a folder holding `saved_models/`, or a manifest
    path; None: the shipped demo release.

    A release whose writing was interrupted after it was staged is completed first
    (`captioning.release.switch`).
    """
    if path is None:
        if not DEFAULT_RELEASE.is_file():
            # The demo lives in the repository, beside src/: a wheel install has no copy.
            raise ReleaseError(
                f"the shipped demo release is not at {DEFAULT_RELEASE}: it comes with a clone "
                "of the repository, so pass --release with a run folder or its manifest.json, "
                "or install with `pip install -e .` from a clone")
        return DEFAULT_RELEASE
    try:
        path = Path(path)
    except TypeError:
        raise ReleaseError(f"a release is given as a path, not {type(path).__name__}") from None
    if "\0" in str(path):
        raise ReleaseError(f"{display_path(path)}: a release path cannot hold a NUL byte")
    if path.is_dir():
        candidates = [path / MANIFEST_FILE, path / "saved_models" / MANIFEST_FILE]
        for candidate in candidates:
            _finish_switch(candidate)
        path = next((c for c in candidates if os.path.lexists(c)), candidates[0])
    else:
        _finish_switch(path)
    if not os.path.lexists(path):
        raise ReleaseError(f"{display_path(path)}: no release manifest here; pass --release "
                           "with a run folder or its manifest.json")
    return path


def _finish_switch(manifest_path):
    try:
        finish_switch(manifest_path)
    except CaptioningError as error:
        raise ReleaseError(str(error)) from None


def read_manifest(path) -> tuple[Path, dict]:
    """Finds, parses and checks a release manifest; returns its path and content.

    Raises:
        ReleaseError: there is no manifest, it is no regular file, larger than
            `MAX_MANIFEST_BYTES`, not JSON, beyond the JSON limits, or it lacks (or
            mistypes, or records an out-of-range size for) a field the release needs (named
            in the message with `manifest.json`).
    """
    path = resolve_manifest(path)
    data = read_limited(path, MAX_MANIFEST_BYTES, what="release manifest", error=ReleaseError)
    try:
        manifest = parse_json_limited(data, max_int_digits=MAX_JSON_INT_DIGITS,
                                      max_depth=MAX_JSON_DEPTH, max_string=MAX_STRING_LENGTH)
    except JsonLimitError as error:
        raise ReleaseError(f"{display_path(path)}: not a readable release manifest ({error}); "
                           "restore manifest.json from the original release") from None
    check_manifest(path, manifest)
    return path, manifest


_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_manifest(path: Path, manifest) -> None:
    """Refuses a manifest that lacks, or mistypes, a field that loading a release reads, or
    records a size beyond the limits of `captioning.release.limits`."""
    path = display_path(path)

    def refuse(what):
        raise ReleaseError(f"{path}: {what}; this manifest.json is damaged or hand-edited, "
                           "restore it from the original release (or train again)")

    if not isinstance(manifest, dict):
        refuse(f"the top level is a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != RELEASE_FORMAT:
        raise ReleaseError(f"{path}: not a captioning release manifest (format "
                           f"{_short(manifest.get('format'))})")
    version = manifest.get("version", 0)
    if not is_int(version):
        refuse(f"'version' is {_short(version)}, not an integer")
    if version > RELEASE_VERSION:
        raise ReleaseError(f"{path}: release format version {version} is newer than this "
                           "package reads; upgrade captioning")
    files = manifest.get("files")
    if not isinstance(files, dict):
        refuse("'files' is missing or not an object (it lists encoder, decoder, tokenizer)")
    for role in ROLES:
        entry = files.get(role)
        if not isinstance(entry, dict):
            refuse(f"files.{role} is missing")
        for key in ("path", "sha256"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                refuse(f"files.{role}.{key} is missing or not a string")
        file = entry["path"]
        if "\0" in file or not file.isprintable():
            refuse(f"files.{role}.path is {_short(file)}, which holds a NUL byte or a control "
                   "character")
        if os.path.isabs(file) or file.startswith(("/", "\\")):
            refuse(f"files.{role}.path is {_short(file)}: a release names its files relative "
                   "to its manifest")
        if not _SHA256.fullmatch(entry["sha256"]):
            refuse(f"files.{role}.sha256 is {_short(entry['sha256'])}, not 64 hex digits")
    shape = manifest.get("feature_shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(is_int(d) and d > 0 for d in shape)):
        refuse(f"'feature_shape' is {_short(shape)}, not a list of 1 to 3 positive integers")
    if math.prod(shape) > MAX_FEATURE_ELEMENTS:
        refuse(f"'feature_shape' is {shape}: {math.prod(shape)} numbers per image, more than "
               f"the {MAX_FEATURE_ELEMENTS} a release may have")
    vocab = manifest.get("vocab_size")
    if not is_int(vocab) or not 4 <= vocab <= MAX_VOCAB_SIZE:
        refuse(f"'vocab_size' is {_short(vocab)}, not an integer in 4..{MAX_VOCAB_SIZE}")
    units = manifest.get("state_units")
    if units is not None and (not is_int(units) or not 1 <= units <= MAX_STATE_UNITS):
        refuse(f"'state_units' is {_short(units)}, not an integer in 1..{MAX_STATE_UNITS}")
    try:
        config = CaptionConfig.from_dict(manifest.get("config"))
    except ConfigError as error:
        refuse(f"'config' is missing or invalid ({error})")
    if config.max_decode_length > MAX_DECODE_LENGTH:
        refuse(f"config.max_decode_length is {config.max_decode_length}, more than the "
               f"{MAX_DECODE_LENGTH} words a caption may have")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
