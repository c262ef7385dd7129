"""Checks of a Keras 3 `.hdf5` model file that run before Keras allocates anything for it.

A model file can declare sizes that Keras would allocate before it notices that they do not
match the weights stored (a 2 GB `Embedding` in a 1.5 MB file), tensors that take gigabytes
per image (a 4096 x 4096 input), an undefined input size, a name Keras copies into every
operation it traces, or an "activation" that is any function of `keras.activations` (such as
`deserialize`). `check_model_file` refuses all of these, in two steps:

1. `check_model_config`, with h5py and JSON only: the file is a regular file of at most
   `MAX_MODEL_BYTES`; its `model_config` is small, shallow JSON without huge integers or long
   strings; the model and every nested model are Functional (no `Sequential`); names are
   short; activations are built-in ones; every input has a fixed, bounded size; and the
   weights stored in the file fit in the file (none declared larger than the file holds).
2. `check_model_build`: Keras builds the model from its config with no variable allocated
   (`keras.StatelessScope`); then every variable must match the weights stored (in bytes),
   and every tensor of every layer must hold at most `MAX_TENSOR_ELEMENTS` numbers per image.

Each refusal is a `ReleaseError` (or `UnsafeFileError`) naming the file, the layer and the
value. Only then does `captioning.release.load.load_model_file` let Keras load the file.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from captioning.errors import ReleaseError, UnsafeFileError
from captioning.release.limits import (
    MAX_IMAGE_SIDE,
    MAX_JSON_DEPTH,
    MAX_JSON_INT_DIGITS,
    MAX_MODEL_BYTES,
    MAX_MODEL_CONFIG_BYTES,
    MAX_NAME_LENGTH,
    MAX_STRING_LENGTH,
    MAX_TENSOR_ELEMENTS,
)

MAX_LAYER_SIZE = 10_000_000
"""The largest units, filters, vocabulary or repeat count a Keras 2 layer may declare."""
from captioning.utils.files import (
    JsonLimitError,
    display_path,
    format_size,
    open_regular,
    parse_json_limited,
)

logger = logging.getLogger(__name__)

KERAS_ACTIVATIONS = frozenset({
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus",
    "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh",
    "tanh_shrink", "threshold",
})
"""The activations a model file may name: Keras' built-in ones. `keras.activations.get`
resolves any public name of that module, `serialize` and `deserialize` included."""

_MODEL_CLASSES = frozenset({"Functional", "Model"})
_SLACK_BYTES = 2**20  # variables a layer may keep out of the file (none known; a margin)
_INPUT_SHAPE_KEYS = ("batch_shape", "batch_input_shape")


def check_model_file(path, what: str | None = None) -> None:
    """Both checks of the module docstring; raises before anything large is allocated."""
    config = check_model_config(path, what)
    check_model_build(path, config, what)


def check_model_config(path, what: str | None = None) -> dict:
    """Step 1 of the module docstring (h5py and JSON only, no Keras).

    Args:
        path: the `.hdf5` file.
        what: how messages name the file (default: its path).

    Returns:
        The parsed `model_config`.

    Raises:
        ReleaseError: the file is no regular file, too large, not HDF5, has no config, or
            declares a size beyond a limit or beyond the file.
        UnsafeFileError: a `Sequential` model, or an activation that is not a built-in one.
    """
    config, _, _ = read_model_container(path, what)
    _ConfigChecker(what or display_path(path)).model(config, "the model")
    return config


def read_model_container(path, what: str | None = None) -> tuple[dict, str | None, int]:
    """Reads a `.hdf5` model file's config within the limits, with h5py only.

    The file must be a regular file of at most `MAX_MODEL_BYTES`, its `model_config` at
    most `MAX_MODEL_CONFIG_BYTES` of JSON within the JSON limits, and the datasets it holds
    must not declare more bytes than the file has.

    Returns:
        `(config, keras_version or None, bytes of weights stored)`.

    Raises:
        ReleaseError: any of these does not hold; the message names the file and the value.
    """
    import h5py

    name = what or display_path(path)
    with open_regular(path, what="model file", error=ReleaseError) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_MODEL_BYTES:
            raise ReleaseError(f"{name}: the model file is {format_size(size)}, more than the "
                               f"{format_size(MAX_MODEL_BYTES)} a release model may have")
        try:
            with h5py.File(handle, "r") as file:
                raw = _read_config_attribute(file, name)
                version = file.attrs.get("keras_version")
                stored = _stored_weight_bytes(file, name)
        except OSError as error:
            raise ReleaseError(f"{name}: not a Keras .hdf5 model file (HDF5 cannot read it: "
                               f"{str(error).splitlines()[0][:160]})") from None
    if stored > size:
        raise ReleaseError(f"{name}: its weights declare {format_size(stored)} but the file "
                           f"holds {format_size(size)}; the file is damaged or forged")
    try:
        config = parse_json_limited(raw, max_int_digits=MAX_JSON_INT_DIGITS,
                                    max_depth=MAX_JSON_DEPTH, max_string=MAX_STRING_LENGTH)
    except JsonLimitError as error:
        raise ReleaseError(f"{name}: its model_config is not acceptable JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ReleaseError(f"{name}: its model_config does not describe a Keras model")
    if isinstance(version, np.ndarray) and version.shape == ():
        version = version.item()
    if isinstance(version, (bytes, np.bytes_)):
        version = bytes(version)[:64].decode("utf-8", "replace")
    return config, (None if version is None else str(version)[:64]), stored


def check_legacy_sizes(name, config, stored: int) -> None:
    """The sizes a Keras 2 config declares, for the earlier project's files (tf-keras builds
    them, so step 2 cannot run): fixed, bounded inputs, short names, bounded units, and
    `Embedding` tables no larger than the weights the file stores.

    Raises:
        ReleaseError: a size is beyond a limit (the message names the layer and the value).
    """
    checker = _ConfigChecker(name)
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        stack.extend(item.values())
        layer = item.get("config")
        if not isinstance(item.get("class_name"), str) or not isinstance(layer, dict):
            continue
        label = f"layer {_short(layer.get('name', item.get('name')))}"
        checker.name_of(layer.get("name"), label)
        if item["class_name"] == "InputLayer":
            checker.input_shape(layer, label)
        for key in ("units", "filters", "output_dim", "n", "input_dim"):
            value = layer.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and (
                    value > MAX_LAYER_SIZE or value < 0):
                checker.refuse(f"{label} has {key} {value}, more than the {MAX_LAYER_SIZE} "
                               "allowed")
        if item["class_name"] == "Embedding":
            dims = (layer.get("input_dim"), layer.get("output_dim"))
            if all(isinstance(d, int) for d in dims) and dims[0] * dims[1] * 4 > stored:
                checker.refuse(f"{label} declares an embedding table of {dims[0]} x {dims[1]} "
                               f"({format_size(dims[0] * dims[1] * 4)}), more than the "
                               f"{format_size(stored)} of weights the file stores")


def _read_config_attribute(file, name) -> bytes:
    if "model_config" not in file.attrs:
        raise ReleaseError(f"{name}: holds no model_config, only weights; a release model is "
                           "a whole model as model.save wrote it")
    attribute = file.attrs.get_id("model_config")
    if attribute.get_storage_size() > MAX_MODEL_CONFIG_BYTES:
        raise ReleaseError(f"{name}: its model_config is "
                           f"{format_size(attribute.get_storage_size())}, more than the "
                           f"{format_size(MAX_MODEL_CONFIG_BYTES)} of any genuine model")
    value = file.attrs["model_config"]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if not isinstance(value, (bytes, np.bytes_)):
        raise ReleaseError(f"{name}: its model_config is not text")
    return bytes(value)


def _stored_weight_bytes(file, name) -> int:
    """The bytes every dataset of the file declares (read from the metadata only)."""
    import h5py

    total = 0

    def visit(path, item):
        nonlocal total
        if isinstance(item, h5py.Dataset):
            if item.dtype.kind not in "biuf":
                raise ReleaseError(f"{name}: the dataset {display_path(path, 80)} holds "
                                   f"{item.dtype} values, not numbers")
            total += math.prod(item.shape or ()) * item.dtype.itemsize

    file.visititems(visit)
    return total


class _ConfigChecker:
    """Walks a model config: classes, names, activations and input shapes."""

    def __init__(self, name):
        self.name = name

    def refuse(self, what, error=ReleaseError):
        raise error(f"{self.name}: {what}; refusing to load it")

    def model(self, entry, where):
        cls = entry.get("class_name")
        if cls == "Sequential":
            self.refuse(f"{where} is a Sequential model; a release holds Functional models "
                        "only", UnsafeFileError)
        if cls not in _MODEL_CLASSES:
            self.refuse(f"{where} is a {_short(cls)}, not a Functional model")
        config = entry.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            self.refuse(f"{where} lists no layers")
        self.name_of(config.get("name", entry.get("name")), where)
        for layer in config["layers"]:
            self.layer(layer)

    def layer(self, entry):
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            self.refuse("a layer entry is not a layer description")
        config = entry["config"]
        label = f"layer {_short(config.get('name', entry.get('name')))}"
        self.name_of(config.get("name"), label)
        self.name_of(entry.get("name"), label)
        if entry.get("class_name") in _MODEL_CLASSES or entry.get("class_name") == "Sequential":
            self.model(entry, label)
            return
        if entry.get("class_name") == "InputLayer":
            self.input_shape(config, label)
        self.activations(config, label)

    def name_of(self, value, label):
        if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME_LENGTH):
            length = len(value) if isinstance(value, str) else None
            self.refuse(f"{label} has a name of {length} characters, more than the "
                        f"{MAX_NAME_LENGTH} allowed" if length else f"{label} has a name "
                        f"that is not a string ({_short(value)})")

    def input_shape(self, config, label):
        shape = next((config[key] for key in _INPUT_SHAPE_KEYS if key in config), None)
        if not isinstance(shape, list) or len(shape) < 2:
            self.refuse(f"{label} has the input shape {_short(shape)}")
        dims = shape[1:]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            self.refuse(f"{label} has the input shape {_short(tuple(shape))}: every size but "
                        "the batch must be a fixed positive integer")
        if len(dims) == 3 and max(dims[:2]) > MAX_IMAGE_SIDE:
            self.refuse(f"{label} takes images of {dims[0]} x {dims[1]} pixels, more than the "
                        f"{MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} allowed")
        if math.prod(dims) > MAX_TENSOR_ELEMENTS:
            self.refuse(f"{label} takes {math.prod(dims)} numbers per example, more than the "
                        f"{MAX_TENSOR_ELEMENTS} allowed")

    def activations(self, value, label):
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and key.endswith("activation") and child is not None:
                        self.activation(key, child, label)
                    else:
                        stack.append(child)

    def activation(self, key, value, label):
        name = value
        if isinstance(value, dict) and value.get("class_name") == "function":
            name = value.get("config")
        if not isinstance(name, str) or name not in KERAS_ACTIVATIONS:
            self.refuse(f"{label} has the {key} {_short(name)}, which is not one of Keras' "
                        "built-in activations", UnsafeFileError)


def check_model_build(path, config: dict, what: str | None = None) -> None:
    """Step 2 of the module docstring: builds the model from `config` with no variable
    allocated, then checks its variables against the weights stored and its tensor sizes.

    Raises:
        ReleaseError: Keras cannot build the config, a variable is larger than the weights
            stored, or a layer's tensor is beyond `MAX_TENSOR_ELEMENTS` per example.
    """
    name = what or display_path(path)
    try:
        model, pending = _build_without_variables(config)
    except ImportError as error:  # a Keras without these internals: the file sizes still hold
        logger.warning("%s: the model's variable sizes are not checked before loading "
                       "(%s)", name, error)
        return
    except ReleaseError:
        raise
    except Exception as error:
        raise ReleaseError(f"{name}: cannot be built as a Keras model "
                           f"({type(error).__name__}: {str(error).splitlines()[0][:200]})"
                           ) from None
    try:
        _check_variables(name, model, path)
        _check_tensors(name, model)
    finally:
        pending()


def _build_without_variables(config):
    """The model of a config, built in a stateless scope: variables get shapes, no values.

    Returns:
        `(model, forget)`: call `forget()` once done, so that Keras never initialises them.
    """
    import keras
    from keras.src.backend.common import global_state
    from keras.src.legacy.saving import saving_options, saving_utils
    from keras.src.saving import serialization_lib

    from captioning.models import layers  # noqa: F401  (registers the custom layers)

    pending = global_state.get_global_attribute("uninitialized_variables", [],
                                                set_to_default=True)
    before = len(pending)

    def forget():
        del pending[before:]

    try:
        with keras.StatelessScope(initialize_variables=False), \
                saving_options.keras_option_scope(use_legacy_config=True), \
                serialization_lib.SafeModeScope(True):
            model = saving_utils.model_from_config(config)
    except BaseException:
        forget()
        raise
    return model, forget


def _check_variables(name, model, path):
    import h5py

    declared = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights)
    with open_regular(path, what="model file", error=ReleaseError) as handle, \
            h5py.File(handle, "r") as file:
        group = file.get("model_weights")
        stored = _stored_weight_bytes(group, name) if group is not None else 0
    if declared > stored + _SLACK_BYTES:
        largest = max(model.weights, key=lambda v: math.prod(v.shape))
        raise ReleaseError(
            f"{name}: its config declares {format_size(declared)} of weights but the file "
            f"stores {format_size(stored)} (the largest, {display_path(largest.path, 80)}, "
            f"has the shape {tuple(largest.shape)}); the file is damaged or forged")


def _check_tensors(name, model):
    for layer, shape in _layer_outputs(model):
        sizes = shape[1:]
        if any(d is None for d in sizes):
            raise ReleaseError(f"{name}: layer {_short(layer)} gives tensors of shape "
                               f"{shape} with an undefined size; refusing to load it")
        if math.prod(sizes) > MAX_TENSOR_ELEMENTS:
            raise ReleaseError(f"{name}: layer {_short(layer)} gives {math.prod(sizes)} numbers "
                               f"per example (shape {shape}), more than the "
                               f"{MAX_TENSOR_ELEMENTS} allowed; refusing to load it")


def _layer_outputs(model):
    """`(layer name, output shape)` of every call of every layer, nested models included."""
    stack = [model]
    while stack:
        current = stack.pop()
        for layer in getattr(current, "layers", []):
            for node in getattr(layer, "_inbound_nodes", []):
                for tensor in node.output_tensors:
                    yield layer.name, tuple(tensor.shape)
            if getattr(layer, "layers", None):
                stack.append(layer)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
