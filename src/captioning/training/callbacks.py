"""What happens at each epoch's end, in every phase: val_cider and val_bleu_4, early stopping,
the save.

`fit` gets them in this order: with `ema`, `AveragedWeights` (Keras' `SwapEMAWeights`) puts
the weights' moving average in the model, `BleuMonitor` adds `val_cider` and `val_bleu_4` to
the epoch's logs, `ResumableEarlyStopping` (Keras' `EarlyStopping`) may stop the run, and `EpochCheckpoint`
saves the epoch into the run state (`captioning.training.run_state`), the stop included.
`ScheduledSamplingRamp` acts at each epoch's start instead: it sets the scheduled-sampling
probability of that epoch.
"""

from __future__ import annotations

import logging

import keras
from keras import ops

from captioning.models.search import SequenceDecoder
from captioning.text import bleu4
from captioning.text.cider import CiderD
from captioning.training.objective import sampling_probability
from captioning.training.run_state import PhaseCheckpoint, history_row

logger = logging.getLogger(__name__)

# The monitored quantities that are minimised.
_LOSSES = ("val_loss", "loss")
# Images decoded per call of the step model when scoring.
_DECODE_BATCH = 128


class ValidationBleu:
    """Greedy-decodes a fixed validation subset (the first `config.val_images` images by
    name) and scores it against their references with BLEU-4.

    Args:
        step_model: the one-step decoder (its weights are read at every call).
        tokenizer: the run's tokenizer.
        val_table: the validation captions (image, caption).
        config: the run's settings (`val_images`, `max_decode_length`).
    """

    def __init__(self, step_model, tokenizer, val_table, config):
        self.tokenizer = tokenizer
        self.images = sorted(set(val_table["image"]))[:config.val_images]
        self.references = {
            image: [" ".join(tokenizer.words(c)) for c in group["caption"]]
            for image, group in val_table[val_table["image"].isin(self.images)].groupby("image")
        }
        self.search = SequenceDecoder(step_model, start_id=tokenizer.start_id,
                                      end_id=tokenizer.end_id,
                                      max_length=config.max_decode_length)

    def __call__(self, features_of) -> float | None:
        """BLEU-4 of the subset, `features_of(names)` giving the images' features; None
        without validation images."""
        if not self.images:
            return None
        return float(bleu4(self.predict(features_of), self.references))

    def predict(self, features_of) -> dict:
        """The greedy caption of each image of the subset (name -> caption)."""
        predictions = {}
        for start in range(0, len(self.images), _DECODE_BATCH):
            names = self.images[start:start + _DECODE_BATCH]
            beams = self.search.decode(features_of(names))
            for name, ids in zip(names, beams.ids[:, 0]):
                predictions[name] = self.tokenizer.decode(ids)
        return predictions


class ValidationScores:
    """Greedy captions of the validation subset (as `ValidationBleu` picks it), scored with
    CIDEr-D (document frequencies from the subset's references, as coco-caption computes
    them) and BLEU-4.

    Args:
        bleu: the run's `ValidationBleu` (its images, references and search).
    """

    def __init__(self, bleu: ValidationBleu):
        self.bleu, self.images = bleu, bleu.images
        self.cider = (CiderD([bleu.references[name] for name in self.images])
                      if self.images else None)

    def __call__(self, features_of) -> dict:
        """`{"val_cider": ..., "val_bleu_4": ...}` with the current weights; empty without
        validation images."""
        if not self.images:
            return {}
        predictions = self.bleu.predict(features_of)
        captions = [predictions[name] for name in self.images]
        return {"val_cider": float(self.cider.score(captions).mean()),
                "val_bleu_4": float(bleu4(predictions, self.bleu.references))}


def monitored(bleu: ValidationBleu, has_val_batches: bool, preferred: str = "val_cider") -> str:
    """The quantity that picks the best epoch and stops early: `preferred` (`val_cider` or
    `val_bleu_4`), or without validation images `val_loss`, or without validation batches the
    training `loss`."""
    if bleu.images:
        return preferred
    return "val_loss" if has_val_batches else "loss"


def score(monitor: str, logs: dict) -> float:
    """The monitored quantity as a score, higher is better (losses are negated)."""
    value = float(logs.get(monitor) or 0.0)
    return -value if monitor in _LOSSES else value


class BleuMonitor(keras.callbacks.Callback):
    """Epoch end: `val_cider` and `val_bleu_4` into the logs (and an INFO line), when there
    are validation images.

    Args:
        bleu: the `ValidationBleu` of the run.
        features_of: `features_of(names)`, the validation images' features now.
        label: how the INFO line names the epoch (`"epoch"`, `"fine-tuning epoch"`).
    """

    def __init__(self, bleu: ValidationBleu, features_of, label: str = "epoch"):
        super().__init__()
        self.scores, self.features_of, self.label = ValidationScores(bleu), features_of, label

    def on_epoch_end(self, epoch, logs=None):
        values = self.scores(self.features_of)
        if values and logs is not None:
            logs.update(values)
            logger.info("%s %d: val_cider %.4f, val_bleu_4 %.4f on %d images", self.label,
                        epoch + 1, values["val_cider"], values["val_bleu_4"],
                        len(self.scores.images))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' `EarlyStopping` that goes on counting across a resumed run.

    Stops once `monitor` has not improved for `patience` epochs. Keras' callback starts
    afresh at every `fit`; this one starts from the best score and epoch the run state
    recorded, so a run killed and resumed stops where an uninterrupted one would have.

    Args:
        monitor: see `monitored`; the scores are maximised, the losses minimised.
        patience: epochs without improvement before stopping (at least 1).
        best_score: the best score so far (higher is better, as `score` gives it), or None.
        best_epoch: the epoch it was reached at (from 1), or None.
        last_epoch: the last finished epoch (0 before the first).
    """

    def __init__(self, monitor: str, patience: int, *, best_score: float | None = None,
                 best_epoch: int | None = None, last_epoch: int = 0):
        super().__init__(monitor=monitor, patience=patience,
                         mode="min" if monitor in _LOSSES else "max")
        self._resumed = (best_score, best_epoch, last_epoch)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best_score, best_epoch, last_epoch = self._resumed
        if best_score is not None and best_epoch is not None:
            self.best = best_score if self.mode == "max" else -best_score
            self.best_epoch = best_epoch - 1
            self.wait = last_epoch - best_epoch

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.stopped_epoch == epoch and self.model.stop_training:
            logger.info("Early stopping: %s has not improved for %d epochs (best epoch %d).",
                        self.monitor, self.patience, self.best_epoch + 1)


class EpochCheckpoint(keras.callbacks.Callback):
    """Epoch end: the epoch's `history.csv` row, weights and state saved into the phase's
    checkpoint, then `after_save()` (the run rewrites `history.csv`).

    Args:
        checkpoint: the phase's `PhaseCheckpoint`.
        phase: the rows' phase, `"frozen"` or `"fine_tune"`.
        monitor: with a checkpoint that keeps the best epoch, what picks it (`monitored`).
        best_score: the best score so far of a resumed phase (as `score` gives it).
        first_epoch: the run's number of the phase's epoch 0 (the first phase's last
            epoch, for fine-tuning), so that `history.csv` numbers the run's epochs.
        fields: more state fields to record at every save (`schedule_steps`, ...).
        after_save: called with no argument after each save.
    """

    def __init__(self, checkpoint: PhaseCheckpoint, phase: str, *, monitor: str | None = None,
                 best_score: float | None = None, first_epoch: int = 0,
                 fields: dict | None = None, after_save=None):
        super().__init__()
        self.checkpoint, self.phase, self.monitor = checkpoint, phase, monitor
        self.best, self.first_epoch = best_score, first_epoch
        self.fields, self.after_save = dict(fields or {}), after_save

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        number = epoch + 1
        rate = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = history_row(self.first_epoch + number, self.phase, logs, rate)
        best_score = None
        if self.monitor is not None:
            value = score(self.monitor, logs)
            if self.best is None or value > self.best:
                self.best = best_score = value
        self.checkpoint.save(self.model, number, row, best_score=best_score,
                             stopped=bool(self.model.stop_training), **self.fields)
        if self.after_save is not None:
            self.after_save()


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras' `SwapEMAWeights(swap_on_epoch=True)`, resumable: from each epoch's end to the
    next one's start the model holds the optimizer's moving average of its weights (so the
    epoch is scored and saved as the average) and the optimizer the last step's weights.

    Unlike Keras' callback, the last epoch's end keeps the last step's weights in the
    optimizer (Keras overwrites them with the average), so a run resumed with more epochs
    trains on from them; after `fit` the model holds the last step's weights, and the run
    loads its best saved epoch.

    Args:
        resumed: the run resumes from a saved epoch, whose weights were saved that way round:
            the first epoch's start swaps them back before training.
    """

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = bool(resumed)

    def on_epoch_end(self, epoch, logs=None):
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True


class ScheduledSamplingRamp(keras.callbacks.Callback):
    """Epoch start: the training model's scheduled-sampling probability for the epoch, from
    0 at the first epoch rising linearly to `final` at the last (`sampling_probability`).

    Does nothing when `final` is 0 (the model has no `ScheduledSampling` layer then).

    Args:
        final: the probability at the last epoch (`config.scheduled_sampling`).
        epochs: the cross-entropy phase's epochs (`config.epochs`).
        layer: the name of the model's `ScheduledSampling` layer.
    """

    def __init__(self, final: float, epochs: int, layer: str = "scheduled_sampling"):
        super().__init__()
        self.final, self.epochs, self.layer = float(final), int(epochs), layer

    def on_epoch_begin(self, epoch, logs=None):
        if not self.final:
            return
        value = sampling_probability(epoch, self.final, self.epochs)
        self.model.get_layer(self.layer).probability.assign(value)
        logger.info("epoch %d: scheduled sampling feeds the model's own word with "
                    "probability %.3f", epoch + 1, value)
