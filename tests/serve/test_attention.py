"""An attention model's answer: one attention row per word, over the encoder's grid."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.serve.running import post_image

pytestmark = pytest.mark.slow


def test_each_word_has_its_attention_over_the_grid(attention_server, attention_release,
                                                   dataset):
    import json

    manifest = json.loads((attention_release / "manifest.json").read_text())
    regions = manifest["feature_shape"][0]
    health = requests.get(attention_server.url + "health", timeout=30).json()
    assert health["model"]["attention"] is True
    assert health["model"]["conditioning"] == "attention"

    image = sorted((dataset / "images").glob("*.jpg"))[0]
    for params in ({}, {"beam": 3, "top": 2}):
        result = post_image(attention_server.url, image.read_bytes(), params=params).json()
        attention = np.asarray(result["attention"])
        assert attention.shape == (len(result["words"]), regions)
        np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-3)
        rows, cols = result["attention_grid"]
        assert rows * cols == regions
