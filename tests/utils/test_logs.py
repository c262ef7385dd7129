"""Tests for `captioning.utils.logs.show_logs`: the package's lines on stderr."""

import logging

from captioning.utils.logs import show_logs


def _log_some():
    logger = logging.getLogger("captioning.data.example")
    logger.debug("a debug line")
    logger.info("Resuming run after epoch 3 of 12.")
    logger.warning("3 of 5 images are missing")


def test_info_lines_plain_and_warnings_with_their_level(capsys):
    with show_logs():
        _log_some()
    assert capsys.readouterr().err.splitlines() == [
        "Resuming run after epoch 3 of 12.", "WARNING: 3 of 5 images are missing"]


def test_quiet_keeps_the_warnings_and_debug_shows_more(capsys):
    with show_logs(quiet=True):
        _log_some()
    assert capsys.readouterr().err.splitlines() == ["WARNING: 3 of 5 images are missing"]
    with show_logs(logging.DEBUG):
        _log_some()
    assert capsys.readouterr().err.splitlines()[0] == "a debug line"


def test_calling_again_replaces_and_closing_restores(capsys):
    package = logging.getLogger("captioning")
    before = (package.level, package.propagate, list(package.handlers))
    show_logs()
    display = show_logs()  # a notebook cell run twice: still one line each
    _log_some()
    assert len(capsys.readouterr().err.splitlines()) == 2
    display.close()
    assert (package.level, package.propagate, list(package.handlers)) == before
    _log_some()
    assert "Resuming" not in capsys.readouterr().err
