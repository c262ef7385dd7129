"""The run state of both phases: checkpoints written whole, history.csv derived from them."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from captioning.training.run_state import (
    HISTORY_COLUMNS,
    PhaseCheckpoint,
    RunState,
    history_row,
)
from tests.helpers import tiny_config


def _model(value=0.0):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.set_weights([np.full((2, 1), value, np.float32), np.zeros(1, np.float32)])
    return model


def _row(epoch, phase="frozen", loss=1.0):
    return history_row(epoch, phase, {"loss": loss, "masked_accuracy": 0.5}, 1e-3)


def test_a_history_row_has_the_history_columns():
    row = history_row(3, "fine_tune", {"loss": 2.0, "masked_accuracy": 0.25, "val_loss": 2.5,
                                       "val_masked_accuracy": 0.2, "val_bleu_4": 0.1}, 1e-4)
    assert tuple(row) == HISTORY_COLUMNS
    assert row == {"epoch": 3, "loss": 2.0, "accuracy": 0.25, "val_loss": 2.5,
                   "val_accuracy": 0.2, "val_bleu_4": 0.1, "val_cider": None, "reward": None,
                   "learning_rate": 1e-4, "phase": "fine_tune"}
    assert history_row(1, "frozen", {"loss": 1.0}, 1e-3)["val_loss"] is None
    scst = history_row(4, "scst", {"reward": 1.5, "baseline": 1.4, "val_cider": 2.0,
                                   "val_bleu_4": 0.3}, 5e-5)
    assert (scst["reward"], scst["val_cider"], scst["val_bleu_4"]) == (1.5, 2.0, 0.3)
    assert scst["loss"] is None and scst["phase"] == "scst"


def test_a_phase_keeps_the_last_and_the_best_epoch_only(tmp_path):
    checkpoint = PhaseCheckpoint(tmp_path / "checkpoints", keep_best=True)
    assert checkpoint.state() is None
    checkpoint.save(_model(1.0), 1, _row(1), best_score=0.5)
    checkpoint.save(_model(2.0), 2, _row(2))
    state = checkpoint.save(_model(3.0), 3, _row(3), stopped=True)
    assert sorted(p.name for p in checkpoint.folder.iterdir()) == [
        "best-0001.weights.h5", "epoch-0003.weights.h5", "state.json"]
    assert state == checkpoint.state()
    assert (state["epoch"], state["best_epoch"], state["best_score"]) == (3, 1, 0.5)
    assert state["stopped"] is True
    assert [row["epoch"] for row in state["history"]] == [1, 2, 3]
    model = _model()
    model.load_weights(checkpoint.best_weights())
    assert model.get_weights()[0][0, 0] == 1.0
    model.load_weights(checkpoint.weights(3))
    assert model.get_weights()[0][0, 0] == 3.0


def test_a_phase_continued_from_an_earlier_epoch_drops_the_later_rows(tmp_path):
    checkpoint = PhaseCheckpoint(tmp_path)
    for epoch in (1, 2, 3):
        checkpoint.save(_model(), epoch, _row(epoch))
    state = checkpoint.save(_model(), 2, _row(2, loss=0.5))
    assert [(row["epoch"], row["loss"]) for row in state["history"]] == [(1, 1.0), (2, 0.5)]
    assert sorted(p.name for p in tmp_path.glob("*.weights.h5")) == ["epoch-0002.weights.h5"]


def test_a_phase_that_starts_over_forgets_its_state_and_weights(tmp_path):
    checkpoint = PhaseCheckpoint(tmp_path / "fine_tune")
    checkpoint.save(_model(), 1, _row(3, "fine_tune"), after_epoch=2, layers=4)
    checkpoint.clear()
    assert checkpoint.state() is None
    assert list(checkpoint.folder.iterdir()) == []


def test_a_failed_save_leaves_the_last_state_whole(tmp_path, monkeypatch):
    from captioning.errors import CaptioningError

    checkpoint = PhaseCheckpoint(tmp_path)
    checkpoint.save(_model(), 1, _row(1))
    before = (tmp_path / "state.json").read_text()

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    # The weights are made in memory, then written as bytes.
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(CaptioningError, match="epoch-0002.weights.h5.*No space left.*free"):
        checkpoint.save(_model(), 2, _row(2))
    assert (tmp_path / "state.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.weights.h5",
                                                          "state.json"]


def _fine_tune_state(run, **state):
    folder = run / "checkpoints" / "fine_tune"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps(state))


def test_a_fine_tuning_checkpoint_after_another_first_phase_epoch_is_stale(tmp_path):
    rows = [{"epoch": 3, "phase": "fine_tune", "loss": 1.0}]
    _fine_tune_state(tmp_path, epoch=1, after_epoch=2, layers=4, history=rows)
    state = RunState(tmp_path, tiny_config(fine_tune=4))
    assert state.fine_tune_rows(2) == rows
    assert state.fine_tune_rows(5) == []  # the first phase went on
    assert "to epoch 5" in state.fine_tune_stale(state.fine_tune.state(), 5)
    other_layers = RunState(tmp_path, tiny_config(fine_tune=2))
    assert other_layers.fine_tune_rows(2) == []
    assert "4 unfrozen layers, now 2" in other_layers.fine_tune_stale(
        other_layers.fine_tune.state(), 2)


def test_history_csv_lists_both_phases_in_order(tmp_path):
    run = RunState(tmp_path, tiny_config(fine_tune=2))
    assert run.write_history().empty
    assert not (tmp_path / "history.csv").exists()  # no epoch finished yet
    run.frozen.save(_model(), 1, _row(1), best_score=0.1)
    run.frozen.save(_model(), 2, _row(2))
    run.fine_tune.save(_model(), 1, _row(3, "fine_tune"), after_epoch=2, layers=2)
    history = run.write_history()
    written = pd.read_csv(tmp_path / "history.csv")
    assert list(written.columns) == list(HISTORY_COLUMNS)
    assert list(written["epoch"]) == [1, 2, 3]
    assert list(written["phase"]) == ["frozen", "frozen", "fine_tune"]
    columns = ["epoch", "loss", "accuracy", "learning_rate", "phase"]
    pd.testing.assert_frame_equal(history[columns], written[columns], check_dtype=False)
    # Without fine-tuning in the config, only the first phase counts.
    assert list(RunState(tmp_path, tiny_config()).history()["epoch"]) == [1, 2]


def _scst_row(epoch, cider):
    return history_row(epoch, "scst", {"reward": 1.0, "val_cider": cider}, 5e-5)


def test_history_csv_lists_scst_last_while_it_follows_the_phases_before(tmp_path):
    config = tiny_config(scst_epochs=2)
    run = RunState(tmp_path, config)
    run.frozen.save(_model(), 1, _row(1), best_score=0.1)
    run.frozen.save(_model(), 2, _row(2))
    assert run.epochs_before_scst() == 2
    origin = run.scst_origin(2)
    run.scst.save(_model(1.0), 1, _scst_row(3, 2.0), best_score=2.0, **origin)
    run.scst.save(_model(2.0), 2, _scst_row(4, 1.5), **origin)
    run.write_history()
    written = pd.read_csv(tmp_path / "history.csv")
    assert list(written["phase"]) == ["frozen", "frozen", "scst", "scst"]
    assert list(written["val_cider"].iloc[2:]) == [2.0, 1.5]
    assert written["val_cider"].iloc[:2].isna().all()
    assert run.scst.state()["best_epoch"] == 1
    # Without SCST in the config, or once the first phase trained on, or with other
    # sampling settings, the SCST epochs are not the run's.
    assert list(RunState(tmp_path, tiny_config()).history()["epoch"]) == [1, 2]
    run.frozen.save(_model(), 3, _row(3))
    assert list(run.history()["epoch"]) == [1, 2, 3]
    assert "after_epoch 2 -> 3" in run.scst_stale(run.scst.state(), 3)
    other = RunState(tmp_path, config.replace(scst_samples=3))
    assert "samples 5 -> 3" in other.scst_stale(other.scst.state(), 2)
    cosine = RunState(tmp_path, config.replace(scst_lr_schedule="cosine"))
    assert "lr_schedule 'constant' -> 'cosine'" in cosine.scst_stale(cosine.scst.state(), 2)
    # An SCST state saved before the schedule was recorded trained at a constant rate.
    older = {key: value for key, value in run.scst.state().items() if key != "lr_schedule"}
    assert run.scst_stale(older, 2) is None
    assert "lr_schedule 'constant' -> 'cosine'" in cosine.scst_stale(older, 2)


def _run_without(tmp_path, setting):
    """A run folder whose run.json was written before `setting` existed; returns the config
    it was started with and a stand-in for the cache (what `check_run` reads of one)."""
    class Cache:
        identity, manifest, path = {"encoder": "x"}, {"images_fingerprint": "f"}, tmp_path

    config = tiny_config()
    (tmp_path / "run").mkdir()
    RunState(tmp_path / "run", config).check_run(Cache())
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    del saved["config"][setting]
    (tmp_path / "run" / "run.json").write_text(json.dumps(saved))
    return config, Cache()


def test_a_run_from_before_a_setting_existed_resumes_with_its_default(tmp_path):
    config, cache = _run_without(tmp_path, "mixed_precision")
    RunState(tmp_path / "run", config).check_run(cache)
    with pytest.raises(Exception, match="mixed_precision: run has 'none', now 'bfloat16'"):
        RunState(tmp_path / "run", config.replace(mixed_precision="bfloat16")).check_run(cache)


def test_a_run_from_before_the_monitor_setting_kept_picking_by_bleu(tmp_path):
    """Runs started before `monitor` existed picked epochs by val_bleu_4: resuming one with
    the new default (val_cider) would compare scores of two measures, so it is refused."""
    config, cache = _run_without(tmp_path, "monitor")
    with pytest.raises(Exception, match="monitor: run has 'val_bleu_4', now 'val_cider'"):
        RunState(tmp_path / "run", config).check_run(cache)
    RunState(tmp_path / "run", config.replace(monitor="val_bleu_4")).check_run(cache)
