"""COCO caption metrics, prediction files and the evaluation of a release."""

from captioning.evaluation.metrics import (  # noqa: F401
    METRIC_KEYS,
    SPICE_KEY,
    NLTK_BLEU_KEY,
    coco_scores,
    bleu4,
    write_predictions,
    read_predictions,
    write_per_image,
    spice_unavailable,
    evaluate_release,
)

__all__ = [
    "METRIC_KEYS",
    "NLTK_BLEU_KEY",
    "SPICE_KEY",
    "bleu4",
    "coco_scores",
    "evaluate_release",
    "read_predictions",
    "spice_unavailable",
    "write_per_image",
    "write_predictions",
]
