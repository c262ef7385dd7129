"""captioning: image captioning on TensorFlow/Keras 3.

A pretrained CNN encoder turns an image into features and a recurrent decoder writes the
sentence. Importing the package makes sure its custom Keras layers are registered before
any model loads, which is all that loading a release needs: at once when Keras is already
imported, otherwise the moment it is (`import captioning, keras` then
`keras.saving.load_model(...)` works). The package itself does not import Keras, so
`python -m captioning` checks its arguments before TensorFlow starts.
"""

__version__ = "0.1.0"

import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import os as _os
import sys as _sys

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides our own output.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _RegisterLayersWithKeras(_importlib_abc.MetaPathFinder):
    """Imports `captioning.layers` (which registers the layers) right after Keras loads."""

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._finding:
            return None
        self._finding = True
        try:
            spec = _importlib_util.find_spec("keras")
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader, exec_module = spec.loader, spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            del loader.exec_module
            if self in _sys.meta_path:
                _sys.meta_path.remove(self)
            _importlib.import_module("captioning.layers")

        loader.exec_module = exec_then_register  # this spec's own loader instance
        return spec


if "keras" in _sys.modules:
    from captioning import layers  # noqa: F401  (registers the custom layers)
elif not any(isinstance(f, _RegisterLayersWithKeras) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _RegisterLayersWithKeras())

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
    if name == "layers":
        return _importlib.import_module("captioning.layers")
    if name in lazy:
        module, attribute = lazy[name]
        return getattr(_importlib.import_module(module), attribute)
    raise AttributeError(f"module 'captioning' has no attribute {name!r}")
