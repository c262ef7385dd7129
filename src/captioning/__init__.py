"""captioning: image captioning on TensorFlow/Keras 3.

A pretrained CNN encoder turns an image into features and a recurrent decoder writes the
sentence. Importing the package registers its custom Keras layers, which is all that
loading a release needs.
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides our own output.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from captioning import layers  # noqa: F401  (registers the custom layers)
from captioning.errors import (  # noqa: F401
    CacheError,
    CaptioningError,
    ConfigError,
    DatasetError,
    ImageError,
    ReleaseError,
    UnsafeFileError,
)


def __getattr__(name):
    # The heavier entry points import on first use, so `import captioning` stays quick.
    lazy = {
        "CaptionConfig": ("captioning.config", "CaptionConfig"),
        "read_captions": ("captioning.datasets", "read_captions"),
        "load_tokenizer": ("captioning.tokenizer", "load_tokenizer"),
        "CaptionTokenizer": ("captioning.tokenizer", "CaptionTokenizer"),
        "load_image": ("captioning.images", "load_image"),
        "build_encoder": ("captioning.encoders", "build_encoder"),
        "build_decoder": ("captioning.decoders", "build_decoder"),
        "build_cache": ("captioning.features", "build_cache"),
        "load_features": ("captioning.features", "load_features"),
        "train": ("captioning.training", "train"),
        "load_release": ("captioning.release", "load_release"),
        "Captioner": ("captioning.captioner", "Captioner"),
        "coco_scores": ("captioning.evaluation", "coco_scores"),
        "make_dataset": ("captioning.synthetic", "make_dataset"),
    }
    if name in lazy:
        import importlib

        module, attribute = lazy[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'captioning' has no attribute {name!r}")
