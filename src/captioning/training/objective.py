"""What both training phases optimise: the masked cross-entropy, its accuracy, the optimizer."""

from __future__ import annotations

import keras
from keras import ops

from captioning.config import LR_SCHEDULES
from captioning.utils.checks import check_choice, check_int, check_number

# The cosine schedule ends at this fraction of the initial learning rate.
COSINE_FLOOR = 0.05


def masked_accuracy(y_true, y_pred):
    """Token accuracy over the non-padding positions (id 0 is padding)."""
    y_true = ops.cast(y_true, "int32")
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


def make_optimizer(learning_rate: float, clipnorm: float | None, *,
                   schedule: str = "constant", decay_steps: int = 1):
    """Adam, clipped by global norm, at a constant or cosine-decaying learning rate.

    Args:
        learning_rate: the initial learning rate.
        clipnorm: the global gradient norm to clip to; 0 or None for no clipping.
        schedule: `"constant"` or `"cosine"` (down to `COSINE_FLOOR` of the initial rate
            after `decay_steps` steps, then constant).
        decay_steps: the cosine schedule's length in steps.
    """
    check_number("learning_rate", learning_rate, 0, exclusive_minimum=True)
    check_number("clipnorm", clipnorm, 0, allow_none=True)
    check_choice("schedule", schedule, LR_SCHEDULES)
    check_int("decay_steps", decay_steps, 0)
    rate = learning_rate
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(decay_steps, 1), alpha=COSINE_FLOOR)
    return keras.optimizers.Adam(learning_rate=rate, global_clipnorm=clipnorm or None)


def compile_for_captions(model: keras.Model, optimizer) -> None:
    """Compiles a teacher-forcing model (logits out) with the masked cross-entropy (padding,
    id 0, ignored) and `masked_accuracy`."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
        metrics=[masked_accuracy],
    )
