"""Tests for captioning.evaluation.

The Java-backed metrics cost several seconds per call (METEOR loads its paraphrase
table), so the main numbers are computed once per module and shared.
"""

import csv
import json
import logging
import os
import shutil

import pytest

from captioning.evaluation import metrics as evaluation
from captioning.errors import CaptioningError

needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="the COCO metrics need Java"
)

COLORS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "triangle")
SIZES = ("large", "small", "tiny")


def _synthetic_captions():
    """36 images with five references each, and imperfect predictions."""
    predictions = {}
    references = {}
    index = 0
    for color in COLORS:
        for shape in SHAPES:
            for size in SIZES:
                image = f"image_{index:03d}.jpg"
                references[image] = [
                    f"A {size} {color} {shape} .",
                    f"a {color} {shape} that is {size}",
                    f"There is a {size} {color} {shape} here .",
                    f"{size} {shape} colored {color}",
                    f"the {shape} is {color} and {size}",
                ]
                wrong_shape = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
                if index % 3 == 0:
                    predictions[image] = f"a {size} {color} {wrong_shape}"
                elif index % 4 == 1:
                    predictions[image] = f"A {color} {shape} ."
                else:
                    predictions[image] = f"a {size} {color} {shape} on a white background"
                index += 1
    references["unpredicted_1.jpg"] = ["a purple hexagon", "an octagon"]
    references["unpredicted_2.jpg"] = ["a grey ellipse"]
    return predictions, references


PREDICTIONS, REFERENCES = _synthetic_captions()


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
    return evaluation.coco_scores(PREDICTIONS, REFERENCES, return_per_image=True)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """What pycocotools and COCOEvalCap compute from the same captions on disk."""
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    directory = tmp_path_factory.mktemp("coco")
    results_path = directory / "results.json"
    annotations_path = directory / "captions.json"
    evaluation.write_predictions(results_path, PREDICTIONS)
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
    for name in evaluation.METRIC_KEYS:
        assert scores[name] == pytest.approx(official.eval[name], rel=1e-9, abs=1e-12), name
    for image, image_scores in per_image.items():
        for name in evaluation.METRIC_KEYS:
            assert image_scores[name] == pytest.approx(
                official.imgToEval[image][name], rel=1e-9, abs=1e-12
            ), (image, name)


@needs_java
def test_result_keys_and_values(ours):
    scores, per_image = ours
    assert list(scores) == [*evaluation.METRIC_KEYS, "nltk_bleu_4", "n_images"]
    assert scores["n_images"] == len(PREDICTIONS)
    assert sorted(per_image) == sorted(PREDICTIONS)
    for name in evaluation.METRIC_KEYS:
        assert isinstance(scores[name], float)
        assert scores[name] > 0
    assert isinstance(scores["nltk_bleu_4"], float)
    assert 0 < scores["nltk_bleu_4"] < 1
    assert 0 < scores["Bleu_4"] < scores["Bleu_1"] < 1


@needs_java
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_no_java_process_or_temp_file_is_left(ours):
    assert _java_children() == []
    tokenizer_dir = os.path.dirname(evaluation._ptb_module.__file__)
    assert not [name for name in os.listdir(tokenizer_dir) if name.startswith("tmp")]


@needs_java
def test_bleu4_equals_coco_bleu_4_on_tokenized_text(ours):
    scores, _ = ours
    assert evaluation.bleu4(PREDICTIONS, REFERENCES) == pytest.approx(
        scores["Bleu_4"], rel=1e-9
    )


@needs_java
def test_perfect_predictions_without_spice_jars(tmp_path, monkeypatch, caplog, capsys):
    from pycocoevalcap.spice import get_stanford_models

    def no_download(*args, **kwargs):
        raise AssertionError("SPICE must not download CoreNLP")

    monkeypatch.setattr(get_stanford_models, "urlretrieve", no_download)
    monkeypatch.setattr(evaluation, "_SPICE_LIB_DIR", str(tmp_path))
    perfect = {image: REFERENCES[image][1] for image in PREDICTIONS}
    with caplog.at_level(logging.WARNING, logger=evaluation.__name__):
        scores = evaluation.coco_scores(perfect, REFERENCES, spice=True)

    assert scores["Bleu_4"] == pytest.approx(1.0)
    assert scores["nltk_bleu_4"] == pytest.approx(1.0)
    assert scores["CIDEr"] > 1
    assert "SPICE" not in scores
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "SPICE skipped" in warnings[0].getMessage()
    assert "get_stanford_models" in warnings[0].getMessage()
    assert capsys.readouterr().out == ""


@needs_java
def test_shuffled_predictions_score_lower(ours):
    scores, _ = ours
    images = sorted(PREDICTIONS)
    shuffled = {
        image: PREDICTIONS[images[(index + 7) % len(images)]]
        for index, image in enumerate(images)
    }
    worse = evaluation.coco_scores(shuffled, REFERENCES)
    for name in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "nltk_bleu_4"):
        assert worse[name] < scores[name], name


@needs_java
def test_failing_spice_is_a_warning(tmp_path, monkeypatch, caplog):
    real_lib = evaluation._SPICE_LIB_DIR
    if all(os.path.isfile(os.path.join(real_lib, jar)) for jar in evaluation._CORENLP_JARS):
        pytest.skip("Stanford CoreNLP is installed, so SPICE would really run")
    lib = tmp_path / "lib"
    lib.mkdir()
    for jar in evaluation._CORENLP_JARS:
        (lib / jar).write_bytes(b"")
    monkeypatch.setattr(evaluation, "_SPICE_LIB_DIR", str(lib))
    monkeypatch.setattr(evaluation, "_SPICE_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger=evaluation.__name__):
        result = evaluation._spice_score(
            {"a.jpg": ["a red circle", "a big red circle"]}, {"a.jpg": ["a red circle"]}
        )
    assert result is None
    assert len(caplog.records) == 1
    assert "SPICE skipped: it failed" in caplog.records[0].getMessage()


def test_missing_java_is_a_captioning_error(monkeypatch):
    monkeypatch.setattr(evaluation.shutil, "which", lambda name: None)
    with pytest.raises(CaptioningError, match="Java"):
        evaluation.coco_scores(PREDICTIONS, REFERENCES)


@pytest.mark.parametrize("score", [evaluation.coco_scores, evaluation.bleu4])
def test_missing_references_are_named(score):
    predictions = dict(PREDICTIONS, **{"ghost_1.jpg": "a cat", "ghost_2.jpg": "a dog"})
    with pytest.raises(CaptioningError, match="2 predicted image.*'ghost_1.jpg', 'ghost_2.jpg'"):
        score(predictions, REFERENCES)


@pytest.mark.parametrize("score", [evaluation.coco_scores, evaluation.bleu4])
def test_empty_predictions_raise(score):
    with pytest.raises(CaptioningError, match="no predictions"):
        score({}, REFERENCES)


@pytest.mark.parametrize(
    "references",
    [{"a.jpg": "a red circle"}, {"a.jpg": []}, {"a.jpg": ["a red circle", None]}],
)
def test_malformed_references_raise(references):
    with pytest.raises(CaptioningError, match="'a.jpg'"):
        evaluation.bleu4({"a.jpg": "a red circle"}, references)


def test_non_string_prediction_raises():
    with pytest.raises(CaptioningError, match="strings"):
        evaluation.bleu4({"a.jpg": ["a", "red", "circle"]}, {"a.jpg": ["a red circle"]})


def test_bleu4_bounds():
    perfect = {image: REFERENCES[image][0] for image in PREDICTIONS}
    assert evaluation.bleu4(perfect, REFERENCES) == pytest.approx(1.0)
    unrelated = {image: "an old man rides a horse on the beach" for image in PREDICTIONS}
    assert evaluation.bleu4(unrelated, REFERENCES) < 1e-3
    score = evaluation.bleu4(PREDICTIONS, REFERENCES)
    assert isinstance(score, float)
    assert 0 < score < 1


def test_bleu4_ignores_case_and_standalone_punctuation():
    references = {"a.jpg": ["A big red circle .", "a red circle on white"]}
    assert evaluation.bleu4({"a.jpg": "a BIG red circle"}, references) == pytest.approx(1.0)


def test_predictions_round_trip_in_coco_results_format(tmp_path):
    path = tmp_path / "out" / "predictions.json"
    predictions = {"b.jpg": "a dog", "a.jpg": "a café, \"quoted\"", "c.png": ""}
    evaluation.write_predictions(path, predictions)

    results = json.loads(path.read_text(encoding="utf-8"))
    assert results == [
        {"image_id": "a.jpg", "caption": "a café, \"quoted\""},
        {"image_id": "b.jpg", "caption": "a dog"},
        {"image_id": "c.png", "caption": ""},
    ]
    assert evaluation.read_predictions(path) == predictions


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "Cannot read"),
        ('{"a.jpg": "a dog"}', "JSON list"),
        ('[{"image_id": "a.jpg"}]', "Entry 0"),
        (
            '[{"image_id": "a.jpg", "caption": "x"}, {"image_id": "a.jpg", "caption": "y"}]',
            "more than one caption",
        ),
    ],
)
def test_read_predictions_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "predictions.json"
    path.write_text(content)
    with pytest.raises(CaptioningError, match=match):
        evaluation.read_predictions(path)


def test_read_predictions_missing_file(tmp_path):
    with pytest.raises(CaptioningError, match="not found"):
        evaluation.read_predictions(tmp_path / "missing.json")


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_write_per_image_without_scores(tmp_path):
    path = tmp_path / "per_image.csv"
    evaluation.write_per_image(path, PREDICTIONS, REFERENCES)
    rows = _read_csv(path)
    assert list(rows[0]) == ["image", "caption", "references"]
    assert [row["image"] for row in rows] == sorted(PREDICTIONS)
    first = sorted(PREDICTIONS)[0]
    assert rows[0]["caption"] == PREDICTIONS[first]
    assert rows[0]["references"] == " | ".join(REFERENCES[first])


def test_write_per_image_with_scores(tmp_path):
    scores = {
        image: {"CIDEr": index / 10, "Bleu_4": index / 100}
        for index, image in enumerate(sorted(PREDICTIONS))
    }
    path = tmp_path / "per_image.csv"
    evaluation.write_per_image(path, PREDICTIONS, REFERENCES, scores)
    rows = _read_csv(path)
    assert list(rows[0]) == ["image", "caption", "references", "Bleu_4", "CIDEr"]
    assert float(rows[5]["CIDEr"]) == pytest.approx(0.5)
    assert float(rows[5]["Bleu_4"]) == pytest.approx(0.05)

    del scores[sorted(PREDICTIONS)[3]]
    with pytest.raises(CaptioningError, match="No per-image scores"):
        evaluation.write_per_image(path, PREDICTIONS, REFERENCES, scores)


@needs_java
def test_write_per_image_from_coco_scores(tmp_path, ours):
    _, per_image = ours
    path = tmp_path / "per_image.csv"
    evaluation.write_per_image(path, PREDICTIONS, REFERENCES, per_image)
    rows = _read_csv(path)
    assert list(rows[0])[3:] == list(evaluation.METRIC_KEYS)
    for row in rows:
        assert float(row["CIDEr"]) == pytest.approx(per_image[row["image"]]["CIDEr"], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# evaluate_release on the shared tiny run and cache.


def test_spice_unavailable_says_why_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "_SPICE_LIB_DIR", str(tmp_path))
    reason = evaluation.spice_unavailable()
    assert str(tmp_path) in reason and "get_stanford_models" in reason
    assert "--no-spice" in reason
    for jar in evaluation._CORENLP_JARS:
        (tmp_path / jar).write_bytes(b"")
    monkeypatch.setattr(evaluation.shutil, "which", lambda name: None)
    assert "java" in evaluation.spice_unavailable()
    monkeypatch.setattr(evaluation.shutil, "which", lambda name: "/usr/bin/java")
    assert evaluation.spice_unavailable() is None


@needs_java
def test_evaluate_release_skips_spice_with_one_message(run, cache, tmp_path, monkeypatch,
                                                       caplog):
    monkeypatch.setattr(evaluation, "_SPICE_LIB_DIR", str(tmp_path / "no_corenlp"))
    predictions_path, per_image_path = tmp_path / "predictions.json", tmp_path / "per_image.csv"
    with caplog.at_level(logging.WARNING):
        scores = evaluation.evaluate_release(run, cache, predictions_path=predictions_path,
                                             per_image_path=per_image_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("SPICE skipped:") and "get_stanford_models" in warnings[0]
    assert "SPICE" not in scores and scores["Bleu_4"] >= 0 and scores["beam"] == 1
    predictions = evaluation.read_predictions(predictions_path)
    assert len(predictions) == scores["n_images"]
    rows = _read_csv(per_image_path)
    assert [row["image"] for row in rows] == sorted(predictions)
    assert list(rows[0])[3:] == list(evaluation.METRIC_KEYS)


def test_evaluate_release_without_java_keeps_the_captions(run, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation.shutil, "which", lambda name: None)
    with pytest.raises(CaptioningError, match="Java.*Nothing was captioned"):
        evaluation.evaluate_release(run, cache)
    predictions_path, per_image_path = tmp_path / "predictions.json", tmp_path / "per_image.csv"
    with pytest.raises(CaptioningError, match="Java.*predictions.json"):
        evaluation.evaluate_release(run, cache, predictions_path=predictions_path,
                                    per_image_path=per_image_path, beam=2)
    predictions = evaluation.read_predictions(predictions_path)
    rows = _read_csv(per_image_path)
    assert predictions and [row["image"] for row in rows] == sorted(predictions)
    assert [row["caption"] for row in rows] == [predictions[row["image"]] for row in rows]
