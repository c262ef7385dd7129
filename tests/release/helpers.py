"""Shared helpers of the release tests: damaging a run's files the way users do."""

from __future__ import annotations

import json

import h5py

from captioning.release import read_manifest, write_manifest

ROLES = {"Encoder.hdf5": "encoder", "Decoder.hdf5": "decoder", "tokenizer.pickle": "tokenizer"}


def flip_one_byte(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def rehash(run_dir):
    """Records the current files' sha256 in manifest.json, as a careful forger would."""
    path, manifest = read_manifest(run_dir)
    files = {role: run_dir / entry["path"] for role, entry in manifest["files"].items()}
    write_manifest(path, manifest, files)


def model_configs(path):
    with h5py.File(path, "r") as handle:
        return json.loads(handle.attrs["model_config"])


def walk_layers(config):
    """Every layer config in a saved model config, nested models included."""
    for layer in config["config"]["layers"]:
        yield layer
        if "layers" in layer.get("config", {}):
            yield from walk_layers(layer)


def caption_exit(release, image, capsys):
    from captioning import cli

    code = cli.main(["caption", str(image), "--release", str(release)])
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return code, err


def edit_manifest(run_dir, edit):
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
