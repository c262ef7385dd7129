"""The release files of the earlier Keras project: told apart, checked and loaded safely.

The TensorFlow 2 / Keras captioning project published on GitHub as
`Abdalrahman112/Image-captioning` (2020, TF 2.2, `tf.keras` 2.3.0-tf) released three files:

- `Encoder.hdf5`: a Functional model `Input(299, 299, 3) -> inception_v3 (a nested Model,
  include_top=False, frozen) -> Dense(256, relu) on each of the 8x8 cells -> Flatten`, giving
  16384 numbers per image. InceptionV3's `preprocess_input` (`x / 127.5 - 1`) is NOT inside
  the model: the notebook applied it to the 0..255 pixels before `encoder.predict`.
- `Decoder.hdf5`: one LSTM step, inputs `[encodings (16384,), h (768,), c (768,), previous
  token id (1,)]`, outputs `[softmax (1, 10001), h, c]`. Inside: `Embedding(10001, 256,
  mask_zero=True)` of the token, `tf.expand_dims(encodings, 1)` concatenated with it, the
  LSTM (768 units, `return_sequences`, `return_state`), a Dense `output_layer` of 10001 logits
  and `tf.nn.softmax`. TF 2.2 saved the two TF calls as `TensorFlowOpLayer` layers
  (`tf_op_layer_ExpandDims_1`, `tf_op_layer_Softmax`: a TensorFlow op named in a NodeDef);
  TF 2.4 and later save the same code as `TFOpLambda` layers (a TF API function named by its
  path, e.g. `expand_dims`, `nn.softmax`). Keras 3 reads neither; `tf-keras` reads both.
- `tokenizer.pickle`: a pickled `keras_preprocessing.text.Tokenizer` (num_words 10000, oov
  `<unk>`, markers `<sos>` and `<eos>`), read by `captioning.text.load_tokenizer`
  without unpickling any code.

Loading is safe. A Keras 2 `.hdf5` model is rebuilt from the JSON `model_config` stored in
it, and a `Lambda` layer in it carries marshalled Python bytecode that `tf_keras` runs while
rebuilding, even with `safe_mode=True` (which tf-keras only applies to `.keras` files).
So before anything is loaded, the config is read with `h5py` alone and checked:

- every layer's class must be one of `ALLOWED_LAYERS` (built-in Keras layers without code
  payloads) or a nested `Functional`/`Model`/`Sequential` model, which is checked likewise;
  a `Lambda` layer is refused by name;
- a `TFOpLambda` may only call one of `ALLOWED_TF_FUNCTIONS` and a `TensorFlowOpLayer` may
  only run one of `ALLOWED_TF_OPS` (pure tensor math: no file, string, queue or py_func op),
  with plain numbers as its constants;
- every other object the config names (initializers, regularizers, constraints, dtype
  policies) must be one of `ALLOWED_OBJECTS`, a `module` may only be a Keras module of
  `ALLOWED_MODULES`, and activations must be among `ALLOWED_ACTIVATIONS`.

Anything else raises `UnsafeFileError` naming the file and the layer, and nothing runs. Then
`tf_keras.models.load_model(path, compile=False, safe_mode=True)` rebuilds the model.

`captioning.inference.legacy` captions with these files as that project's notebook did.

Example:
>>> is_legacy_model("Decoder.hdf5")                                      # doctest: +SKIP
True
>>> decoder = load_legacy_model("Decoder.hdf5")                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from captioning.errors import CaptioningError, ReleaseError, UnsafeFileError
from captioning.release.model_file import check_legacy_sizes, read_model_container
from captioning.utils.backends import require_tensorflow
from captioning.utils.files import display_path

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "ALLOWED_LAYERS",
    "ALLOWED_MODULES",
    "ALLOWED_OBJECTS",
    "ALLOWED_TF_FUNCTIONS",
    "ALLOWED_TF_OPS",
    "TF_KERAS_MISSING",
    "check_legacy_model",
    "import_tf_keras",
    "is_legacy_model",
    "load_legacy_model",
    "load_legacy_models",
]

TF_KERAS_MISSING = (
    "reading releases of the earlier Keras project needs the optional tf-keras package: "
    "pip install tf-keras"
)

ALLOWED_LAYERS = frozenset({
    "InputLayer", "Dense", "Flatten", "Reshape", "Dropout", "Activation", "Softmax",
    "Embedding", "LSTM", "LSTMCell", "GRU", "GRUCell",
    "Conv2D", "BatchNormalization", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "Concatenate", "Add", "Multiply", "Dot", "RepeatVector",
})
"""Built-in Keras layer classes a legacy model may use (InceptionV3, the decoders of the
earlier project with and without attention, and plain variations of them)."""

_MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})

ALLOWED_TF_FUNCTIONS = frozenset({
    "expand_dims", "squeeze", "compat.v1.squeeze", "reshape", "concat", "transpose",
    "compat.v1.transpose", "identity", "cast",
    "nn.softmax", "nn.log_softmax", "nn.relu", "math.tanh", "math.sigmoid", "math.exp",
    "math.log", "math.add", "math.subtract", "math.multiply", "math.truediv",
    "math.divide", "math.maximum", "math.minimum", "math.reduce_mean", "math.reduce_sum",
    "math.reduce_max", "linalg.matmul", "__operators__.add",
})
"""TF API functions (as `TFOpLambda` names them, without `tf.`) a legacy model may call:
shape and elementwise math only. `TFOpLambda` resolves any public TF symbol by name
(`io.write_file`, `py_function`, ...), hence the list."""

ALLOWED_TF_OPS = frozenset({
    "ExpandDims", "Squeeze", "Reshape", "ConcatV2", "Transpose", "Identity", "Cast",
    "Softmax", "LogSoftmax", "Relu", "Tanh", "Sigmoid", "Exp", "Log",
    "AddV2", "Add", "Sub", "Mul", "RealDiv", "Maximum", "Minimum",
    "Mean", "Sum", "Max", "MatMul", "BatchMatMulV2",
})
"""TensorFlow ops (as TF 2.2's `TensorFlowOpLayer` names them in its NodeDef) a legacy model
may run. Any registered op could be named there (`WriteFile`, `ReadFile`, ...), hence the
list."""

ALLOWED_OBJECTS = frozenset({
    # initializers
    "Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal", "TruncatedNormal",
    "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal",
    "LecunUniform", "LecunNormal", "Orthogonal", "Identity",
    # regularizers and constraints
    "L1", "L2", "L1L2", "MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm", "RadialConstraint",
    # dtype policies, and the tuples and shapes of Keras 2 configs
    "Policy", "DTypePolicy", "__tuple__", "TensorShape",
})
"""Non-layer objects (by class name) a legacy model config may name."""

ALLOWED_MODULES = frozenset({
    "keras", "keras.initializers", "keras.regularizers", "keras.constraints",
    "keras.layers", "keras.activations", "keras.mixed_precision",
    "tf_keras", "tf_keras.initializers", "tf_keras.regularizers", "tf_keras.constraints",
    "tf_keras.layers", "tf_keras.activations", "tf_keras.mixed_precision",
})
"""`module` values a config may hold: tf-keras imports any module named there."""

ALLOWED_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "log_softmax", "tanh",
    "softplus", "softsign", "elu", "selu", "exponential", "swish", "silu", "gelu", "mish",
})

_KERAS2_ONLY_CLASSES = frozenset({"TFOpLambda", "TensorFlowOpLayer", "SlicingOpLambda",
                                  "Model"})
_MAX_NODES = 2_000_000


# ---------------------------------------------------------------------------------------------
# Reading and checking the HDF5 model config, with h5py only.


def _read_model_attrs(path) -> tuple[Path, dict, str | None]:
    """Returns `(path, model_config, keras_version)` of a Keras `.hdf5` model file, read
    within the limits of `captioning.release.model_file.read_model_container` (a regular
    file of bounded size, bounded JSON, weights that fit in the file) and with the sizes it
    declares checked (`check_legacy_sizes`)."""
    path = Path(os.fspath(path))
    config, version, stored = read_model_container(path)
    check_legacy_sizes(display_path(path), config, stored)
    return path, config, version


def _major_version(version: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", version or "")
    return int(match.group(1)) if match else None


def _class_names(config) -> set:
    names, stack = set(), [config]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value.get("class_name"), str):
                names.add(value["class_name"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return names


def is_legacy_model(path) -> bool:
    """Tells a Keras 2 (TF 2.x `tf.keras`) `.hdf5` model from one saved by Keras 3.

    Only the file's `keras_version` and `model_config` attributes are read, with h5py; no
    code runs. A file is legacy when its `keras_version` is below 3, or, without a version,
    when its config uses classes Keras 3 lacks (`TFOpLambda`, `TensorFlowOpLayer`, a `Model`
    class) or Keras 2's `batch_input_shape`.

    Raises:
        ReleaseError: the file is missing, not HDF5, holds only weights or no readable config.
    """
    _, config, version = _read_model_attrs(path)
    major = _major_version(version)
    if major is not None:
        return major < 3
    if _class_names(config) & _KERAS2_ONLY_CLASSES:
        return True
    return '"batch_input_shape"' in json.dumps(config)


def check_legacy_model(path) -> dict:
    """Checks a legacy `.hdf5` model's config against the allow-lists, before any loading.

    Returns:
        The parsed `model_config`.

    Raises:
        UnsafeFileError: a `Lambda` layer, a layer class outside `ALLOWED_LAYERS`, a TF
            function or op outside the allow-lists, or another object, module or activation
            that is not allowed; the message names the file and the layer.
        ReleaseError: the file is missing, not HDF5 or holds only weights.
    """
    path, config, _ = _read_model_attrs(path)
    try:
        _Checker(path).layer(config, where="the model")
    except RecursionError:
        raise UnsafeFileError(f"{path}: its model_config nests models too deeply to be a "
                              "genuine model; refusing to load it") from None
    return config


class _Checker:
    """Walks a Keras 2 model config and refuses anything outside the allow-lists."""

    def __init__(self, path):
        self.path = path
        self.nodes = 0

    def refuse(self, what: str):
        raise UnsafeFileError(f"{self.path}: {what}; refusing to load it. "
                              "Only load models from a source you trust.")

    def layer(self, entry, where):
        if not isinstance(entry, dict):
            self.refuse(f"{where} is not a layer description")
        cls = entry.get("class_name")
        config = entry.get("config")
        name = entry.get("name")
        if name is None and isinstance(config, dict):
            name = config.get("name")
        label = f"layer {_short(name)}" if name is not None else where
        if not isinstance(cls, str):
            self.refuse(f"{label} names no class")
        if cls == "Lambda":
            self.refuse(f"{label} is a Lambda layer, which holds marshalled Python bytecode "
                        "that Keras runs while loading the model")
        if cls in _MODEL_CLASSES:
            layers = config.get("layers") if isinstance(config, dict) else config
            if not isinstance(layers, list):
                self.refuse(f"{label} ({cls}) lists no layers")
            for index, layer in enumerate(layers):
                self.layer(layer, where=f"layer {index} of {label}")
            rest = ({k: v for k, v in config.items() if k != "layers"}
                    if isinstance(config, dict) else {})
            self.values(rest, label)
        elif cls == "TFOpLambda":
            function = config.get("function") if isinstance(config, dict) else None
            if not _allowed(function, ALLOWED_TF_FUNCTIONS):
                allowed = ", ".join(sorted(ALLOWED_TF_FUNCTIONS))
                self.refuse(f"{label} calls tf.{_short(function)}, which is not among the "
                            f"TensorFlow functions allowed ({allowed})")
            self.values(config, label)
        elif cls == "TensorFlowOpLayer":
            self.tf_op_layer(config, label)
        elif cls in ALLOWED_LAYERS:
            self.values(config, label)
        else:
            self.refuse(f"{label} is a {_short(cls)} layer, which is not among the built-in "
                        f"Keras layers this reader allows ({', '.join(sorted(ALLOWED_LAYERS))})")
        self.values({k: v for k, v in entry.items() if k not in ("class_name", "config")},
                    label)

    def tf_op_layer(self, config, label):
        if not isinstance(config, dict) or not isinstance(config.get("node_def"), dict):
            self.refuse(f"{label} (TensorFlowOpLayer) holds no NodeDef")
        op = config["node_def"].get("op")
        if not _allowed(op, ALLOWED_TF_OPS):
            self.refuse(f"{label} runs the TensorFlow op {_short(op)}, which is not among the "
                        f"ops allowed ({', '.join(sorted(ALLOWED_TF_OPS))})")
        constants = config.get("constants") or {}
        if not isinstance(constants, dict) or not all(_is_numeric(v) for v in constants.values()):
            self.refuse(f"{label} (TensorFlowOpLayer) has constants that are not plain numbers")
        self.values(config, label)

    def values(self, value, label):
        """Checks the objects, modules and activations named anywhere inside `value`."""
        stack = [value]
        while stack:
            item = stack.pop()
            self.nodes += 1
            if self.nodes > _MAX_NODES:
                self.refuse("its model_config is far larger than any genuine model's")
            if isinstance(item, list):
                stack.extend(item)
                continue
            if not isinstance(item, dict):
                continue
            if "class_name" in item:
                cls = item["class_name"]
                if cls == "Lambda":
                    self.refuse(f"{label} holds a Lambda layer, which holds marshalled Python "
                                "bytecode that Keras runs while loading the model")
                if not _allowed(cls, ALLOWED_OBJECTS):
                    self.refuse(f"{label} names the class {_short(cls)}, which is not among the "
                                "initializers, regularizers, constraints and dtype policies "
                                "allowed")
                registered = item.get("registered_name")
                if registered is not None and registered != cls:
                    self.refuse(f"{label} names the registered object {_short(registered)}")
            if "module" in item and item["module"] is not None:
                if not _allowed(item["module"], ALLOWED_MODULES):
                    self.refuse(f"{label} names the module {_short(item['module'])}, which "
                                "Keras would import")
            for key in ("activation", "recurrent_activation"):
                value = item.get(key)
                if value is not None and not isinstance(value, dict):  # dicts: checked above
                    if not _allowed(value, ALLOWED_ACTIVATIONS):
                        self.refuse(f"{label} has the {key} {_short(value)}, which is not "
                                    "a built-in activation allowed")
            if "function_type" in item:
                self.refuse(f"{label} holds a serialized Python function")
            stack.extend(item.values())


def _allowed(value, allowed) -> bool:
    return isinstance(value, str) and value in allowed


def _is_numeric(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            return False
    return True


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# Loading.


def import_tf_keras():
    """The `tf_keras` module, or a CaptioningError saying how to install it."""
    require_tensorflow("reading releases of the earlier Keras project",
                       "pip install tensorflow tf-keras")
    try:
        import tf_keras
    except ImportError:
        raise CaptioningError(TF_KERAS_MISSING) from None
    return tf_keras


def load_legacy_model(path):
    """Checks (`check_legacy_model`) and then loads a Keras 2 `.hdf5` model with tf-keras.

    Returns:
        A `tf_keras` model, uncompiled.

    Raises:
        UnsafeFileError: the config names something not allowed (nothing was loaded).
        CaptioningError: tf-keras is not installed.
        ReleaseError: tf-keras cannot load the file.
    """
    return load_legacy_models(path)[0]


def load_legacy_models(*paths) -> list:
    """Checks every model file first, then loads them all (see `load_legacy_model`)."""
    for path in paths:
        check_legacy_model(path)
    tf_keras = import_tf_keras()
    return [_load(tf_keras, path) for path in paths]


def _load(tf_keras, path):
    try:
        return tf_keras.models.load_model(os.fspath(path), compile=False, safe_mode=True)
    except CaptioningError:
        raise
    except Exception as error:
        raise ReleaseError(f"{Path(path).name} ({path}): cannot be loaded as a Keras model "
                           f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") \
            from None
