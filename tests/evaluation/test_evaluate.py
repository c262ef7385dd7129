"""Tests for captioning.evaluation.evaluate: `evaluate_release` on the shared tiny run and cache."""

import logging
import shutil

import pytest

from captioning.errors import ImageError, MetricsError
from captioning.evaluation import METRIC_KEYS, evaluate_release, read_predictions, spice
from tests.evaluation.helpers import JAVA_CRASH, fake_java, needs_java, posix_only, read_csv


@needs_java
def test_evaluate_release_skips_spice_with_one_message(run, cache, tmp_path, monkeypatch,
                                                       caplog):
    monkeypatch.setattr(spice, "_SPICE_LIB_DIR", str(tmp_path / "no_corenlp"))
    predictions_path, per_image_path = tmp_path / "predictions.json", tmp_path / "per_image.csv"
    with caplog.at_level(logging.WARNING):
        scores = evaluate_release(run, cache, predictions_path=predictions_path,
                                  per_image_path=per_image_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("SPICE skipped:") and "get_stanford_models" in warnings[0]
    assert "SPICE" not in scores and scores["Bleu_4"] >= 0 and scores["beam"] == 1
    predictions = read_predictions(predictions_path)
    assert len(predictions) == scores["n_images"]
    rows = read_csv(per_image_path)
    assert [row["image"] for row in rows] == sorted(predictions)
    assert list(rows[0])[3:] == list(METRIC_KEYS)


def test_evaluate_release_without_java_keeps_the_captions(run, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MetricsError, match="Java.*Nothing was captioned"):
        evaluate_release(run, cache)
    predictions_path, per_image_path = tmp_path / "predictions.json", tmp_path / "per_image.csv"
    with pytest.raises(MetricsError, match="Java.*predictions.json"):
        evaluate_release(run, cache, predictions_path=predictions_path,
                         per_image_path=per_image_path, beam=2)
    predictions = read_predictions(predictions_path)
    rows = read_csv(per_image_path)
    assert predictions and [row["image"] for row in rows] == sorted(predictions)
    assert [row["caption"] for row in rows] == [predictions[row["image"]] for row in rows]


@posix_only
def test_evaluate_release_with_a_failing_java_keeps_the_captions(run, cache, tmp_path,
                                                                 monkeypatch):
    fake_java(tmp_path, monkeypatch, JAVA_CRASH)
    predictions_path = tmp_path / "predictions.json"
    with pytest.raises(MetricsError) as raised:
        evaluate_release(run, cache, predictions_path=predictions_path, spice=False)
    assert "\n" not in str(raised.value) and "PTB tokenizer" in str(raised.value)
    assert read_predictions(predictions_path)


def _split_images(cache, split="test"):
    from captioning.cache import FeatureCache

    table = FeatureCache(cache).captions()
    return sorted(set(table.loc[table["split"] == split, "image"]))


@needs_java
def test_evaluate_release_from_images_captions_with_the_release_encoder(run, cache, dataset,
                                                                        captioner, tmp_path):
    predictions_path = tmp_path / "predictions.json"
    scores = evaluate_release(run, cache, images_dir=dataset / "images", spice=False,
                              predictions_path=predictions_path)
    names = _split_images(cache)
    expected = captioner.caption([str(dataset / "images" / name) for name in names])
    assert read_predictions(predictions_path) == {
        name: result.caption for name, result in zip(names, expected)}
    assert scores["n_images"] == len(names) and 0 <= scores["CIDEr"]


def test_evaluate_release_from_images_names_the_unreadable_ones_and_keeps_the_rest(
        run, cache, dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # it must fail before scoring
    images = tmp_path / "images"
    shutil.copytree(dataset / "images", images)
    names = _split_images(cache)
    (images / names[0]).unlink()
    (images / names[1]).write_bytes(b"not an image")
    predictions_path = tmp_path / "predictions.json"
    with pytest.raises(ImageError) as raised:
        evaluate_release(run, cache, images_dir=images, predictions_path=predictions_path)
    message = str(raised.value)
    assert f"2 of the {len(names)} images of split 'test'" in message
    assert names[0] in message and names[1] in message and "predictions.json" in message
    assert sorted(read_predictions(predictions_path)) == names[2:]
    with pytest.raises(ImageError) as raised:
        evaluate_release(run, cache, images_dir=tmp_path / "nowhere")
    assert f"{tmp_path / 'nowhere'} is not a folder" in str(raised.value)
    assert str((dataset / "images").resolve()) in str(raised.value)
