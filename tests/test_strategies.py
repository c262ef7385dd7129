"""tf.distribute strategies: mirrored training for real on two logical CPU devices, the TPU
branch up to resolver creation."""

import subprocess
import sys
import textwrap

import pytest

from captioning.errors import CaptioningError, ConfigError
from captioning.strategies import is_tpu, make_strategy, tpu_resolver


def test_none_is_the_default_strategy():
    strategy = make_strategy("none")
    assert strategy.num_replicas_in_sync == 1
    assert not is_tpu(strategy)


def test_auto_without_accelerators_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    assert make_strategy("auto").num_replicas_in_sync == 1


def test_unknown_strategy_is_refused():
    with pytest.raises(ConfigError, match="'gpu9'"):
        make_strategy("gpu9")


def test_tpu_branch_reaches_resolver_creation(monkeypatch):
    import tensorflow as tf

    created = {}

    class FakeResolver:
        def __init__(self, tpu=None):
            created["tpu"] = tpu

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    assert isinstance(tpu_resolver(), FakeResolver)
    assert created["tpu"] == "grpc://10.0.0.2:8470"


def test_tpu_without_a_tpu_says_what_to_do(monkeypatch):
    import tensorflow as tf

    def no_tpu(tpu=None):
        raise ValueError("Please provide a TPU Name to connect to.")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", no_tpu)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(CaptioningError, match="--strategy none"):
        make_strategy("tpu")


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus(cache, tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from captioning.config import CaptionConfig
        from captioning.strategies import make_strategy
        from captioning.training import train
        assert make_strategy("mirrored").num_replicas_in_sync == 2
        config = CaptionConfig(epochs=1, units=16, embedding_dim=8, batch_size=8,
                               val_images=4, max_length=12, strategy="mirrored")
        result = train({str(cache)!r}, {str(tmp_path / "run")!r}, config, progress=False)
        print("EPOCHS", list(result.history["epoch"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Training on 2 replicas (MirroredStrategy), global batch 16" in done.stdout
    assert "EPOCHS [1]" in done.stdout
    assert (tmp_path / "run" / "Decoder.hdf5").exists()
