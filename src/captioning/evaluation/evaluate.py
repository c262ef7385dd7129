"""`evaluate_release`: a release captions a cached split, and the COCO metrics score it."""

from captioning.errors import CacheError
from captioning.evaluation.java import java_available, require_java
from captioning.evaluation.metrics import coco_scores
from captioning.evaluation.predictions import write_per_image, write_predictions


def evaluate_release(release, cache_dir, *, split="test", beam=1, predictions_path=None,
                     per_image_path=None, spice=True, batch_size=128, tokenizer="auto",
                     length_penalty=None, block_ngram_repeat=None):
    """Captions a cached split with a release and scores it against its references.

    The release's encoder must be the one that made the cache (same settings, feature shape
    and weights), so the cached features are what the release would compute from the images.

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

    Returns:
        The scores of `coco_scores` (COCO metrics, `"SPICE"` when it ran, `nltk_bleu_4`,
        `n_images`, `tokenizer`) with the `split`, `beam`, `length_penalty` and
        `block_ngram_repeat`.

    Raises:
        MetricsError: Java is missing (before any captioning when there is no
            `predictions_path`; otherwise after the captions are written there), or a Java
            scorer failed.
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
    _check_same_encoder(loaded, cache)
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
    predictions = {}
    for start in range(0, len(images), batch_size):
        names = images[start:start + batch_size]
        captions, _ = captioner.caption_features(cache.gather(cache.rows(names)), beam=beam)
        predictions.update(zip(names, captions))
    if predictions_path:
        write_predictions(predictions_path, predictions)
    if per_image_path:
        write_per_image(per_image_path, predictions, references)
    if not java_available():
        kept = ", ".join(str(path) for path in (predictions_path, per_image_path) if path)
        require_java(f"The {len(predictions)} captions are in {kept}.")
    scores, per_image = coco_scores(predictions, references, spice=spice, return_per_image=True,
                                    tokenizer=tokenizer)
    if per_image_path:
        write_per_image(per_image_path, predictions, references, per_image)
    scores["split"], scores["beam"] = split, int(beam)
    scores["length_penalty"] = captioner.length_penalty
    scores["block_ngram_repeat"] = captioner.block_ngram_repeat
    return scores


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
        raise CacheError(
            f"{cache.path} was made with another encoder than the release's {encoder_file.name} "
            f"({'; '.join(differences)}); make a cache with the release's encoder, or caption "
            "the images with `caption`"
        )
