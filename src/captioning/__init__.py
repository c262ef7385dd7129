"""captioning: image captioning on Keras 3 (TensorFlow by default, JAX too).

A pretrained CNN encoder turns an image into features and a recurrent decoder writes the
sentence. The package is laid out by stage (see docs/ARCHITECTURE.md): `data`, `text`,
`models`, `release`, `cache`, `training`, `inference`, `evaluation`, `plots`, `cli`.

`import captioning` is cheap: it imports no Keras or TensorFlow. The public entry points
below are imported on first use (PEP 562). Loading a release registers the custom layers
itself; to load a model file with bare Keras, import `captioning.models.layers` first.
"""

from __future__ import annotations

import importlib as _importlib

from captioning.errors import (  # noqa: F401
    CacheError,
    CaptioningError,
    ConfigError,
    DatasetError,
    ImageError,
    ReleaseError,
    UnsafeFileError,
)

__version__ = "0.2.0"

_LAZY = {
    "CaptionConfig": "captioning.config",
    "read_captions": "captioning.data.captions",
    "assign_splits": "captioning.data.splits",
    "load_image": "captioning.data.images",
    "make_dataset": "captioning.data.synthetic",
    "load_tokenizer": "captioning.text",
    "CaptionTokenizer": "captioning.text",
    "build_encoder": "captioning.models.encoders",
    "build_decoder": "captioning.models.decoders",
    "load_release": "captioning.release",
    "build_cache": "captioning.cache",
    "load_features": "captioning.cache",
    "train": "captioning.training",
    "Captioner": "captioning.inference",
    "coco_scores": "captioning.evaluation",
}

__all__ = sorted(_LAZY) + ["CacheError", "CaptioningError", "ConfigError", "DatasetError",
                           "ImageError", "ReleaseError", "UnsafeFileError", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'captioning' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
