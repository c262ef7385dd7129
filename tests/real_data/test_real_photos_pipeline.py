"""The whole pipeline on 40 real photographs with the real ImageNet MobileNetV2 weights:
Vietnamese captions come out of caption, evaluate and the attention figure unchanged."""

from __future__ import annotations

import csv
import json
import unicodedata

import pytest

from tests.helpers import run_cli

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

TRAIN_IMAGES, VAL_IMAGES = 32, 8


@pytest.fixture(scope="module")
def subset(vi_rows, tmp_path_factory):
    """A captions CSV of the first 32 train and 8 val photographs of vi_photos."""
    keep = {}
    for split, count in (("train", TRAIN_IMAGES), ("val", VAL_IMAGES)):
        names = sorted({row["image"] for row in vi_rows if row["split"] == split})[:count]
        keep.update(dict.fromkeys(names, split))
    path = tmp_path_factory.mktemp("vi_subset") / "captions.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["image", "caption", "split"])
        writer.writeheader()
        writer.writerows(row for row in vi_rows if row["image"] in keep)
    return path


@pytest.fixture(scope="module")
def vi_run(subset, vi_images, real_weights, tmp_path_factory):
    """A grid cache of the subset with the real weights, and a 2-epoch attention run on it."""
    from captioning.cache import build_cache
    from captioning.config import CaptionConfig
    from captioning.data.captions import read_captions
    from captioning.training.train import train

    root = tmp_path_factory.mktemp("vi_run")
    cache = build_cache(read_captions(subset, format="csv"), vi_images, root / "cache",
                        encoder="mobilenet_v2", weights=str(real_weights), image_size=224,
                        features="grid", progress=False)
    config = CaptionConfig(conditioning="attention", epochs=2, units=32, embedding_dim=16,
                           attention_units=16, batch_size=32, val_images=VAL_IMAGES,
                           scst_epochs=0)
    train(cache, root / "run", config, progress=False)
    return cache, root / "run"


def test_evaluate_writes_readable_vietnamese_and_names_its_tokenizer(vi_run, tmp_path):
    cache, run = vi_run
    code, out, err = run_cli("evaluate", "--release", run, "--cache", cache, "--split", "val",
                             "--json", tmp_path / "scores.json", "--predictions",
                             tmp_path / "captions.json", "--per-image", tmp_path / "rows.csv",
                             "--no-spice")
    assert code == 0, err
    scores = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert scores["tokenizer"] == "python" and scores["n_images"] == VAL_IMAGES
    for name in ("captions.json", "rows.csv"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert "\\u" not in text
        assert any(not char.isascii() for char in text)
        assert text == unicodedata.normalize("NFC", text)


def test_caption_json_lines_are_readable_vietnamese(vi_run, vi_images, subset):
    _, run = vi_run
    with subset.open(encoding="utf-8") as file:
        photo = next(row["image"] for row in csv.DictReader(file) if row["split"] == "val")
    code, out, err = run_cli("caption", vi_images / photo, "--release", run, "--json")
    assert code == 0, err
    assert "\\u" not in out
    record = json.loads(out.splitlines()[0])
    assert record["caption"].split()
    assert any(not char.isascii() for char in record["caption"])


def test_attention_map_of_a_real_photo(vi_run, vi_images, subset):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from captioning.inference.captioner import Captioner
    from captioning.plots import show_attention

    _, run = vi_run
    with subset.open(encoding="utf-8") as file:
        photo = next(row["image"] for row in csv.DictReader(file) if row["split"] == "val")
    result = Captioner.load(run).caption([vi_images / photo])[0]
    assert result.error is None and result.attention.shape == (len(result.words), 49)
    figure = show_attention(vi_images / photo, result.words, result.attention)
    FigureCanvasAgg(figure).draw()
    assert [ax.get_title() for ax in figure.axes] == result.words
