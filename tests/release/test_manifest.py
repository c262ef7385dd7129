"""Tests for captioning.release.manifest: reading, checking and writing `manifest.json`,
and the CLI's refusal of a bad manifest before TensorFlow loads."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT
from tests.release.helpers import ROLES, caption_exit, edit_manifest
from captioning.errors import ReleaseError
from captioning.release import load_release, read_manifest, record_scores
from captioning.release import manifest as release_manifest


def test_release_manifest_records_versions_and_hashes(run):
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["versions"]) >= {"captioning", "keras", "tensorflow"}
    assert {entry["path"] for entry in manifest["files"].values()} == set(ROLES)
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in manifest["files"].values())
    assert manifest["encoder"]["weights"] == "none"


def test_a_missing_manifest_is_reported(tmp_path):
    with pytest.raises(ReleaseError, match="no release manifest"):
        load_release(tmp_path)
    with pytest.raises(ReleaseError, match="no release manifest"):
        load_release(tmp_path / "nowhere" / "manifest.json")


def test_a_foreign_manifest_is_refused(copy_run):
    (copy_run / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ReleaseError, match="not a captioning release"):
        load_release(copy_run)
    (copy_run / "manifest.json").write_text("{ not json")
    with pytest.raises(ReleaseError, match="manifest"):
        load_release(copy_run)


@pytest.mark.parametrize("content, said", [
    (b"\x89HDF\r\n\x1a\n\xff\xfe\x00binary", "not a readable release manifest"),
    (b'["format", "captioning.release"]', "top level is a JSON list"),
])
def test_cli_refuses_a_manifest_that_is_no_json_object(copy_run, image, capsys, content, said):
    (copy_run / "manifest.json").write_bytes(content)
    code, err = caption_exit(copy_run, image, capsys)
    assert code == 2
    assert "manifest.json" in err and said in err


@pytest.mark.parametrize("edit, said", [
    (lambda m: m["files"]["encoder"].pop("path"), "files.encoder.path is missing"),
    (lambda m: m["files"].pop("tokenizer"), "files.tokenizer is missing"),
    (lambda m: m.pop("files"), "'files' is missing"),
    (lambda m: m.pop("feature_shape"), "'feature_shape' is None"),
    (lambda m: m.update(vocab_size="31"), "'vocab_size' is '31'"),
    (lambda m: m["config"].update(units=0), "units must be a positive integer"),
], ids=["encoder path", "tokenizer entry", "files", "feature_shape", "vocab_size", "config"])
def test_cli_names_what_a_manifest_lacks(copy_run, image, capsys, edit, said):
    edit_manifest(copy_run, edit)
    code, err = caption_exit(copy_run, image, capsys)
    assert code == 2
    assert "manifest.json" in err and said in err
    with pytest.raises(ReleaseError, match="manifest.json"):
        load_release(copy_run)


def test_missing_shipped_release_says_pass_release_or_install_editable(tmp_path, monkeypatch):
    monkeypatch.setattr(release_manifest, "DEFAULT_RELEASE",
                        tmp_path / "saved_models" / "manifest.json")
    with pytest.raises(ReleaseError, match="--release") as caught:
        load_release(None)
    assert "pip install -e ." in str(caught.value)


def test_record_scores_keeps_the_release_loadable(copy_run):
    scores = {"Bleu_4": 0.25, "CIDEr": 0.5}
    assert record_scores(copy_run, "test", scores) == copy_run / "manifest.json"
    record_scores(copy_run / "manifest.json", "val", {"Bleu_4": 0.125})
    _, manifest = read_manifest(copy_run)
    assert manifest["scores"] == {"test": scores, "val": {"Bleu_4": 0.125}}
    assert not list(copy_run.glob("*.tmp"))
    assert load_release(copy_run).manifest["scores"]["test"] == scores


def test_versions_name_the_backend_and_import_no_tensorflow_that_is_missing(monkeypatch):
    import importlib.util

    import keras

    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
    versions = release_manifest.versions()
    assert versions["tensorflow"] is None
    assert "tensorflow" not in sys.modules
    assert versions["keras_backend"] == keras.backend.backend()
    assert versions["keras"] == keras.__version__


def test_reading_a_manifest_imports_neither_keras_nor_tensorflow(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something else"}))
    code = (
        "import sys\n"
        "import captioning.release\n"
        "from captioning.errors import ReleaseError\n"
        "from captioning.release.manifest import read_manifest\n"
        "try:\n"
        f"    read_manifest({str(tmp_path)!r})\n"
        "except ReleaseError as error:\n"
        "    print('refused:', error)\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True).stdout
    assert "refused:" in out and "not a captioning release" in out
    assert out.strip().splitlines()[-1] == "[]"
