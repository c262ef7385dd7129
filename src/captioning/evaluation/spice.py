"""SPICE, the optional COCO caption metric, run only when it can run.

SPICE needs pycocoevalcap's `spice-1.0.jar`, Stanford CoreNLP 3.6.0 (two jars, about 400 MB)
in its `spice/lib` folder, and Java 8 or 11. pycocoevalcap downloads CoreNLP on first use;
this package never does: when SPICE cannot run (`spice_unavailable`) or fails, one warning
says why and how to enable it, and SPICE is left out of the results.
"""

import json
import logging
import math
import os
import tempfile

from pycocoevalcap.spice import get_stanford_models as _corenlp_download
from pycocoevalcap.spice import spice as _spice_module

from captioning.errors import MetricsError
from captioning.evaluation.java import java_available, java_error, run_java

logger = logging.getLogger(__name__)

SPICE_KEY = "SPICE"

_SPICE_DIR = os.path.dirname(os.path.abspath(_spice_module.__file__))
_SPICE_LIB_DIR = os.path.join(_SPICE_DIR, _corenlp_download.SPICELIB)
_SPICE_CACHE_DIR = os.path.join(_SPICE_DIR, _spice_module.CACHE_DIR)
_CORENLP_JARS = (
    f"{_corenlp_download.JAR}.jar",
    f"{_corenlp_download.JAR}-models.jar",
)
_CORENLP_URL = f"http://nlp.stanford.edu/software/{_corenlp_download.CORENLP}.zip"


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
    if not java_available():
        return (f"SPICE runs on Java 8 or 11, and there is no java on PATH; install one, "
                f"or {silence}.")
    return None


def spice_score(gts, res):
    """SPICE on tokenized captions, or None after a warning when it cannot run.

    Args:
        gts: dict from image id to its tokenized reference captions.
        res: dict from image id to a list holding its tokenized predicted caption.

    Returns:
        The mean SPICE F-score and the list of per-image F-scores, in the order of `gts`,
        or None.
    """
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
        arguments = ["-jar", "-Xmx8G", _spice_module.SPICE_JAR, input_path, "-cache",
                     _SPICE_CACHE_DIR, "-out", output_path, "-subset", "-silent"]
        completed = run_java("SPICE", arguments, cwd=_SPICE_DIR, merge_output=True)
        output = completed.stdout.decode(errors="replace")
        for line in output.splitlines():
            logger.debug("SPICE: %s", line)
        if completed.returncode != 0:
            raise MetricsError(
                f"Java exited with status {completed.returncode}: {java_error(output)}"
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
