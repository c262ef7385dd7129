"""Prediction files: the COCO caption results JSON, and a per-image CSV to read by eye.

Predictions map an image id (the image's file name) to one caption. References map
an image id to the list of its reference captions.
"""

import csv
import json
import os
from collections.abc import Mapping, Sequence

from captioning.errors import CaptioningError
from captioning.evaluation.metrics import METRIC_KEYS
from captioning.evaluation.spice import SPICE_KEY
from captioning.text.scores import check_captions, name_some
from captioning.utils.files import atomic_write, atomic_write_json

_PER_IMAGE_KEYS = METRIC_KEYS + (SPICE_KEY,)


def write_predictions(path: str | os.PathLike, predictions: Mapping[str, str]) -> None:
    """Writes predictions as a COCO caption results file, whole or not at all.

    The file is a JSON list of `{"image_id": <image id>, "caption": <caption>}`
    sorted by image id, which `pycocotools.coco.COCO.loadRes` reads.

    Args:
        path: Path of the JSON file to write; missing parent folders are made.
        predictions: Mapping from image id (the image's file name) to caption.

    Raises:
        CaptioningError: If the file cannot be written (a full disk, a read-only folder).
    """
    results = [
        {"image_id": image, "caption": predictions[image]}
        for image in sorted(predictions)
    ]
    _make_parent(path)
    atomic_write_json(path, results, indent=1)


def read_predictions(path: str | os.PathLike) -> dict:
    """Reads a COCO caption results file written by `write_predictions`.

    Args:
        path: Path of a JSON list of `{"image_id": ..., "caption": ...}` objects.

    Returns:
        A dict from image id to caption.

    Raises:
        CaptioningError: If the file is missing, is not JSON, is not a list of
            such objects, or names an image twice.
    """
    try:
        with open(path, encoding="utf-8") as file:
            results = json.load(file)
    except FileNotFoundError:
        raise CaptioningError(f"Predictions file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CaptioningError(
            f"Cannot read predictions file {path}: {error}"
        ) from None
    if not isinstance(results, list):
        raise CaptioningError(
            f"Predictions file {path} must hold a JSON list of "
            '{"image_id": ..., "caption": ...} objects.'
        )
    predictions = {}
    for index, result in enumerate(results):
        if (
            not isinstance(result, dict)
            or "image_id" not in result
            or not isinstance(result.get("caption"), str)
        ):
            raise CaptioningError(
                f"Entry {index} of predictions file {path} is not an object with "
                'an "image_id" and a string "caption".'
            )
        image = result["image_id"]
        if image in predictions:
            raise CaptioningError(
                f"Predictions file {path} has more than one caption for image "
                f"{image!r}."
            )
        predictions[image] = result["caption"]
    return predictions


def write_per_image(
    path: str | os.PathLike,
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    scores: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """Writes one CSV row per predicted image, in sorted image order, whole or not at all.

    The columns are `image`, `caption`, `references` (the reference captions
    joined with " | ") and, when `scores` is given, one column per metric it holds
    (e.g. `Bleu_4`, `CIDEr`), in the order of `METRIC_KEYS` followed by `SPICE`.

    Args:
        path: Path of the CSV file to write; missing parent folders are made.
        predictions: Mapping from image id to the predicted caption.
        references: Mapping from image id to a sequence of reference captions,
            covering every predicted image.
        scores: Optional mapping from image id to a mapping from metric name to
            that image's score, such as the per-image scores that
            `coco_scores(..., return_per_image=True)` returns.

    Raises:
        CaptioningError: If there are no predictions, a predicted image has no
            references, `scores` lacks an image or a metric for an image, or the
            file cannot be written.
    """
    image_ids = check_captions(predictions, references)
    columns = []
    if scores is not None:
        missing = [image for image in image_ids if image not in scores]
        if missing:
            raise CaptioningError(
                f"No per-image scores for {name_some(missing)}."
            )
        first = scores[image_ids[0]]
        columns = [name for name in _PER_IMAGE_KEYS if name in first]
        incomplete = [
            image
            for image in image_ids
            if any(name not in scores[image] for name in columns)
        ]
        if incomplete:
            raise CaptioningError(
                f"Per-image scores lack some of {', '.join(columns)} for "
                f"{name_some(incomplete)}."
            )

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "caption", "references", *columns])
            for image in image_ids:
                writer.writerow(
                    [
                        image,
                        predictions[image],
                        " | ".join(references[image]),
                        *(f"{float(scores[image][name]):.6f}" for name in columns),
                    ]
                )

    _make_parent(path)
    atomic_write(path, write)


def _make_parent(path):
    """Makes the missing parent folders of `path`."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise CaptioningError(
                f"{directory}: cannot make the folder ({error.strerror or error}); fix that "
                "and run the same command again"
            ) from None
