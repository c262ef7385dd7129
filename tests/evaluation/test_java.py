"""Tests for captioning.evaluation.java: a Java that fails is one line, never a traceback."""

import pytest

from captioning.errors import CaptioningError, MetricsError
from captioning.evaluation import coco_scores
from captioning.evaluation.java import java_error, run_java
from tests.evaluation.helpers import (
    JAVA_CRASH,
    PREDICTIONS,
    PTB_ECHO_THEN_CRASH,
    REFERENCES,
    fake_java,
    posix_only,
)


@posix_only
def test_failing_ptb_tokenizer_is_a_one_line_metrics_error(tmp_path, monkeypatch):
    fake_java(tmp_path, monkeypatch, JAVA_CRASH)
    with pytest.raises(MetricsError) as raised:
        coco_scores(PREDICTIONS, REFERENCES)
    message = str(raised.value)
    assert isinstance(raised.value, CaptioningError)
    assert "\n" not in message
    assert message.startswith("The PTB tokenizer (Java) failed with exit status 1: ")
    assert "UnsupportedClassVersionError: bad major version" in message
    assert "java -version" in message


@posix_only
def test_failing_meteor_is_a_one_line_metrics_error(tmp_path, monkeypatch):
    fake_java(tmp_path, monkeypatch, PTB_ECHO_THEN_CRASH)
    with pytest.raises(MetricsError) as raised:
        coco_scores(PREDICTIONS, REFERENCES)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("METEOR (Java) failed: ")
    assert "OutOfMemoryError: Java heap space" in message


@posix_only
def test_java_that_cannot_start_is_a_metrics_error(tmp_path):
    with pytest.raises(MetricsError, match="The PTB tokenizer could not start Java"):
        run_java("The PTB tokenizer", ["-version"], cwd=tmp_path / "no_such_folder")


@pytest.mark.parametrize(
    "output, expected",
    [
        ("", "no error output"),
        ("starting\nnothing went right\n", "nothing went right"),
        ("Exception in thread \"main\" java.lang.RuntimeException: outer\n\tat a.b(C.java:1)\n"
         "Caused by: java.io.IOException: first\nCaused by: java.io.IOException: root\n",
         "Exception in thread \"main\" java.lang.RuntimeException: outer "
         "Caused by: java.io.IOException: root"),
    ],
)
def test_java_error_keeps_the_informative_lines(output, expected):
    assert java_error(output) == expected
