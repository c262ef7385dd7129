"""Hostile model files and manifest sizes (issue 14, items 1, 6, 7 and 9): each is refused on
one line naming the file and the value, before anything large is allocated.

Every release here has its manifest hashes updated to match (as a careful forger does), so
only the checks of `captioning.release.model_file` and `captioning.release.manifest` stand in
the way. All of them are loaded and captioned in one child process capped at
`CAP_WITH_TENSORFLOW` of address space: a regression fails here instead of exhausting the
machine. `SECURITY.md` lists these files and what each gets.
"""

from __future__ import annotations

import json
import shutil

import h5py
import keras
import pytest

from tests.helpers import FEATURE_DIM, IMAGE_SIZE
from tests.release.helpers import (
    CAP_WITH_TENSORFLOW,
    assert_refused_on_one_line,
    cli_capped,
    edit_manifest,
    edit_model_config,
    layers_of,
    model_configs,
    rehash,
    run_capped,
)

# Embedding rows that make the run's 8-wide embedding table 2 GiB of float32.
HUGE_ROWS = 2**26


def _rename_decoder(length):
    def make(run):
        edit_model_config(run / "Decoder.hdf5",
                          lambda config: config["config"].update(name="n" * length))
    return make


def _embedding_rows(run, rows=HUGE_ROWS):
    def edit(config):
        for layer in layers_of(config, "Embedding"):
            layer["config"]["input_dim"] = rows
    edit_model_config(run / "Decoder.hdf5", edit)


def _declared_weight(run):
    # The config and the stored dataset agree on a 2 GiB table; the file holds 1.5 MB.
    _embedding_rows(run)
    with h5py.File(run / "Decoder.hdf5", "r+") as handle:
        group = handle["model_weights/embedding/embedding"]
        width = group["embeddings"].shape[1]
        del group["embeddings"]
        group.create_dataset("embeddings", shape=(HUGE_ROWS, width), dtype="float32",
                             chunks=(4096, width))


def _activation(name):
    def make(run):
        def edit(config):
            for layer in layers_of(config, "Activation"):
                layer["config"]["activation"] = name
        edit_model_config(run / "Decoder.hdf5", edit)
    return make


def _lambda_layer(run):
    # A forger's Lambda layer (marshalled Python bytecode) in place of the decoder's
    # Activation layer; Keras' safe mode refuses it while the model is built from its config.
    def edit(config):
        for layer in layers_of(config, "Activation"):
            name = layer["config"]["name"]
            layer.update(class_name="Lambda", module="keras.layers", registered_name=None,
                         config=keras.layers.Lambda(lambda x: x, name=name).get_config())
    edit_model_config(run / "Decoder.hdf5", edit)


def _encoder(shape, sequential=False):
    def make(run):
        if sequential:
            model = keras.Sequential([keras.Input(shape), keras.layers.GlobalAveragePooling2D(),
                                      keras.layers.Dense(FEATURE_DIM)], name="encoder")
        else:
            image = keras.Input(shape, name="image")
            pooled = keras.layers.GlobalAveragePooling2D(name="pool")(image)
            features = keras.layers.Dense(FEATURE_DIM, name="features")(pooled)
            model = keras.Model(image, features, name="encoder")
        model.save(run / "Encoder.hdf5")
    return make


def _decode_length(value):
    def make(run):
        edit_manifest(run, lambda m: m["config"].update(max_decode_length=value))
    return make


# case -> (how the run is changed, what the one-line refusal must name)
CASES = {
    "model name of 1000 characters": (_rename_decoder(1000),
                                      ["Decoder.hdf5", "1000 characters"]),
    "model name of 64 KB": (_rename_decoder(65536), ["Decoder.hdf5", "65536 characters"]),
    "2 GiB Embedding in the config": (_embedding_rows, ["Decoder.hdf5", f"({HUGE_ROWS}, 8)"]),
    "2 GiB weight declared in a 1.5 MB file": (_declared_weight,
                                               ["Decoder.hdf5", "2.0 GiB"]),
    "activation 'deserialize'": (_activation("deserialize"), ["Decoder.hdf5", "'deserialize'"]),
    "activation 'get'": (_activation("get"), ["Decoder.hdf5", "'get'"]),
    "Lambda layer": (_lambda_layer, ["Decoder.hdf5", "lambda"]),
    "encoder input 4096 x 4096": (_encoder((4096, 4096, 3)), ["Encoder.hdf5", "4096 x 4096"]),
    "encoder input (None, None, 3)": (_encoder((None, None, 3)),
                                      ["Encoder.hdf5", "(None, None, None, 3)"]),
    "Sequential encoder": (_encoder((IMAGE_SIZE, IMAGE_SIZE, 3), sequential=True),
                           ["Encoder.hdf5", "Sequential"]),
    "max_decode_length 2.5e8": (_decode_length(250_000_000),
                                ["manifest.json", "250000000"]),
    "max_decode_length 1e11": (_decode_length(10**11), ["manifest.json", "100000000000"]),
}

CHILD = """
import json, sys
from captioning.errors import CaptioningError
from captioning.inference.captioner import Captioner
from captioning.release import load_release

image = sys.argv[1]
for folder in sys.argv[2:]:
    try:
        result = Captioner(load_release(folder)).caption([image])[0]
        outcome = {"outcome": "captioned", "message": result.caption or result.error}
    except CaptioningError as error:
        outcome = {"outcome": "refused", "message": str(error)}
    except BaseException as error:
        outcome = {"outcome": "crashed", "message": f"{type(error).__name__}: {error}"[:300]}
    print(json.dumps({"folder": folder, **outcome}), flush=True)
"""


@pytest.fixture(scope="module")
def outcomes(run, dataset, tmp_path_factory):
    """What loading and captioning each hostile release gives, in one capped child."""
    root = tmp_path_factory.mktemp("hostile")
    folders = {}
    for index, (case, (make, _)) in enumerate({**CASES, "genuine": (None, [])}.items()):
        folder = root / f"case{index}"
        shutil.copytree(run, folder)
        if make is not None:
            make(folder)
        rehash(folder)
        folders[str(folder)] = case
    image = next((dataset / "images").glob("*.jpg"))
    code, out, err = run_capped(["-c", CHILD, image, *folders], limit=CAP_WITH_TENSORFLOW,
                                timeout=600)
    found = {folders[line["folder"]]: line for line in map(json.loads, out.splitlines())
             if line.get("folder") in folders}
    return found, f"exit {code}: {err[-1500:]}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_release_is_refused_on_one_line(outcomes, case):
    found, child = outcomes
    assert case in found, f"the child never finished this case ({child})"
    result = found[case]
    assert result["outcome"] == "refused", result
    assert "\n" not in result["message"]
    for name in CASES[case][1]:
        assert name in result["message"], result["message"]


def test_the_genuine_release_is_still_captioned_under_the_same_cap(outcomes):
    found, child = outcomes
    assert found.get("genuine", {}).get("outcome") == "captioned", (found.get("genuine"), child)


def test_the_cli_refuses_a_long_model_name_with_exit_2(copy_run, image):
    # `caption` (not `Captioner.load`) used to copy the name into every traced operation:
    # 64 KB took 1.3 GB, 1 MB 11 GB.
    _rename_decoder(2**20)(copy_run)
    rehash(copy_run)
    code, out, err = cli_capped("caption", image, "--release", copy_run)
    assert out == ""
    assert_refused_on_one_line(code, err, "Decoder.hdf5", "characters")


def test_model_names_within_the_limit_still_load(copy_run):
    from captioning.release import load_release

    _rename_decoder(200)(copy_run)
    rehash(copy_run)
    assert load_release(copy_run).decoder.name == "n" * 200


def test_the_config_checks_read_no_weights(run, tmp_path, monkeypatch):
    # Step 1 reads the metadata only: a 2 GiB declared dataset costs nothing to check.
    from captioning.release.model_file import check_model_config

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    _declared_weight(copy)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", None)
    with pytest.raises(Exception, match="2.0 GiB"):
        check_model_config(copy / "Decoder.hdf5", "Decoder.hdf5")
    assert model_configs(run / "Decoder.hdf5")["class_name"] == "Functional"
