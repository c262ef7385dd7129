"""Epoch-end callbacks: early stopping that carries across a resume, the monitored score."""

import keras
import pytest

from captioning.training.callbacks import ResumableEarlyStopping, monitored, score


def _stops(callback, scores, first_epoch=0):
    """Feeds `scores` (of `callback.monitor`) epoch by epoch from `first_epoch`; returns the
    epoch numbers (from 1) the callback stopped after, and the model."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # as `fit` sets it
    callback.set_model(model)
    callback.on_train_begin()
    stopped = []
    for epoch, value in enumerate(scores, start=first_epoch):
        callback.on_epoch_end(epoch, {callback.monitor: value})
        if model.stop_training:
            stopped.append(epoch + 1)
            break
    return stopped


@pytest.mark.parametrize("monitor, values", [
    ("val_bleu_4", [0.5, 0.6, 0.55, 0.58, 0.4, 0.3]),
    ("val_cider", [0.5, 0.6, 0.55, 0.58, 0.4, 0.3]),
    ("val_loss", [2.0, 1.5, 1.7, 1.6, 1.9, 2.2]),
])
def test_a_resumed_run_stops_where_an_uninterrupted_one_does(monitor, values):
    # Best at epoch 2, patience 3: stops after epoch 5.
    assert _stops(ResumableEarlyStopping(monitor, 3), values) == [5]
    # Killed after epoch 3: the run state gives the best score and epoch back.
    best = score(monitor, {monitor: values[1]})
    resumed = ResumableEarlyStopping(monitor, 3, best_score=best, best_epoch=2, last_epoch=3)
    assert _stops(resumed, values[3:], first_epoch=3) == [5]
    # Plain Keras starts counting afresh and would train on.
    assert _stops(keras.callbacks.EarlyStopping(monitor, patience=3,
                                                mode="min" if "loss" in monitor else "max"),
                  values[3:], first_epoch=3) == []


def test_early_stopping_names_what_it_monitored(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="captioning"):
        _stops(ResumableEarlyStopping("loss", 1), [1.0, 2.0])
    assert "Early stopping: loss has not improved for 1 epochs (best epoch 1)." in caplog.text


def test_the_monitored_score_prefers_the_chosen_score_then_validation_loss():
    class Bleu:
        images = ["a.jpg"]

    class NoImages:
        images = []

    assert monitored(Bleu(), has_val_batches=True) == "val_cider"  # the default
    assert monitored(Bleu(), has_val_batches=True, preferred="val_bleu_4") == "val_bleu_4"
    assert monitored(NoImages(), has_val_batches=True) == "val_loss"
    assert monitored(NoImages(), has_val_batches=False) == "loss"
    assert score("val_bleu_4", {"val_bleu_4": 0.25}) == 0.25
    assert score("val_cider", {"val_cider": 1.25}) == 1.25
    assert score("val_loss", {"val_loss": 1.5}) == -1.5  # higher is better
