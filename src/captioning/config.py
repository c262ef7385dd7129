"""`CaptionConfig`: every hyperparameter of a run, as one plain dataclass.

The config travels as JSON: into the cache manifest (the encoder part), into the run folder
(so a resumed run can check it is the same run) and into the release manifest (so prediction
uses the text settings and decoder shapes that training used).

The enumerations of the allowed values live here, once: the config checks against them, and
the CLI offers them as `choices`. Each field's `metadata` holds its `help` text (and its
`choices`), from which `python -m captioning train` makes its flags.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from captioning.errors import ConfigError
from captioning.utils.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    is_int,
    is_number,
)
from captioning.utils.files import atomic_write_json

# Keras' Tokenizer default without `<` and `>`, so markers such as `<sos>` survive: the ASCII
# punctuation and symbols but `'`, `<` and `>`, plus tab and newline. Letters of every script
# with their accents and tone marks, digits and non-ASCII punctuation are kept.
DEFAULT_FILTERS = '!"#$%&()*+,-./:;=?@[\\]^_`{|}~\t\n'

ENCODERS = ("inception_v3", "vgg16", "resnet50", "mobilenet_v2", "inception_v3_mixed2")
FEATURES = ("pooled", "grid")
CELLS = ("gru", "lstm")
CONDITIONINGS = ("init_state", "first_input", "every_step", "attention")
LR_SCHEDULES = ("constant", "cosine")
DTYPES = ("float16", "float32")
LONG_CAPTION_POLICIES = ("truncate", "drop")
STRATEGIES = ("auto", "none", "mirrored", "multi_worker", "tpu", "data_parallel")
SCST_BASELINES = ("mean", "greedy")
MONITORS = ("val_cider", "val_bleu_4")  # what picks the best epoch of the first phases
PRECISIONS = ("none", "bfloat16", "float16")  # mixed precision: the compute dtype
CAPTION_FORMATS = ("coco", "flickr8k", "karpathy", "csv")  # what `read_captions` reads
SYNTHETIC_FORMATS = ("csv", "flickr8k", "coco")  # what `make_dataset` writes


def _setting(default, help: str, choices: tuple | None = None):
    """A field with its help text (and its allowed values) in `metadata`."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class CaptionConfig:
    """All settings of a captioning run. Defaults reach the synthetic quality bar.

    Example:
    >>> cfg = CaptionConfig(cell="lstm", epochs=5)
    >>> CaptionConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    # --- encoder (recorded in the feature cache; training takes the cache's) ---
    encoder: str = _setting("inception_v3", "CNN family", ENCODERS)
    weights: str = _setting("imagenet", "imagenet (downloaded), none (random), or a local .h5 "
                            "weights file")
    image_size: int | None = _setting(None, "encoder input side in pixels; none: the "
                                      "family's own")
    features: str = _setting("pooled", "pooled: one vector per image; grid: one per image "
                             "region (for attention)", FEATURES)
    feature_dtype: str = _setting("float16", "dtype of the cached features", DTYPES)

    # --- text (recorded in the tokenizer) ---
    lower: bool = _setting(True, "lower-case the captions (--no-lower keeps their "
                           "upper-case letters)")
    filters: str = _setting(DEFAULT_FILTERS, "characters removed from the captions (default: "
                            "ASCII punctuation but ' < and >, as Keras' filter without < and >; "
                            "letters of any script and their accents are kept); '' keeps every "
                            "character")
    remove_articles: bool = _setting(False, "drop a/an/the, as one earlier Keras project did")
    start_token: str = _setting("<start>", "the marker put before every caption")
    end_token: str = _setting("<end>", "the marker put after every caption")
    oov_token: str = _setting("<unk>", "the word that stands for words out of the vocabulary")
    max_length: int = _setting(30, "words per caption, markers excluded")
    long_captions: str = _setting("truncate", "captions longer than --max-length: keep their "
                                  "first words, or leave them out", LONG_CAPTION_POLICIES)
    min_count: int = _setting(1, "words seen fewer times become the oov token")
    num_words: int | None = _setting(None, "cap on the vocabulary size (word ids); none: no "
                                     "cap")

    # --- decoder ---
    cell: str = _setting("gru", "recurrent cell", CELLS)
    conditioning: str = _setting("init_state", "how the image enters the decoder",
                                 CONDITIONINGS)
    units: int = _setting(256, "recurrent units per layer")
    embedding_dim: int = _setting(128, "word embedding size")
    attention_units: int = _setting(256, "Bahdanau attention size (attention only)")
    num_layers: int = _setting(1, "stacked recurrent layers")
    dropout: float = _setting(0.5, "dropout on embeddings and recurrent outputs, in [0, 1)")
    feature_dropout: float = _setting(0.0, "dropout on the normalised image features in "
                                      "training (each value of a pooled vector or grid), "
                                      "in [0, 1)")

    # --- training ---
    epochs: int = _setting(12, "first-phase epochs; raising it on a resumed run trains on "
                           "(the cosine schedule keeps its first length, the added epochs at "
                           "its final rate)")
    batch_size: int = _setting(64, "captions per step")
    learning_rate: float = _setting(2e-3, "first-phase learning rate")
    lr_schedule: str = _setting("cosine", "constant, or cosine decay over all epochs",
                                LR_SCHEDULES)
    clipnorm: float | None = _setting(5.0, "gradient clipping by global norm; 0 or none: no "
                                      "clipping")
    seed: int = _setting(0, "seed of the weights and of the order of the captions")
    early_stopping: int = _setting(3, "patience in epochs on the monitor (or the training "
                                   "loss, when there is no validation split); 0 trains every "
                                   "epoch")
    ema: float = _setting(0.0, "keep an exponential moving average of the weights with this "
                          "momentum per step (e.g. 0.99) and validate, keep and export it "
                          "rather than the last step's weights (first phase); 0: off")
    label_smoothing: float = _setting(0.0, "spread this much of each target's mass over the "
                                      "vocabulary, in [0, 1)")
    scheduled_sampling: float = _setting(0.0, "final chance of feeding the model its own "
                                         "previous word, in [0, 1)")
    val_images: int = _setting(500, "validation images greedy-decoded each epoch for "
                               "val_cider and val_bleu_4")
    monitor: str = _setting("val_cider", "what picks the best epoch and stops early: the "
                            "CIDEr-D or the BLEU-4 of the val_images' greedy captions",
                            MONITORS)
    strategy: str = _setting("none", "devices to train on: mirrored, multi_worker (TF_CONFIG), "
                             "tpu are tf.distribute (TensorFlow); data_parallel is "
                             "keras.distribution (JAX); auto picks", STRATEGIES)
    mixed_precision: str = _setting("none", "compute in bfloat16 (GPUs since Ampere, TPUs) or "
                                    "float16 (older GPUs, loss scaled); the loss and the "
                                    "release stay float32", PRECISIONS)

    # --- fine-tuning: a second phase from images, the top CNN layers unfrozen ---
    fine_tune: int = _setting(0, "then train from images with the top N CNN layers unfrozen; "
                              "0 skips the phase")
    fine_tune_epochs: int = _setting(2, "epochs of the fine-tuning phase")
    fine_tune_learning_rate: float = _setting(1e-4, "learning rate of the fine-tuning phase")

    # --- self-critical sequence training (SCST): a last phase that maximises CIDEr-D ---
    scst_epochs: int = _setting(10, "epochs of SCST after cross-entropy (and fine-tuning), "
                                "each costing about 2 cross-entropy epochs; 0 skips it")
    scst_samples: int = _setting(5, "captions sampled per image each SCST step, at least 2")
    scst_baseline: str = _setting("mean", "SCST baseline: the mean of the other samples' "
                                  "rewards, or the greedy caption's (Rennie et al.)",
                                  SCST_BASELINES)
    scst_learning_rate: float = _setting(2e-4, "learning rate of the SCST phase")
    scst_lr_schedule: str = _setting("constant", "constant, or cosine decay over the SCST "
                                     "epochs (raising scst_epochs on a resumed run keeps its "
                                     "first length)", LR_SCHEDULES)

    # --- decoding ---
    max_decode_length: int = _setting(30, "words generated at most")
    beam: int = _setting(1, "beam width (1: greedy)")
    length_penalty: float = _setting(0.7, "beam scores are divided by length ** "
                                     "length_penalty")
    block_ngram_repeat: int = _setting(0, "no n-gram of this size twice in a caption; 0 "
                                       "allows repeats")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if "choices" in field.metadata:
                check_choice(field.name, getattr(self, field.name), field.metadata["choices"])
        for name in ("units", "embedding_dim", "attention_units", "num_layers", "epochs",
                     "batch_size", "max_length", "min_count", "max_decode_length", "beam",
                     "val_images", "fine_tune_epochs"):
            check_int(name, getattr(self, name), 1)
        for name in ("fine_tune", "early_stopping", "scst_epochs", "block_ngram_repeat"):
            check_int(name, getattr(self, name), 0)
        check_int("scst_samples", self.scst_samples, 2)
        check_int("seed", self.seed)
        # A config read from a hand-edited JSON file can hold any JSON value: wrong types are
        # refused here as ConfigErrors rather than failing later with a TypeError.
        check_int("image_size", self.image_size, 32, allow_none=True)
        check_int("num_words", self.num_words, 4, allow_none=True)
        for name in ("learning_rate", "fine_tune_learning_rate", "scst_learning_rate"):
            check_number(name, getattr(self, name), 0, exclusive_minimum=True)
        for name in ("dropout", "feature_dropout", "label_smoothing", "scheduled_sampling"):
            check_number(name, getattr(self, name), 0.0, 1.0, exclusive_maximum=True)
        check_number("clipnorm", self.clipnorm, 0, allow_none=True)
        check_number("ema", self.ema, 0.0, 1.0, exclusive_maximum=True)
        check_number("length_penalty", self.length_penalty)
        if not isinstance(self.filters, str):
            raise ConfigError(f"filters must be a string of the characters to remove, got "
                              f"{self.filters!r}")
        check_bool("lower", self.lower)
        check_bool("remove_articles", self.remove_articles)
        for field in dataclasses.fields(self):  # NumPy scalars would not go into JSON
            value = getattr(self, field.name)
            if is_int(value):
                setattr(self, field.name, int(value))
            elif is_number(value):
                setattr(self, field.name, float(value))

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
        """The settings as a dict of plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CaptionConfig":
        """The config of a dict of settings (missing ones take their defaults)."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object of settings, got "
                              f"{type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; known settings are {sorted(names)}")
        return cls(**values)

    def save(self, path) -> None:
        """Writes the settings to `path` as readable UTF-8 JSON (no `\\u` escapes)."""
        atomic_write_json(path, self.to_dict(), error=ConfigError)

    @classmethod
    def load(cls, path) -> "CaptionConfig":
        """Reads a config saved by `save` (or written by hand); the file is named in errors."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config ({error})") from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
