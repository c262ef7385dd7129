"""Tests for captioning.evaluation.spice: SPICE runs when it can, else one warning says why."""

import logging
import os
import shutil

import pytest

from captioning.evaluation import coco_scores, spice
from tests.evaluation.helpers import PREDICTIONS, REFERENCES, needs_java


@needs_java
def test_perfect_predictions_without_spice_jars(tmp_path, monkeypatch, caplog, capsys):
    from pycocoevalcap.spice import get_stanford_models

    def no_download(*args, **kwargs):
        raise AssertionError("SPICE must not download CoreNLP")

    monkeypatch.setattr(get_stanford_models, "urlretrieve", no_download)
    monkeypatch.setattr(spice, "_SPICE_LIB_DIR", str(tmp_path))
    perfect = {image: REFERENCES[image][1] for image in PREDICTIONS}
    with caplog.at_level(logging.WARNING):
        scores = coco_scores(perfect, REFERENCES, spice=True)

    assert scores["Bleu_4"] == pytest.approx(1.0)
    assert scores["nltk_bleu_4"] == pytest.approx(1.0)
    assert scores["CIDEr"] > 1
    assert "SPICE" not in scores
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == spice.__name__
    assert "SPICE skipped" in warnings[0].getMessage()
    assert "get_stanford_models" in warnings[0].getMessage()
    assert capsys.readouterr().out == ""


@needs_java
def test_failing_spice_is_a_warning(tmp_path, monkeypatch, caplog):
    real_lib = spice._SPICE_LIB_DIR
    if all(os.path.isfile(os.path.join(real_lib, jar)) for jar in spice._CORENLP_JARS):
        pytest.skip("Stanford CoreNLP is installed, so SPICE would really run")
    lib = tmp_path / "lib"
    lib.mkdir()
    for jar in spice._CORENLP_JARS:
        (lib / jar).write_bytes(b"")
    monkeypatch.setattr(spice, "_SPICE_LIB_DIR", str(lib))
    monkeypatch.setattr(spice, "_SPICE_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger=spice.__name__):
        result = spice.spice_score(
            {"a.jpg": ["a red circle", "a big red circle"]}, {"a.jpg": ["a red circle"]}
        )
    assert result is None
    assert len(caplog.records) == 1
    assert "SPICE skipped: it failed" in caplog.records[0].getMessage()
    assert "\n" not in caplog.records[0].getMessage()


def test_spice_unavailable_says_why_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(spice, "_SPICE_LIB_DIR", str(tmp_path))
    reason = spice.spice_unavailable()
    assert str(tmp_path) in reason and "get_stanford_models" in reason
    assert "--no-spice" in reason
    for jar in spice._CORENLP_JARS:
        (tmp_path / jar).write_bytes(b"")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "java" in spice.spice_unavailable()
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    assert spice.spice_unavailable() is None
