"""COCO caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and, optionally, SPICE.

`coco_scores` reports what `pycocoevalcap.eval.COCOEvalCap` reports for the same
captions. Every caption goes through the Stanford PTB tokenizer (Java), which
lower-cases it, splits it into tokens and drops punctuation; pycocoevalcap's own
scorers then run on the tokens. Only the plumbing differs from `COCOEvalCap`:

- captions come in as dictionaries instead of `pycocotools.coco.COCO` objects;
- only the predicted images are scored, so the references may cover more images
  (a whole split), as in the official example that sets `params["image_id"]` to
  the images of the results file;
- the tokenizer reads its input from a private temporary directory instead of
  pycocoevalcap's package folder, and that directory is always removed;
- METEOR's Java process is stopped as soon as its score is read;
- SPICE is only run when asked for (`evaluate_release` asks by default), and never
  downloads Stanford CoreNLP: when it cannot run (`spice_unavailable`), one warning says
  why and how to enable it, and SPICE is left out of the results;
- pycocoevalcap's prints go to this module's logger at DEBUG level, not to stdout.

`bleu4` is a fast, Java-free corpus BLEU-4 for monitoring validation during
training. `write_predictions` and `read_predictions` handle the COCO results format,
and `write_per_image` writes a CSV for looking at the captions one by one.

Predictions map an image id (the image's file name) to one caption. References map
an image id to the list of its reference captions.
"""

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import get_stanford_models as _corenlp_download
from pycocoevalcap.spice import spice as _spice_module
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb_module

from captioning.errors import CaptioningError

logger = logging.getLogger(__name__)

METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
"""The metrics that `coco_scores` always reports, under `COCOEvalCap`'s names."""

SPICE_KEY = "SPICE"
NLTK_BLEU_KEY = "nltk_bleu_4"
N_IMAGES_KEY = "n_images"

_PER_IMAGE_KEYS = METRIC_KEYS + (SPICE_KEY,)
_PUNCTUATION_TOKENS = frozenset(_ptb_module.PUNCTUATIONS)
_TOKENIZER_DIR = os.path.dirname(os.path.abspath(_ptb_module.__file__))
_SPICE_DIR = os.path.dirname(os.path.abspath(_spice_module.__file__))
_SPICE_LIB_DIR = os.path.join(_SPICE_DIR, _corenlp_download.SPICELIB)
_SPICE_CACHE_DIR = os.path.join(_SPICE_DIR, _spice_module.CACHE_DIR)
_CORENLP_JARS = (
    f"{_corenlp_download.JAR}.jar",
    f"{_corenlp_download.JAR}-models.jar",
)
_CORENLP_URL = f"http://nlp.stanford.edu/software/{_corenlp_download.CORENLP}.zip"
_MAX_NAMED = 5
_NO_JAVA = (
    "The COCO caption metrics need Java 8 or newer on PATH (the PTB tokenizer and "
    "METEOR run on it): install a JRE, e.g. `apt-get install default-jre-headless`."
)


def coco_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    spice: bool = False,
    return_per_image: bool = False,
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

    Returns:
        A dict with a float for each of `METRIC_KEYS`, `"SPICE"` when SPICE ran,
        `"nltk_bleu_4"` (NLTK's `corpus_bleu` with uniform 4-gram weights and no
        smoothing, on lower-cased whitespace tokens without standalone
        punctuation tokens; it is not the COCO BLEU-4 and is there only to compare
        with papers that report NLTK's number) and `"n_images"`, the number of
        images scored. With `return_per_image=True`, a tuple of that dict and a
        dict from image id to a dict of that image's scores under the same metric
        names (the corpus-level numbers are not the mean of these for BLEU and
        METEOR).

    Raises:
        CaptioningError: If there are no predictions, a predicted image has no
            references, a caption is not a string, or Java is not installed.
    """
    image_ids = _check_captions(predictions, references)
    if shutil.which("java") is None:
        raise CaptioningError(f"{_NO_JAVA} Or use bleu4() for a Java-free BLEU-4.")
    gts = {image: list(references[image]) for image in image_ids}
    res = {image: [predictions[image]] for image in image_ids}

    scores = {}
    per_image = {image: {} for image in image_ids}

    def record(name, score, image_scores):
        scores[name] = float(score)
        for image, value in zip(image_ids, image_scores):
            per_image[image][name] = float(value)

    # METEOR's JVM loads its paraphrase table while the other metrics run.
    meteor = _Meteor()
    try:
        gts = _ptb_tokenize(gts)
        res = _ptb_tokenize(res)
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
    if spice:
        spice_result = _spice_score(gts, res)
        if spice_result is not None:
            record(SPICE_KEY, *spice_result)
    scores[NLTK_BLEU_KEY] = _nltk_bleu_4(
        [predictions[image] for image in image_ids],
        [references[image] for image in image_ids],
    )
    scores[N_IMAGES_KEY] = len(image_ids)
    if return_per_image:
        return scores, per_image
    return scores


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
    """
    image_ids = _check_captions(predictions, references)
    scorer = BleuScorer(n=4)
    for image in image_ids:
        scorer += (
            " ".join(_simple_tokens(predictions[image])),
            [" ".join(_simple_tokens(caption)) for caption in references[image]],
        )
    bleu, _ = scorer.compute_score(option="closest", verbose=0)
    return float(bleu[3])


def write_predictions(path: str | os.PathLike, predictions: Mapping[str, str]) -> None:
    """Writes predictions as a COCO caption results file.

    The file is a JSON list of `{"image_id": <image id>, "caption": <caption>}`
    sorted by image id, which `pycocotools.coco.COCO.loadRes` reads.

    Args:
        path: Path of the JSON file to write; missing parent folders are made.
        predictions: Mapping from image id (the image's file name) to caption.
    """
    results = [
        {"image_id": image, "caption": predictions[image]}
        for image in sorted(predictions)
    ]
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(results, file, ensure_ascii=False, indent=1)
        file.write("\n")


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
    """Writes one CSV row per predicted image, in sorted image order.

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
            references, or `scores` lacks an image or a metric for an image.
    """
    image_ids = _check_captions(predictions, references)
    columns = []
    if scores is not None:
        missing = [image for image in image_ids if image not in scores]
        if missing:
            raise CaptioningError(
                f"No per-image scores for {_name_some(missing)}."
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
                f"{_name_some(incomplete)}."
            )
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as file:
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


def _check_captions(predictions, references):
    """Validates predictions against references and returns the sorted image ids."""
    if not predictions:
        raise CaptioningError("There are no predictions to evaluate.")
    image_ids = sorted(predictions)
    not_text = [
        image for image in image_ids if not isinstance(predictions[image], str)
    ]
    if not_text:
        raise CaptioningError(
            f"Predicted captions must be strings; they are not for "
            f"{_name_some(not_text)}."
        )
    missing = [image for image in image_ids if image not in references]
    if missing:
        raise CaptioningError(
            f"{len(missing)} predicted image(s) have no reference captions: "
            f"{_name_some(missing)}."
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
            f"strings; they do not for {_name_some(malformed)}."
        )
    return image_ids


def _name_some(images):
    """Names the first few images of a list, and how many more there are."""
    named = ", ".join(repr(image) for image in images[:_MAX_NAMED])
    if len(images) > _MAX_NAMED:
        named += f" and {len(images) - _MAX_NAMED} more"
    return named


def _simple_tokens(caption):
    """Lower-cased whitespace tokens, without standalone punctuation tokens."""
    return [
        token for token in caption.lower().split() if token not in _PUNCTUATION_TOKENS
    ]


def _nltk_bleu_4(predictions, references):
    """NLTK's corpus BLEU-4, unsmoothed, on `_simple_tokens`."""
    from nltk.translate.bleu_score import corpus_bleu

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = corpus_bleu(
            [
                [_simple_tokens(caption) for caption in captions]
                for captions in references
            ],
            [_simple_tokens(caption) for caption in predictions],
            weights=(0.25, 0.25, 0.25, 0.25),
        )
    for warning in caught:
        logger.debug("NLTK BLEU: %s", " ".join(str(warning.message).split()))
    return float(score)


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


def _java_error(output):
    """The informative lines of a failed Java process's output, on one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no error output"
    errors = [line for line in lines if "Exception" in line or "Error" in line]
    if not errors:
        return lines[-1]
    causes = [line for line in errors if line.startswith("Caused by:")]
    return " ".join(dict.fromkeys([errors[0], *causes[-1:]]))


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
        completed = subprocess.run(
            [
                "java",
                "-cp",
                _ptb_module.STANFORD_CORENLP_3_4_1_JAR,
                "edu.stanford.nlp.process.PTBTokenizer",
                "-preserveLines",
                "-lowerCase",
                input_path,
            ],
            cwd=_TOKENIZER_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    stderr = completed.stderr.decode(errors="replace")
    if completed.returncode != 0:
        raise RuntimeError(
            f"The PTB tokenizer (Java) failed with exit status "
            f"{completed.returncode}: {_java_error(stderr)}"
        )
    for line in stderr.splitlines():
        logger.debug("PTBTokenizer: %s", line)
    output = completed.stdout.decode().split("\n")
    if len(output) < len(lines) or any(output[len(lines):]):
        raise RuntimeError(
            f"The PTB tokenizer returned {len(output)} lines for {len(lines)} "
            "captions."
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
    """

    def score(self, gts, res):
        """Runs `compute_score`, turning a dead Java process into a clear error."""
        try:
            return self.compute_score(gts, res)
        except (OSError, ValueError) as error:
            process = self.meteor_p
            process.kill()
            process.wait()
            detail = process.stderr.read().decode(errors="replace")
            message = f"METEOR (Java) failed: {_java_error(detail)}"
            raise RuntimeError(message) from error

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


def spice_unavailable() -> str | None:
    """Why SPICE cannot run here, with how to make it run; None when it can.

    SPICE needs pycocoevalcap's `spice-1.0.jar`, Stanford CoreNLP 3.6.0 (two jars, about
    400 MB, which pycocoevalcap downloads on first use and this package never does) in its
    `spice/lib` folder, and Java. Whether the Java found is one SPICE runs on (8 or 11) is
    only known by running it.

    Returns:
        A one-line message, or None.
    """
    silence = "pass --no-spice (spice=False) to leave SPICE out without this message"
    if not os.path.isfile(os.path.join(_SPICE_DIR, _spice_module.SPICE_JAR)):
        return (f"pycocoevalcap's {_spice_module.SPICE_JAR} is not in {_SPICE_DIR}; "
                f"reinstall pycocoevalcap, or {silence}.")
    missing = [
        name
        for name in _CORENLP_JARS
        if not os.path.isfile(os.path.join(_SPICE_LIB_DIR, name))
    ]
    if missing:
        return (f"Stanford CoreNLP ({', '.join(missing)}) is not in {_SPICE_LIB_DIR}, and it "
                "is never downloaded during evaluation. To enable SPICE, run `python -m "
                "pycocoevalcap.spice.get_stanford_models` once with internet access, or copy "
                f"both jars from {_CORENLP_URL} into that folder (SPICE also needs Java 8 or "
                f"11); or {silence}.")
    if shutil.which("java") is None:
        return (f"SPICE runs on Java 8 or 11, and there is no java on PATH; install one, "
                f"or {silence}.")
    return None


def _spice_score(gts, res):
    """SPICE on tokenized captions, or None after a warning when it cannot run."""
    reason = spice_unavailable()
    if reason is not None:
        logger.warning("SPICE skipped: %s", reason)
        return None
    try:
        return _run_spice(gts, res)
    except Exception as error:  # SPICE is optional: any failure only skips it.
        logger.warning(
            "SPICE skipped: it failed (%s). SPICE needs Java 8 or 11 (newer Java "
            "breaks it), about 8 GB of memory and Stanford CoreNLP 3.6.0 in %s.",
            " ".join(str(error).split()),
            _SPICE_LIB_DIR,
        )
        return None


def _run_spice(gts, res):
    """Runs pycocoevalcap's SPICE jar as its `Spice.compute_score` does.

    The command and the averaging are the same; the input and output files live
    in a temporary directory that is always removed, and Java's output is
    captured instead of going to the terminal.

    Returns:
        The mean SPICE F-score and the list of per-image F-scores, in the order
        of `gts`; an image without a score counts as NaN, as in the original.
    """
    image_ids = list(gts)
    records = [
        {"image_id": image, "test": res[image][0], "refs": gts[image]}
        for image in image_ids
    ]
    os.makedirs(_SPICE_CACHE_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="captioning-spice-") as directory:
        input_path = os.path.join(directory, "input.json")
        output_path = os.path.join(directory, "output.json")
        with open(input_path, "w", encoding="utf-8") as file:
            json.dump(records, file, indent=2)
        completed = subprocess.run(
            [
                "java",
                "-jar",
                "-Xmx8G",
                _spice_module.SPICE_JAR,
                input_path,
                "-cache",
                _SPICE_CACHE_DIR,
                "-out",
                output_path,
                "-subset",
                "-silent",
            ],
            cwd=_SPICE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        output = completed.stdout.decode(errors="replace")
        for line in output.splitlines():
            logger.debug("SPICE: %s", line)
        if completed.returncode != 0:
            raise RuntimeError(
                f"Java exited with status {completed.returncode}: "
                f"{_java_error(output)}"
            )
        with open(output_path, encoding="utf-8") as file:
            results = json.load(file)
    f_scores = {
        result["image_id"]: _float_or_nan(result["scores"]["All"]["f"])
        for result in results
    }
    per_image = [f_scores.get(image, math.nan) for image in image_ids]
    return sum(per_image) / len(per_image), per_image


def _float_or_nan(value):
    """`Spice.float_convert`: the value as a float, or NaN when it has none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def evaluate_release(release, cache_dir, *, split="test", beam=1, predictions_path=None,
                     per_image_path=None, spice=True, batch_size=128):
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

    Returns:
        The scores of `coco_scores` (COCO metrics, `"SPICE"` when it ran, `nltk_bleu_4`,
        `n_images`) with the `split` and `beam`.

    Raises:
        CaptioningError: Java is missing (before any captioning when there is no
            `predictions_path`; otherwise after the captions are written there), or the
            cache, the split or the release does not fit.
    """
    from captioning.inference.captioner import Captioner
    from captioning.errors import CacheError
    from captioning.cache.build import FeatureCache, describe_differences, weights_fingerprint
    from captioning.release.load import load_release

    loaded = release if hasattr(release, "manifest") else load_release(release)
    cache = FeatureCache(cache_dir)
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
    table = cache.captions()
    part = table[table["split"] == split]
    if part.empty:
        splits = sorted(set(table["split"]) - {""})
        raise CacheError(f"{cache.path}: no images in split {split!r}; it has {splits}")
    references = {image: list(group["caption"]) for image, group in part.groupby("image")}
    images = sorted(references)
    if shutil.which("java") is None and not predictions_path:
        raise CaptioningError(
            f"{_NO_JAVA} Nothing was captioned; with --predictions FILE (predictions_path) "
            "the captions are written before scoring, so they are kept even without Java.")
    captioner = Captioner(loaded, batch_size=batch_size)
    predictions = {}
    for start in range(0, len(images), batch_size):
        names = images[start:start + batch_size]
        captions, _ = captioner.caption_features(cache.gather(cache.rows(names)), beam=beam)
        predictions.update(zip(names, captions))
    if predictions_path:
        write_predictions(predictions_path, predictions)
    if per_image_path:
        write_per_image(per_image_path, predictions, references)
    if shutil.which("java") is None:
        kept = ", ".join(str(path) for path in (predictions_path, per_image_path) if path)
        raise CaptioningError(f"{_NO_JAVA} The {len(predictions)} captions are in {kept}.")
    scores, per_image = coco_scores(predictions, references, spice=spice, return_per_image=True)
    if per_image_path:
        write_per_image(per_image_path, predictions, references, per_image)
    scores["split"], scores["beam"] = split, int(beam)
    return scores
