"""A full disk while `train` writes a checkpoint or the release (issue 14, item 4): one line
naming the file, never a crash inside h5py (it was a segfault, exit 139, and no message).

The full disk is a file size limit (`RLIMIT_FSIZE`, with SIGXFSZ ignored: writes beyond it
fail with EFBIG as they would with ENOSPC), set in a child process that is also capped at
`CAP_WITH_TENSORFLOW` of memory."""

from __future__ import annotations

import io
import json

import h5py
import keras
import numpy as np

from tests.helpers import tiny_config
from tests.release.helpers import CAP_WITH_TENSORFLOW, run_capped
from captioning.release import load_release
from captioning.release.model_bytes import model_file_bytes, weights_file_bytes

FULL_DISK_CHILD = """
import json, resource, sys
from pathlib import Path
import keras, numpy as np
from captioning.errors import CaptioningError
from captioning.release import export_release, load_release
from captioning.training.run_state import PhaseCheckpoint

run, folder = Path(sys.argv[1]), Path(sys.argv[2])
model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(2000), keras.layers.Dense(10)])
model.compile("adam", "mse")
model.fit(np.zeros((4, 100)), np.zeros((4, 10)), verbose=0)
checkpoint = PhaseCheckpoint(folder / "checkpoints", keep_best=True)
checkpoint.save(model, 1, {"epoch": 1}, best_score=0.5)
release = load_release(run)
decoder = release.decoder
decoder.set_weights([w + 0.5 for w in decoder.get_weights()])

resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # the disk is full from here on
results = {}
try:
    checkpoint.save(model, 2, {"epoch": 2}, best_score=0.6)
    results["checkpoint"] = "written"
except CaptioningError as error:
    results["checkpoint"] = str(error)
results["state_epoch"] = checkpoint.state()["epoch"]
try:
    export_release(run, encoder_file=run / "Encoder.hdf5", step_model=decoder,
                   tokenizer=release.tokenizer, config=release.config,
                   cache_settings=release.manifest["encoder"],
                   feature_shape=release.manifest["feature_shape"])
    results["export"] = "written"
except CaptioningError as error:
    results["export"] = str(error)
print(json.dumps(results), flush=True)
"""


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint_and_release(copy_run, tmp_path):
    code, out, err = run_capped(["-c", FULL_DISK_CHILD, copy_run, tmp_path],
                                limit=CAP_WITH_TENSORFLOW, timeout=300,
                                file_size=2**40)  # SIGXFSZ ignored; the child sets the limit
    assert code == 0, f"exit {code} (139: a segfault inside h5py): {err[-2000:]}"
    results = json.loads(out.strip().splitlines()[-1])
    assert "epoch-0002.weights.h5: could not be written" in results["checkpoint"]
    assert "\n" not in results["checkpoint"]
    assert results["state_epoch"] == 1
    assert "Decoder.hdf5" in results["export"] and "could not be written" in results["export"]
    # The previous release is intact and loads.
    assert load_release(copy_run).manifest["files"]
    assert not list(copy_run.glob(".*staged*"))


def test_train_on_a_full_disk_exits_2_with_one_line_and_keeps_the_release(copy_run, cache,
                                                                           tmp_path):
    # The reported case end to end: `train` resumed for one more epoch when its checkpoint
    # cannot be written (files over 16 KiB fail with EFBIG; the checkpoints are ~120 KB and
    # the small files a resumed run rewrites, run.json and history.csv, stay under it).
    import hashlib

    release = ("Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle", "manifest.json")
    digest = {name: hashlib.sha256((copy_run / name).read_bytes()).hexdigest()
              for name in release}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(epochs=3).to_dict()))
    code, out, err = run_capped(
        ["-m", "captioning", "train", "--cache", cache, "--out", copy_run, "--config", config,
         "--quiet"], limit=CAP_WITH_TENSORFLOW, timeout=300, file_size=16 * 2**10)
    assert code == 2, f"exit {code} (139: a segfault inside h5py): {err[-2000:]}"
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]  # progress lines aside
    for said in ("epoch-0003.weights.h5: could not be written", "ulimit -f"):
        assert said in errors[0], errors[0]
    # The previous release is untouched and loads; the run resumes from epoch 2.
    assert {name: hashlib.sha256((copy_run / name).read_bytes()).hexdigest()
            for name in release} == digest
    assert load_release(copy_run).manifest["files"]
    state = json.loads((copy_run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2, state


def test_in_memory_files_are_what_keras_reads(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")],
                             name="tiny")
    model.compile("adam", "mse")
    path = tmp_path / "tiny.hdf5"
    path.write_bytes(model_file_bytes(model))
    loaded = keras.saving.load_model(path, compile=False)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    weights = tmp_path / "tiny.weights.h5"
    weights.write_bytes(weights_file_bytes(model))
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    other.load_weights(weights)
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])
    # The same model gives the same bytes: re-exports compare files by their hashes.
    assert model_file_bytes(model) == model_file_bytes(model)
    with h5py.File(io.BytesIO(model_file_bytes(model)), "r") as handle:
        assert "model_config" in handle.attrs
