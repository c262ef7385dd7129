"""Training on more than one device or machine: `MultiWorkerMirroredStrategy` with two worker
processes on localhost (TensorFlow), `keras.distribution.DataParallel` on two host devices
(JAX), and the one-line errors of a strategy that cannot run."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

from captioning.errors import CaptioningError, ConfigError
from captioning.training.strategies import drops_remainder, make_strategy
from tests.helpers import REPO_ROOT, tiny_config

on_tensorflow = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                   reason="tf.distribute needs Keras on TensorFlow")

# Trains in a fresh process: `python -c TRAIN cache out config-json`; prints the epochs.
TRAIN = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from captioning.config import CaptionConfig
from captioning.inference.captioner import Captioner
from captioning.training.train import train
config = CaptionConfig.from_dict(json.loads(sys.argv[3]))
result = train(sys.argv[1], sys.argv[2], config, progress=False)
print("EPOCHS", list(result.history["epoch"]), list(result.history["phase"]))
captions = Captioner.load(result.run_dir).caption(sys.argv[4:])  # each worker its own copy
print("CAPTIONS", json.dumps([c.caption for c in captions]))
"""


def _start(env: dict, *args) -> subprocess.Popen:
    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore", **env}
    return subprocess.Popen([sys.executable, "-c", TRAIN, *map(str, args)], cwd=REPO_ROOT,
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process: subprocess.Popen, timeout=900) -> tuple:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


def _free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _weights(path) -> list:
    arrays = []
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: arrays.append((name, item[()]))
                        if isinstance(item, h5py.Dataset) else None)
    return sorted(arrays, key=lambda pair: pair[0])


def _images(dataset, count=3):
    return sorted(str(p) for p in (dataset / "images").iterdir())[:count]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_data_parallel_on_two_jax_host_devices(cache, dataset, tmp_path):
    config = tiny_config(epochs=1, batch_size=8, strategy="auto")
    out, err = _finish(_start(
        {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        cache, tmp_path / "run", json.dumps(config.to_dict()), *_images(dataset)))
    assert "Training on 2 replicas (DataParallel), global batch 16" in err
    assert "EPOCHS [1] ['frozen']" in out
    # 160 training captions: 10 global batches of 16 (8 per device), none partial.
    captions = json.loads(out.split("CAPTIONS", 1)[1])
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["versions"]["keras_backend"] == "jax"


@pytest.mark.slow
@on_tensorflow
def test_multi_worker_training_with_two_workers_on_localhost(cache, dataset, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    config = tiny_config(epochs=1, batch_size=8, strategy="multi_worker")
    workers = [_start({"KERAS_BACKEND": "tensorflow",
                       "TF_CONFIG": json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": index}})},
                      cache, tmp_path / "run", json.dumps(config.to_dict()),
                      *_images(dataset))
               for index in range(2)]
    results = [_finish(worker) for worker in workers]
    for out, err in results:
        assert "Training on 2 replicas (MultiWorkerMirroredStrategy), global batch 16" in err
        assert "EPOCHS [1] ['frozen']" in out
    # One --out on a shared disk: the chief (worker 0) writes the run, worker 1 its own copy
    # beside it, never the chief's files.
    chief, other = tmp_path / "run", tmp_path / "run" / "worker-1"
    assert sorted(p.name for p in other.iterdir()) == sorted(
        p.name for p in chief.iterdir() if p.name != "worker-1")
    # The gradients were all-reduced across the workers: both hold the same weights.
    first, second = (_weights(folder / "Decoder.hdf5") for folder in (chief, other))
    assert [name for name, _ in first] == [name for name, _ in second]
    for (name, a), (_, b) in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


@on_tensorflow
def test_multi_worker_without_tf_config_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(CaptioningError, match="TF_CONFIG, which is not set"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": []}, "task": {}}')
    with pytest.raises(CaptioningError, match="cluster.worker"):
        make_strategy("multi_worker")


@on_tensorflow
def test_data_parallel_on_tensorflow_points_to_mirrored():
    with pytest.raises(CaptioningError, match="KERAS_BACKEND=jax.*--strategy mirrored"):
        make_strategy("data_parallel")


def test_one_device_keeps_partial_batches():
    strategy = make_strategy("none")
    assert strategy.num_replicas_in_sync == 1 and not drops_remainder(strategy)


def test_mirrored_on_jax_asks_for_tensorflow():
    code = textwrap.dedent("""
        from captioning.errors import CaptioningError
        from captioning.training.strategies import make_strategy
        try:
            make_strategy("mirrored")
        except CaptioningError as error:
            print(error)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "jax"}, cwd=REPO_ROOT)
    if importlib.util.find_spec("tensorflow") is None:
        assert "needs TensorFlow, which is not installed" in done.stdout
    else:
        assert ("--strategy mirrored is TensorFlow's tf.distribute, but Keras runs on jax; set "
                "KERAS_BACKEND=tensorflow") in done.stdout


def test_mixed_precision_computes_in_bfloat16_with_the_loss_in_float32():
    from captioning.config import CaptionConfig
    from captioning.models.decoders import build_decoder
    from captioning.models.precision import policy_scope
    from captioning.training.objective import compile_for_captions, make_optimizer

    with policy_scope("bfloat16"):
        decoder = build_decoder(CaptionConfig(units=8, embedding_dim=4, max_length=5), 20, (6,))
    assert keras.config.dtype_policy().name == "float32"  # the scope is left as it was
    compile_for_captions(decoder.training, make_optimizer(1e-3, 5.0))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 6)).astype("float32")
    tokens = rng.integers(1, 20, (4, 6)).astype("int32")
    logits = decoder.training([features, tokens])
    assert keras.backend.standardize_dtype(logits.dtype) == "bfloat16"
    loss = decoder.training.compute_loss(y=tokens, y_pred=logits)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32"
               for v in decoder.training.trainable_variables)


@pytest.mark.slow
def test_a_mixed_precision_run_exports_a_float32_release(cache, dataset, tmp_path):
    from captioning.inference.captioner import Captioner
    from captioning.training.train import train

    train(cache, tmp_path / "run", tiny_config(epochs=1, mixed_precision="bfloat16"),
          progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["mixed_precision"] == "bfloat16"
    with h5py.File(tmp_path / "run" / "Decoder.hdf5", "r") as file:
        config = file.attrs["model_config"]
    assert "mixed_bfloat16" not in str(config) and "float32" in str(config)
    (caption,) = Captioner.load(tmp_path / "run").caption(_images(dataset, 1))
    assert caption.ok and isinstance(caption.caption, str)


def test_mixed_precision_cannot_change_when_a_run_resumes(copy_run, cache):
    # Not in RESUMABLE: it changes what is trained (bfloat16 gradients), and float16 adds a
    # loss-scale optimizer whose saved state a float32 optimizer does not have.
    from captioning.training.run_state import RESUMABLE
    from captioning.training.train import train

    assert "mixed_precision" not in RESUMABLE
    run_json = (copy_run / "run.json").read_text()
    with pytest.raises(ConfigError, match="mixed_precision: run has 'none', now 'bfloat16'"):
        train(cache, copy_run, tiny_config(mixed_precision="bfloat16"), progress=False)
    assert (copy_run / "run.json").read_text() == run_json
