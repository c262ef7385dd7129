"""Helpers shared by the evaluation tests: the scored captions, a stand-in `java`, CSV rows."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from tests.text.helpers import synthetic_captions

PREDICTIONS, REFERENCES = synthetic_captions()

needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="the COCO metrics need Java"
)
posix_only = pytest.mark.skipif(os.name != "posix", reason="the stand-in java is a shell script")

JAVA_CRASH = """\
echo 'Exception in thread "main" java.lang.UnsupportedClassVersionError: bad major version' >&2
echo '	at java.base/java.lang.ClassLoader.defineClass1(Native Method)' >&2
exit 1
"""
"""A `java` that fails the way an unsupported Java version does."""

PTB_ECHO_THEN_CRASH = """\
case "$*" in
  *PTBTokenizer*) for last; do :; done; cat "$last"; echo ;;
  *) echo 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space' >&2
     echo '	at edu.cmu.meteor.Meteor.main(Meteor.java:1)' >&2
     exit 1 ;;
esac
"""
"""A `java` whose PTB tokenizer echoes the captions and whose METEOR fails."""


def fake_java(tmp_path, monkeypatch, script):
    """Puts a `java` shell script first on PATH (and only it: no real Java is found)."""
    folder = tmp_path / "fake_bin"
    folder.mkdir()
    java = folder / "java"
    java.write_text("#!/bin/sh\n" + script)
    java.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return java


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))
