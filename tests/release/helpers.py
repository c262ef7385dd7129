"""Shared helpers of the release tests: damaging a run's files the way users do."""

from __future__ import annotations

import hashlib
import json

import h5py


ROLES = {"Encoder.hdf5": "encoder", "Decoder.hdf5": "decoder", "tokenizer.pickle": "tokenizer"}


def flip_one_byte(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def rehash(run_dir):
    """Records the current files' sha256 in manifest.json, as a careful forger would (the
    manifest itself is not checked: it may be the hostile file)."""
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["files"].values():
        entry["sha256"] = hashlib.sha256((run_dir / entry["path"]).read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))


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


# Hostile files (issue 14): every load of one runs in a child process under a memory cap, so
# a regression fails its test instead of taking the machine down.

GIB = 2**30
CAP_WITHOUT_TENSORFLOW = 1 * GIB
"""Address-space cap of a child that imports no TensorFlow (Python + NumPy: ~0.3 GiB)."""
CAP_WITH_TENSORFLOW = 4 * GIB
"""Address-space cap of a child that imports TensorFlow: it reserves ~3 GiB of address space
before it does anything, so this leaves ~1 GiB for the work itself."""


def capped(limit, file_size=None):
    """A `preexec_fn` capping the child's address space (`RLIMIT_AS`) at `limit` bytes and,
    with `file_size`, the size of any file it writes (`RLIMIT_FSIZE`: a full disk)."""
    def limit_child():
        import resource
        import signal

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    return limit_child


def run_capped(args, *, limit, timeout=120, file_size=None, cwd=None):
    """Runs `python ARGS` under `capped(limit, file_size)`; returns (code, stdout, stderr).

    A child still running after `timeout` seconds (a FIFO waited on, an endless read) is
    killed and reported as exit code None.
    """
    import os
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                      env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=cwd or REPO_ROOT, timeout=timeout,
                              preexec_fn=capped(limit, file_size))
    except subprocess.TimeoutExpired as expired:
        return None, expired.stdout or "", f"timed out after {timeout} s"
    return done.returncode, done.stdout, done.stderr


def cli_capped(*args, limit=CAP_WITH_TENSORFLOW, timeout=180):
    """`python -m captioning ARGS` under a memory cap; returns (code, stdout, stderr)."""
    return run_capped(["-m", "captioning", *args], limit=limit, timeout=timeout)


def error_lines(stderr):
    """The lines a refused command printed on stderr, INFO and warning lines left out."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("INFO", "WARNING", "I0000", "W0000"))]


def assert_refused_on_one_line(code, stderr, *names):
    """Exit code 2 and one `error:` line naming each of `names`."""
    lines = error_lines(stderr)
    assert code == 2, f"exit {code}: {stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def edit_model_config(path, edit):
    """Changes the `model_config` of a `.hdf5` model file in place (`edit(config)`)."""
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config)
        handle.attrs["model_config"] = json.dumps(config)


def layers_of(config, class_name):
    """The layer entries of `class_name` in a saved model config, nested models included."""
    return [layer for layer in walk_layers(config) if layer["class_name"] == class_name]
