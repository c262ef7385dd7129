"""COCO metrics, SPICE, prediction files and the evaluation of a release.

- `metrics`: `coco_scores` (the PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr-D).
- `tokenization`: the Python tokens for captions the Java tools mangle (Vietnamese, ...).
- `spice`: SPICE, run only when it can (`spice_unavailable`).
- `java`: running the Java scorers; their failures are a `MetricsError`.
- `predictions`: the COCO results JSON and the per-image CSV.
- `evaluate`: `evaluate_release`.

`bleu4`, the Java-free BLEU-4 that training uses, lives in `captioning.text.scores`.
"""

from captioning.errors import MetricsError  # noqa: F401
from captioning.evaluation.evaluate import evaluate_release
from captioning.evaluation.metrics import (
    METRIC_KEYS,
    N_IMAGES_KEY,
    NLTK_BLEU_KEY,
    TOKENIZER_KEY,
    coco_scores,
)
from captioning.evaluation.predictions import read_predictions, write_per_image, write_predictions
from captioning.evaluation.spice import SPICE_KEY, spice_unavailable
from captioning.evaluation.tokenization import TOKENIZERS, python_tokenize
from captioning.text.scores import bleu4

__all__ = [
    "METRIC_KEYS",
    "MetricsError",
    "N_IMAGES_KEY",
    "NLTK_BLEU_KEY",
    "SPICE_KEY",
    "TOKENIZERS",
    "TOKENIZER_KEY",
    "bleu4",
    "coco_scores",
    "evaluate_release",
    "python_tokenize",
    "read_predictions",
    "spice_unavailable",
    "write_per_image",
    "write_predictions",
]
