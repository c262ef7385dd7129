"""Tests for captioning.inference.legacy: captioning with the earlier Keras project's release
files as its notebook did, through the one captioner loop, and `caption_with_files` for both
kinds of release.

The files are rebuilt in miniature by `tests.release.legacy_files`.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from tests.release.legacy_files import (
    ENCODING,
    SEED_VOCAB,
    SIZE,
    chain_decoder,
    chain_release,
    legacy_decoder,
    make_files,
    save,
    tf_keras,
)
from captioning.data.images import load_and_resize
from captioning.errors import CaptioningError, ConfigError, ReleaseError, UnsafeFileError
from captioning.inference import CaptionModel, caption_images
from captioning.inference.legacy import (
    TF_KERAS_MISSING,
    LegacyCaptioner,
    caption_with_files,
    is_legacy_model,
    preprocess_input,
)
from captioning.text import CaptionTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("legacy"))


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


def test_legacy_captioner_is_a_model_of_the_one_captioner_loop(files):
    small = files["small"]
    red, = ids(small, "red")
    paths = chain_release(files, "red", {small.start_id: red, red: small.end_id})
    captioner = LegacyCaptioner.load(*paths, batch_size=2)
    assert isinstance(captioner, CaptionModel) and captioner.max_beam == 1
    images = [files["bad"], *files["images"][:3]]
    through_loop = caption_images(captioner, images, batch_size=3, workers=1)
    assert [r.caption for r in through_loop] == [None, "red", "red", "red"]
    assert through_loop == captioner.caption(images)
    with pytest.raises(ConfigError, match="beam"):
        caption_images(captioner, images, beam=2)
    with pytest.raises(ConfigError, match="greedily"):
        captioner.captions(captioner.encode(np.zeros((1, SIZE, SIZE, 3), np.float32)), beam=2)


# ---------------------------------------------------------------------------------------------
# Refused before anything runs, and files that do not fit.


def test_a_lambda_decoder_is_refused_before_it_runs(files, tmp_path):
    marker = tmp_path / "lambda_ran"
    touch = tf_keras.layers.Lambda(
        lambda x, p=str(marker): (__import__("pathlib").Path(p).touch(), x)[1])
    save(legacy_decoder(SEED_VOCAB, units=8, embedding=4, extra=touch),
         tmp_path / "Decoder.hdf5")
    marker.unlink()  # building and saving called it here
    with pytest.raises(UnsafeFileError, match=r"Decoder\.hdf5.*Lambda layer"):
        caption_with_files(files["images"][:1], files["tf24"] / "Encoder.hdf5",
                           tmp_path / "Decoder.hdf5", files["tf24"] / "tokenizer.pickle")
    with pytest.raises(UnsafeFileError):
        LegacyCaptioner.load(files["tf24"] / "Encoder.hdf5", tmp_path / "Decoder.hdf5",
                             files["tf24"] / "tokenizer.pickle")
    assert not marker.exists()


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
