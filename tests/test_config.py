"""Tests for captioning.config: defaults, validation, JSON round trips, unknown settings."""

import dataclasses
import json

import pytest

from captioning.config import (
    CELLS,
    CONDITIONINGS,
    ENCODERS,
    FEATURES,
    CaptionConfig,
)
from captioning.errors import CaptioningError, ConfigError


def test_defaults_are_valid_and_documented_choices():
    cfg = CaptionConfig()
    assert cfg.encoder in ENCODERS
    assert cfg.features in FEATURES
    assert cfg.cell in CELLS
    assert cfg.conditioning in CONDITIONINGS
    assert cfg.wants_grid is False
    assert CaptionConfig(conditioning="attention").wants_grid is True


def test_every_valid_choice_is_accepted():
    for encoder in ENCODERS:
        CaptionConfig(encoder=encoder)
    for cell in CELLS:
        for conditioning in CONDITIONINGS:
            CaptionConfig(cell=cell, conditioning=conditioning)
    CaptionConfig(image_size=32, dropout=0.0, clipnorm=None, num_words=100, weights="none")
    CaptionConfig(clipnorm=0.0, length_penalty=0, learning_rate=1, weights=None)  # 0: no clipping


BAD_VALUES = [
    ("encoder", "alexnet"),
    ("features", "dense"),
    ("feature_dtype", "int8"),
    ("long_captions", "wrap"),
    ("cell", "rnn"),
    ("conditioning", "late_fusion"),
    ("lr_schedule", "step"),
    ("scst_lr_schedule", "linear"),
    ("units", 0),
    ("units", -8),
    ("units", 2.5),
    ("units", "256"),
    ("units", True),
    ("embedding_dim", 0),
    ("attention_units", 0),
    ("num_layers", 0),
    ("epochs", 0),
    ("batch_size", 0),
    ("max_length", 0),
    ("min_count", 0),
    ("max_decode_length", 0),
    ("beam", 0),
    ("val_images", 0),
    ("image_size", 16),
    ("image_size", 0),
    ("image_size", "299"),
    ("image_size", 99.5),
    ("num_words", 0),
    ("num_words", "many"),
    ("dropout", 1.0),
    ("dropout", -0.1),
    ("dropout", "0.1"),
    ("learning_rate", 0),
    ("learning_rate", -1e-3),
    ("learning_rate", "fast"),
    ("early_stopping", -1),
    ("early_stopping", 1.5),
    ("clipnorm", -1.0),
    ("clipnorm", "5"),
    ("length_penalty", "long"),
    ("seed", "zero"),
    ("lower", "yes"),
    ("filters", 5),
    ("filters", None),
    ("filters", ["!", "?"]),
    ("strategy", "horovod"),
    ("fine_tune", -1),
    ("fine_tune", True),
    ("fine_tune_epochs", 0),
    ("fine_tune_learning_rate", 0.0),
    ("fine_tune_learning_rate", "slow"),
    ("ema", 1.0),
    ("ema", -0.5),
]


@pytest.mark.parametrize("name,value", BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_bad_value_raises_config_error_naming_the_value(name, value):
    with pytest.raises(ConfigError) as info:
        CaptionConfig(**{name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message
    assert isinstance(info.value, CaptioningError)


@pytest.mark.parametrize("name,value", BAD_VALUES[:12], ids=[n for n, _ in BAD_VALUES[:12]])
def test_bad_value_refused_by_replace_and_from_dict(name, value):
    with pytest.raises(ConfigError, match=name):
        CaptionConfig().replace(**{name: value})
    values = CaptionConfig().to_dict()
    values[name] = value
    with pytest.raises(ConfigError, match=name):
        CaptionConfig.from_dict(values)


def test_to_dict_from_dict_round_trip():
    cfg = CaptionConfig(cell="lstm", conditioning="attention", features="grid", units=16,
                        image_size=75, num_words=500, clipnorm=None, beam=3, weights="none")
    values = cfg.to_dict()
    assert set(values) == {f.name for f in dataclasses.fields(CaptionConfig)}
    assert json.loads(json.dumps(values)) == values  # plain JSON values only
    assert CaptionConfig.from_dict(values) == cfg


def test_from_dict_accepts_a_partial_dict():
    assert CaptionConfig.from_dict({"cell": "lstm"}) == CaptionConfig(cell="lstm")


def test_save_load_round_trip(tmp_path):
    cfg = CaptionConfig(encoder="vgg16", epochs=3, learning_rate=1e-3, lower=False,
                        remove_articles=True, length_penalty=0.0)
    path = tmp_path / "config.json"
    cfg.save(path)
    assert json.loads(path.read_text())["encoder"] == "vgg16"
    assert CaptionConfig.load(path) == cfg


def test_replace_validates_and_copies():
    cfg = CaptionConfig()
    other = cfg.replace(units=32)
    assert other.units == 32 and cfg.units == 256


def test_unknown_keys_refused():
    with pytest.raises(ConfigError, match="bogus"):
        CaptionConfig.from_dict({"bogus": 1, "units": 8})
    with pytest.raises(ConfigError, match="colour"):
        CaptionConfig().replace(colour="red")


def test_load_refuses_unknown_keys_in_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"units": 8, "learning_rat": 0.1}))
    with pytest.raises(ConfigError, match="learning_rat"):
        CaptionConfig.load(path)


def test_load_missing_or_broken_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="nope.json"):
        CaptionConfig.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        CaptionConfig.load(broken)


def test_load_refuses_a_json_file_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(["units", "cell"]))
    with pytest.raises(ConfigError, match="list.json"):
        CaptionConfig.load(path)


def test_text_settings_travel_with_the_config_and_reach_the_tokenizer():
    from captioning.text.tokenizer import DEFAULT_FILTERS
    from captioning.training.train import _make_tokenizer

    assert CaptionConfig().filters == DEFAULT_FILTERS
    cfg = CaptionConfig(filters="!,", lower=False, long_captions="drop", num_words=50)
    values = json.loads(json.dumps(cfg.to_dict()))
    assert values["filters"] == "!," and CaptionConfig.from_dict(values) == cfg
    # A config written before `filters` existed (an older release) reads with the default.
    del values["filters"]
    assert CaptionConfig.from_dict(values).filters == DEFAULT_FILTERS
    tokenizer = _make_tokenizer(cfg)
    assert (tokenizer.filters, tokenizer.lower, tokenizer.long_captions,
            tokenizer.num_words) == ("!,", False, "drop", 50)
    assert tokenizer.words("A Dog, running. Fast!") == ["A", "Dog", "running.", "Fast"]
