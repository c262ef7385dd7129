"""Training on more than one device, by name, on the engine Keras runs on.

On TensorFlow: `tf.distribute` strategies. `mirrored` uses every local GPU (or the logical
CPU devices), `multi_worker` is `MultiWorkerMirroredStrategy` over the machines named by
`TF_CONFIG`, `tpu` a `TPUStrategy`. On JAX: `data_parallel` is `keras.distribution`'s
`DataParallel` over every local device (set for the process, as Keras' guide does). `none`
is one device on either engine.

`auto` picks a TPU when one is attached (Colab, Cloud TPU VMs), several GPUs with
`mirrored` (TensorFlow) or `data_parallel` (JAX), else `none`. Models are built and compiled
inside `strategy.scope()`; the global batch is the per-replica batch times the replicas.
TPUs and `data_parallel` get static, evenly divisible batches (`drop_remainder`).

The `tf.distribute` strategies need TensorFlow and Keras running on it: without them the
error names the fix. `none`, `auto` and `data_parallel` need no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from captioning.config import STRATEGIES
from captioning.errors import CaptioningError
from captioning.utils.backends import keras_backend, require_tensorflow_backend
from captioning.utils.checks import check_choice


class SingleDevice:
    """No distribution: the model trains on the default device, on any backend."""

    num_replicas_in_sync = 1

    def scope(self):
        """A context that changes nothing (the `tf.distribute.Strategy.scope` of one device)."""
        return contextlib.nullcontext()


class DataParallel:
    """`keras.distribution.DataParallel` over `devices` (JAX): variables replicated, each
    batch split across the devices.

    Args:
        devices: the devices (`jax.devices()` by default).
    """

    def __init__(self, devices=None):
        import keras

        self.distribution = keras.distribution.DataParallel(devices=devices)
        self.devices = list(devices) if devices is not None else keras.distribution.list_devices()
        self.num_replicas_in_sync = len(self.devices)
        keras.distribution.set_distribution(self.distribution)

    def scope(self):
        """The distribution's scope: variables made in it are laid out on its devices."""
        return self.distribution.scope()


def make_strategy(name: str = "auto", tpu: str | None = None):
    """Creates the named strategy.

    Args:
        name: one of `STRATEGIES`: `"auto"`, `"none"` (one device), `"mirrored"` (every
            local GPU, or the logical CPU devices when there is no GPU), `"multi_worker"`
            (the cluster of `TF_CONFIG`), `"tpu"` (those three on TensorFlow), or
            `"data_parallel"` (every local device, on JAX).
        tpu: the TPU address or name for `"tpu"` (default: the environment's, as Colab and
            Cloud TPU VMs set it).

    Returns:
        An object with `scope()` and `num_replicas_in_sync`: a `tf.distribute.Strategy` on
        TensorFlow, `SingleDevice` or `DataParallel` on the other backends.

    Raises:
        ConfigError: `name` is not one of `STRATEGIES`.
        CaptioningError: the strategy needs another engine than Keras runs on (the message
            says which), `"tpu"` without a TPU, `"multi_worker"` without `TF_CONFIG`.
    """
    check_choice("strategy", name, STRATEGIES)
    backend = keras_backend()
    if name == "auto":
        name = _auto(backend, tpu)
    if name == "none":
        if backend == "tensorflow":
            return require_tensorflow_backend("--strategy none").distribute.get_strategy()
        return SingleDevice()
    if name == "data_parallel":
        if backend != "jax":
            raise CaptioningError(f"--strategy data_parallel is keras.distribution on JAX, but "
                                  f"Keras runs on {backend}; set KERAS_BACKEND=jax, or use "
                                  "--strategy mirrored on TensorFlow")
        return DataParallel()
    tf = require_tensorflow_backend(f"--strategy {name}")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return _multi_worker_strategy(tf, _tf_config_resolver(tf))
    resolver = tpu_resolver(tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _auto(backend: str, tpu) -> str:
    if tpu or os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
        return "tpu"
    if backend == "tensorflow":
        tf = require_tensorflow_backend("--strategy auto")
        return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if backend == "jax":
        import jax

        return "data_parallel" if len(jax.devices()) > 1 else "none"
    return "none"


def _multi_worker_strategy(tf, resolver):
    """`MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3's `fit` gives it.

    Keras 3 (up to 3.15 at least; keras-team/keras#20585) trains with it only if `reduce`
    takes a nested batch (`fit` reduces a whole `(inputs, targets)` batch in one call to build
    the model) and scalars with `axis=0` (how it averages the loss and the metrics across
    workers). `MirroredStrategy` accepts both; the collective strategy refuses both. Here each
    tensor is reduced on its own, and a scalar across the replicas.
    """

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super()

            def one(v):
                local = self.experimental_local_results(v)[0]
                scalar = getattr(getattr(local, "shape", None), "rank", None) == 0
                return parent.reduce(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirroredStrategy(cluster_resolver=resolver)


def _tf_config_resolver(tf):
    """The cluster of `TF_CONFIG`, refused on one line when it names no worker of this one."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise CaptioningError("--strategy multi_worker reads the cluster from TF_CONFIG, which "
                              "is not set; set it on every worker, e.g. TF_CONFIG='{\"cluster\":"
                              " {\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": "
                              "{\"type\": \"worker\", \"index\": 0}}'")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
        if config["task"]["type"] not in ("worker", "chief") or not workers:
            raise ValueError("task type must be worker or chief")
    except (ValueError, KeyError, TypeError) as error:
        raise CaptioningError(f"TF_CONFIG is not a cluster with this task among its workers "
                              f"({error.__class__.__name__}: {error}); it must hold "
                              "cluster.worker (a list of host:port) and task.type/task.index"
                              ) from None
    if not 0 <= index < len(workers) + len(config["cluster"].get("chief", [])):
        raise CaptioningError(f"TF_CONFIG: task index {index} is not among the "
                              f"{len(workers)} workers")
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def tpu_resolver(tpu: str | None = None):
    """The TPU cluster resolver, as the TPU guide creates it, with a clear error without one."""
    tf = require_tensorflow_backend("--strategy tpu")
    address = tpu or os.environ.get("TPU_NAME") or ("grpc://" + os.environ["COLAB_TPU_ADDR"]
                                                   if os.environ.get("COLAB_TPU_ADDR") else None)
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    except (ValueError, RuntimeError) as error:
        raise CaptioningError(
            f"no TPU found ({error}); in Colab pick Runtime > Change runtime type > TPU, or "
            "train with --strategy none"
        ) from None


def is_tpu(strategy) -> bool:
    """Whether `strategy` runs on TPUs (which need static shapes: `drop_remainder`)."""
    return strategy.__class__.__name__.startswith("TPUStrategy")


def drops_remainder(strategy) -> bool:
    """Whether batches must all be full: TPUs need static shapes, and `DataParallel`
    splits every batch evenly across its devices."""
    return is_tpu(strategy) or (isinstance(strategy, DataParallel)
                                and strategy.num_replicas_in_sync > 1)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: always, except on the non-chief
    workers of a `multi_worker` cluster (worker 0 is the chief when none is named)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or strategy.__class__.__name__ != "MultiWorkerMirroredStrategy":
        return True
    kind, index = resolver.task_type, resolver.task_id
    return kind == "chief" or (kind == "worker" and index == 0
                               and "chief" not in resolver.cluster_spec().as_dict())


def worker_folder(run_dir: Path, strategy) -> Path:
    """Where this process keeps its run: `run_dir` for the chief (and every single-process
    run); `run_dir/worker-N` for the other workers of a `multi_worker` cluster, so that
    workers sharing a disk can be given the same `--out`. Every worker keeps its own
    checkpoints, so each can resume at the same epoch after a kill."""
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    return run_dir / f"{resolver.task_type}-{resolver.task_id}"
