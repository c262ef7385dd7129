"""The earlier Keras project's release files, rebuilt in miniature for the legacy tests.

The builders recreate that project's `Encoder.hdf5` / `Decoder.hdf5` contract with tf-keras (a
nested CNN `Model` -> Dense -> Flatten; `[encodings, h, c, token] -> [softmax, h, c]` with
`tf.expand_dims` and `tf.nn.softmax` on Keras tensors), saved both as TF 2.4+ writes it
(`TFOpLambda` layers) and as TF 2.2 wrote the real release (`TensorFlowOpLayer` layers, a
`Model` class, keras_version 2.3.0-tf), next to the real `tokenizer.pickle` of that release.
Importing this module skips the importing test module without tf-keras or TensorFlow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from captioning.text.tokenizer import CaptionTokenizer

tf_keras = pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")

SEED_TOKENIZER = (Path(__file__).resolve().parents[3] / "shared" / "data" / "seed_release"
                  / "without_attention" / "tokenizer.pickle")
SIZE = 32  # the tiny encoder's input side (the real one: 299)
ENCODING = 7 * 7 * 4  # what the tiny encoder gives per image
SEED_VOCAB = 10001  # the real decoder's output layer: num_words + 1


def legacy_encoder(size=SIZE):
    """Input -> a nested CNN `Model` named inception_v3 -> Dense(relu) -> Flatten."""
    layers = tf_keras.layers
    inner = layers.Input((size, size, 3))
    x = layers.Conv2D(8, 3, strides=2, name="conv2d")(inner)
    x = layers.BatchNormalization(name="batch_normalization")(x)
    x = layers.Activation("relu", name="activation")(x)
    x = layers.MaxPooling2D(name="max_pooling2d")(x)
    cnn = tf_keras.Model(inner, x, name="inception_v3")
    cnn.trainable = False
    image = layers.Input((size, size, 3), name="input_5")
    encodings = layers.Dense(4, activation="relu", name="dense")(cnn(image))
    encodings = layers.Flatten(name="flatten_1")(encodings)
    return tf_keras.Model(image, encodings, name="model_1")


def legacy_decoder(vocab, units, embedding, encoding=ENCODING, extra=None):
    """The notebook's prediction decoder, line for line (`extra` wraps the softmax)."""
    layers = tf_keras.layers
    encodings_input = layers.Input(shape=(encoding,), name="input_10")
    teacher_forcing = layers.Input(shape=(1,), name="input_11")
    initial_h = layers.Input(shape=(units,), name="input_12")
    initial_c = layers.Input(shape=(units,), name="input_13")
    embedds = layers.Embedding(vocab, embedding, mask_zero=True, name="embedding")(
        teacher_forcing)
    lstm_in = layers.Concatenate(name="concatenate_2")(
        [tf.expand_dims(encodings_input, 1), embedds])
    lstm_out, h, c = layers.LSTM(units, return_sequences=True, return_state=True, name="lstm")(
        lstm_in, initial_state=[initial_h, initial_c])
    out = tf.nn.softmax(layers.Dense(vocab, name="output_layer")(lstm_out))
    if extra is not None:
        out = extra(out)
    return tf_keras.Model([encodings_input, initial_h, initial_c, teacher_forcing], [out, h, c],
                          name="model_2")


def randomize(model, seed, scale=0.5):
    """Sets every weight from a local generator (no global seed is touched)."""
    rng = np.random.default_rng(seed)
    model.set_weights([
        rng.uniform(0.5, 1.5, w.shape) if "moving_variance" in v.name
        else rng.normal(0.0, scale, w.shape)
        for v, w in zip(model.weights, model.get_weights())])
    return model


def save(model, path) -> Path:
    model.save(path)
    return Path(path)


def as_tf22(path: Path) -> Path:
    """Rewrites a tf-keras .hdf5 model as TF 2.2 saved it: `TensorFlowOpLayer` for each
    `TFOpLambda`, `Model` for `Functional`, no `module` keys, keras_version 2.3.0-tf."""
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        rename = {}

        def strip(value):
            if isinstance(value, dict):
                value.pop("module", None)
                value.pop("registered_name", None)
                if value.get("class_name") == "Functional":
                    value["class_name"] = "Model"
                for item in value.values():
                    strip(item)
            elif isinstance(value, list):
                for item in value:
                    strip(item)

        strip(config)
        for count, layer in enumerate(config["config"]["layers"]):
            if layer["class_name"] != "TFOpLambda":
                continue
            source, _, _, kwargs = layer["inbound_nodes"][0]
            if layer["config"]["function"] == "expand_dims":
                op = f"ExpandDims_{count}"
                node_def = {"name": op, "op": "ExpandDims", "input": [source, f"{op}/dim"],
                            "attr": {"Tdim": {"type": "DT_INT32"}, "T": {"type": "DT_FLOAT"}}}
                constants = {"1": kwargs["axis"]}
            else:
                assert layer["config"]["function"] == "nn.softmax"
                op = "Softmax"
                node_def = {"name": op, "op": "Softmax", "input": [f"{source}/BiasAdd"],
                            "attr": {"T": {"type": "DT_FLOAT"}}}
                constants = {}
            rename[layer["name"]] = f"tf_op_layer_{op}"
            layer.update(class_name="TensorFlowOpLayer", name=f"tf_op_layer_{op}",
                         inbound_nodes=[[[source, 0, 0, {}]]],
                         config={"name": op, "trainable": True, "dtype": "float32",
                                 "node_def": node_def, "constants": constants})

        def relink(value):
            if isinstance(value, list):
                if value and isinstance(value[0], str) and value[0] in rename:
                    value[0] = rename[value[0]]
                for item in value:
                    relink(item)
            elif isinstance(value, dict):
                for item in value.values():
                    relink(item)

        relink(config)
        file.attrs["model_config"] = json.dumps(config).encode()
        file.attrs["keras_version"] = b"2.3.0-tf"
        weights = file["model_weights"]
        for old, new in rename.items():
            weights.move(old, new)
        names = [n.decode() if isinstance(n, bytes) else n for n in weights.attrs["layer_names"]]
        weights.attrs["layer_names"] = np.array([rename.get(n, n).encode() for n in names])
        weights.attrs["keras_version"] = b"2.3.0-tf"
    return path


def chain_decoder(tokenizer, chain, pad_bias=-100.0, encoding=ENCODING):
    """A decoder whose next word depends on the previous one only: `chain[id] -> next id`
    (other ids lead to <unk>). Same layers as the real one, weights set by hand."""
    vocab = tokenizer.vocab_size
    model = legacy_decoder(vocab, units=vocab, embedding=vocab, encoding=encoding)
    model.get_layer("embedding").set_weights([np.eye(vocab, dtype="float32")])
    kernel = np.zeros((encoding + vocab, 4 * vocab), "float32")
    kernel[encoding + np.arange(vocab), 2 * vocab + np.arange(vocab)] = 3.0  # cell candidate
    bias = np.zeros(4 * vocab, "float32")
    bias[:vocab], bias[vocab:2 * vocab], bias[3 * vocab:] = 10.0, -10.0, 10.0  # i, f, o gates
    model.get_layer("lstm").set_weights(
        [kernel, np.zeros((vocab, 4 * vocab), "float32"), bias])
    dense = np.zeros((vocab, vocab), "float32")
    for token in range(vocab):
        dense[token, chain.get(token, tokenizer.oov_id)] = 10.0
    dense_bias = np.zeros(vocab, "float32")
    dense_bias[0] = pad_bias
    model.get_layer("output_layer").set_weights([dense, dense_bias])
    return model


def write_images(folder: Path) -> list:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (height, width, ext) in enumerate([(40, 50, "png"), (64, 64, "jpg"),
                                                  (90, 70, "png"), (33, 47, "jpg")]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[: height // 2, :, index % 3] = 255  # something to tell the images apart
        path = folder / f"image_{index}.{ext}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_files(root: Path) -> dict:
    """Legacy releases (TF 2.2 and TF 2.4+ formats), small tokenizer files and images in
    `root`; skips the test without the seed release's tokenizer."""
    if not SEED_TOKENIZER.is_file():
        pytest.skip(f"the seed release tokenizer is not here: {SEED_TOKENIZER}")
    encoder = randomize(legacy_encoder(), seed=0)
    decoder = randomize(legacy_decoder(SEED_VOCAB, units=8, embedding=4), seed=1)
    dense = decoder.get_layer("output_layer")
    kernel, bias = dense.get_weights()
    bias[0] = -30.0  # padding never wins, so the notebook's loop cannot crash on it
    dense.set_weights([kernel * 2.0, bias])
    out = {"root": root}
    for style in ("tf22", "tf24"):
        folder = root / style
        folder.mkdir()
        enc = save(encoder, folder / "Encoder.hdf5")
        dec = save(decoder, folder / "Decoder.hdf5")
        if style == "tf22":
            as_tf22(enc)
            as_tf22(dec)
        shutil.copyfile(SEED_TOKENIZER, folder / "tokenizer.pickle")
        out[style] = folder
    small = CaptionTokenizer(start_token="<sos>", end_token="<eos>").fit(
        ["red circle on left", "blue square on right", "green triangle"])
    small.save(root / "small_tokenizer.pickle")
    out["small"] = small
    out["images"] = write_images(root / "images")
    bad = root / "images" / "not_a_picture.jpg"
    bad.write_text("this is not a JPEG, just some text\n")
    out["bad"] = bad
    return out


def chain_release(files, name, chain, **kwargs) -> tuple:
    """(encoder, decoder, tokenizer) paths of a TF 2.2 release with a chain decoder."""
    folder = files["root"] / name
    if not folder.exists():
        folder.mkdir()
        save(chain_decoder(files["small"], chain, **kwargs), folder / "Decoder.hdf5")
        as_tf22(folder / "Decoder.hdf5")
    return (files["tf22"] / "Encoder.hdf5", folder / "Decoder.hdf5",
            files["root"] / "small_tokenizer.pickle")
