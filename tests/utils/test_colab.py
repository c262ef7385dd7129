"""Tests for `captioning.utils.colab`: the setup cell's git pull and pip install, with a real
git and a stand-in `python -m pip` that records what it was asked."""

import json
import subprocess
import sys
import textwrap

import pytest

from captioning.errors import CaptioningError
from captioning.utils import colab

REQUIREMENTS = "# pins\ntensorflow>=2.16,<2.22\nkeras>=3.14.1\nnumpy>=1.26\n"


@pytest.fixture
def repo(tmp_path):
    folder = tmp_path / "captioning"
    folder.mkdir()
    (folder / "requirements.txt").write_text(REQUIREMENTS)
    return folder


@pytest.fixture
def fake_python(tmp_path):
    """An interpreter stand-in: records `-m pip ...` with the files it names, and fails
    with pip's own kind of message when `fail` names the command."""
    log, script = tmp_path / "pip.jsonl", tmp_path / "python"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        args = sys.argv[1:]
        files = {{a: open(a).read() for a in args if a.endswith(".txt")}}
        with open({str(log)!r}, "a") as out:
            out.write(json.dumps({{"args": args, "files": files}}) + "\\n")
        if os.path.exists({str(tmp_path / "fail")!r}) and "-r" in args:
            print("ERROR: Could not find a version that satisfies the requirement keras>=9",
                  file=sys.stderr)
            sys.exit(1)
        """))
    script.chmod(0o755)
    return script, log


def _calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_runtimes_tensorflow_is_kept(repo, fake_python, monkeypatch):
    python, log = fake_python
    monkeypatch.setattr(colab, "_installed",
                        lambda name: "2.19.0" if name == "tensorflow" else None)
    colab.install_requirements(repo, python=str(python))
    first, second = _calls(log)
    assert first["args"][:4] == ["-m", "pip", "install", "-q"]
    requirements, constraints = first["files"].values()
    assert "tensorflow" not in requirements and "keras>=3.14.1" in requirements
    assert constraints == "tensorflow==2.19.0\n"
    assert second["args"] == ["-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)]


def test_a_tensorflow_outside_the_pins_is_kept_with_a_warning(repo, fake_python, monkeypatch,
                                                              caplog):
    python, log = fake_python
    monkeypatch.setattr(colab, "_installed",
                        lambda name: "2.23.1" if name == "tensorflow" else None)
    colab.install_requirements(repo, python=str(python))
    assert "TensorFlow 2.23.1 is outside the project's pin (tensorflow>=2.16,<2.22); it is " \
           "kept" in caplog.text
    assert list(_calls(log)[0]["files"].values())[1] == "tensorflow==2.23.1\n"


def test_without_tensorflow_everything_is_installed(repo, fake_python, monkeypatch):
    python, log = fake_python
    monkeypatch.setattr(colab, "_installed", lambda name: None)
    colab.install_requirements(repo, python=str(python))
    first = _calls(log)[0]
    assert "-c" not in first["args"]
    assert "tensorflow>=2.16,<2.22" in list(first["files"].values())[0]


def test_pips_errors_are_shown(repo, fake_python, tmp_path, monkeypatch):
    python, _ = fake_python
    (tmp_path / "fail").touch()
    monkeypatch.setattr(colab, "_installed", lambda name: None)
    with pytest.raises(CaptioningError) as caught:
        colab.install_requirements(repo, python=str(python))
    assert str(caught.value).startswith("pip install -q failed (exit 1):\n")
    assert "ERROR: Could not find a version that satisfies the requirement keras>=9" in str(
        caught.value)


def test_a_package_changed_under_the_live_session_asks_for_a_restart(repo, fake_python,
                                                                     monkeypatch):
    python, _ = fake_python
    monkeypatch.setattr(colab, "_installed", lambda name: None)
    versions = iter([{"keras": "3.10.0", "numpy": "2.0.2"},
                     {"keras": "3.15.1", "numpy": "2.0.2"}])
    monkeypatch.setattr(colab, "_loaded_versions", lambda: next(versions))
    with pytest.raises(CaptioningError, match=r"pip changed keras 3\.10\.0 -> 3\.15\.1, which "
                       r"this session has imported already\. Restart the session"):
        colab.install_requirements(repo, python=str(python))


def test_the_loaded_versions_name_this_sessions_packages():
    import numpy

    assert colab._loaded_versions()["numpy"] == numpy.__version__


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_an_existing_clone_is_pulled(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    _git("init", "-q", "-b", "main", cwd=origin)
    (origin / "a.txt").write_text("one")
    _git("add", ".", cwd=origin)
    _git("commit", "-q", "-m", "one", cwd=origin)
    _git("clone", "-q", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    (origin / "a.txt").write_text("two")
    _git("commit", "-q", "-am", "two", cwd=origin)
    colab.update_clone(tmp_path / "clone")
    assert (tmp_path / "clone" / "a.txt").read_text() == "two"


def test_a_failed_pull_says_how_to_start_over(tmp_path):
    with pytest.raises(CaptioningError) as caught:
        colab.update_clone(tmp_path)  # not a clone
    message = str(caught.value)
    assert message.startswith(f"git pull in {tmp_path} failed:\n")
    assert "not a git repository" in message
    assert message.endswith(f"!rm -rf {tmp_path}) and run this cell again to clone it afresh.")
