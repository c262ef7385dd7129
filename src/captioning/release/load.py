"""The release: `Encoder.hdf5`, `Decoder.hdf5`, `tokenizer.pickle` and `manifest.json`.

`manifest.json` records each file's path (relative to the manifest) and sha256, the config,
and the shapes that tie the three together. `load_release` checks every hash before it
loads anything, loads the models with `safe_mode=True, compile=False` and the tokenizer
through the restricted unpickler, then checks that the files fit together; any failure is a
`ReleaseError` naming the file at fault, and nothing is half-used.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.errors import CaptioningError, ConfigError, ReleaseError, UnsafeFileError
from captioning.utils.files import sha256_file

RELEASE_FORMAT = "captioning.release"
RELEASE_VERSION = 1
ENCODER_FILE, DECODER_FILE = "Encoder.hdf5", "Decoder.hdf5"
TOKENIZER_FILE, MANIFEST_FILE = "tokenizer.pickle", "manifest.json"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RELEASE = REPO_ROOT / "saved_models" / MANIFEST_FILE


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from captioning import __version__

    return {"captioning": __version__, "keras": keras.__version__,
            "tensorflow": tf.__version__, "python": platform.python_version()}


def export_release(out_dir, *, encoder_file, step_model, tokenizer, config: CaptionConfig,
                   cache_settings: dict, feature_shape, extra: dict | None = None) -> Path:
    """Writes the four release files into `out_dir`.

    Args:
        out_dir: the folder to write into.
        encoder_file: the encoder `.hdf5` that produced the features (copied as is), or a
            Keras model to save.
        step_model: the one-step decoder model.
        tokenizer: the `CaptionTokenizer` used for training.
        config: the run's `CaptionConfig`.
        cache_settings: encoder, weights, image_size, features, dtype of the cache.
        feature_shape: one image's features.
        extra: more facts for the manifest (scores, dataset, best epoch).

    Returns:
        The path of `manifest.json`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder_path = out / ENCODER_FILE
    if isinstance(encoder_file, (str, os.PathLike)):
        if Path(encoder_file).resolve() != encoder_path.resolve():
            shutil.copyfile(encoder_file, encoder_path)
    else:
        encoder_file.save(encoder_path)
    step_model.save(out / DECODER_FILE)
    if (out / TOKENIZER_FILE).resolve() != Path(getattr(tokenizer, "_path", "")).resolve():
        tokenizer.save(out / TOKENIZER_FILE)
    manifest = {
        "format": RELEASE_FORMAT,
        "version": RELEASE_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "encoder": dict(cache_settings),
        "feature_shape": [int(d) for d in feature_shape],
        "vocab_size": int(tokenizer.vocab_size),
        "state_names": [t.name for t in step_model.inputs[2:]],
        "state_units": int(config.units),
        "tokens": {"start": tokenizer.start_token, "end": tokenizer.end_token,
                   "start_id": int(tokenizer.start_id), "end_id": int(tokenizer.end_id)},
        "versions": _versions(),
        **(extra or {}),
        "files": {},
    }
    return write_manifest(out / MANIFEST_FILE, manifest, {
        "encoder": encoder_path, "decoder": out / DECODER_FILE, "tokenizer": out / TOKENIZER_FILE,
    })


def write_manifest(path, manifest: dict, files: dict) -> Path:
    """Records `files` (role -> path) with their sha256 in `manifest` and writes it."""
    path = Path(path)
    manifest = dict(manifest)
    manifest["files"] = {
        role: {"path": os.path.relpath(file, path.parent).replace(os.sep, "/"),
               "sha256": sha256_file(file)}
        for role, file in files.items()
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def record_scores(path, split: str, scores: dict) -> Path:
    """Adds evaluation scores to a release manifest under `scores[split]`."""
    manifest_path, manifest = read_manifest(path)
    manifest.setdefault("scores", {})[split] = scores
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return manifest_path


def copy_release(manifest_path, models_dir, tokenizer_dir) -> Path:
    """Copies a release into the repository layout (`saved_models/`, `tokenizer/`)."""
    # Verify first: the copy's manifest records the hashes of the copied files, so copying
    # a changed file unchecked would make it pass as genuine.
    _, manifest, files = verify_release(manifest_path)
    models_dir, tokenizer_dir = Path(models_dir), Path(tokenizer_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    targets = {"encoder": models_dir / ENCODER_FILE, "decoder": models_dir / DECODER_FILE,
               "tokenizer": tokenizer_dir / TOKENIZER_FILE}
    for role, target in targets.items():
        if files[role] != target.resolve():  # already in place (exporting onto itself)
            shutil.copyfile(files[role], target)
    return write_manifest(models_dir / MANIFEST_FILE, manifest, targets)


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


def _resolve_manifest(path) -> Path:
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
    path = _resolve_manifest(path)
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:120]
        raise ReleaseError(f"{path}: not a readable release manifest ({reason}); restore "
                           "manifest.json from the original release") from None
    _check_manifest(path, manifest)
    return path, manifest


def _check_manifest(path: Path, manifest) -> None:
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
    if not _is_int(version):
        refuse(f"'version' is {version!r}, not an integer")
    if version > RELEASE_VERSION:
        raise ReleaseError(f"{path}: release format version {version} is newer than this "
                           "package reads; upgrade captioning")
    files = manifest.get("files")
    if not isinstance(files, dict):
        refuse("'files' is missing or not an object (it lists encoder, decoder, tokenizer)")
    for role in ("encoder", "decoder", "tokenizer"):
        entry = files.get(role)
        if not isinstance(entry, dict):
            refuse(f"files.{role} is missing")
        for key in ("path", "sha256"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                refuse(f"files.{role}.{key} is missing or not a string")
    shape = manifest.get("feature_shape")
    if not isinstance(shape, list) or not shape or not all(
            _is_int(d) and d > 0 for d in shape):
        refuse(f"'feature_shape' is {shape!r}, not a list of positive integers")
    vocab = manifest.get("vocab_size")
    if not _is_int(vocab) or vocab < 4:
        refuse(f"'vocab_size' is {vocab!r}, not an integer >= 4")
    units = manifest.get("state_units")
    if units is not None and (not _is_int(units) or units < 1):
        refuse(f"'state_units' is {units!r}, not a positive integer")
    try:
        CaptionConfig.from_dict(manifest.get("config"))
    except ConfigError as error:
        refuse(f"'config' is missing or invalid ({error})")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_release(path) -> tuple[Path, dict, dict]:
    """Checks that every release file exists and matches its sha256.

    Returns:
        `(manifest_path, manifest, files)` with files mapping role -> absolute path.
    """
    manifest_path, manifest = read_manifest(path)
    files = {}
    for role in ("encoder", "decoder", "tokenizer"):
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
    import keras

    from captioning.models import layers  # noqa: F401  (registers the custom layers)

    from captioning.text.tokenizer import load_tokenizer

    manifest_path, manifest, files = verify_release(path)
    try:
        tokenizer = load_tokenizer(files["tokenizer"])
    except UnsafeFileError:
        raise
    except CaptioningError as error:
        # Not a tokenizer (or corrupt) although its hash matches: still a release fault.
        raise ReleaseError(f"{TOKENIZER_FILE}: cannot be loaded as a tokenizer ({error})"
                           ) from None
    models = {}
    for role in ("encoder", "decoder"):
        try:
            models[role] = keras.saving.load_model(files[role], safe_mode=True, compile=False)
        except CaptioningError:
            raise
        except Exception as error:
            raise ReleaseError(f"{files[role].name}: cannot be loaded as a Keras model "
                               f"({str(error).splitlines()[0][:200]})") from None
    encoder, decoder = models["encoder"], models["decoder"]
    _check_fit(manifest_path, manifest, encoder, decoder, tokenizer)
    return Release(encoder=encoder, decoder=decoder, tokenizer=tokenizer, manifest=manifest,
                   path=manifest_path)


def _check_fit(manifest_path, manifest, encoder, decoder, tokenizer):
    from captioning.models.decoders import STEP_OUTPUT_LOG_PROBS

    encoded = tuple(encoder.outputs[0].shape[1:])
    names = [t.name for t in decoder.inputs]
    states = [name for name in names if name not in ("features", "token")]
    outputs = list(decoder.output_names)
    wanted = [STEP_OUTPUT_LOG_PROBS] + [f"{kind}_{name}" for kind in ("next", "initial")
                                        for name in states]
    lacking = [name for name in wanted if name not in outputs]
    if "features" not in names or "token" not in names or lacking:
        raise ReleaseError(f"{DECODER_FILE}: not a one-step caption decoder (inputs {names}, "
                           f"outputs {outputs}; it needs the inputs features and token and "
                           f"the outputs {wanted})")
    expected = tuple(decoder.inputs[names.index("features")].shape[1:])
    if encoded != expected:
        raise ReleaseError(f"{ENCODER_FILE} gives features {encoded} but {DECODER_FILE} takes "
                           f"{expected}: the two files come from different releases")
    if tuple(manifest["feature_shape"]) != encoded:
        raise ReleaseError(f"{ENCODER_FILE} gives features {encoded} but {manifest_path} "
                           f"records {tuple(manifest['feature_shape'])}")
    vocab = int(decoder.outputs[outputs.index(STEP_OUTPUT_LOG_PROBS)].shape[-1])
    if tokenizer.vocab_size != vocab or manifest["vocab_size"] != vocab:
        raise ReleaseError(f"{TOKENIZER_FILE} has a vocabulary of {tokenizer.vocab_size} but "
                           f"{DECODER_FILE} predicts {vocab} words (manifest: "
                           f"{manifest['vocab_size']}): the files come from different releases")
    units = manifest.get("state_units")
    for tensor in decoder.inputs[2:]:
        if units is not None and int(tensor.shape[-1]) != units:
            raise ReleaseError(f"{DECODER_FILE}: state {tensor.name} has {tensor.shape[-1]} "
                               f"units, {manifest_path} records {units}")
