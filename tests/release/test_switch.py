"""Replacing a release atomically (issue 14, item 5): a kill at any moment of an export leaves
a release that loads, old or new, never a mix; re-exporting an identical release rewrites no
file. The exports run in a child process capped at `CAP_WITH_TENSORFLOW`."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import tiny_config
from tests.release.helpers import CAP_WITH_TENSORFLOW, run_capped
from captioning.errors import ReleaseError
from captioning.release import load_release
from captioning.release.switch import finish_switch, journal_path, stage, switch

RELEASE_FILES = ("Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle", "manifest.json")

# What both child scripts share: a kill (an exception no code catches) at the k-th
# os.replace of `action()`, and what a user then finds in the release folder.
KILL_PRELUDE = """
import hashlib, json, os, shutil, sys
from pathlib import Path

class Killed(BaseException):
    pass

digest = lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest()
replace = os.replace

def killed_at(k, action, calls):
    \"\"\"Runs action() with os.replace raising Killed at its k-th call; True if killed.\"\"\"
    def counting(*args, **kwargs):
        calls.append(args)
        if len(calls) == k:
            raise Killed()
        return replace(*args, **kwargs)
    os.replace = counting
    try:
        action()
        return False
    except Killed:
        return True
    finally:
        os.replace = replace

def loads(folder):
    \"\"\"(loaded, message) of load_release(folder).\"\"\"
    from captioning.release import load_release
    try:
        load_release(folder)
        return True, ""
    except Exception as error:
        return False, f"{type(error).__name__}: {error}"[:300]
"""

# Exports a decoder with other weights into copies of a run, "killed" (an exception no code
# catches) at the K-th os.replace of the export, for K = 1, 2, ...; then loads each copy.
KILL_CHILD = KILL_PRELUDE + """
from captioning.release import export_release, load_release
from captioning.release.model_bytes import model_file_bytes

run, root = Path(sys.argv[1]), Path(sys.argv[2])
release = load_release(run)
decoder = release.decoder
decoder.set_weights([w + 0.5 for w in decoder.get_weights()])
old, new = digest(run / "Decoder.hdf5"), hashlib.sha256(model_file_bytes(decoder)).hexdigest()
for k in range(1, 12):
    folder = root / f"kill{k}"
    shutil.copytree(run, folder)
    def export():
        export_release(folder, encoder_file=folder / "Encoder.hdf5", step_model=decoder,
                       tokenizer=release.tokenizer, config=release.config,
                       cache_settings=release.manifest["encoder"],
                       feature_shape=release.manifest["feature_shape"])
    killed = killed_at(k, export, [])
    loaded, message = loads(folder)
    now = digest(folder / "Decoder.hdf5")
    state = "old" if now == old else "new" if now == new else "other"
    def leftovers():
        return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")
                      or p.name.endswith(".switch"))
    after_kill = leftovers()
    export()
    print(json.dumps({"k": k, "killed": killed, "loaded": loaded, "decoder": state,
                      "message": message, "leftovers": after_kill,
                      "after_export": leftovers(), "then": digest(folder / "Decoder.hdf5") == new}),
          flush=True)
    if not killed:
        break
"""

# The same for `export` (`copy_release` into the repository layout): a repository holding
# release A gets release B (other decoder weights), killed at the K-th os.replace.
COPY_KILL_CHILD = KILL_PRELUDE + """
from captioning.release import copy_release, export_release, load_release

run, root = Path(sys.argv[1]), Path(sys.argv[2])
other = root / "other"
shutil.copytree(run, other)
release = load_release(run)
decoder = release.decoder
decoder.set_weights([w + 0.5 for w in decoder.get_weights()])
export_release(other, encoder_file=other / "Encoder.hdf5", step_model=decoder,
               tokenizer=release.tokenizer, config=release.config,
               cache_settings=release.manifest["encoder"],
               feature_shape=release.manifest["feature_shape"])
old, new = digest(run / "Decoder.hdf5"), digest(other / "Decoder.hdf5")
assert old != new
for k in range(1, 12):
    repo = root / f"repo{k}"
    models, tokenizers = repo / "saved_models", repo / "tokenizer"
    copy_release(run, models, tokenizers)
    killed = killed_at(k, lambda: copy_release(other, models, tokenizers), [])
    loaded, message = loads(models)
    now = digest(models / "Decoder.hdf5")
    state = "old" if now == old else "new" if now == new else "other"
    copy_release(other, models, tokenizers)
    stats = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
             for p in (*models.iterdir(), *tokenizers.iterdir())}
    calls = []
    killed_at(0, lambda: copy_release(other, models, tokenizers), calls)  # identical: no move
    leftovers = sorted(p.name for p in (*models.iterdir(), *tokenizers.iterdir())
                       if p.name.startswith(".") or p.name.endswith(".switch"))
    print(json.dumps({"k": k, "killed": killed, "loaded": loaded, "decoder": state,
                      "message": message, "then": digest(models / "Decoder.hdf5") == new,
                      "leftovers": leftovers, "moves_when_identical": len(calls),
                      "rewritten": stats != {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
                                             for p in (*models.iterdir(),
                                                       *tokenizers.iterdir())}}),
          flush=True)
    if not killed:
        break
"""

RETRAIN_CHILD = """
import sys
from captioning.training.train import train
from tests.helpers import tiny_config
train(sys.argv[1], sys.argv[2], tiny_config(), progress=False, dataset="synthetic-test")
print("done")
"""


@pytest.fixture(scope="module")
def kills(run, tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    code, out, err = run_capped(["-c", KILL_CHILD, run, root], limit=CAP_WITH_TENSORFLOW,
                                timeout=600)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert results, f"exit {code}: {err[-2000:]}"
    return results


def test_a_release_killed_at_any_moment_of_its_export_still_loads(kills):
    assert kills[-1]["killed"] is False, "the export never ran to its end"
    assert len(kills) >= 5  # staging, the journal and the renames were each interrupted
    for result in kills:
        assert result["loaded"], result
        assert result["decoder"] in ("old", "new"), result


def test_the_journal_is_the_point_of_no_return(kills):
    # Killed before the journal: the old release; after: the new one, rolled forward.
    states = [result["decoder"] for result in kills]
    first_new = states.index("new")
    assert states[first_new:] == ["new"] * (len(states) - first_new)
    assert "old" in states[:first_new] and first_new >= 1


def test_loading_removes_the_journal_and_an_export_the_staged_files(kills):
    for result in kills:
        assert not [name for name in result["leftovers"] if name.endswith(".switch")], result
        # The next export completes the release and leaves nothing behind.
        assert result["after_export"] == [] and result["then"], result
    assert kills[-1]["leftovers"] == []


def test_an_export_killed_at_any_moment_leaves_the_old_or_the_new_release(run, tmp_path):
    code, out, err = run_capped(["-c", COPY_KILL_CHILD, run, tmp_path],
                                limit=CAP_WITH_TENSORFLOW, timeout=600)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert results and results[-1]["killed"] is False, f"exit {code}: {err[-2000:]}"
    assert len(results) >= 5
    states = [result["decoder"] for result in results]
    assert states[0] == "old" and states[-1] == "new", states
    for result in results:
        assert result["loaded"] and result["decoder"] in ("old", "new"), result
        # The next export completes it; exporting the same release again moves nothing.
        assert result["then"] and result["leftovers"] == [], result
        assert result["moves_when_identical"] == 0 and not result["rewritten"], result


def test_re_running_a_finished_training_rewrites_no_release_file(run, cache, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {name: os.stat(copy / name) for name in RELEASE_FILES}
    code, out, err = run_capped(["-c", RETRAIN_CHILD, cache, copy], limit=CAP_WITH_TENSORFLOW,
                                timeout=600)
    assert code == 0 and out.strip().endswith("done"), err[-2000:]
    for name, old in before.items():
        now = os.stat(copy / name)
        assert (now.st_ino, now.st_mtime_ns) == (old.st_ino, old.st_mtime_ns), name
    assert load_release(copy).config == load_release(run).config


def test_switch_moves_staged_files_and_the_manifest_last(tmp_path):
    for name in RELEASE_FILES:
        (tmp_path / name).write_text("old")
    for name in ("Decoder.hdf5", "manifest.json"):
        stage(tmp_path / name, lambda tmp, name=name: tmp.write_text(f"new {name}"))
    order = []
    replace = os.replace

    def record(source, target):
        order.append(os.path.basename(target))
        replace(source, target)

    os.replace = record
    try:
        switch(tmp_path / "manifest.json", [tmp_path / n for n in RELEASE_FILES])
    finally:
        os.replace = replace
    assert order[-2:] == ["Decoder.hdf5", "manifest.json"]
    assert (tmp_path / "Decoder.hdf5").read_text() == "new Decoder.hdf5"
    assert (tmp_path / "Encoder.hdf5").read_text() == "old"
    assert not journal_path(tmp_path / "manifest.json").exists()


def test_a_forged_journal_cannot_move_other_files(tmp_path):
    (tmp_path / ".bashrc.staged").write_text("evil")
    journal_path(tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "captioning.release-switch", "targets": ["../.bashrc"]}))
    with pytest.raises(ReleaseError, match="not a release file"):
        finish_switch(tmp_path / "manifest.json")
    assert (tmp_path / ".bashrc.staged").exists()


def test_tiny_config_is_the_runs(run):
    # The retraining test above relies on the shared run having been made with tiny_config.
    assert json.loads((run / "run.json").read_text())["config"]["units"] == tiny_config().units
