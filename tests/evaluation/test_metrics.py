"""Tests for captioning.evaluation.metrics: `coco_scores` against COCOEvalCap.

The Java-backed metrics cost several seconds per call (METEOR loads its paraphrase
table), so the main numbers are computed once per module and shared.
"""

import json
import os
import shutil

import pytest

from captioning.errors import CaptioningError, MetricsError
from captioning.evaluation import metrics
from captioning.evaluation.predictions import write_per_image, write_predictions
from captioning.text import bleu4
from tests.evaluation.helpers import PREDICTIONS, REFERENCES, needs_java, read_csv


def _java_children():
    """Process ids of this process's children, read from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid():
            children.append(int(entry))
    return children


class _NoSpice:
    """Stands in for pycocoevalcap's Spice, which would download CoreNLP."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


@pytest.fixture(scope="module")
def ours():
    return metrics.coco_scores(PREDICTIONS, REFERENCES, return_per_image=True)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """What pycocotools and COCOEvalCap compute from the same captions on disk."""
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    directory = tmp_path_factory.mktemp("coco")
    results_path = directory / "results.json"
    annotations_path = directory / "captions.json"
    write_predictions(results_path, PREDICTIONS)
    annotations = [
        {"id": number, "image_id": image, "caption": caption}
        for number, (image, caption) in enumerate(
            ((image, caption) for image, captions in REFERENCES.items() for caption in captions),
            start=1,
        )
    ]
    annotations_path.write_text(
        json.dumps(
            {
                "info": {},
                "licenses": [],
                "type": "captions",
                "images": [{"id": image, "file_name": image} for image in REFERENCES],
                "annotations": annotations,
            }
        )
    )
    coco = COCO(str(annotations_path))
    coco_results = coco.loadRes(str(results_path))
    evaluator = coco_eval.COCOEvalCap(coco, coco_results)
    evaluator.params["image_id"] = coco_results.getImgIds()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coco_eval, "Spice", _NoSpice)
        evaluator.evaluate()
    return evaluator


@needs_java
def test_scores_equal_coco_eval_cap(ours, official):
    scores, per_image = ours
    for name in metrics.METRIC_KEYS:
        assert scores[name] == pytest.approx(official.eval[name], rel=1e-9, abs=1e-12), name
    for image, image_scores in per_image.items():
        for name in metrics.METRIC_KEYS:
            assert image_scores[name] == pytest.approx(
                official.imgToEval[image][name], rel=1e-9, abs=1e-12
            ), (image, name)


@needs_java
def test_result_keys_and_values(ours):
    scores, per_image = ours
    assert list(scores) == [*metrics.METRIC_KEYS, "nltk_bleu_4", "n_images", "tokenizer"]
    assert scores["tokenizer"] == "ptb"
    assert scores["n_images"] == len(PREDICTIONS)
    assert sorted(per_image) == sorted(PREDICTIONS)
    for name in metrics.METRIC_KEYS:
        assert isinstance(scores[name], float)
        assert scores[name] > 0
    assert isinstance(scores["nltk_bleu_4"], float)
    assert 0 < scores["nltk_bleu_4"] < 1
    assert 0 < scores["Bleu_4"] < scores["Bleu_1"] < 1


@needs_java
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_no_java_process_or_temp_file_is_left(ours):
    assert _java_children() == []
    tokenizer_dir = os.path.dirname(metrics._ptb_module.__file__)
    assert not [name for name in os.listdir(tokenizer_dir) if name.startswith("tmp")]


@needs_java
def test_bleu4_equals_coco_bleu_4_on_tokenized_text(ours):
    scores, _ = ours
    assert bleu4(PREDICTIONS, REFERENCES) == pytest.approx(scores["Bleu_4"], rel=1e-9)


@needs_java
def test_shuffled_predictions_score_lower(ours):
    scores, _ = ours
    images = sorted(PREDICTIONS)
    shuffled = {
        image: PREDICTIONS[images[(index + 7) % len(images)]]
        for index, image in enumerate(images)
    }
    worse = metrics.coco_scores(shuffled, REFERENCES)
    for name in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "nltk_bleu_4"):
        assert worse[name] < scores[name], name


@needs_java
def test_write_per_image_from_coco_scores(tmp_path, ours):
    _, per_image = ours
    path = tmp_path / "per_image.csv"
    write_per_image(path, PREDICTIONS, REFERENCES, per_image)
    rows = read_csv(path)
    assert list(rows[0])[3:] == list(metrics.METRIC_KEYS)
    for row in rows:
        assert float(row["CIDEr"]) == pytest.approx(per_image[row["image"]]["CIDEr"], abs=1e-6)


def test_missing_java_is_a_metrics_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MetricsError, match="Java") as raised:
        metrics.coco_scores(PREDICTIONS, REFERENCES)
    assert isinstance(raised.value, CaptioningError)
    assert "bleu4()" in str(raised.value) and "\n" not in str(raised.value)


def test_missing_references_are_named():
    predictions = dict(PREDICTIONS, **{"ghost_1.jpg": "a cat", "ghost_2.jpg": "a dog"})
    with pytest.raises(CaptioningError, match="2 predicted image.*'ghost_1.jpg', 'ghost_2.jpg'"):
        metrics.coco_scores(predictions, REFERENCES)


def test_empty_predictions_raise():
    with pytest.raises(CaptioningError, match="no predictions"):
        metrics.coco_scores({}, REFERENCES)
