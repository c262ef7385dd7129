"""`CaptionConfig`: every hyperparameter of a run, as one plain dataclass.

The config travels as JSON: into the cache manifest (the encoder part), into the run folder
(so a resumed run can check it is the same run) and into the release manifest (so prediction
uses the text settings and decoder shapes that training used).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from captioning.errors import ConfigError

# Keras' Tokenizer default without `<` and `>`, so markers such as `<sos>` survive.
DEFAULT_FILTERS = '!"#$%&()*+,-./:;=?@[\\]^_`{|}~\t\n'

ENCODERS = ("inception_v3", "vgg16", "resnet50", "mobilenet_v2", "inception_v3_mixed2")
FEATURES = ("pooled", "grid")
CELLS = ("gru", "lstm")
CONDITIONINGS = ("init_state", "first_input", "every_step", "attention")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class CaptionConfig:
    """All settings of a captioning run. Defaults reach the synthetic quality bar.

    Example:
    >>> cfg = CaptionConfig(cell="lstm", epochs=5)
    >>> CaptionConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    # --- encoder (recorded in the feature cache) ---
    encoder: str = "inception_v3"  # CNN family, one of ENCODERS
    weights: str = "imagenet"  # "imagenet", "none" (random) or a local .h5 weights file
    image_size: int | None = None  # input side in pixels; None takes the family's own
    features: str = "pooled"  # "pooled": one vector per image; "grid": H*W regions
    feature_dtype: str = "float16"  # dtype of the cached features

    # --- text (recorded in the tokenizer) ---
    lower: bool = True
    filters: str = DEFAULT_FILTERS  # characters replaced by spaces (Keras' default but < and >)
    remove_articles: bool = False  # drop a/an/the, as one earlier Keras project did
    start_token: str = "<start>"
    end_token: str = "<end>"
    oov_token: str = "<unk>"
    max_length: int = 30  # words per caption, markers excluded
    long_captions: str = "truncate"  # "truncate" or "drop" captions over max_length
    min_count: int = 1  # words seen fewer times become oov_token
    num_words: int | None = None  # cap on the vocabulary size (ids), None for no cap

    # --- decoder ---
    cell: str = "gru"  # "gru" or "lstm"
    conditioning: str = "init_state"  # how the image enters, one of CONDITIONINGS
    units: int = 256  # recurrent units per layer
    embedding_dim: int = 128  # word embedding size
    attention_units: int = 256  # Bahdanau attention size (attention only)
    num_layers: int = 1  # stacked recurrent layers
    dropout: float = 0.1  # dropout on embeddings and recurrent outputs

    # --- training ---
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"  # "constant" or "cosine" decay over all epochs
    clipnorm: float | None = 5.0  # gradient clipping by global norm; None for none
    seed: int = 0
    early_stopping: int = 0  # patience in epochs on val_bleu_4; 0 disables
    val_images: int = 200  # validation images decoded each epoch for val_bleu_4
    strategy: str = "none"  # tf.distribute: "auto", "none", "mirrored" or "tpu"

    # --- fine-tuning: a second phase from images, the top CNN layers unfrozen ---
    fine_tune: int = 0  # how many top CNN layers to unfreeze; 0 skips the phase
    fine_tune_epochs: int = 2
    fine_tune_learning_rate: float = 1e-4

    # --- decoding ---
    max_decode_length: int = 30  # words generated at most
    beam: int = 1  # 1 is greedy
    length_penalty: float = 0.7  # beam scores are divided by length ** length_penalty

    def __post_init__(self):
        _choice("encoder", self.encoder, ENCODERS)
        _choice("features", self.features, FEATURES)
        _choice("feature_dtype", self.feature_dtype, ("float16", "float32"))
        _choice("long_captions", self.long_captions, ("truncate", "drop"))
        _choice("cell", self.cell, CELLS)
        _choice("conditioning", self.conditioning, CONDITIONINGS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("strategy", self.strategy, ("auto", "none", "mirrored", "tpu"))
        if not _is_int(self.fine_tune) or self.fine_tune < 0:
            raise ConfigError(f"fine_tune must be an integer >= 0, got {self.fine_tune!r}")
        if not _is_number(self.fine_tune_learning_rate) or self.fine_tune_learning_rate <= 0:
            raise ConfigError("fine_tune_learning_rate must be positive, got "
                              f"{self.fine_tune_learning_rate!r}")
        for name in ("units", "embedding_dim", "attention_units", "num_layers", "epochs",
                     "batch_size", "max_length", "min_count", "max_decode_length", "beam",
                     "val_images", "fine_tune_epochs"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        # A config read from a hand-edited JSON file can hold any JSON value: wrong types are
        # refused here as ConfigErrors rather than failing later with a TypeError.
        if self.image_size is not None and (not _is_int(self.image_size)
                                            or self.image_size < 32):
            raise ConfigError(f"image_size must be an integer of at least 32 pixels or None, "
                              f"got {self.image_size!r}")
        if self.num_words is not None and (not _is_int(self.num_words) or self.num_words < 4):
            raise ConfigError(f"num_words must be an integer >= 4 or None, got {self.num_words!r}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not _is_number(self.learning_rate) or self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.clipnorm is not None and (not _is_number(self.clipnorm) or self.clipnorm < 0):
            raise ConfigError(f"clipnorm must be >= 0 or None (0 or None: no clipping), got "
                              f"{self.clipnorm!r}")
        if not _is_number(self.length_penalty):
            raise ConfigError(f"length_penalty must be a number, got {self.length_penalty!r}")
        if not _is_int(self.early_stopping) or self.early_stopping < 0:
            raise ConfigError(f"early_stopping must be an integer >= 0, got "
                              f"{self.early_stopping!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.filters, str):
            raise ConfigError(f"filters must be a string of the characters to remove, got "
                              f"{self.filters!r}")
        for name in ("lower", "remove_articles"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def wants_grid(self) -> bool:
        """Whether the chosen conditioning needs grid features."""
        return self.conditioning == "attention"

    def replace(self, **changes) -> "CaptionConfig":
        """A copy with some settings changed (and validated)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown settings {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CaptionConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object of settings, got "
                              f"{type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; known settings are {sorted(names)}")
        return cls(**values)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "CaptionConfig":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config ({error})") from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
