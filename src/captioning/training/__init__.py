"""Training: a decoder on the feature cache, then optionally the encoder from images.

    batches.py     `CaptionBatches`, one batch source for both phases (cached features or
                   images decoded in a thread pool)
    objective.py   the masked cross-entropy, its accuracy, the optimizer
    run_state.py   checkpoints, state files and `history.csv`, one run state for both phases
    callbacks.py   epoch ends: val_bleu_4, early stopping, the save
    strategies.py  `tf.distribute` strategies by name
    finetune.py    the fine-tuning phase
    scst.py        self-critical sequence training: `ScstTrainer`, `scst_epoch`, `train_scst`
    scst_phase.py  the SCST phase of a run (checkpoints, val CIDEr-D, the best epoch)
    train.py       `train`: the cross-entropy phase, then fine-tuning, then SCST, then the
                   release

Each module imports only those listed above it. `captioning.training.train` is the function
`train`; the module's other names import as `from captioning.training.train import ...`.
"""

from captioning.training.batches import (
    CachedFeatures,
    CaptionBatches,
    DecodedImages,
    usable_validation,
)
from captioning.training.finetune import fine_tune, unfreeze_top
from captioning.training.objective import masked_accuracy
from captioning.training.run_state import HISTORY_COLUMNS, RunState
from captioning.training.scst import ScstTrainer, scst_epoch, train_scst
from captioning.training.strategies import make_strategy
from captioning.training.train import TrainResult, config_for_cache, train

__all__ = [
    "CachedFeatures",
    "CaptionBatches",
    "DecodedImages",
    "HISTORY_COLUMNS",
    "RunState",
    "ScstTrainer",
    "TrainResult",
    "config_for_cache",
    "fine_tune",
    "make_strategy",
    "masked_accuracy",
    "scst_epoch",
    "train",
    "train_scst",
    "unfreeze_top",
    "usable_validation",
]
