"""Which Keras backend runs, and what needs TensorFlow itself.

The pipeline runs on Keras' TensorFlow backend (the default) and on its JAX backend, where
TensorFlow need not be installed. Only three features are TensorFlow's own: `tf.distribute`
strategies (`--strategy mirrored`, `tpu`, `multi_worker`) and the legacy tf-keras reader of
the earlier project's files. They ask for TensorFlow through `require_tensorflow`, which
names the feature and the fix on one line. Nothing here imports Keras or TensorFlow unless
asked to.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from captioning.errors import CaptioningError

SUPPORTED_BACKENDS = ("tensorflow", "jax")
# The package each backend imports.
_BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
INSTALL_HINT = {
    "tensorflow": "pip install tensorflow",
    "jax": 'pip install "captioning[jax]" (or pip install jax)',
}


def keras_backend() -> str:
    """The backend Keras runs (or will run once imported), without importing Keras.

    Keras' own order: the `KERAS_BACKEND` variable, else `keras.json` in `KERAS_HOME` (or
    `~/.keras`), else TensorFlow.
    """
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        saved = json.loads((Path(home) / "keras.json").read_text())
        return str(saved.get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def has_tensorflow() -> bool:
    """Whether TensorFlow is installed (it is not imported here)."""
    return _installed("tensorflow")


def _installed(package: str) -> bool:
    if package in sys.modules:  # None there: an import of it was blocked
        return sys.modules[package] is not None
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a finder that refuses it
        return False


def check_backend() -> str:
    """The Keras backend, if this package runs on it and it is installed.

    Raises:
        CaptioningError: the backend is not one of `SUPPORTED_BACKENDS`, or its package is
            not installed; the message says how to switch or what to install.
    """
    name = keras_backend()
    if name not in SUPPORTED_BACKENDS:
        if name == "torch":
            raise CaptioningError(
                "Keras' torch backend is not supported (this package is built and tested on "
                "TensorFlow and JAX); set KERAS_BACKEND=jax or "
                "KERAS_BACKEND=tensorflow")
        raise CaptioningError(f"Keras backend {name!r} is not supported; set KERAS_BACKEND to "
                              f"one of {', '.join(SUPPORTED_BACKENDS)}")
    package = _BACKEND_PACKAGES[name]
    if not _installed(package):
        other = [b for b in SUPPORTED_BACKENDS
                 if b != name and _installed(_BACKEND_PACKAGES[b])]
        switch = f", or set KERAS_BACKEND={other[0]}" if other else ""
        raise CaptioningError(f"Keras runs on {name}, which is not installed: "
                              f"{INSTALL_HINT[name]}{switch}")
    return name


def require_tensorflow(feature: str, install: str = "pip install tensorflow"):
    """Imports TensorFlow for a feature that is TensorFlow's own.

    Args:
        feature: what needs it, as the user asked for it (e.g. `"--strategy mirrored"`).
        install: the command that installs what the feature needs.

    Returns:
        The `tensorflow` module.

    Raises:
        CaptioningError: TensorFlow is not installed, or Keras runs on another backend
            (a `tf.distribute` strategy trains Keras models on TensorFlow only).
    """
    if not has_tensorflow():
        raise CaptioningError(f"{feature} needs TensorFlow, which is not installed: {install} "
                              "(everything else runs on JAX without it)")
    return importlib.import_module("tensorflow")


def require_tensorflow_backend(feature: str):
    """`require_tensorflow`, and Keras running on TensorFlow (for `tf.distribute`)."""
    tf = require_tensorflow(feature)
    name = keras_backend()
    if name != "tensorflow":
        raise CaptioningError(f"{feature} is TensorFlow's tf.distribute, but Keras runs on "
                              f"{name}; set KERAS_BACKEND=tensorflow, or use --strategy auto "
                              f"(on JAX: data parallel over every local device)")
    return tf


@contextlib.contextmanager
def tensorflow_left_alone():
    """A context in which Keras does not import TensorFlow for its own optional checks.

    Keras' legacy `.hdf5` reader (`keras.src.legacy.saving.json_utils`) asks whether
    TensorFlow is installed for every object of a model config, to decode the `TensorShape`
    and `TypeSpec` entries of TF 2 files, and that question imports TensorFlow: seconds of
    start-up and TensorFlow's C++ log lines on stderr, for a process that runs on JAX. The
    files this package writes hold no such entries. Inside this context, on a backend other
    than TensorFlow and while TensorFlow is not imported yet, Keras' lazy TensorFlow module
    answers "not available"; its earlier answer is restored on leaving. On TensorFlow, or
    with TensorFlow already imported, it changes nothing.
    """
    if "tensorflow" in sys.modules or keras_backend() == "tensorflow":
        yield
        return
    try:
        from keras.src.utils import module_utils

        lazy = module_utils.tensorflow
        previous = lazy._available
    except (ImportError, AttributeError):  # another Keras layout: leave it as it is
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = previous
