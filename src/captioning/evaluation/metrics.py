"""COCO caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and, optionally, SPICE.

`coco_scores` reports what `pycocoevalcap.eval.COCOEvalCap` reports for the same
captions. Every caption goes through the Stanford PTB tokenizer (Java), which
lower-cases it, splits it into tokens and drops punctuation; pycocoevalcap's own
scorers then run on the tokens. Only the plumbing differs from `COCOEvalCap`:

- captions with letters beyond Latin-1 (Vietnamese, Greek, CJK, ...), which the PTB
  tokenizer and METEOR's English normaliser mangle, are tokenized in Python instead and
  METEOR reads them without `-norm` (`captioning.evaluation.tokenization`); the scores
  name the tokenizer used (`"tokenizer"`: `"ptb"` or `"python"`);

- captions come in as dictionaries instead of `pycocotools.coco.COCO` objects;
- only the predicted images are scored, so the references may cover more images
  (a whole split), as in the official example that sets `params["image_id"]` to
  the images of the results file;
- the tokenizer reads its input from a private temporary directory instead of
  pycocoevalcap's package folder, and that directory is always removed;
- METEOR's Java process is stopped as soon as its score is read;
- SPICE is only run when asked for (`evaluate_release` asks by default), and never
  downloads Stanford CoreNLP (`captioning.evaluation.spice`);
- a missing or failing Java raises `MetricsError` with one line;
- pycocoevalcap's prints go to this module's logger at DEBUG level, not to stdout.

The Java-free `bleu4` for training lives in `captioning.text.scores`; prediction files
in `captioning.evaluation.predictions`.

Predictions map an image id (the image's file name) to one caption. References map
an image id to the list of its reference captions.
"""

import contextlib
import io
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _meteor_module
from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb_module

from captioning.evaluation.java import java_failure, require_java, run_java
from captioning.evaluation.spice import SPICE_KEY, spice_score
from captioning.evaluation.tokenization import (
    PTB,
    PYTHON,
    TOKENIZERS,
    needs_python_tokens,
    python_tokenize,
)
from captioning.text.scores import check_captions, nltk_bleu_4
from captioning.utils.checks import check_choice

logger = logging.getLogger(__name__)

METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
"""The metrics that `coco_scores` always reports, under `COCOEvalCap`'s names."""

NLTK_BLEU_KEY = "nltk_bleu_4"
N_IMAGES_KEY = "n_images"
TOKENIZER_KEY = "tokenizer"

_PUNCTUATION_TOKENS = frozenset(_ptb_module.PUNCTUATIONS)
_TOKENIZER_DIR = os.path.dirname(os.path.abspath(_ptb_module.__file__))
_METEOR_DIR = os.path.dirname(os.path.abspath(_meteor_module.__file__))


def coco_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    spice: bool = False,
    return_per_image: bool = False,
    tokenizer: str = "auto",
) -> dict | tuple[dict, dict]:
    """Scores predicted captions with the COCO caption metrics.

    The numbers are those that `pycocoevalcap.eval.COCOEvalCap` computes for the
    same captions (see the module docstring). CIDEr is CIDEr-D, whose n-gram
    weights come from the references of the scored images, so it depends on the
    whole set of images scored together, not on each image alone.

    Java 8 or newer must be on `PATH`: the PTB tokenizer and METEOR run on it.

    Args:
        predictions: Mapping from image id (the image's file name) to the
            predicted caption.
        references: Mapping from image id to a sequence of reference captions.
            It must cover every predicted image and may cover more images; those
            are ignored.
        spice: Whether to compute SPICE as well. SPICE needs Stanford CoreNLP
            3.6.0 in pycocoevalcap's `spice/lib` folder and Java 8 (or 11); when it
            cannot run, a warning says why and how to fix it, and the results
            have no `"SPICE"` key.
        return_per_image: Whether to also return each image's scores.
        tokenizer: `"ptb"`: the PTB tokenizer, and METEOR with `-norm`, as
            `COCOEvalCap`; `"python"`: `captioning.evaluation.tokenization`'s tokens, and
            METEOR without `-norm`; `"auto"` (the default): `"python"` when a caption
            holds a letter beyond Latin-1, which the Java tools mangle, else `"ptb"`.
            SPICE parses English and is not run on Python tokens.

    Returns:
        A dict with a float for each of `METRIC_KEYS`, `"SPICE"` when SPICE ran,
        `"nltk_bleu_4"` (NLTK's `corpus_bleu` with uniform 4-gram weights and no
        smoothing, on lower-cased whitespace tokens without standalone
        punctuation tokens; it is not the COCO BLEU-4 and is there only to compare
        with papers that report NLTK's number) and `"n_images"`, the number of
        images scored, and `"tokenizer"`, the tokenizer used (`"ptb"` or
        `"python"`). With `return_per_image=True`, a tuple of that dict and a
        dict from image id to a dict of that image's scores under the same metric
        names (the corpus-level numbers are not the mean of these for BLEU and
        METEOR).

    Raises:
        CaptioningError: If there are no predictions, a predicted image has no
            references or a caption is not a string.
        MetricsError: If Java is not installed, or the PTB tokenizer or METEOR fails.
    """
    image_ids = check_captions(predictions, references)
    check_choice("tokenizer", tokenizer, TOKENIZERS)
    require_java("Or use bleu4() for a Java-free BLEU-4.")
    gts = {image: list(references[image]) for image in image_ids}
    res = {image: [predictions[image]] for image in image_ids}
    if tokenizer == "auto":
        tokenizer = PYTHON if needs_python_tokens(gts, res) else PTB
    tokenize = python_tokenize if tokenizer == PYTHON else _ptb_tokenize

    scores = {}
    per_image = {image: {} for image in image_ids}

    def record(name, score, image_scores):
        scores[name] = float(score)
        for image, value in zip(image_ids, image_scores):
            per_image[image][name] = float(value)

    # METEOR's JVM loads its paraphrase table while the other metrics run.
    meteor = _Meteor(normalize=tokenizer == PTB)
    try:
        gts = tokenize(gts)
        res = tokenize(res)
        with _prints_to_debug_log():
            logger.debug("Computing BLEU on %d images.", len(image_ids))
            bleu, bleu_per_image = Bleu(4).compute_score(gts, res)
            for n, (score, image_scores) in enumerate(zip(bleu, bleu_per_image)):
                record(f"Bleu_{n + 1}", score, image_scores)
            logger.debug("Computing ROUGE_L.")
            record("ROUGE_L", *Rouge().compute_score(gts, res))
            logger.debug("Computing CIDEr.")
            record("CIDEr", *Cider().compute_score(gts, res))
            logger.debug("Computing METEOR.")
            record("METEOR", *meteor.score(gts, res))
    finally:
        meteor.close()

    scores = {name: scores[name] for name in METRIC_KEYS}
    if spice and tokenizer == PYTHON:
        logger.warning("SPICE not computed: it parses captions as English, and these hold "
                       "letters beyond Latin-1.")
    elif spice:
        spice_result = spice_score(gts, res)
        if spice_result is not None:
            record(SPICE_KEY, *spice_result)
    scores[NLTK_BLEU_KEY] = nltk_bleu_4(
        [predictions[image] for image in image_ids],
        [references[image] for image in image_ids],
    )
    scores[N_IMAGES_KEY] = len(image_ids)
    scores[TOKENIZER_KEY] = tokenizer
    if return_per_image:
        return scores, per_image
    return scores



@contextlib.contextmanager
def _prints_to_debug_log():
    """Sends what pycocoevalcap prints to stdout to the debug log instead."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                logger.debug("pycocoevalcap: %s", line)


def _ptb_tokenize(captions_for_image):
    """Tokenizes captions exactly as pycocoevalcap's `PTBTokenizer.tokenize`.

    The command, the lower-casing and the punctuation removal are the same. The
    input file lives in a temporary directory that is always removed, and every
    run of whitespace in a caption becomes one space, so that a caption with a
    line break in it (which the original only handles for "\\n") cannot shift
    the lines of the tokenizer's output; the PTB tokens are the same either way.

    Args:
        captions_for_image: Dict from image id to a list of caption strings.

    Returns:
        A dict with the same keys, each mapped to its tokenized captions.
    """
    keys = [image for image, captions in captions_for_image.items() for _ in captions]
    lines = [
        " ".join(caption.split())
        for captions in captions_for_image.values()
        for caption in captions
    ]
    with tempfile.TemporaryDirectory(prefix="captioning-ptb-") as directory:
        input_path = os.path.join(directory, "captions.txt")
        with open(input_path, "wb") as file:
            file.write("\n".join(lines).encode())
        arguments = ["-cp", _ptb_module.STANFORD_CORENLP_3_4_1_JAR,
                     "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
                     input_path]
        completed = run_java("The PTB tokenizer", arguments, cwd=_TOKENIZER_DIR)
    stderr = completed.stderr.decode(errors="replace")
    if completed.returncode != 0:
        raise java_failure("The PTB tokenizer", stderr, completed.returncode)
    for line in stderr.splitlines():
        logger.debug("PTBTokenizer: %s", line)
    output = completed.stdout.decode().split("\n")
    if len(output) < len(lines) or any(output[len(lines):]):
        raise java_failure(
            "The PTB tokenizer", f"it returned {len(output)} lines for {len(lines)} captions"
        )
    tokenized = {image: [] for image in captions_for_image}
    for image, line in zip(keys, output):
        tokenized[image].append(
            " ".join(
                token
                for token in line.rstrip().split(" ")
                if token not in _PUNCTUATION_TOKENS
            )
        )
    return tokenized


class _Meteor(Meteor):
    """pycocoevalcap's METEOR scorer, with a `close` that always stops Java.

    The original only stops its Java process in `__del__`, which waits on a lock
    that a failed `compute_score` never releases, and then hangs forever.

    Args:
        normalize: run METEOR with `-norm` (its English tokenizer and normaliser), as
            pycocoevalcap does; False for captions that are tokenized already.
    """

    def __init__(self, normalize: bool = True):
        try:
            if normalize:
                super().__init__()
            else:
                self._start_without_norm()
        except OSError as error:
            raise java_failure(
                "METEOR", f"Java could not start: {error.strerror or error}"
            ) from None

    def _start_without_norm(self):
        self.meteor_cmd = ["java", "-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en"]
        self.meteor_p = subprocess.Popen(
            self.meteor_cmd, cwd=_METEOR_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.lock = threading.Lock()

    def score(self, gts, res):
        """Runs `compute_score`, turning a dead Java process into a `MetricsError`."""
        try:
            return self.compute_score(gts, res)
        except (OSError, ValueError) as error:
            process = self.meteor_p
            process.kill()
            process.wait()
            detail = process.stderr.read().decode(errors="replace")
            raise java_failure("METEOR", detail) from error

    def close(self):
        """Stops the Java process and closes its pipes; safe to call twice."""
        process = getattr(self, "meteor_p", None)
        if process is None:
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            with contextlib.suppress(OSError):
                stream.close()

    def __del__(self):
        self.close()

