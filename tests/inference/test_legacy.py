"""Tests for captioning.legacy: the earlier Keras project's release files, read safely.

The fixtures rebuild that project's `Encoder.hdf5` / `Decoder.hdf5` contract in miniature with
tf-keras (a nested CNN `Model` -> Dense -> Flatten; `[encodings, h, c, token] -> [softmax, h,
c]` with `tf.expand_dims` and `tf.nn.softmax` on Keras tensors), saved both as TF 2.4+ writes
it (`TFOpLambda` layers) and as TF 2.2 wrote the real release (`TensorFlowOpLayer` layers, a
`Model` class, keras_version 2.3.0-tf), next to the real `tokenizer.pickle` of that release.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from captioning.errors import CaptioningError, ConfigError, ReleaseError, UnsafeFileError
from captioning.data.images import load_and_resize
from captioning.inference.legacy import (
    TF_KERAS_MISSING,
    LegacyCaptioner,
    caption_with_files,
    check_legacy_model,
    is_legacy_model,
    preprocess_input,
)
from captioning.text.tokenizer import CaptionTokenizer, load_tokenizer

tf_keras = pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")

SEED_TOKENIZER = (Path(__file__).resolve().parents[3] / "shared" / "data" / "seed_release"
                  / "without_attention" / "tokenizer.pickle")
SIZE = 32  # the tiny encoder's input side (the real one: 299)
ENCODING = 7 * 7 * 4  # what the tiny encoder gives per image
SEED_VOCAB = 10001  # the real decoder's output layer: num_words + 1


# ---------------------------------------------------------------------------------------------
# Building files in the earlier project's format.


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


# ---------------------------------------------------------------------------------------------
# Fixtures (module-scoped: built once).


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Legacy releases (TF 2.2 and TF 2.4+ formats), small tokenizer files and images."""
    if not SEED_TOKENIZER.is_file():
        pytest.skip(f"the seed release tokenizer is not here: {SEED_TOKENIZER}")
    root = tmp_path_factory.mktemp("legacy")
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


def ids(tokenizer, text):
    return [tokenizer.word_index[word] for word in text.split()]


def notebook_caption(path, encoder, decoder, tok, size=SIZE, max_cap_len=15):
    """The earlier project's `caption_image`, per image with `predict` per word (its pixels
    read by this toolkit's loader, and returned rather than printed)."""
    image = load_and_resize(path, size)
    img_input = image / 127.5 - 1.0
    encodings = encoder.predict(img_input.reshape(1, size, size, 3), verbose=0)
    texts = ["<sos>"]
    units = decoder.inputs[1].shape[-1]
    h = np.zeros((1, units))
    c = h
    for _ in range(max_cap_len + 1):
        dec_inp = np.array(tok.word_index.get(texts[-1])).reshape(1, -1)
        props, h, c = decoder.predict([encodings, h, c, dec_inp], verbose=0)
        props = props[0]
        idx = np.argmax(props)
        texts.append(tok.index_word.get(idx))
        if idx == tok.word_index["<eos>"]:
            break
    return " ".join(word for word in texts[1:] if word != "<eos>")


# ---------------------------------------------------------------------------------------------
# Telling the formats apart.


def test_is_legacy_model_reads_only_the_attributes(files, tmp_path):
    for style in ("tf22", "tf24"):
        assert is_legacy_model(files[style] / "Encoder.hdf5")
        assert is_legacy_model(files[style] / "Decoder.hdf5")
    with h5py.File(files["tf22"] / "Decoder.hdf5") as file:
        assert file.attrs["keras_version"] in (b"2.3.0-tf", "2.3.0-tf")
        assert "TensorFlowOpLayer" in str(file.attrs["model_config"])
    # Without a version, the classes Keras 3 lacks still tell.
    copy = shutil.copyfile(files["tf24"] / "Decoder.hdf5", tmp_path / "noversion.hdf5")
    with h5py.File(copy, "r+") as file:
        del file.attrs["keras_version"]
    assert is_legacy_model(copy)


def test_is_legacy_model_false_for_keras3_and_errors_for_non_models(files, tmp_path):
    import keras

    inputs = keras.Input((4,), name="features")
    keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs)).save(tmp_path / "k3.hdf5")
    assert not is_legacy_model(tmp_path / "k3.hdf5")

    weights_only = tmp_path / "weights.h5"
    legacy_encoder().save_weights(weights_only)
    with pytest.raises(ReleaseError, match="only weights"):
        is_legacy_model(weights_only)
    text = tmp_path / "Decoder.hdf5"
    text.write_text("not HDF5")
    with pytest.raises(ReleaseError, match="Decoder.hdf5"):
        is_legacy_model(text)
    with pytest.raises(ReleaseError, match="no such file"):
        is_legacy_model(tmp_path / "missing.hdf5")


# ---------------------------------------------------------------------------------------------
# Captioning as the notebook did.


@pytest.mark.parametrize("style, count", [("tf22", 3), ("tf24", 2)])
def test_captions_equal_the_notebook_loop(files, style, count):
    folder = files[style]
    images = [*files["images"][:2], files["bad"], *files["images"][2:count]]
    results = caption_with_files(images, folder / "Encoder.hdf5", folder / "Decoder.hdf5",
                                 folder / "tokenizer.pickle", batch_size=2)
    assert [r.image for r in results] == [str(p) for p in images]
    assert not results[2].ok and "not_a_picture.jpg" in results[2].error

    encoder = tf_keras.models.load_model(folder / "Encoder.hdf5", compile=False)
    decoder = tf_keras.models.load_model(folder / "Decoder.hdf5", compile=False)
    tok = load_tokenizer(folder / "tokenizer.pickle")
    expected = [notebook_caption(p, encoder, decoder, tok) for p in files["images"][:count]]
    got = [r.caption for r in results if r.ok]
    assert got == expected
    for result in results:
        if result.ok:
            assert result.words == result.caption.split()
            assert 1 <= len(result.words) <= 16
            assert "<sos>" not in result.words and "<eos>" not in result.words
            assert np.isfinite(result.score) and result.score <= 0
    assert len(set(got)) > 1  # the encodings reach the words


def test_stops_at_eos(files):
    small = files["small"]
    red, circle, on = ids(small, "red circle on")
    chain = {small.start_id: red, red: circle, circle: on, on: small.end_id}
    results = caption_with_files(files["images"][:3], *chain_release(files, "eos", chain))
    assert [r.caption for r in results] == ["red circle on"] * 3
    assert results[0].words == ["red", "circle", "on"]
    assert results[0].score == pytest.approx(0.0, abs=0.1)  # each word nearly certain


def test_stops_after_sixteen_words(files):
    small = files["small"]
    blue, square = ids(small, "blue square")
    chain = {small.start_id: blue, blue: square, square: blue}
    paths = chain_release(files, "endless", chain)
    results = caption_with_files(files["images"][:2], *paths)
    assert results[0].words == ["blue", "square"] * 8
    assert [r.caption for r in results] == [results[0].caption] * 2
    loaded = LegacyCaptioner.load(*paths)
    short = LegacyCaptioner(loaded.encoder, loaded.decoder, loaded.tokenizer, max_words=5)
    assert short.caption(files["images"][0])[0].caption == "blue square blue square blue"


def test_padding_is_never_chosen(files):
    small = files["small"]
    green, triangle = ids(small, "green triangle")
    chain = {small.start_id: green, green: triangle, triangle: small.end_id}
    results = caption_with_files(files["images"][:1],
                                 *chain_release(files, "pad", chain, pad_bias=15.0))
    assert results[0].caption == "green triangle"


def test_legacy_captioner_batches_arrays_and_paths(files):
    small = files["small"]
    red, = ids(small, "red")
    paths = chain_release(files, "red", {small.start_id: red, red: small.end_id})
    captioner = LegacyCaptioner.load(*paths, batch_size=3)
    assert captioner.image_size == (SIZE, SIZE)
    assert captioner.units == small.vocab_size
    pixels = np.full((20, 30, 3), 128, np.uint8)
    results = captioner.caption([pixels, *files["images"], files["bad"]])
    assert [r.caption for r in results[:-1]] == ["red"] * 5
    assert results[0].image == "<array>" and not results[-1].ok


def test_legacy_captioner_takes_grey_rgba_batch_and_single_inputs(files):
    """The same input forms as `Captioner.caption`, read as the same RGB pixels."""
    encoder, decoder, tokenizer = (files["tf22"] / name for name in
                                   ("Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle"))
    captioner = LegacyCaptioner.load(encoder, decoder, tokenizer, max_words=4)
    rgb = np.asarray(Image.open(files["images"][1]).convert("RGB"))
    grey = rgb.mean(axis=-1).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    results = captioner.caption([rgb, grey, np.stack([grey] * 3, axis=-1), rgba, grey[..., None],
                                 np.zeros((4, 4, 5), np.uint8)])
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert "(H, W, 3)" in results[-1].error
    assert results[3].caption == results[0].caption  # alpha dropped
    assert results[1].caption == results[2].caption == results[4].caption  # grey as RGB
    assert [r.caption for r in captioner.caption(rgb)] == [results[0].caption]
    assert len(captioner.caption(np.stack([rgb, rgb]))) == 2
    single = captioner.caption(str(files["images"][1]))
    assert len(single) == 1 and single[0].image == str(files["images"][1])


def test_preprocess_input_is_inception_v3s():
    pixels = np.array([0.0, 127.5, 255.0])
    np.testing.assert_allclose(preprocess_input(pixels), [-1.0, 0.0, 1.0])
    assert preprocess_input(pixels).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Safety: refused before anything runs.


def test_lambda_layer_is_refused_before_it_runs(files, tmp_path):
    marker = tmp_path / "lambda_ran"
    touch = tf_keras.layers.Lambda(
        lambda x, p=str(marker): (__import__("pathlib").Path(p).touch(), x)[1])
    decoder = legacy_decoder(SEED_VOCAB, units=8, embedding=4, extra=touch)
    save(decoder, tmp_path / "Decoder.hdf5")
    marker.unlink()  # building and saving called it here

    with pytest.raises(UnsafeFileError, match=r"Decoder\.hdf5.*Lambda layer") as refused:
        caption_with_files(files["images"][:1], files["tf24"] / "Encoder.hdf5",
                           tmp_path / "Decoder.hdf5", files["tf24"] / "tokenizer.pickle")
    assert str(tmp_path / "Decoder.hdf5") in str(refused.value)
    assert not marker.exists()
    with pytest.raises(UnsafeFileError):
        LegacyCaptioner.load(files["tf24"] / "Encoder.hdf5", tmp_path / "Decoder.hdf5",
                             files["tf24"] / "tokenizer.pickle")
    assert not marker.exists()

    # Why the check matters: tf-keras 2.21 itself runs the bytecode of an .hdf5 file, even
    # with safe_mode=True (it applies that to .keras files only).
    try:
        tf_keras.models.load_model(tmp_path / "Decoder.hdf5", compile=False, safe_mode=True)
    except Exception:  # a newer tf-keras that refuses by itself
        return
    assert marker.exists()


def _edit_layer(config, class_name, change):
    def walk(value):
        if isinstance(value, dict):
            if value.get("class_name") == class_name and "inbound_nodes" in value:
                change(value)
                return True
            return any(walk(v) for v in value.values())
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    assert walk(config), class_name


def _write_op(layer):
    layer["config"]["node_def"]["op"] = "WriteFile"


def _tf_function(layer):
    layer["config"]["function"] = "io.write_file"


def _unknown_class(layer):
    layer["class_name"] = "MyCustomLayer"


def _module(layer):
    layer["config"]["kernel_initializer"] = {"module": "os", "class_name": "GlorotUniform",
                                             "config": {}, "registered_name": None}


def _object(layer):
    layer["config"]["kernel_initializer"] = {"class_name": "Popen", "config": {}}


def _activation(layer):
    layer["config"]["activation"] = "deserialize"


def _constants(layer):
    layer["config"]["constants"] = {"1": {"class_name": "Zeros", "config": {}}}


@pytest.mark.parametrize("style, class_name, change, message", [
    ("tf22", "TensorFlowOpLayer", _write_op, "op 'WriteFile'"),
    ("tf24", "TFOpLambda", _tf_function, "tf.'io.write_file'"),
    ("tf22", "Concatenate", _unknown_class, "'MyCustomLayer'"),
    ("tf22", "Dense", _module, "module 'os'"),
    ("tf24", "Dense", _object, "'Popen'"),
    ("tf22", "Dense", _activation, "activation 'deserialize'"),
    ("tf22", "TensorFlowOpLayer", _constants, "constants"),
])
def test_configs_outside_the_allow_lists_are_refused(files, tmp_path, style, class_name,
                                                     change, message):
    path = shutil.copyfile(files[style] / "Decoder.hdf5", tmp_path / "Decoder.hdf5")
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        _edit_layer(config, class_name, change)
        file.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(UnsafeFileError, match="Decoder.hdf5") as refused:
        check_legacy_model(path)
    assert message in str(refused.value)


def test_nested_models_are_checked(files, tmp_path):
    path = shutil.copyfile(files["tf22"] / "Encoder.hdf5", tmp_path / "Encoder.hdf5")
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        _edit_layer(config, "Conv2D", _unknown_class)  # inside the nested inception_v3
        file.attrs["model_config"] = json.dumps(config).encode()
    with pytest.raises(UnsafeFileError, match="MyCustomLayer"):
        caption_with_files(files["images"][:1], path, files["tf22"] / "Decoder.hdf5",
                           files["tf22"] / "tokenizer.pickle")
    assert check_legacy_model(files["tf22"] / "Encoder.hdf5")["class_name"] == "Model"


def test_missing_tf_keras_gives_the_clear_message(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # `import tf_keras` now fails
    folder = files["tf22"]
    with pytest.raises(CaptioningError) as error:
        caption_with_files(files["images"][:1], folder / "Encoder.hdf5",
                           folder / "Decoder.hdf5", folder / "tokenizer.pickle")
    assert str(error.value) == TF_KERAS_MISSING
    assert "pip install tf-keras" in str(error.value)


def test_files_from_different_releases_are_refused(files, tmp_path):
    small = files["small"]
    other = save(chain_decoder(small, {}, encoding=ENCODING + 1), tmp_path / "Decoder.hdf5")
    with pytest.raises(ReleaseError, match="different releases"):
        caption_with_files(files["images"][:1], files["tf22"] / "Encoder.hdf5", other,
                           files["root"] / "small_tokenizer.pickle")


# ---------------------------------------------------------------------------------------------
# This project's own release files through the same call.


@pytest.fixture(scope="module")
def own_release(tmp_path_factory):
    from captioning.config import CaptionConfig
    from captioning.models.decoders import build_decoder
    from captioning.models.encoders import build_encoder

    root = tmp_path_factory.mktemp("own")
    tokenizer = CaptionTokenizer().fit(["a red circle", "a blue square on the left"])
    tokenizer.save(root / "tokenizer.pickle")
    encoder = build_encoder("mobilenet_v2", weights="none", image_size=32)
    encoder.save(root / "Encoder.hdf5")
    decoder = build_decoder(CaptionConfig(units=8, embedding_dim=4), tokenizer.vocab_size,
                            tuple(encoder.output.shape[1:]))
    decoder.step.save(root / "Decoder.hdf5")
    return root


def test_own_release_files_work_too(files, own_release):
    paths = [own_release / name for name in ("Encoder.hdf5", "Decoder.hdf5",
                                             "tokenizer.pickle")]
    assert not is_legacy_model(paths[0]) and not is_legacy_model(paths[1])
    images = [files["images"][0], files["bad"], files["images"][1]]
    results = caption_with_files(images, *paths, max_words=6, batch_size=2)
    assert [r.image for r in results] == [str(p) for p in images]
    assert not results[1].ok and "not_a_picture.jpg" in results[1].error
    for result in (results[0], results[2]):
        assert isinstance(result.caption, str)
        assert len(result.words) <= 6


def test_own_release_files_take_beam_and_top_and_the_default_length(files, own_release):
    from captioning.config import CaptionConfig
    from captioning.inference.legacy import _own_captioner

    paths = [own_release / name for name in ("Encoder.hdf5", "Decoder.hdf5",
                                             "tokenizer.pickle")]
    results = caption_with_files(files["images"][:2], *paths, beam=3, top=2)
    for result in results:
        assert len(result.alternatives) == 2
        scores = [score for _, score in result.alternatives]
        assert scores == sorted(scores, reverse=True) and scores[0] == result.score
        assert result.alternatives[0][0] == result.caption
    # not the earlier project's 16 words: the release's own default decode length
    captioner = _own_captioner(*paths, None, 4)
    assert captioner.search.max_length == CaptionConfig().max_decode_length
    with pytest.raises(ConfigError, match="top"):
        caption_with_files(files["images"][:1], *paths, beam=1, top=2)


def test_caption_cli_with_own_files_uses_beam_and_top(files, own_release, capsys):
    from captioning import cli

    flags = [f"--{kind}={own_release / name}" for kind, name in
             (("encoder", "Encoder.hdf5"), ("decoder", "Decoder.hdf5"),
              ("tokenizer", "tokenizer.pickle"))]
    images = [str(path) for path in files["images"][:2]]
    code = cli.main(["caption", *images, *flags, "--beam", "3", "--top", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in records] == images
    for record in records:
        assert len(record["top"]) == 2 and record["top"][0]["caption"] == record["caption"]


@pytest.mark.parametrize("flags", [["--beam", "2"], ["--top", "2"]])
def test_caption_cli_refuses_beam_for_the_earlier_projects_files(files, flags, capsys,
                                                                 monkeypatch):
    from captioning import cli

    def no_loading(*args, **kwargs):
        raise AssertionError("nothing is loaded before the refusal")

    monkeypatch.setattr(LegacyCaptioner, "load", no_loading)
    folder = files["tf22"]
    code = cli.main(["caption", str(files["images"][0]), "--encoder",
                     str(folder / "Encoder.hdf5"), "--decoder", str(folder / "Decoder.hdf5"),
                     "--tokenizer", str(folder / "tokenizer.pickle"), *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: Decoder.hdf5") and "greedily" in err
    assert len(err.strip().splitlines()) == 1


def test_mixed_legacy_and_keras3_files_are_refused(files, own_release):
    with pytest.raises(ReleaseError, match="different releases"):
        caption_with_files(files["images"][:1], files["tf22"] / "Encoder.hdf5",
                           own_release / "Decoder.hdf5", own_release / "tokenizer.pickle")
