"""tf.distribute strategies: mirrored training for real on two logical CPU devices, the TPU
branch up to resolver creation."""

import subprocess
import sys
import textwrap

import pytest

from captioning.errors import CaptioningError, ConfigError
from captioning.training.strategies import is_tpu, make_strategy, tpu_resolver


def test_none_is_the_default_strategy():
    strategy = make_strategy("none")
    assert strategy.num_replicas_in_sync == 1
    assert not is_tpu(strategy)


def test_auto_without_accelerators_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    assert make_strategy("auto").num_replicas_in_sync == 1


def test_unknown_strategy_is_refused():
    from captioning.config import STRATEGIES

    with pytest.raises(ConfigError, match="'gpu9'") as caught:
        make_strategy("gpu9")
    assert all(name in str(caught.value) for name in STRATEGIES)


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


def _train_on_two_logical_cpus(cache, out, **settings):
    """Trains in a fresh process whose one CPU is split into two logical devices (that has
    to happen before TensorFlow initialises them); returns the finished process (the
    package's INFO lines on its stderr)."""
    settings = {"scst_epochs": 0, **settings}
    script = textwrap.dedent(f"""
        import logging
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from captioning.config import CaptionConfig
        from captioning.training.strategies import make_strategy
        from captioning.training.train import train
        assert make_strategy("mirrored").num_replicas_in_sync == 2
        config = CaptionConfig(epochs=1, units=16, embedding_dim=8, batch_size=8,
                               val_images=4, max_length=12, strategy="mirrored",
                               **{settings!r})
        result = train({str(cache)!r}, {str(out)!r}, config, progress=False)
        print("EPOCHS", list(result.history["epoch"]), list(result.history["phase"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus(cache, tmp_path):
    done = _train_on_two_logical_cpus(cache, tmp_path / "run")
    assert "Training on 2 replicas (MirroredStrategy), global batch 16" in done.stderr
    assert "EPOCHS [1]" in done.stdout
    assert (tmp_path / "run" / "Decoder.hdf5").exists()


@pytest.mark.slow
def test_mirrored_fine_tuning_on_two_logical_cpus(cache, tmp_path):
    # The joint encoder + decoder model is built and compiled in the strategy's scope, and
    # its image batches are global batches (8 per replica x 2).
    done = _train_on_two_logical_cpus(cache, tmp_path / "run", fine_tune=2, fine_tune_epochs=1)
    assert "Fine-tuning 2 CNN layers" in done.stderr
    assert "EPOCHS [1, 2] ['frozen', 'fine_tune']" in done.stdout
    # 160 training captions: 10 global batches of 16 per epoch in both phases, not 20 of 8.
    assert "10/10" in done.stdout and "20/20" not in done.stdout
    assert (tmp_path / "run" / "Encoder.hdf5").exists()

