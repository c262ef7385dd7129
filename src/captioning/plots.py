"""Figures for notebooks and reports: training curves, captioned images, attention maps.

Every function builds a `matplotlib.figure.Figure` with the object API and returns it; none
touches `pyplot`'s global state or calls `show`, so they work the same headless (a server,
CI, a test) as in a notebook. In Jupyter or Colab a returned figure is displayed when it is
the cell's last expression (with the inline backend, `%matplotlib inline`); anywhere it can
be saved with `figure.savefig("name.png")`, which renders through Agg and needs no display.

Captions and words in any script are drawn with their accents and tone marks: matplotlib's
default font (DejaVu Sans) has the glyphs of Latin (Vietnamese included), Greek and Cyrillic;
for characters it lacks (CJK, Thai, ...), installed fonts that have them are added as
fallbacks, and a warning names the characters that no installed font can draw.

Example:
>>> from captioning.plots import plot_history, show_captions          # doctest: +SKIP
>>> plot_history("runs/demo/history.csv").savefig("curves.png")      # doctest: +SKIP
>>> show_captions([("examples/a.jpg", "a red circle")])             # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import math
import os
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from captioning.errors import CaptioningError, ConfigError

logger = logging.getLogger(__name__)
__all__ = ["plot_history", "show_captions", "show_attention"]

_PANEL_INCHES = 3.2
_TITLE_WIDTH = 32  # characters per title line before wrapping
_ERROR_COLOUR = "tab:red"
_PLACEHOLDER = np.full((8, 8, 3), 0.85)  # light grey, shown where an image cannot be read
# Fonts whose glyphs are placeholders (boxes), never a fallback.
_PLACEHOLDER_FONTS = ("Last Resort",)


def plot_history(history) -> Figure:
    """Plots the training curves of a run, one panel per measure.

    Panels: loss and val_loss, accuracy and val_accuracy, the validation scores (val_bleu_4
    and val_cider), all per epoch. The best epoch (highest `val_cider`, the default monitor
    that picks the epoch a run exports; highest `val_bleu_4` for a history without CIDEr-D;
    lowest `val_loss` when no score was measured) is marked by a dashed line in every panel
    and a dot on its score.
    Columns the history lacks, or that are empty, are left out of their panel.

    Args:
        history: the run's `history.csv` (its path, or the run folder holding it), or a
            DataFrame with its columns (`epoch, loss, accuracy, val_loss, val_accuracy,
            val_bleu_4, ...`), such as `TrainResult.history`.

    Returns:
        A `Figure` with three axes (loss, accuracy, validation scores).

    Raises:
        CaptioningError: the file is missing or unreadable, or the history has no epoch.
    """
    frame = _history_frame(history)
    epochs = frame["epoch"].to_numpy(dtype=float)
    best = _best_epoch(frame)

    figure = Figure(figsize=(3 * _PANEL_INCHES * 1.25, _PANEL_INCHES), layout="constrained")
    panels = (
        ("Loss", (("loss", "train"), ("val_loss", "validation"))),
        ("Accuracy", (("accuracy", "train"), ("val_accuracy", "validation"))),
        ("Validation scores", (("val_bleu_4", "BLEU-4"), ("val_cider", "CIDEr-D"))),
    )
    axes = figure.subplots(1, len(panels))
    for ax, (title, series) in zip(axes, panels):
        for column, label in series:
            values = _column(frame, column)
            if values is not None:
                ax.plot(epochs, values, marker="o", markersize=3, label=label)
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch {best}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if len(epochs) and epochs.max() - epochs.min() < 12:
            ax.set_xticks(np.unique(epochs))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    scores = [values for values in (_column(frame, "val_bleu_4"), _column(frame, "val_cider"))
              if values is not None]
    if scores:  # scores start at 0; near-zero early scores stay near the floor
        top = max(float(np.nanmax(values)) for values in scores)
        axes[2].set_ylim(0.0, max(0.1, top * 1.2))
    picked = _column(frame, _best_column(frame)) if best is not None else None
    if picked is not None and _best_column(frame) != "val_loss":
        at = np.nonzero(epochs == best)[0][0]
        axes[2].plot([best], [picked[at]], marker="o", markersize=8, color="tab:red",
                     linestyle="none")
        axes[2].annotate(f"{picked[at]:.3f}", (best, picked[at]), textcoords="offset points",
                         xytext=(5, 5), fontsize="small")
    figure.suptitle(f"Training history (best epoch {best})" if best is not None
                    else "Training history")
    return figure


def show_captions(results, ncols: int = 4) -> Figure:
    """Shows images in a grid with their captions as titles.

    Args:
        results: a list of `captioning.captioner.Caption` (what `Captioner.caption`
            returns) or of `(image, caption)` pairs, an image being a path or an RGB array.
            A result that failed (`Caption.error`), or an image that cannot be read, gets
            its error as a red title over a grey placeholder.
        ncols: images per row at most.

    Returns:
        A `Figure` with one axes per result, in order.

    Raises:
        ConfigError: `results` is empty or `ncols` is not a positive integer.
    """
    items = [_caption_item(result) for result in results]
    if not items:
        raise ConfigError("show_captions() got no results to show")
    if not isinstance(ncols, int) or ncols < 1:
        raise ConfigError(f"ncols must be a positive integer, got {ncols!r}")
    cols = min(ncols, len(items))
    rows = math.ceil(len(items) / cols)
    font = _font_for([str(caption) for _, caption, _ in items])
    figure = Figure(figsize=(cols * _PANEL_INCHES, rows * (_PANEL_INCHES + 0.4)),
                    layout="constrained")
    for index, (image, caption, error) in enumerate(items):
        ax = figure.add_subplot(rows, cols, index + 1)
        pixels = None
        if image is not None:
            try:
                pixels = _pixels(image)
            except CaptioningError as problem:
                error = error or str(problem)
        ax.imshow(pixels if pixels is not None else _PLACEHOLDER)
        ax.set_axis_off()
        if error is not None:
            ax.set_title(_wrap(f"error: {' '.join(str(error).split())}"), fontsize=9,
                         color=_ERROR_COLOUR)
        else:
            ax.set_title(_wrap(caption), fontsize=10, **font)
    return figure


def show_attention(image_path_or_array, words, attention, grid_shape=None, *,
                   ncols: int = 4, alpha: float = 0.6, cmap: str = "jet") -> Figure:
    """Shows where an attention model looked for each word of its caption.

    Each word gets a panel: the image, and over it the word's attention weights over the
    encoder's regions, reshaped to the region grid and stretched over the whole picture
    (bilinear upsampling through `imshow`'s `extent`).

    Args:
        image_path_or_array: the captioned image: a path, or an RGB array `(H, W, 3)`
            (uint8, or floats in 0..255 or 0..1).
        words: the caption's words (a list, or the caption as one string), such as
            `Caption.words`.
        attention: `(words, regions)` weights, such as `Caption.attention`. Extra rows
            (the end token's) are ignored.
        grid_shape: `(rows, cols)` of the region grid; by default the square grid of the
            region count (64 -> 8x8).
        ncols: panels per row at most.
        alpha: opacity of the attention overlay.
        cmap: matplotlib colour map of the overlay.

    Returns:
        A `Figure` with one axes per word, titled with the word.

    Raises:
        ConfigError: there is no attention (a model without attention), the shapes do not
            fit together, or the regions are not a square grid and no `grid_shape` is given.
        ImageError: the image file cannot be read.
    """
    if isinstance(words, str):
        words = words.split()
    words = [str(word) for word in words]
    if attention is None:
        raise ConfigError("no attention weights: only models trained with conditioning "
                          "'attention' (on grid features) have attention maps")
    weights = np.asarray(attention, dtype=np.float32)
    if weights.ndim != 2:
        raise ConfigError(f"attention must be (words, regions), got shape {weights.shape}")
    if not words:
        raise ConfigError("show_attention() got no words to show")
    if weights.shape[0] < len(words):
        raise ConfigError(f"attention has {weights.shape[0]} rows but there are {len(words)} "
                          "words; pass the words and attention of the same caption")
    if not isinstance(ncols, int) or ncols < 1:
        raise ConfigError(f"ncols must be a positive integer, got {ncols!r}")
    grid = _grid_shape(weights.shape[1], grid_shape)
    pixels = _pixels(image_path_or_array)
    height, width = pixels.shape[:2]
    extent = (0, width, height, 0)

    cols = min(ncols, len(words))
    rows = math.ceil(len(words) / cols)
    font = _font_for(words)
    figure = Figure(figsize=(cols * _PANEL_INCHES * 0.8, rows * _PANEL_INCHES * 0.85),
                    layout="constrained")
    for index, word in enumerate(words):
        ax = figure.add_subplot(rows, cols, index + 1)
        ax.imshow(pixels, extent=extent)
        ax.imshow(weights[index].reshape(grid), cmap=cmap, alpha=alpha, extent=extent,
                  interpolation="bilinear")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_title(word, fontsize=11, **font)
        ax.set_axis_off()
    figure.suptitle(_wrap(" ".join(words), 80), **font)
    return figure


def _history_frame(history):
    import pandas as pd

    if isinstance(history, pd.DataFrame):
        frame = history
    elif hasattr(history, "history") and isinstance(history.history, pd.DataFrame):
        frame = history.history  # a TrainResult
    else:
        try:
            path = Path(os.fspath(history))
        except TypeError:
            raise ConfigError("plot_history() takes a history.csv path, a run folder or a "
                              f"DataFrame, got {type(history).__name__}") from None
        if path.is_dir():
            path = path / "history.csv"
        if not path.is_file():
            raise CaptioningError(f"{path}: no such history file; a run folder gets "
                                  "history.csv after its first epoch")
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as error:
            raise CaptioningError(f"{path}: cannot read the history ({error})") from None
    if "epoch" not in frame.columns:
        frame = frame.assign(epoch=np.arange(1, len(frame) + 1))
    frame = frame.dropna(subset=["epoch"]).sort_values("epoch")
    if frame.empty:
        raise CaptioningError("the history has no finished epoch to plot")
    return frame


def _column(frame, name):
    if name not in frame.columns:
        return None
    values = frame[name].to_numpy(dtype=float)
    return None if np.all(np.isnan(values)) else values


def _best_column(frame):
    """The column that picked the best epoch: val_cider, else val_bleu_4, else val_loss."""
    for name in ("val_cider", "val_bleu_4", "val_loss"):
        if _column(frame, name) is not None:
            return name
    return None


def _best_epoch(frame):
    name = _best_column(frame)
    if name is None:
        return None
    pick = np.nanargmin if name == "val_loss" else np.nanargmax
    return int(frame["epoch"].iloc[int(pick(_column(frame, name)))])


def _caption_item(result):
    """(image, caption, error) of a Caption or an (image, caption) pair."""
    if hasattr(result, "caption") and hasattr(result, "image"):
        image = result.image
        if isinstance(image, str) and image == "<array>":
            image = None
        return image, result.caption, getattr(result, "error", None)
    try:
        image, caption = result
    except (TypeError, ValueError):
        raise ConfigError("show_captions() takes Caption results or (image, caption) pairs, "
                          f"got {result!r}") from None
    return image, caption, None


def _pixels(image) -> np.ndarray:
    """An image for imshow: uint8 RGB, or float RGB in 0..1."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ConfigError(f"an image array must be (H, W, 3) RGB, got shape {image.shape}")
        array = array[..., :3]
        if array.dtype == np.uint8:
            return array
        array = array.astype(np.float32)
        if array.size and float(np.nanmax(array)) > 1.0:
            array = array / 255.0
        return np.clip(array, 0.0, 1.0)
    from captioning.data.images import load_image

    return load_image(image)


def _grid_shape(regions: int, grid_shape):
    if grid_shape is not None:
        try:
            rows, cols = (int(n) for n in grid_shape)
        except (TypeError, ValueError):
            raise ConfigError(f"grid_shape must be (rows, cols), got {grid_shape!r}") from None
        if rows * cols != regions:
            raise ConfigError(f"grid_shape {rows}x{cols} holds {rows * cols} regions but the "
                              f"attention has {regions}")
        return rows, cols
    side = math.isqrt(regions)
    if side * side != regions:
        raise ConfigError(f"{regions} attention regions are not a square grid; pass "
                          "grid_shape=(rows, cols)")
    return side, side


def _wrap(text, width: int = _TITLE_WIDTH) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return "\n".join(textwrap.wrap(text, width)) or " "


def _font_for(texts) -> dict:
    """Text keywords that draw every character of `texts`: `{}` when matplotlib's default
    font has them all, else `fontfamily` with that font first and then installed fonts that
    have the missing characters (matplotlib falls back glyph by glyph). Characters no
    installed font has are named in a warning; they are drawn as boxes."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties())
    missing = {char for text in texts for char in str(text)
               if not char.isspace() and ord(char) not in _charmap(default)}
    if not missing:
        return {}
    families = [_family(default)]
    for entry in font_manager.fontManager.ttflist:
        if entry.name in families or entry.name.startswith(_PLACEHOLDER_FONTS):
            continue
        found = {char for char in missing if ord(char) in _charmap(entry.fname)}
        if found:
            families.append(entry.name)
            missing -= found
        if not missing:
            break
    if missing:
        logger.warning("No installed font has the glyphs of %s; they are drawn as boxes. "
                       "Install a font that has them (e.g. fonts-noto-cjk for Chinese and "
                       "Japanese) and clear matplotlib's font cache.",
                       " ".join(sorted(missing)[:20]))
    return {"fontfamily": families}


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset:
    """The code points a font file has glyphs for (empty when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.lru_cache(maxsize=None)
def _family(path: str) -> str:
    from matplotlib.ft2font import FT2Font

    return FT2Font(path).family_name
