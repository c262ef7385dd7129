"""Writing a release: `export_release` after training, `copy_release` into the repository.

Both write the new files beside the old ones and switch them in at once
(`captioning.release.switch`): a kill at any moment leaves the old release or the new one,
and a release interrupted mid-switch is completed by the next reader. A file whose bytes do
not change is not rewritten, nor is the manifest when only its date would change. Models
are saved in memory and written as plain bytes (`captioning.release.model_bytes`), so a
full disk is one line, not a crash inside HDF5.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

from captioning.config import CaptionConfig
from captioning.errors import ReleaseError
from captioning.models.step import StepSignature
from captioning.release.load import verify_release
from captioning.release.manifest import (
    DECODER_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    RELEASE_FORMAT,
    RELEASE_VERSION,
    TOKENIZER_FILE,
    versions,
)
from captioning.release.model_bytes import model_file_bytes
from captioning.release.switch import discard_staged, finish_switch, stage, staged_path, switch
from captioning.utils.files import display_path, sha256_file

_VOLATILE = ("created",)  # manifest fields that change on every export


def export_release(out_dir, *, encoder_file, step_model, tokenizer, config: CaptionConfig,
                   cache_settings: dict, feature_shape, extra: dict | None = None) -> Path:
    """Writes the four release files into `out_dir`, switched in at once.

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

    Raises:
        ReleaseError: a file cannot be written (the release in place is kept whole).
    """
    signature = StepSignature.from_model(step_model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = {"encoder": out / ENCODER_FILE, "decoder": out / DECODER_FILE,
               "tokenizer": out / TOKENIZER_FILE}
    manifest_path = out / MANIFEST_FILE
    _prepare(manifest_path, targets.values())
    if isinstance(encoder_file, (str, os.PathLike)):
        _stage_copy(Path(encoder_file), targets["encoder"])
    else:
        _stage_bytes(targets["encoder"], model_file_bytes(encoder_file))
    _stage_bytes(targets["decoder"], model_file_bytes(step_model))
    if targets["tokenizer"].resolve() != Path(getattr(tokenizer, "_path", "")).resolve():
        stage(targets["tokenizer"], tokenizer.save)
        _drop_if_unchanged(targets["tokenizer"])
    manifest = {
        "format": RELEASE_FORMAT,
        "version": RELEASE_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "encoder": dict(cache_settings),
        "feature_shape": [int(d) for d in feature_shape],
        "vocab_size": int(tokenizer.vocab_size),
        "state_names": list(signature.state_names),
        "state_units": int(config.units),
        "tokens": {"start": tokenizer.start_token, "end": tokenizer.end_token,
                   "start_id": int(tokenizer.start_id), "end_id": int(tokenizer.end_id)},
        "versions": versions(),
        **(extra or {}),
    }
    return _switch_in(manifest_path, manifest, targets)


def copy_release(manifest_path, models_dir, tokenizer_dir) -> Path:
    """Copies a release into the repository layout (`saved_models/`, `tokenizer/`), switched
    in at once; files already identical there are left alone."""
    # Verify first: the copy's manifest records the hashes of the copied files, so copying
    # a changed file unchecked would make it pass as genuine.
    _, manifest, files = verify_release(manifest_path)
    models_dir, tokenizer_dir = Path(models_dir), Path(tokenizer_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    targets = {"encoder": models_dir / ENCODER_FILE, "decoder": models_dir / DECODER_FILE,
               "tokenizer": tokenizer_dir / TOKENIZER_FILE}
    _prepare(models_dir / MANIFEST_FILE, targets.values())
    for role, target in targets.items():
        _stage_copy(files[role], target)
    return _switch_in(models_dir / MANIFEST_FILE, manifest, targets)


def _prepare(manifest_path, targets):
    """Completes an interrupted switch, then drops staged files no journal names."""
    finish_switch(manifest_path)
    discard_staged([*targets, manifest_path])


def _stage_bytes(target: Path, data: bytes):
    if _same_bytes(target, hashlib.sha256(data).hexdigest()):
        return
    stage(target, lambda tmp: Path(tmp).write_bytes(data))


def _stage_copy(source: Path, target: Path):
    if _resolved(source) == _resolved(target):
        return  # already in place (exporting onto itself)
    if _same_bytes(target, sha256_file(source)):
        return

    def copy(tmp):
        with open(source, "rb") as reader, open(tmp, "wb") as writer:
            while block := reader.read(2**20):
                writer.write(block)

    stage(target, copy)


def _drop_if_unchanged(target: Path):
    staged = staged_path(target)
    if staged.exists() and _same_bytes(target, sha256_file(staged)):
        staged.unlink()


def _same_bytes(target: Path, digest: str) -> bool:
    return target.is_file() and sha256_file(target) == digest


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _switch_in(manifest_path: Path, manifest: dict, targets: dict) -> Path:
    """Records the hashes of the release's files as they will be after the switch, stages
    the manifest unless only its volatile fields changed, and switches everything in."""
    manifest = dict(manifest)
    manifest["files"] = {}
    for role, target in targets.items():
        source = staged_path(target) if staged_path(target).exists() else target
        manifest["files"][role] = {
            "path": os.path.relpath(target, manifest_path.parent).replace(os.sep, "/"),
            "sha256": sha256_file(source)}
    if not _same_manifest(manifest_path, manifest):
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        stage(manifest_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    try:
        switch(manifest_path, [*targets.values(), manifest_path])
    except ReleaseError:
        raise
    except OSError as failure:
        raise ReleaseError(f"{display_path(manifest_path.parent)}: the release cannot be "
                           f"switched in ({failure.strerror or failure})") from None
    return manifest_path


def _same_manifest(path: Path, manifest: dict) -> bool:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    strip = lambda m: {k: v for k, v in m.items() if k not in _VOLATILE}  # noqa: E731
    return isinstance(old, dict) and strip(old) == strip(json.loads(json.dumps(manifest)))
