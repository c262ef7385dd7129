"""`evaluate_release`: a release captions a cached split, and the COCO metrics score it."""

import logging
from pathlib import Path

from captioning.errors import CacheError, ImageError
from captioning.evaluation.java import java_available, require_java
from captioning.evaluation.metrics import coco_scores
from captioning.evaluation.predictions import write_per_image, write_predictions

logger = logging.getLogger(__name__)


def evaluate_release(release, cache_dir, *, split="test", beam=1, predictions_path=None,
                     per_image_path=None, spice=True, batch_size=128, tokenizer="auto",
                     length_penalty=None, block_ngram_repeat=None, images_dir=None,
                     progress=False):
    """Captions a cached split with a release and scores it against its references.

    The release's encoder must be the one that made the cache (same settings, feature shape
    and weights), so the cached features are what the release would compute from the images.
    A release whose encoder was fine-tuned (`fine_tune`) computes other features: give
    `images_dir`, and the split's images are read from there and encoded by the release's
    encoder; the cache then gives only the split and its references.

    Args:
        release: a run folder or manifest path (or a loaded `Release`).
        cache_dir: the feature cache holding the split's images.
        split: which split's images to caption.
        beam: beam width (1 is greedy).
        predictions_path: where to write the captions as COCO results JSON. It is written
            as soon as the captions are made, before scoring, so a failed scoring loses
            nothing.
        per_image_path: where to write each image's caption, references and scores (CSV);
            written with the captions first, then again with the scores.
        spice: compute SPICE when it can run (the default); when it cannot (no Stanford
            CoreNLP, which is never downloaded here), one warning says why and how to get
            it, and the scores have no `"SPICE"`. False leaves it out without a warning.
        batch_size: images per decoder call.
        length_penalty: the beam search's GNMT length penalty; default the release's.
        block_ngram_repeat: N: no N consecutive words twice in a caption (0: repeats
            allowed); default the release's.
        tokenizer: how the captions become scorer tokens: `"auto"` (the PTB tokenizer, or
            Python for captions with letters beyond Latin-1), `"ptb"` or `"python"`; see
            `coco_scores`.
        images_dir: the folder of the cache's images: caption the split from its images with
            the release's encoder instead of from the cached features (any encoder then
            fits). Every image of the split must be readable; otherwise `ImageError` names
            them, after the others' captions are written.
        progress: show a progress bar while captioning from `images_dir`.

    Returns:
        The scores of `coco_scores` (COCO metrics, `"SPICE"` when it ran, `nltk_bleu_4`,
        `n_images`, `tokenizer`) with the `split`, `beam`, `length_penalty` and
        `block_ngram_repeat`.

    Raises:
        MetricsError: Java is missing (before any captioning when there is no
            `predictions_path`; otherwise after the captions are written there), or a Java
            scorer failed.
        ImageError: with `images_dir`, some of the split's images are missing or unreadable.
        CaptioningError: the cache, the split or the release does not fit.

    Example:

    ```python
    scores = evaluate_release("runs/demo", "caches/demo", beam=3,
                              predictions_path="runs/demo/predictions.json")
    scores["CIDEr"]
    ```
    """
    from captioning.cache import FeatureCache
    from captioning.inference.captioner import Captioner
    from captioning.release.load import load_release

    loaded = release if hasattr(release, "manifest") else load_release(release)
    cache = FeatureCache(cache_dir)
    if images_dir is None:
        _check_same_encoder(loaded, cache)
    elif not Path(images_dir).is_dir():
        raise ImageError(f"{images_dir} is not a folder; give the folder of the cache's images "
                         f"({cache.manifest.get('images_dir') or 'the one it was made from'})")
    table = cache.captions()
    part = table[table["split"] == split]
    if part.empty:
        splits = sorted(set(table["split"]) - {""})
        raise CacheError(f"{cache.path}: no images in split {split!r}; it has {splits}")
    references = {image: list(group["caption"]) for image, group in part.groupby("image")}
    images = sorted(references)
    if not predictions_path:
        require_java("Nothing was captioned; with --predictions FILE (predictions_path) the "
                     "captions are written before scoring, so they are kept even without Java.")
    captioner = Captioner(loaded, batch_size=batch_size, length_penalty=length_penalty,
                          block_ngram_repeat=block_ngram_repeat)
    if images_dir is None:
        predictions, failed = {}, {}
        for start in range(0, len(images), batch_size):
            names = images[start:start + batch_size]
            captions, _ = captioner.caption_features(cache.gather(cache.rows(names)), beam=beam)
            predictions.update(zip(names, captions))
    else:
        predictions, failed = _caption_from_images(captioner, images_dir, images, beam,
                                                   progress)
    if predictions_path:
        write_predictions(predictions_path, predictions)
    if per_image_path:
        write_per_image(per_image_path, predictions, references)
    kept = ", ".join(str(path) for path in (predictions_path, per_image_path) if path)
    if failed:
        named = "; ".join(f"{name}: {error}" for name, error in list(failed.items())[:3])
        raise ImageError(
            f"{len(failed)} of the {len(images)} images of split {split!r} could not be "
            f"captioned from {images_dir} ({named}{'; ...' if len(failed) > 3 else ''}); a "
            "score needs every image of the split: give the folder that made the cache"
            + (f" (the others' captions are in {kept})" if kept else ""))
    if not java_available():
        require_java(f"The {len(predictions)} captions are in {kept}.")
    scores, per_image = coco_scores(predictions, references, spice=spice, return_per_image=True,
                                    tokenizer=tokenizer)
    if per_image_path:
        write_per_image(per_image_path, predictions, references, per_image)
    scores["split"], scores["beam"] = split, int(beam)
    scores["length_penalty"] = captioner.length_penalty
    scores["block_ngram_repeat"] = captioner.block_ngram_repeat
    return scores


def _caption_from_images(captioner, images_dir, images, beam, progress):
    """`(predictions, failed)`: the captions of the readable images of `images` (names
    relative to `images_dir`) by the release's encoder and decoder, and the error of each
    other one."""
    folder = Path(images_dir)
    logger.info("Captioning the %d images of the split from %s with the release's encoder.",
                len(images), folder)
    results = captioner.caption([str(folder / name) for name in images], beam=beam,
                                progress=progress)
    predictions, failed = {}, {}
    for name, result in zip(images, results):
        if result.ok:
            predictions[name] = result.caption
        else:
            failed[name] = result.error
    return predictions, failed


def _check_same_encoder(loaded, cache):
    """Refuses a cache made by another encoder than the release's."""
    from captioning.cache import describe_differences, weights_fingerprint

    encoder_file = loaded.path.parent / loaded.manifest["files"]["encoder"]["path"]
    # The weights fingerprint, not the file's sha256: rebuilding the same encoder writes
    # another .hdf5 file. The dtype may differ: the features are the same encoder's.
    expected = {key: value for key, value in loaded.manifest.get("encoder", {}).items()
                if key != "dtype"}
    expected["feature_shape"] = loaded.manifest["feature_shape"]
    expected["encoder_weights_sha256"] = weights_fingerprint(loaded.encoder)
    differences = describe_differences(cache.manifest, expected, expected_name="release")
    if differences:
        images = cache.manifest.get("images_dir") or "FOLDER"
        raise CacheError(
            f"{cache.path} was made with another encoder than the release's {encoder_file.name} "
            f"({'; '.join(differences)}); a fine-tuned release computes other features: "
            f"score it from the images with --images {images} (images_dir), or make a cache "
            "with the release's encoder"
        )
