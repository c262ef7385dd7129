"""The earlier project's files with hostile sizes (issue 14, item 6, for the tf-keras reader):
refused from the file's config and metadata before tf-keras allocates anything, in a child
capped at `CAP_WITH_TENSORFLOW`."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest

from tests.release.helpers import CAP_WITH_TENSORFLOW, run_capped, walk_layers
from tests.release.legacy_files import make_files

CHILD = """
import json, sys
from captioning.errors import CaptioningError
from captioning.release.legacy import load_legacy_model
for path in sys.argv[1:]:
    try:
        load_legacy_model(path)
        outcome = "loaded"
    except CaptioningError as error:
        outcome = f"refused: {error}"
    except BaseException as error:
        outcome = f"crashed: {type(error).__name__}: {error}"[:300]
    print(json.dumps({"path": path, "outcome": outcome}), flush=True)
"""


def _edit(path, edit):
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config)
        handle.attrs["model_config"] = json.dumps(config).encode()


def _layers(config, class_name):
    found = [layer for layer in walk_layers(config) if layer["class_name"] == class_name]
    assert found, class_name
    return found


def _embedding(path):
    def edit(config):
        for layer in _layers(config, "Embedding"):
            layer["config"].update(input_dim=2**23, output_dim=64)  # x 4 bytes: 2 GiB
    _edit(path, edit)


def _input(shape):
    def make(path):
        def edit(config):
            _layers(config, "InputLayer")[0]["config"]["batch_input_shape"] = list(shape)
        _edit(path, edit)
    return make


def _declared(path):
    with h5py.File(path, "r+") as handle:
        weights = []
        handle["model_weights"].visititems(
            lambda name, item: weights.append(name) if isinstance(item, h5py.Dataset) else None)
        group = handle["model_weights"]
        name = weights[0]
        del group[name]
        group.create_dataset(name, shape=(2**29,), dtype="float32", chunks=(2**16,))


def _name(path):
    _edit(path, lambda config: config["config"].update(name="n" * 5000))


# case -> (file, change, what the refusal must name)
CASES = {
    "2 GiB Embedding in the config": ("Decoder.hdf5", _embedding, "embedding table"),
    "encoder input 4096 x 4096": ("Encoder.hdf5", _input((None, 4096, 4096, 3)), "4096 x 4096"),
    "encoder input (None, None, 3)": ("Encoder.hdf5", _input((None, None, None, 3)),
                                      "fixed positive integer"),
    "2 GiB weight declared in the file": ("Decoder.hdf5", _declared, "2.0 GiB"),
    "model name of 5000 characters": ("Decoder.hdf5", _name, "5000 characters"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    files = make_files(tmp_path_factory.mktemp("legacy_sizes"))
    paths = {}
    for index, (case, (name, change, _)) in enumerate(CASES.items()):
        path = files["root"] / f"case{index}_{name}"
        shutil.copyfile(files["tf24"] / name, path)
        change(path)
        paths[str(path)] = case
    genuine = str(files["tf24"] / "Decoder.hdf5")
    paths[genuine] = "genuine"
    code, out, err = run_capped(["-c", CHILD, *paths], limit=CAP_WITH_TENSORFLOW, timeout=600)
    found = {paths[line["path"]]: line["outcome"]
             for line in map(json.loads, filter(None, out.splitlines()))}
    return found, f"exit {code}: {err[-1500:]}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_legacy_file_is_refused_before_tf_keras_loads_it(outcomes, case):
    found, child = outcomes
    assert case in found, child
    assert found[case].startswith("refused: "), found[case]
    assert CASES[case][2] in found[case], found[case]


def test_the_genuine_legacy_decoder_still_loads(outcomes):
    found, child = outcomes
    assert found.get("genuine") == "loaded", (found.get("genuine"), child)
