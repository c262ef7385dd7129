"""Caption scores that need no Java: a corpus BLEU-4 for validation during training.

The COCO metrics (`captioning.evaluation.coco_scores`) run the PTB tokenizer and METEOR on
Java; these run on simple tokens instead: each caption is lower-cased and split on whitespace,
and standalone punctuation tokens such as "." are dropped.

Predictions map an image id (the image's file name) to one caption. References map an image
id to the list of its reference captions.
"""

import logging
import warnings
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

from captioning.errors import CaptioningError

__all__ = ["bleu4"]

logger = logging.getLogger(__name__)

_PUNCTUATION_TOKENS = frozenset(PUNCTUATIONS)
_MAX_NAMED = 5


def bleu4(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> float:
    """Computes a fast corpus BLEU-4 without Java, for validation during training.

    This is pycocoevalcap's BLEU scorer (the one `coco_scores` uses, with the
    "closest" reference length) on simple tokens: each caption is lower-cased and
    split on whitespace, and standalone punctuation tokens such as "." are
    dropped. It equals `coco_scores(...)["Bleu_4"]` on captions that are already
    tokenized that way, and can differ slightly from it where the PTB tokenizer
    splits differently, e.g. "dog." or "man's"; report `coco_scores` numbers.

    Args:
        predictions: Mapping from image id to the predicted caption.
        references: Mapping from image id to a sequence of reference captions,
            covering every predicted image.

    Returns:
        The corpus BLEU-4 as a float in [0, 1].

    Raises:
        CaptioningError: If there are no predictions, a predicted image has no
            references, or a caption is not a string.

    Example:

    ```python
    bleu4({"a.jpg": "a dog runs on the grass"}, {"a.jpg": ["A dog runs on the grass ."]})
    # 1.0 (up to rounding)
    ```
    """
    image_ids = check_captions(predictions, references)
    scorer = BleuScorer(n=4)
    for image in image_ids:
        scorer += (
            " ".join(simple_tokens(predictions[image])),
            [" ".join(simple_tokens(caption)) for caption in references[image]],
        )
    bleu, _ = scorer.compute_score(option="closest", verbose=0)
    return float(bleu[3])


def nltk_bleu_4(predictions, references):
    """NLTK's corpus BLEU-4, unsmoothed, on `simple_tokens`.

    Args:
        predictions: a list of predicted captions.
        references: a list (one entry per prediction) of lists of reference captions.

    Returns:
        The score as a float; NLTK's warnings go to the debug log.
    """
    from nltk.translate.bleu_score import corpus_bleu

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = corpus_bleu(
            [
                [simple_tokens(caption) for caption in captions]
                for captions in references
            ],
            [simple_tokens(caption) for caption in predictions],
            weights=(0.25, 0.25, 0.25, 0.25),
        )
    for warning in caught:
        logger.debug("NLTK BLEU: %s", " ".join(str(warning.message).split()))
    return float(score)


def check_captions(predictions, references):
    """Validates predictions against references and returns the sorted image ids.

    Raises:
        CaptioningError: there are no predictions, a prediction is not a string, a predicted
            image has no references, or its references are not a non-empty list of strings.
    """
    if not predictions:
        raise CaptioningError("There are no predictions to evaluate.")
    image_ids = sorted(predictions)
    not_text = [
        image for image in image_ids if not isinstance(predictions[image], str)
    ]
    if not_text:
        raise CaptioningError(
            f"Predicted captions must be strings; they are not for "
            f"{name_some(not_text)}."
        )
    missing = [image for image in image_ids if image not in references]
    if missing:
        raise CaptioningError(
            f"{len(missing)} predicted image(s) have no reference captions: "
            f"{name_some(missing)}."
        )
    malformed = [
        image
        for image in image_ids
        if isinstance(references[image], str)
        or not isinstance(references[image], Sequence)
        or not references[image]
        or not all(isinstance(caption, str) for caption in references[image])
    ]
    if malformed:
        raise CaptioningError(
            "References must map each image to a non-empty list of caption "
            f"strings; they do not for {name_some(malformed)}."
        )
    return image_ids


def name_some(images):
    """Names the first few images of a list, and how many more there are."""
    named = ", ".join(repr(image) for image in images[:_MAX_NAMED])
    if len(images) > _MAX_NAMED:
        named += f" and {len(images) - _MAX_NAMED} more"
    return named


def simple_tokens(caption):
    """Lower-cased whitespace tokens, without standalone punctuation tokens."""
    return [
        token for token in caption.lower().split() if token not in _PUNCTUATION_TOKENS
    ]
