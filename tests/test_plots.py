"""Tests of captioning.plots: the figures build headless and show what they should."""

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from captioning.inference.captioner import Caption
from captioning.errors import CaptioningError, ConfigError
from captioning.plots import plot_history, show_attention, show_captions


def _history():
    return pd.DataFrame({
        "epoch": [1, 2, 3, 4],
        "loss": [3.0, 2.0, 1.5, 1.2],
        "accuracy": [0.1, 0.3, 0.5, 0.6],
        "val_loss": [3.1, 2.2, 1.9, 2.0],
        "val_accuracy": [0.1, 0.25, 0.45, 0.5],
        "val_bleu_4": [0.05, 0.2, 0.4, 0.3],
        "learning_rate": [1e-3, 8e-4, 5e-4, 2e-4],
    })


def _titles(figure):
    return [" ".join(ax.get_title().split()) for ax in figure.axes]


def _renders(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")


@pytest.fixture
def image_file(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[10:30, 20:40] = (220, 40, 40)
    path = tmp_path / "red.png"
    Image.fromarray(pixels).save(path)
    return path


def test_plot_history_three_panels_marks_best_epoch(tmp_path):
    figure = plot_history(_history())
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3
    assert _titles(figure) == ["Loss", "Accuracy", "Validation scores"]
    loss_lines = {line.get_label() for line in figure.axes[0].get_lines()}
    assert {"train", "validation", "best epoch 3"} <= loss_lines
    best_lines = [line for line in figure.axes[2].get_lines()
                  if line.get_label() == "best epoch 3"]
    assert best_lines and list(best_lines[0].get_xdata()) == [3, 3]
    assert "best epoch 3" in figure.get_suptitle()
    assert figure.axes[2].get_ylim()[0] == 0.0
    _renders(figure)


def test_plot_history_reads_csv_and_run_folder(tmp_path):
    _history().to_csv(tmp_path / "history.csv", index=False)
    for source in (tmp_path / "history.csv", str(tmp_path / "history.csv"), tmp_path):
        figure = plot_history(source)
        assert len(figure.axes) == 3
        assert "best epoch 3" in figure.get_suptitle()


def test_plot_history_without_bleu_uses_val_loss():
    frame = _history().assign(val_bleu_4=np.nan)
    figure = plot_history(frame)
    assert "best epoch 3" in figure.get_suptitle()  # lowest val_loss
    assert not [line for line in figure.axes[2].get_lines() if line.get_label() == "BLEU-4"]
    _renders(figure)


def test_plot_history_best_epoch_by_val_cider_when_measured():
    """The default monitor is val CIDEr-D: the marked epoch is the one the run exported."""
    frame = _history().assign(val_cider=[0.1, 0.9, 0.7, 0.8])
    figure = plot_history(frame)
    assert "best epoch 2" in figure.get_suptitle()  # val_bleu_4 alone would say 3
    labels = {line.get_label() for line in figure.axes[2].get_lines()}
    assert {"BLEU-4", "CIDEr-D", "best epoch 2"} <= labels
    assert figure.axes[2].get_ylim()[1] >= 0.9
    _renders(figure)


def test_plot_history_errors(tmp_path):
    with pytest.raises(CaptioningError, match="history"):
        plot_history(tmp_path / "missing.csv")
    with pytest.raises(CaptioningError, match="no finished epoch"):
        plot_history(_history().iloc[:0])


def test_show_captions_grid_and_titles(image_file):
    array = np.full((20, 20, 3), 128, np.uint8)
    results = [(image_file, "a large red square on a dark background with some words"),
               (str(image_file), "a red square"),
               (array, "an array"),
               Caption(image=str(image_file), caption="from a caption", words=["from"]),
               Caption(image="<array>", caption="no pixels")]
    figure = show_captions(results, ncols=2)
    assert len(figure.axes) == 5
    assert _titles(figure) == ["a large red square on a dark background with some words",
                               "a red square", "an array", "from a caption", "no pixels"]
    assert figure.axes[0].get_subplotspec().get_gridspec().get_geometry() == (3, 2)
    image = figure.axes[0].get_images()[0].get_array()
    assert image.shape == (40, 60, 3)
    _renders(figure)


def test_show_captions_errors_in_red(image_file, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    results = [Caption(image=str(tmp_path / "x.jpg"), error="x.jpg: cannot read it"),
               (broken, "never shown"),
               (image_file, "fine")]
    figure = show_captions(results)
    assert len(figure.axes) == 3
    titles = [ax.title for ax in figure.axes]
    assert "cannot read it" in titles[0].get_text()
    assert "broken.jpg" in " ".join(titles[1].get_text().split())
    assert "never shown" not in titles[1].get_text()
    for title in titles[:2]:
        assert title.get_color() == "tab:red"
    assert titles[2].get_text() == "fine" and titles[2].get_color() != "tab:red"
    _renders(figure)


def test_show_captions_rejects_nothing():
    with pytest.raises(ConfigError):
        show_captions([])
    with pytest.raises(ConfigError):
        show_captions([("a.jpg", "x")], ncols=0)


def test_show_attention_one_panel_per_word(image_file):
    words = ["a", "red", "square"]
    attention = np.random.default_rng(0).random((4, 64)).astype(np.float32)  # + end token
    figure = show_attention(image_file, words, attention)
    assert len(figure.axes) == 3
    assert _titles(figure) == words
    assert figure.get_suptitle() == "a red square"
    for row, ax in enumerate(figure.axes):
        picture, overlay = ax.get_images()
        assert overlay.get_array().shape == (8, 8)
        np.testing.assert_allclose(overlay.get_array(), attention[row].reshape(8, 8))
        assert overlay.get_alpha() == pytest.approx(0.6)
        assert tuple(overlay.get_extent()) == (0, 60, 40, 0)
        assert tuple(picture.get_extent()) == (0, 60, 40, 0)
    _renders(figure)


def test_show_attention_array_grid_shape_and_string_words():
    pixels = np.random.default_rng(1).random((30, 30, 3)).astype(np.float32) * 255
    attention = np.ones((2, 6)) / 6
    figure = show_attention(pixels, "two words", attention, grid_shape=(2, 3), ncols=1)
    assert len(figure.axes) == 2
    assert figure.axes[0].get_images()[1].get_array().shape == (2, 3)
    assert figure.axes[1].get_subplotspec().get_gridspec().get_geometry() == (2, 1)


def test_show_attention_errors(image_file):
    with pytest.raises(ConfigError, match="square"):
        show_attention(image_file, ["a"], np.ones((1, 6)))
    with pytest.raises(ConfigError, match="grid_shape"):
        show_attention(image_file, ["a"], np.ones((1, 6)), grid_shape=(2, 2))
    with pytest.raises(ConfigError, match="rows"):
        show_attention(image_file, ["a", "b"], np.ones((1, 4)))
    with pytest.raises(ConfigError, match="attention"):
        show_attention(image_file, ["a"], None)


def test_vietnamese_titles_draw_without_missing_glyphs(recwarn):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    words = "một người đàn ông đang chơi quần vợt".split()
    figure = show_attention(np.zeros((32, 32, 3)), words, np.full((len(words), 4), 0.25))
    FigureCanvasAgg(figure).draw()
    assert [ax.get_title() for ax in figure.axes] == words
    assert not [w for w in recwarn if "missing from" in str(w.message)]


def test_glyphs_no_font_has_are_named_in_a_warning(caplog):
    from captioning.plots import _font_for

    assert _font_for(["một người"]) == {}
    with caplog.at_level("WARNING", logger="captioning.plots"):
        font = _font_for(["\U0001d11e\U000e0001"])  # a musical symbol and a tag character
    assert font["fontfamily"][0] == "DejaVu Sans"
    assert "No installed font has the glyphs" in caplog.text
