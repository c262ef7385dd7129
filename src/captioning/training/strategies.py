"""Scaling out on TensorFlow's own engine: `tf.distribute` strategies by name.

`auto` picks a TPU when one is attached (Colab, Cloud TPU VMs), several GPUs with
`MirroredStrategy`, else the default strategy. Models are built and compiled inside
`strategy.scope()`; the global batch is the per-replica batch times the replicas, and TPUs
get static shapes (`drop_remainder`).
"""

from __future__ import annotations

import os

from captioning.config import STRATEGIES
from captioning.errors import CaptioningError
from captioning.utils.checks import check_choice


def make_strategy(name: str = "auto", tpu: str | None = None):
    """Creates the named `tf.distribute` strategy.

    Args:
        name: `"auto"`, `"none"` (the default strategy), `"mirrored"` (every local GPU, or
            the logical CPU devices when there is no GPU), or `"tpu"`.
        tpu: the TPU address or name for `"tpu"` (default: the environment's, as Colab and
            Cloud TPU VMs set it).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ConfigError: `name` is not one of `STRATEGIES`.
        CaptioningError: `"tpu"` without a TPU.
    """
    check_choice("strategy", name, STRATEGIES)
    import tensorflow as tf

    if name == "auto":
        if tpu or os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
            name = "tpu"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "none"
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    resolver = tpu_resolver(tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def tpu_resolver(tpu: str | None = None):
    """The TPU cluster resolver, as the TPU guide creates it, with a clear error without one."""
    import tensorflow as tf

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
