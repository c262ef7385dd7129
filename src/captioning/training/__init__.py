"""Training a decoder on the cache, fine-tuning the encoder, distribution strategies."""

from captioning.training.train import (  # noqa: F401
    CaptionBatches,
    TrainResult,
    train,
    config_for_cache,
)
from captioning.training.strategies import (  # noqa: F401
    make_strategy,
)

__all__ = [
    "CaptionBatches",
    "TrainResult",
    "config_for_cache",
    "make_strategy",
    "train",
]
