"""Files and figures with real Vietnamese captions: readable UTF-8, every glyph drawn."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest

from captioning.config import CaptionConfig
from captioning.evaluation import read_predictions, write_per_image, write_predictions

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def val_sample(vi_references):
    images = sorted(vi_references["val"])[:5]
    return {image: vi_references["val"][image] for image in images}


def test_predictions_json_is_readable_utf8(val_sample, tmp_path):
    predictions = {image: captions[0] for image, captions in val_sample.items()}
    path = tmp_path / "predictions.json"
    write_predictions(path, predictions)
    text = path.read_text(encoding="utf-8")
    assert "\\u" not in text
    assert all(caption in text for caption in predictions.values())
    assert read_predictions(path) == predictions


def test_per_image_csv_is_readable_utf8(val_sample, tmp_path):
    predictions = {image: captions[0] for image, captions in val_sample.items()}
    references = {image: captions[1:] for image, captions in val_sample.items()}
    path = tmp_path / "per_image.csv"
    write_per_image(path, predictions, references)
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["image"]: row["caption"] for row in rows} == predictions


def test_config_json_keeps_non_ascii_markers_readable(tmp_path):
    config = CaptionConfig(start_token="<bắt_đầu>", end_token="<kết_thúc>")
    path = tmp_path / "config.json"
    config.save(path)
    text = path.read_text(encoding="utf-8")
    assert "<bắt_đầu>" in text and "\\u" not in text
    assert CaptionConfig.load(path) == config
    assert json.loads(text)["end_token"] == "<kết_thúc>"


def _draw_without_missing_glyphs(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FigureCanvasAgg(figure).draw()
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    assert not missing, missing[:3]


def test_captions_figure_draws_every_diacritic(val_sample, vi_images):
    from captioning.plots import show_captions

    figure = show_captions([(vi_images / image, captions[0])
                            for image, captions in val_sample.items()])
    _draw_without_missing_glyphs(figure)
    titles = " ".join(ax.get_title() for ax in figure.axes).split()
    assert titles == " ".join(captions[0] for captions in val_sample.values()).split()


def test_attention_figure_draws_every_diacritic(val_sample, vi_images):
    from captioning.plots import show_attention

    image, captions = next(iter(val_sample.items()))
    words = captions[0].split()
    attention = np.random.default_rng(0).dirichlet(np.ones(49), size=len(words))
    figure = show_attention(vi_images / image, words, attention)
    _draw_without_missing_glyphs(figure)
    assert [ax.get_title() for ax in figure.axes] == words
