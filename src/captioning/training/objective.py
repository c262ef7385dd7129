"""What both training phases optimise: the masked cross-entropy (with optional label
smoothing), its accuracy, the optimizer, and the scheduled-sampling ramp."""

from __future__ import annotations

import keras
from keras import ops

from captioning.config import LR_SCHEDULES
from captioning.utils.checks import check_choice, check_int, check_number

# The cosine schedule ends at this fraction of the initial learning rate.
COSINE_FLOOR = 0.05


@keras.saving.register_keras_serializable(package="captioning")
class MaskedCrossEntropy(keras.losses.Loss):
    """Cross-entropy of logits against word ids, averaged over the words (padding, id 0,
    ignored), with optional label smoothing.

    With smoothing `e` the target puts `1 - e` on the true word and spreads `e` evenly over
    the vocabulary (Szegedy et al. 2016, as `keras.losses.CategoricalCrossentropy` does), so
    a word's loss is `-(1 - e) log p(word) - e mean_v log p(v)`; no one-hot target is built.
    With `e = 0` it is `SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)`.

    Args:
        label_smoothing: `e`, in [0, 1).

    Example:
    >>> loss = MaskedCrossEntropy(label_smoothing=0.1)
    >>> round(float(loss([[1, 0]], [[[0.0, 0.0], [5.0, -5.0]]])), 4)  # padding ignored
    0.6931
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "masked_cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        check_number("label_smoothing", label_smoothing, 0.0, 1.0, exclusive_maximum=True)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        # y_true: (batch, steps) ids; y_pred: (batch, steps, vocab) logits
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        loss = -ops.take_along_axis(log_probs, ops.expand_dims(y_true, -1), axis=-1)[..., 0]
        if self.label_smoothing:
            smoothing = self.label_smoothing
            loss = (1.0 - smoothing) * loss - smoothing * ops.mean(log_probs, axis=-1)
        mask = ops.cast(ops.not_equal(y_true, 0), "float32")
        # Keras divides the sum by every position; this makes it divide by the words.
        scale = ops.cast(ops.size(mask), "float32") / ops.maximum(ops.sum(mask), 1.0)
        return loss * mask * scale  # (batch, steps)

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing})
        return config


def masked_accuracy(y_true, y_pred):
    """Token accuracy over the non-padding positions (id 0 is padding)."""
    y_true = ops.cast(y_true, "int32")
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


def make_optimizer(learning_rate: float, clipnorm: float | None, *,
                   schedule: str = "constant", decay_steps: int = 1, ema: float = 0.0):
    """Adam, clipped by global norm, at a constant or cosine-decaying learning rate.

    Args:
        learning_rate: the initial learning rate.
        clipnorm: the global gradient norm to clip to; 0 or None for no clipping.
        schedule: `"constant"` or `"cosine"` (down to `COSINE_FLOOR` of the initial rate
            after `decay_steps` steps, then constant).
        decay_steps: the cosine schedule's length in steps.
        ema: with a momentum in (0, 1), the optimizer also keeps an exponential moving
            average of the weights (`SwapEMAWeights` puts it in the model); 0: none.
    """
    check_number("learning_rate", learning_rate, 0, exclusive_minimum=True)
    check_number("clipnorm", clipnorm, 0, allow_none=True)
    check_choice("schedule", schedule, LR_SCHEDULES)
    check_int("decay_steps", decay_steps, 0)
    check_number("ema", ema, 0.0, 1.0, exclusive_maximum=True)
    rate = learning_rate
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(decay_steps, 1), alpha=COSINE_FLOOR)
    return keras.optimizers.Adam(learning_rate=rate, global_clipnorm=clipnorm or None,
                                 use_ema=ema > 0, ema_momentum=ema or 0.99)


def compile_for_captions(model: keras.Model, optimizer, *,
                         label_smoothing: float = 0.0) -> None:
    """Compiles a teacher-forcing model (logits out) with the masked cross-entropy (padding,
    id 0, ignored; `MaskedCrossEntropy`, smoothed by `label_smoothing`) and
    `masked_accuracy`."""
    model.compile(
        optimizer=optimizer,
        loss=MaskedCrossEntropy(label_smoothing),
        metrics=[masked_accuracy],
    )


def sampling_probability(epoch: int, final: float, epochs: int) -> float:
    """The scheduled-sampling probability of an epoch: 0 at the first, rising linearly to
    `final` at the last of `epochs` (and `final` after it; a one-epoch run uses `final`).

    Args:
        epoch: the epoch, from 0.
        final: the probability at the last epoch (`config.scheduled_sampling`), in [0, 1].
        epochs: the cross-entropy phase's epochs.

    Example:
    >>> [sampling_probability(e, 0.25, 3) for e in range(4)]
    [0.0, 0.125, 0.25, 0.25]
    """
    check_int("epoch", epoch, 0)
    check_number("final", final, 0.0, 1.0)
    check_int("epochs", epochs, 1)
    if epochs == 1:
        return float(final)
    return float(final) * min(epoch / (epochs - 1), 1.0)
