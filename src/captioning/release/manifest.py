"""`manifest.json`: the release's format, versions, file hashes, config and shapes.

Reading and checking a manifest imports neither Keras nor TensorFlow, so the CLI refuses a
missing or damaged manifest before anything heavy loads.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.errors import ConfigError, ReleaseError
from captioning.utils.checks import is_int
from captioning.utils.files import atomic_write_json, sha256_file

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
    if importlib.util.find_spec("tensorflow") is None:
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
    path; None: the shipped demo release."""
    if path is None:
        if not DEFAULT_RELEASE.is_file():
            # The demo lives in the repository, beside src/: a wheel install has no copy.
            raise ReleaseError(
                f"the shipped demo release is not at {DEFAULT_RELEASE}: it comes with a clone "
                "of the repository, so pass --release with a run folder or its manifest.json, "
                "or install with `pip install -e .` from a clone")
        return DEFAULT_RELEASE
    path = Path(path)
    if path.is_dir():
        candidates = [path / MANIFEST_FILE, path / "saved_models" / MANIFEST_FILE]
        path = next((c for c in candidates if c.exists()), candidates[0])
    if not path.exists():
        raise ReleaseError(f"{path}: no release manifest here; pass --release with a run "
                           "folder or its manifest.json")
    return path


def read_manifest(path) -> tuple[Path, dict]:
    """Finds, parses and checks a release manifest; returns its path and content.

    Raises:
        ReleaseError: there is no manifest, it is not JSON, or it lacks a field the release
            needs (named in the message with `manifest.json`).
    """
    path = resolve_manifest(path)
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:120]
        raise ReleaseError(f"{path}: not a readable release manifest ({reason}); restore "
                           "manifest.json from the original release") from None
    check_manifest(path, manifest)
    return path, manifest


def check_manifest(path: Path, manifest) -> None:
    """Refuses a manifest that lacks, or mistypes, a field that loading a release reads."""
    def refuse(what):
        raise ReleaseError(f"{path}: {what}; this manifest.json is damaged or hand-edited, "
                           "restore it from the original release (or train again)")

    if not isinstance(manifest, dict):
        refuse(f"the top level is a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != RELEASE_FORMAT:
        raise ReleaseError(f"{path}: not a captioning release manifest (format "
                           f"{manifest.get('format')!r})")
    version = manifest.get("version", 0)
    if not is_int(version):
        refuse(f"'version' is {version!r}, not an integer")
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
    shape = manifest.get("feature_shape")
    if not isinstance(shape, list) or not shape or not all(is_int(d) and d > 0 for d in shape):
        refuse(f"'feature_shape' is {shape!r}, not a list of positive integers")
    vocab = manifest.get("vocab_size")
    if not is_int(vocab) or vocab < 4:
        refuse(f"'vocab_size' is {vocab!r}, not an integer >= 4")
    units = manifest.get("state_units")
    if units is not None and (not is_int(units) or units < 1):
        refuse(f"'state_units' is {units!r}, not a positive integer")
    try:
        CaptionConfig.from_dict(manifest.get("config"))
    except ConfigError as error:
        refuse(f"'config' is missing or invalid ({error})")
