"""Tests for `captioning.data.shapes`: the captions of the drawn shapes."""

import numpy as np
import pytest

from captioning.data import shapes, synthetic
from captioning.errors import ConfigError


def test_describe():
    shape = shapes.DrawnShape("red", "circle", "large", (0.3, 0.6), 0.5)
    assert shapes.describe([shape]) == [
        "a large red circle",
        "a big red circle on a dark background",
        "there is one large red circle",
        "a picture of a red circle that is large",
        "the image shows a big red circle",
    ]
    left = shapes.DrawnShape("blue", "square", "medium", (0.2, 0.8), 0.2)
    right = shapes.DrawnShape("green", "star", "medium", (0.8, 0.1), 0.2)
    captions = shapes.describe([right, left])
    assert captions[0] == "a blue square to the left of a green star"
    assert captions[2] == "a green star is right of a blue square"
    with pytest.raises(ConfigError, match="distinct horizontal"):
        shapes.describe([left, left])
    with pytest.raises(ConfigError, match="'pink'"):
        pink = shapes.DrawnShape("pink", "circle", "large", (0.5, 0.5), 0.5)
        shapes.describe([pink])


def test_vocabulary_covers_every_caption_of_each_configuration():
    rng = np.random.default_rng(0)
    for shapes_per_image in (1, 2, 3):
        words = set(shapes.vocabulary(shapes_per_image))
        for _ in range(50):
            for caption in shapes.describe(shapes.random_layout(rng, shapes_per_image)):
                assert set(caption.split()) <= words
    with pytest.raises(ConfigError, match="shapes_per_image .* got 4$"):
        shapes.vocabulary(4)


def test_synthetic_keeps_the_names_it_had():
    # `captioning.data.synthetic` held the shapes' names before they moved to `shapes`.
    for name in ("COLOURS", "SHAPES", "SIZES", "CAPTIONS_PER_IMAGE", "DrawnShape", "describe",
                 "vocabulary", "METADATA_FILE", "FORMATS", "SPLITS", "make_dataset"):
        assert hasattr(synthetic, name), name
