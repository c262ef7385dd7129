"""Captioning with the release files of the earlier Keras project, safely.

The TensorFlow 2 / Keras captioning project published on GitHub as
`Abdalrahman112/Image-captioning` (2020, TF 2.2, `tf.keras` 2.3.0-tf) released three files,
which this module reads and captions with exactly as that project's prediction notebook
(`without attention/Image_captioning.ipynb`) did:

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
  `<unk>`, markers `<sos>` and `<eos>`), read here by `captioning.tokenizer.load_tokenizer`
  without unpickling any code.

The notebook's prediction: read the image, resize to 299x299, `preprocess_input`, encode;
`h = c = zeros(768)`; the first token is `word_index['<sos>']`; then at most
`max_cap_len + 1 = 16` decoder steps, each taking the argmax of the softmax as the next word
(`index_word[idx]`) and stopping after `<eos>`; the words between the markers, joined by
spaces, are the caption. `LegacyCaptioner` does the same for a whole batch of images at once
(one decoder call per step for all of them). Where it differs, on purpose:

- images are read by `captioning.images.load_and_resize` (the one loader of this toolkit:
  any JPEG/PNG/..., EXIF orientation, antialiased bilinear resize) rather than
  `tf.image.decode_jpeg` + `tf.image.resize`, so pixels can differ by a few levels;
- the padding id 0 is never chosen: the notebook would crash on the next step if it were
  (`index_word` has no 0), here the best real word is taken instead.

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

`caption_with_files` also takes this project's own three files (Keras 3 `Encoder.hdf5` with
its preprocessing inside, `Decoder.hdf5` one-step model, `tokenizer.pickle`) and captions
them with `Captioner` (compiled greedy or beam search), so one call serves both kinds of
release.

Example:
>>> captions = caption_with_files(["dog.jpg"], "Encoder.hdf5", "Decoder.hdf5",
...                               "tokenizer.pickle")                    # doctest: +SKIP
>>> captions[0].caption                                                   # doctest: +SKIP
'dog running through grass'
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
from pathlib import Path

import numpy as np

from captioning.inference.captioner import Caption, _as_rgb, image_list
from captioning.errors import CaptioningError, ConfigError, ReleaseError, UnsafeFileError

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "ALLOWED_LAYERS",
    "ALLOWED_MODULES",
    "ALLOWED_OBJECTS",
    "ALLOWED_TF_FUNCTIONS",
    "ALLOWED_TF_OPS",
    "LegacyCaptioner",
    "MAX_WORDS",
    "TF_KERAS_MISSING",
    "caption_with_files",
    "check_legacy_model",
    "is_legacy_model",
    "load_legacy_model",
    "preprocess_input",
]

MAX_WORDS = 16
"""Decoder steps of the earlier project's notebook (`max_cap_len + 1`), `<eos>` included."""

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
    """Returns `(path, model_config, keras_version)` of a Keras `.hdf5` model file."""
    import h5py

    path = Path(os.fspath(path))
    if not path.exists():
        raise ReleaseError(f"{path}: no such file")
    if not path.is_file():
        raise ReleaseError(f"{path}: not a file")
    try:
        with h5py.File(path, "r") as file:
            raw_config = file.attrs.get("model_config")
            version = file.attrs.get("keras_version")
    except OSError as error:
        raise ReleaseError(f"{path}: not a Keras .hdf5 model file (HDF5 cannot open it: "
                           f"{str(error).splitlines()[0][:160]})") from None
    if raw_config is None:
        raise ReleaseError(
            f"{path}: holds no model_config, only weights (saved with save_weights); this "
            "reader needs the whole model as model.save wrote it")
    try:
        config = json.loads(_as_text(raw_config))
    except (UnicodeDecodeError, ValueError) as error:
        raise ReleaseError(f"{path}: its model_config is not readable JSON ({error})") from None
    except RecursionError:
        raise UnsafeFileError(f"{path}: its model_config is nested too deeply to be a genuine "
                              "model; refusing to load it") from None
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ReleaseError(f"{path}: its model_config does not describe a Keras model")
    return path, config, (None if version is None else _as_text(version))


def _as_text(value) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


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


def _import_tf_keras():
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
    check_legacy_model(path)
    tf_keras = _import_tf_keras()
    return _load(lambda: tf_keras.models.load_model(os.fspath(path), compile=False,
                                                    safe_mode=True), path)


def _load(load, path):
    try:
        return load()
    except CaptioningError:
        raise
    except Exception as error:
        raise ReleaseError(f"{Path(path).name} ({path}): cannot be loaded as a Keras model "
                           f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") \
            from None


def preprocess_input(pixels) -> np.ndarray:
    """InceptionV3's `preprocess_input` ('tf' mode): 0..255 pixels to -1..1, float32."""
    return np.asarray(pixels, np.float32) / np.float32(127.5) - np.float32(1.0)


# ---------------------------------------------------------------------------------------------
# Captioning with a legacy release.


class LegacyCaptioner:
    """Captions images with the earlier Keras project's encoder, decoder and tokenizer.

    Args:
        encoder: the loaded `Encoder.hdf5` (a tf-keras model: 0..255 pixels already put
            through `preprocess_input` -> encodings).
        decoder: the loaded `Decoder.hdf5` (`[encodings, h, c, token] -> [probs, h, c]`).
        tokenizer: a `CaptionTokenizer` (e.g. the legacy `tokenizer.pickle` as
            `load_tokenizer` reads it).
        max_words: decoder steps at most, `<eos>` included (the notebook's 16).
        batch_size: images per encoder call and per decoder batch.
        names: the file names to use in error messages (encoder, decoder).
    """

    def __init__(self, encoder, decoder, tokenizer, *, max_words: int = MAX_WORDS,
                 batch_size: int = 32, names=("Encoder.hdf5", "Decoder.hdf5")):
        for name, value in (("max_words", max_words), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.encoder, self.decoder, self.tokenizer = encoder, decoder, tokenizer
        self.max_words, self.batch_size = int(max_words), int(batch_size)
        encoder_name, decoder_name = names
        if len(decoder.inputs) != 4 or len(decoder.outputs) != 3:
            raise ReleaseError(
                f"{decoder_name}: takes {len(decoder.inputs)} inputs and gives "
                f"{len(decoder.outputs)} outputs; the earlier project's decoder takes "
                "[encodings, h, c, previous token] and gives [probabilities, h, c]")
        features, h, c, token = (tuple(t.shape) for t in decoder.inputs)
        if len(h) != 2 or h != c or token[1:] != (1,):
            raise ReleaseError(
                f"{decoder_name}: inputs of shapes {features}, {h}, {c}, {token} are not "
                "[encodings, h, c, previous token (1,)]")
        self.units = int(h[-1])
        self.vocab_size = int(decoder.outputs[0].shape[-1])
        if len(encoder.inputs) != 1 or len(encoder.inputs[0].shape) != 4:
            raise ReleaseError(f"{encoder_name}: does not take one batch of RGB images")
        encoded = tuple(encoder.outputs[0].shape[1:])
        if encoded != features[1:]:
            raise ReleaseError(
                f"{encoder_name} gives encodings of shape {encoded} but {decoder_name} takes "
                f"{features[1:]}: the two files come from different releases")
        size = tuple(encoder.inputs[0].shape[1:3])
        self.image_size = size if None not in size else (299, 299)
        word_index = tokenizer.word_index
        if "<sos>" in word_index and "<eos>" in word_index:
            self.start_id, self.end_id = int(word_index["<sos>"]), int(word_index["<eos>"])
        else:
            self.start_id, self.end_id = int(tokenizer.start_id), int(tokenizer.end_id)
        if max(self.start_id, self.end_id) >= self.vocab_size:
            raise ReleaseError(
                f"the tokenizer's markers have ids {self.start_id} and {self.end_id} but "
                f"{decoder_name} predicts only {self.vocab_size} words: the tokenizer comes "
                "from a different release")
        self._token_dtype = _numpy_dtype(decoder.inputs[3].dtype)

    @classmethod
    def load(cls, encoder, decoder, tokenizer, **kwargs) -> "LegacyCaptioner":
        """Checks and loads the three release files (paths), then builds the captioner.

        Both models' configs are checked against the allow-lists before either is loaded.
        """
        from captioning.text.tokenizer import load_tokenizer

        check_legacy_model(encoder)
        check_legacy_model(decoder)
        tokens = load_tokenizer(tokenizer)
        tf_keras = _import_tf_keras()
        models = [_load(lambda p=p: tf_keras.models.load_model(os.fspath(p), compile=False,
                                                               safe_mode=True), p)
                  for p in (encoder, decoder)]
        names = (Path(os.fspath(encoder)).name, Path(os.fspath(decoder)).name)
        return cls(*models, tokens, names=names, **kwargs)

    def encode(self, pixels) -> np.ndarray:
        """Encodes a batch of `(H, W, 3)` 0..255 pixels (preprocessing applied here)."""
        return np.asarray(self.encoder(preprocess_input(pixels), training=False))

    def decode(self, encodings):
        """Greedy decoding of a batch of encodings, as the notebook did per image.

        The decoder runs eagerly, one call per step for the whole batch: no tracing, and
        batches of any size (a traced `predict` would retrace on the last, smaller batch).

        Returns:
            `(ids, log_probs)`: per image the chosen ids (`<eos>` included when reached) and
            the total log-probability of those choices.
        """
        encodings = np.asarray(encodings, np.float32)
        n = len(encodings)
        h = np.zeros((n, self.units), np.float32)
        c = np.zeros((n, self.units), np.float32)
        token = np.full((n, 1), self.start_id, self._token_dtype)
        ids = [[] for _ in range(n)]
        log_probs = np.zeros(n)
        finished = np.zeros(n, bool)
        for _ in range(self.max_words):
            if finished.all():
                break
            probs, h, c = self.decoder([encodings, h, c, token], training=False)
            probs = np.asarray(probs, np.float64).reshape(n, -1)
            scores = probs.copy()
            scores[:, 0] = -np.inf  # padding: never a word
            chosen = np.argmax(scores, axis=1)
            logs = _log_probs(probs)[np.arange(n), chosen]
            for row in np.flatnonzero(~finished):
                ids[row].append(int(chosen[row]))
                log_probs[row] += logs[row]
                if chosen[row] == self.end_id:
                    finished[row] = True
            h, c = np.asarray(h, np.float32), np.asarray(c, np.float32)
            token = chosen.reshape(n, 1).astype(self._token_dtype)
        return ids, log_probs

    def words(self, ids) -> list:
        """The words of decoded ids, up to `<eos>` (excluded), as the notebook printed them."""
        out = []
        for index in ids:
            if index == self.end_id:
                break
            word = self.tokenizer.index_word.get(int(index))
            out.append(self.tokenizer.oov_token if word is None else word)
        return out

    def caption(self, images, progress: bool = False, workers: int | None = None):
        """Captions image paths and/or image arrays in 0..255, as `Captioner.caption` takes
        them (one path, one `(H, W, 3)`, grey or RGBA array, a batch array, or a list).

        Returns:
            A list of `Caption`, one per input in order: `caption` (the words joined by
            spaces), `words`, `score` (total log-probability of the chosen words, `<eos>`
            included) and `alternatives` (just that one); or `error` for an unreadable image.
        """
        from tqdm.auto import tqdm

        images = image_list(images)
        results = [None] * len(images)
        bar = tqdm(total=len(images), unit="img", disable=not progress, desc="captioning")
        with concurrent.futures.ThreadPoolExecutor(workers or max(2, os.cpu_count() or 2)) as pool:
            for start in range(0, len(images), self.batch_size):
                batch = list(range(start, min(start + self.batch_size, len(images))))
                pixels = list(pool.map(lambda i: self._load(images[i]), batch))
                good = []
                for i, item in zip(batch, pixels):
                    if isinstance(item, str):
                        results[i] = Caption(image=_name(images[i]), error=item)
                    else:
                        good.append((i, item))
                if good:
                    ids, log_probs = self.decode(self.encode(np.stack([p for _, p in good])))
                    for (i, _), row_ids, log_prob in zip(good, ids, log_probs):
                        words = self.words(row_ids)
                        text = " ".join(words)
                        results[i] = Caption(image=_name(images[i]), caption=text,
                                             score=float(log_prob), words=words,
                                             alternatives=[(text, float(log_prob))])
                bar.update(len(batch))
        bar.close()
        return results

    def _load(self, item):
        from captioning.data.images import load_and_resize, resize_image

        try:
            if isinstance(item, np.ndarray):
                return resize_image(_as_rgb(item), self.image_size)
            return load_and_resize(item, self.image_size)
        except CaptioningError as error:
            return str(error)


def _numpy_dtype(dtype):
    name = getattr(dtype, "name", None) or str(dtype)
    return np.dtype(name) if name in ("float16", "float32", "float64", "int32", "int64") \
        else np.float32


def _log_probs(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities of a decoder's output rows: probabilities, or logits if not."""
    sums = probs.sum(axis=1)
    if probs.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3):
        return np.log(np.maximum(probs, 1e-30))
    shifted = probs - probs.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _name(item) -> str:
    return "<array>" if isinstance(item, np.ndarray) else os.fsdecode(item)


# ---------------------------------------------------------------------------------------------
# One entry point for both kinds of release.


def _own_captioner(encoder, decoder, tokenizer, max_words, batch_size):
    """A `Captioner` over this project's own (Keras 3) three files, without a manifest.

    With `max_words` None it decodes up to `CaptionConfig.max_decode_length` words."""
    import keras

    from captioning.inference.captioner import Captioner
    from captioning.config import CaptionConfig
    from captioning.models.decoders import STEP_OUTPUT_LOG_PROBS
    from captioning.release.load import Release
    from captioning.text.tokenizer import load_tokenizer

    tokens = load_tokenizer(tokenizer)
    models = [_load(lambda p=p: keras.saving.load_model(os.fspath(p), safe_mode=True,
                                                        compile=False), p)
              for p in (encoder, decoder)]
    enc, dec = models
    encoder_name, decoder_name = Path(os.fspath(encoder)).name, Path(os.fspath(decoder)).name
    names = [t.name for t in dec.inputs]
    if ("features" not in names or "token" not in names
            or STEP_OUTPUT_LOG_PROBS not in dec.output_names):
        raise ReleaseError(f"{decoder_name}: not a one-step caption decoder (inputs {names}, "
                           f"outputs {list(dec.output_names)})")
    encoded = tuple(enc.outputs[0].shape[1:])
    expected = tuple(dec.inputs[names.index("features")].shape[1:])
    if encoded != expected:
        raise ReleaseError(f"{encoder_name} gives features {encoded} but {decoder_name} takes "
                           f"{expected}: the two files come from different releases")
    vocab = int(dec.outputs[dec.output_names.index(STEP_OUTPUT_LOG_PROBS)].shape[-1])
    if tokens.vocab_size != vocab:
        raise ReleaseError(f"{Path(os.fspath(tokenizer)).name} has a vocabulary of "
                           f"{tokens.vocab_size} but {decoder_name} predicts {vocab} words: "
                           "the files come from different releases")
    release = Release(encoder=enc, decoder=dec, tokenizer=tokens,
                      manifest={"config": CaptionConfig().to_dict()},
                      path=Path(os.fspath(decoder)))
    return Captioner(release, batch_size=batch_size, max_length=max_words)


def caption_with_files(images, encoder, decoder, tokenizer, *, max_words: int | None = None,
                       beam: int = 1, top: int = 1, batch_size: int = 32,
                       progress: bool = False) -> list:
    """Captions images with three release files, of the earlier Keras project or this one.

    The two model files are told apart with `is_legacy_model` (h5py only). The earlier
    project's files are checked against the allow-lists, loaded with tf-keras and captioned
    greedily as its notebook did (`LegacyCaptioner`); this project's Keras 3 files are
    loaded with `keras.saving.load_model(safe_mode=True)` and captioned by `Captioner`
    (greedy or beam search).

    Args:
        images: image paths and/or arrays, as `Captioner.caption` takes them.
        encoder, decoder, tokenizer: paths of `Encoder.hdf5`, `Decoder.hdf5`,
            `tokenizer.pickle`.
        max_words: words generated at most, the end marker included; default the
            notebook's `MAX_WORDS` (16) for the earlier project's files and
            `CaptionConfig.max_decode_length` for this project's.
        beam: beam width (this project's files only; the earlier project's take 1).
        top: beams returned per image (`Caption.alternatives`), at most `beam`.
        batch_size: images per batch.
        progress: show a progress bar.

    Returns:
        A list of `Caption`, one per image in order; unreadable images get `error` and the
        others are still captioned.

    Raises:
        ConfigError: a bad setting, or `beam`/`top` above 1 for the earlier project's files
            (checked before any model is loaded).
        UnsafeFileError: a model file names something not allowed; nothing was loaded.
        ReleaseError: a file is missing or unreadable, or the files do not fit together.
        CaptioningError: the files are the earlier project's and tf-keras is not installed.
    """
    for name, value in (("max_words", max_words), ("beam", beam), ("top", top),
                        ("batch_size", batch_size)):
        if name == "max_words" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if top > beam:
        raise ConfigError(f"top must be between 1 and beam ({beam}), got {top!r}")
    legacy = {"encoder": is_legacy_model(encoder), "decoder": is_legacy_model(decoder)}
    if legacy["encoder"] != legacy["decoder"]:
        old = "encoder" if legacy["encoder"] else "decoder"
        new = "decoder" if old == "encoder" else "encoder"
        paths = {"encoder": encoder, "decoder": decoder}
        raise ReleaseError(
            f"{Path(os.fspath(paths[old])).name} is a Keras 2 file of the earlier project but "
            f"{Path(os.fspath(paths[new])).name} was saved by Keras 3: the two files come "
            "from different releases")
    images = image_list(images)
    if legacy["decoder"]:
        if beam > 1 or top > 1:
            raise ConfigError(
                f"{Path(os.fspath(decoder)).name} is a release of the earlier Keras project, "
                "and those releases caption greedily as its notebook did, so beam and top "
                f"must be 1 (got beam {beam}, top {top}): drop --beam/--top, or use a "
                "release trained with this project")
        captioner = LegacyCaptioner.load(encoder, decoder, tokenizer,
                                         max_words=max_words or MAX_WORDS,
                                         batch_size=batch_size)
        return captioner.caption(images, progress=progress)
    captioner = _own_captioner(encoder, decoder, tokenizer, max_words, batch_size)
    return captioner.caption(images, beam=beam, top=top, progress=progress)
