"""Tests for captioning.evaluation.predictions: the COCO results JSON and the per-image CSV."""

import json

import pytest

from captioning.errors import CaptioningError
from captioning.evaluation.predictions import read_predictions, write_per_image, write_predictions
from tests.evaluation.helpers import PREDICTIONS, REFERENCES, read_csv


def test_predictions_round_trip_in_coco_results_format(tmp_path):
    path = tmp_path / "out" / "predictions.json"
    predictions = {"b.jpg": "a dog", "a.jpg": "a café, \"quoted\"", "c.png": ""}
    write_predictions(path, predictions)

    results = json.loads(path.read_text(encoding="utf-8"))
    assert results == [
        {"image_id": "a.jpg", "caption": "a café, \"quoted\""},
        {"image_id": "b.jpg", "caption": "a dog"},
        {"image_id": "c.png", "caption": ""},
    ]
    assert path.read_text(encoding="utf-8").endswith("}\n]\n")
    assert read_predictions(path) == predictions


def test_writing_replaces_files_whole_and_reports_failures(tmp_path):
    path = tmp_path / "predictions.json"
    write_predictions(path, {"a.jpg": "a dog"})
    write_predictions(path, {"b.jpg": "a cat"})
    assert read_predictions(path) == {"b.jpg": "a cat"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.json"]
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    for write in (lambda target: write_predictions(target, PREDICTIONS),
                  lambda target: write_per_image(target, PREDICTIONS, REFERENCES)):
        with pytest.raises(CaptioningError) as raised:
            write(blocker / "out.file")
        assert str(blocker) in str(raised.value) and "\n" not in str(raised.value)


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
        read_predictions(path)


def test_read_predictions_missing_file(tmp_path):
    with pytest.raises(CaptioningError, match="not found"):
        read_predictions(tmp_path / "missing.json")


def test_write_per_image_without_scores(tmp_path):
    path = tmp_path / "per_image.csv"
    write_per_image(path, PREDICTIONS, REFERENCES)
    rows = read_csv(path)
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
    write_per_image(path, PREDICTIONS, REFERENCES, scores)
    rows = read_csv(path)
    assert list(rows[0]) == ["image", "caption", "references", "Bleu_4", "CIDEr"]
    assert float(rows[5]["CIDEr"]) == pytest.approx(0.5)
    assert float(rows[5]["Bleu_4"]) == pytest.approx(0.05)

    del scores[sorted(PREDICTIONS)[3]]
    with pytest.raises(CaptioningError, match="No per-image scores"):
        write_per_image(path, PREDICTIONS, REFERENCES, scores)
