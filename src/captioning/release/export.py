"""Writing a release: `export_release` after training, `copy_release` into the repository."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

from captioning.config import CaptionConfig
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
    write_manifest,
)


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
    signature = StepSignature.from_model(step_model)
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
        "state_names": list(signature.state_names),
        "state_units": int(config.units),
        "tokens": {"start": tokenizer.start_token, "end": tokenizer.end_token,
                   "start_id": int(tokenizer.start_id), "end_id": int(tokenizer.end_id)},
        "versions": versions(),
        **(extra or {}),
        "files": {},
    }
    return write_manifest(out / MANIFEST_FILE, manifest, {
        "encoder": encoder_path, "decoder": out / DECODER_FILE, "tokenizer": out / TOKENIZER_FILE,
    })


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
