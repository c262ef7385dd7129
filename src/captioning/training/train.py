"""Training on the feature cache: streamed batches, masked loss, resumable epochs.

The loop knows nothing about the model beyond `build_decoder`'s two graphs: it feeds
`(features, caption[:-1]) -> caption[1:]` batches read from the cache's memory maps, and at
every epoch end it greedy-decodes a fixed validation subset for `val_bleu_4`, checkpoints
the weights and the optimizer atomically, and rewrites `history.csv`. Killed at any moment,
the same command resumes from the last finished epoch. The best epoch by `val_bleu_4` is
what gets exported.

`history.csv` is always rewritten from the checkpoints' state (the first phase's, then the
fine-tuning phase's), so it lists each finished epoch exactly once, in order, with its
`phase` (`frozen`: on cached features; `fine_tune`: from images, the top CNN layers
unfrozen). The learning-rate schedule spans the epochs the run was first started with: a run
resumed with more `--epochs` keeps that schedule (no jump in the learning rate), and the
added epochs of a cosine schedule run at its final rate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import ops

from captioning.config import CaptionConfig
from captioning.models.decoders import build_decoder, check_features
from captioning.models.search import SequenceDecoder
from captioning.errors import CacheError, ConfigError
from captioning.cache.build import FeatureCache
from captioning.training.strategies import is_tpu, make_strategy
from captioning.text.tokenizer import CaptionTokenizer, load_tokenizer

logger = logging.getLogger("captioning")

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_bleu_4",
                   "learning_rate", "phase")
# Settings that may change when a run is resumed: they do not change what was trained. The
# encoder settings come from the cache, which the resume check compares on its own.
_RESUMABLE = ("epochs", "early_stopping", "beam", "length_penalty", "max_decode_length",
              "strategy", "fine_tune", "fine_tune_epochs", "fine_tune_learning_rate",
              "encoder", "weights", "image_size", "features", "feature_dtype")
# CaptionConfig field -> the cache setting it must agree with.
_FROM_CACHE = {"encoder": "encoder", "weights": "weights", "image_size": "image_size",
               "features": "features", "feature_dtype": "dtype"}


def masked_accuracy(y_true, y_pred):
    """Token accuracy over the non-padding positions (id 0 is padding)."""
    y_true = ops.cast(y_true, "int32")
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


class CaptionBatches(keras.utils.PyDataset):
    """`((features, tokens_in), tokens_out)` batches streamed from a feature cache.

    Only the caption matrix and row numbers live in memory; features are read per batch
    from the shards' memory maps, so memory does not grow with the cache.

    Args:
        cache: an open `FeatureCache`.
        rows: cache row of each caption.
        sequences: int32 `(captions, length)` encoded captions with markers.
        batch_size: captions per batch (the global batch under a strategy).
        shuffle: reshuffle every epoch (the order depends only on `seed` and the epoch).
        seed: shuffling seed.
        epoch: the epoch the first pass counts as (set when resuming).
        drop_remainder: leave out the last, partial batch (static shapes, for TPUs).
    """

    def __init__(self, cache, rows, sequences, batch_size, *, shuffle=True, seed=0, epoch=0,
                 drop_remainder=False):
        super().__init__(workers=1, use_multiprocessing=False)
        self.cache, self.rows, self.sequences = cache, np.asarray(rows), np.asarray(sequences)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_remainder = drop_remainder
        self.epoch = epoch
        self._order = self._make_order()

    def _make_order(self):
        if not self.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))

    def __len__(self):
        if self.drop_remainder:
            return len(self.rows) // self.batch_size
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index):
        picked = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        features = self.cache.gather(self.rows[picked])
        tokens = self.sequences[picked]
        return (features, tokens[:, :-1]), tokens[:, 1:]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()


@dataclasses.dataclass
class TrainResult:
    """What `train` leaves behind."""

    run_dir: Path
    best_epoch: int
    history: pd.DataFrame
    release_manifest: Path


def train(cache_dir, run_dir, config: CaptionConfig | None = None, *, progress: bool = True,
          dataset: str | None = None, images_dir=None) -> TrainResult:
    """Trains a decoder on a feature cache and writes the release into `run_dir`.

    The encoder settings (`encoder`, `weights`, `image_size`, `features`, `feature_dtype`)
    are the cache's: a config that leaves one at its default takes the cache's value, and
    the release records it; a config that sets one to another value is refused.

    Args:
        cache_dir: a finished feature cache.
        run_dir: the run folder: checkpoints, `history.csv`, `run.json` and the release
            (`Encoder.hdf5`, `Decoder.hdf5`, `tokenizer.pickle`, `manifest.json`). A run folder
            with a checkpoint of the same run is resumed.
        config: the settings; defaults to `CaptionConfig()`.
        progress: show Keras' progress bar.
        dataset: a note on the training data, recorded in the release manifest.
        images_dir: the images, for fine-tuning (`config.fine_tune`); default the folder
            the cache was made from.

    Returns:
        A `TrainResult`.

    Raises:
        ConfigError: the config contradicts the cache or the run folder's run.
        CacheError: the cache is unfinished or has no training captions.
    """
    from captioning.release.load import export_release

    cache = FeatureCache(cache_dir)
    config = config_for_cache(config or CaptionConfig(), cache)
    check_features(config, cache.feature_shape)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    _check_or_write_run_config(run, config, cache)
    keras.utils.set_random_seed(config.seed)

    table = cache.captions()
    train_table = table[table["split"] == "train"]
    val_table = table[table["split"] == "val"]
    if train_table.empty:
        raise CacheError(f"{cache.path}: no captions in the 'train' split; check the captions "
                         "file's splits")
    tokenizer_path = run / "tokenizer.pickle"
    if tokenizer_path.exists():
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        tokenizer = _make_tokenizer(config).fit(train_table["caption"].tolist())
        tokenizer.save(tokenizer_path)
    length = config.max_length + 2

    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    drop_remainder = is_tpu(strategy)

    def batches(part, shuffle, epoch=0):
        keep = tokenizer.keep_mask(part["caption"].tolist())
        part = part[keep]
        sequences = tokenizer.to_matrix(part["caption"].tolist(), length)
        return CaptionBatches(cache, cache.rows(part["image"]), sequences,
                              config.batch_size * replicas, shuffle=shuffle, seed=config.seed,
                              epoch=epoch, drop_remainder=drop_remainder)

    stats = cache.statistics(cache.rows(sorted(set(train_table["image"]))))
    checkpoint = _Checkpoint(run, config)
    state = checkpoint.state()
    checkpoint.write_history()  # a kill after state.json, before history.csv, left it stale
    initial_epoch = state["epoch"] if state else 0
    train_batches = batches(train_table, True, epoch=initial_epoch)
    val_batches = usable_validation(batches(val_table, False) if not val_table.empty else None,
                                    "training")
    if len(train_batches) == 0:
        raise ConfigError(f"{len(train_batches.rows)} training captions make no full batch of "
                          f"{config.batch_size * replicas}; lower --batch-size")
    steps = (state or {}).get("schedule_steps") or len(train_batches) * config.epochs
    with strategy.scope():
        decoder = build_decoder(config, tokenizer.vocab_size, cache.feature_shape, length - 1,
                                feature_stats=stats)
        decoder.training.compile(
            optimizer=_optimizer(config, steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
            metrics=[masked_accuracy],
        )
        if state:
            decoder.training.optimizer.build(decoder.training.trainable_variables)
            decoder.training.load_weights(checkpoint.weights(state["epoch"]))
            print(f"Resuming {run} after epoch {initial_epoch} of {config.epochs}.")
            planned = steps // len(train_batches)
            if (config.lr_schedule == "cosine" and config.epochs > planned
                    and initial_epoch < config.epochs):
                print(f"The cosine learning-rate schedule keeps the {planned} epochs the run "
                      f"started with; epochs {planned + 1}..{config.epochs} run at its final "
                      "rate.")
    if replicas > 1:
        print(f"Training on {replicas} replicas ({strategy.__class__.__name__}), global batch "
              f"{config.batch_size * replicas}.")

    monitor = _ValidationMonitor(decoder, tokenizer, cache, val_table, config, checkpoint,
                                 state, steps)
    if initial_epoch < config.epochs and not monitor.stopped:
        decoder.training.fit(
            train_batches,
            validation_data=val_batches,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=[monitor],
            verbose=1 if progress else 2,
        )
    state = checkpoint.state()
    if not state:
        raise ConfigError(f"{run}: no epoch finished; nothing to export")
    best = int(state["best_epoch"])
    decoder.training.load_weights(checkpoint.best_weights())
    encoder_file = cache.path / "encoder.hdf5"
    if config.fine_tune:
        from captioning.training.finetune import fine_tune

        encoder_file = fine_tune(run, cache, decoder, tokenizer, config, images_dir=images_dir,
                                 progress=progress, strategy=strategy,
                                 after_epoch=int(state["epoch"]),
                                 on_epoch=checkpoint.write_history)
    history = checkpoint.write_history()
    manifest = export_release(
        run,
        encoder_file=encoder_file,
        step_model=decoder.step,
        tokenizer=tokenizer,
        config=config,
        cache_settings=cache.settings,
        feature_shape=cache.feature_shape,
        extra={"best_epoch": best, "dataset": dataset,
               "validation": _row_dict(history, best)},
    )
    return TrainResult(run_dir=run, best_epoch=best, history=history, release_manifest=manifest)


def config_for_cache(config: CaptionConfig, cache: FeatureCache) -> CaptionConfig:
    """The config with the cache's encoder settings, which made the features it trains on.

    A setting the config leaves at its default takes the cache's value; one set to another
    value than the cache's is a mistake (the features would not be what the config says).

    Args:
        config: the run's settings.
        cache: the open `FeatureCache`.

    Returns:
        A `CaptionConfig` whose `encoder`, `weights`, `image_size`, `features` and
        `feature_dtype` are the cache's.

    Raises:
        ConfigError: a setting differs from the cache's; the message names both values.
    """
    from captioning.cache.build import _weights_identity

    defaults = CaptionConfig()
    settings = cache.settings
    changes, conflicts = {}, []
    for field, key in _FROM_CACHE.items():
        value, cached = getattr(config, field), settings[key]
        same = value == cached
        if field == "weights" and not same:
            same = _weights_identity(value) == cached
        if not same and value != getattr(defaults, field):
            conflicts.append(f"{field} is {value!r} in the config but {cached!r} in the cache")
        changes[field] = cached
    if conflicts:
        raise ConfigError(f"{cache.path} was made with other encoder settings than the config "
                          f"asks for: {'; '.join(conflicts)}; leave them out of the config (the "
                          "cache's are used), or make a cache with them")
    return config.replace(**changes)


def usable_validation(batches, phase: str):
    """The validation batches, or None (with a warning) when they hold no batch at all.

    With `drop_remainder` (TPUs) a validation split smaller than the global batch gives no
    batch, and Keras refuses to fit on an empty dataset; the run then trains without
    validation loss (val_bleu_4 is still measured on the validation images).
    """
    if batches is not None and len(batches) == 0:
        logger.warning("%s: the %d validation captions make no full batch of %d (static "
                       "shapes drop the partial one); %s goes on without validation loss, "
                       "val_bleu_4 is still measured; lower --batch-size to get val_loss",
                       phase, len(batches.sequences), batches.batch_size, phase)
        return None
    return batches


def _make_tokenizer(config: CaptionConfig) -> CaptionTokenizer:
    return CaptionTokenizer(
        lower=config.lower, filters=config.filters, remove_articles=config.remove_articles,
        start_token=config.start_token, end_token=config.end_token,
        oov_token=config.oov_token, max_length=config.max_length,
        long_captions=config.long_captions, min_count=config.min_count,
        num_words=config.num_words,
    )


def _optimizer(config: CaptionConfig, steps: int):
    rate = config.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(steps, 1),
                                                      alpha=0.05)
    return keras.optimizers.Adam(learning_rate=rate, global_clipnorm=config.clipnorm or None)


def _check_or_write_run_config(run: Path, config: CaptionConfig, cache: FeatureCache):
    path = run / "run.json"
    from captioning.cache.build import describe_differences

    current = {"config": config.to_dict(), "cache": cache.identity,
               "images_fingerprint": cache.manifest["images_fingerprint"]}
    if not path.exists():
        _atomic_json(path, current)
        return
    saved = json.loads(path.read_text())
    differences = []
    for key, value in current["config"].items():
        if key not in _RESUMABLE and saved["config"].get(key) != value:
            differences.append(f"{key}: run has {saved['config'].get(key)!r}, now {value!r}")
    # Runs started before the cache identity grew more keys are compared on what they hold.
    changed = describe_differences(
        {**current["cache"], "images_fingerprint": current["images_fingerprint"]},
        {**saved["cache"], "images_fingerprint": saved.get("images_fingerprint")},
        found_name="cache", expected_name="run")
    if changed:
        differences.append(f"the cache {cache.path} differs from the one the run started "
                           f"with: {', '.join(changed)}")
    if differences:
        raise ConfigError(f"{run} holds a different run ({'; '.join(differences)}); use another "
                          "--out folder, or delete it to start over")
    _atomic_json(path, current)


def _atomic_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def _row_dict(history: pd.DataFrame, epoch: int) -> dict:
    row = history[history["epoch"] == epoch]
    if not len(row):
        return {}
    return {k: (None if pd.isna(v) else v if isinstance(v, str) else float(v))
            for k, v in row.iloc[0].items()}


class _Checkpoint:
    """The run's resumable state: `checkpoints/state.json` names the last finished epoch's
    weights (with the optimizer) and the best epoch's, and keeps the history rows and the
    learning-rate schedule's length; each file is written whole, then renamed, and
    state.json last. `history.csv` is derived from it (and from the fine-tuning phase's)."""

    def __init__(self, run: Path, config: CaptionConfig):
        self.dir = run / "checkpoints"
        self.run, self.config = run, config
        self.dir.mkdir(exist_ok=True)

    def state(self):
        path = self.dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else None

    def weights(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:04d}.weights.h5"

    def best_weights(self) -> Path:
        return self.dir / f"best-{int(self.state()['best_epoch']):04d}.weights.h5"

    def history(self) -> pd.DataFrame:
        """Every finished epoch, in order: the first phase's, then fine-tuning's (when the
        run fine-tunes and its checkpoint follows the first phase's last epoch)."""
        from captioning.training.finetune import history_rows

        state = self.state()
        rows = [{"phase": "frozen", **row} for row in (state["history"] if state else [])]
        if state and self.config.fine_tune:
            rows += history_rows(self.run, self.config, int(state["epoch"]))
        return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))

    def write_history(self) -> pd.DataFrame:
        """Rewrites `history.csv` from the state files; returns the history."""
        frame = self.history()
        if self.state():
            tmp = self.run / "history.csv.tmp"
            frame.to_csv(tmp, index=False)
            os.replace(tmp, self.run / "history.csv")
        return frame

    def save(self, model, epoch, row, score, is_best, stopped, schedule_steps):
        state = self.state() or {"history": [], "best_epoch": None, "best_score": None}
        path = self.weights(epoch)
        _save_weights(model, path)
        if is_best:
            best = self.dir / f"best-{epoch:04d}.weights.h5"
            _save_weights(model, best)
            state["best_epoch"], state["best_score"] = epoch, score
        history = [r for r in state["history"] if r["epoch"] < epoch] + [row]
        previous = state.get("epoch")
        state.update({"epoch": epoch, "history": history, "stopped": stopped,
                      "schedule_steps": state.get("schedule_steps") or schedule_steps})
        _atomic_json(self.dir / "state.json", state)
        self.write_history()
        for old in self.dir.glob("*.weights.h5"):
            keep = {path.name, f"best-{int(state['best_epoch']):04d}.weights.h5"}
            if old.name not in keep and previous is not None:
                old.unlink(missing_ok=True)


def _save_weights(model, path: Path):
    tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    model.save_weights(tmp)
    os.replace(tmp, path)


class _ValidationBleu:
    """Greedy-decodes a fixed validation subset (the first `config.val_images` images by
    name) and scores it against their references with BLEU-4.

    Args:
        step_model: the one-step decoder (its weights are read at every call).
        tokenizer: the run's tokenizer.
        val_table: the validation captions (image, caption).
        config: the run's settings (`val_images`, `max_decode_length`).
    """

    def __init__(self, step_model, tokenizer, val_table, config):
        self.tokenizer = tokenizer
        self.images = sorted(set(val_table["image"]))[:config.val_images]
        self.references = {
            image: [" ".join(tokenizer.words(c)) for c in group["caption"]]
            for image, group in val_table[val_table["image"].isin(self.images)].groupby("image")
        }
        self.search = SequenceDecoder(step_model, start_id=tokenizer.start_id,
                                      end_id=tokenizer.end_id,
                                      max_length=config.max_decode_length)

    def __call__(self, features_of) -> float | None:
        """BLEU-4 of the subset, `features_of(names)` giving the images' features; None
        without validation images."""
        from captioning.evaluation import metrics as evaluation

        if not self.images:
            return None
        predictions = {}
        for start in range(0, len(self.images), 128):
            names = self.images[start:start + 128]
            beams = self.search.decode(features_of(names))
            for name, ids in zip(names, beams.ids[:, 0]):
                predictions[name] = self.tokenizer.decode(ids)
        return float(evaluation.bleu4(predictions, self.references))


class _ValidationMonitor(keras.callbacks.Callback):
    """Epoch end: val_bleu_4 on a fixed validation subset, checkpoint, history, early stop.

    The monitored score is val_bleu_4, or without validation images val_loss, or without
    validation captions the training loss."""

    def __init__(self, decoder, tokenizer, cache, val_table, config, checkpoint, state,
                 schedule_steps):
        super().__init__()
        self.cache, self.config, self.checkpoint = cache, config, checkpoint
        self.schedule_steps = schedule_steps
        self.stopped = bool(state and state.get("stopped"))
        self.best = state.get("best_score") if state else None
        self.best_epoch = state.get("best_epoch") if state else None
        self.bleu = _ValidationBleu(decoder.step, tokenizer, val_table, config)
        self.images = self.bleu.images

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        number = epoch + 1
        bleu = self.bleu(lambda names: self.cache.gather(self.cache.rows(names)))
        if bleu is not None:
            logs["val_bleu_4"] = bleu
            print(f"epoch {number}: val_bleu_4 {bleu:.4f} on {len(self.images)} images")
        if bleu is not None:
            monitored, score = "val_bleu_4", bleu
        elif logs.get("val_loss") is not None:
            monitored, score = "val_loss", -float(logs["val_loss"])
        else:
            monitored, score = "loss", -float(logs.get("loss", 0))
        is_best = self.best is None or score > self.best
        if is_best:
            self.best, self.best_epoch = score, number
        lr = self.model.optimizer.learning_rate
        row = {"epoch": number, "loss": logs.get("loss"), "accuracy": logs.get("masked_accuracy"),
               "val_loss": logs.get("val_loss"),
               "val_accuracy": logs.get("val_masked_accuracy"), "val_bleu_4": bleu,
               "learning_rate": float(ops.convert_to_numpy(lr)), "phase": "frozen"}
        patience = self.config.early_stopping
        stop = bool(patience) and number - self.best_epoch >= patience
        self.checkpoint.save(self.model, number, row, score, is_best, stop, self.schedule_steps)
        if stop:
            print(f"Early stopping: {monitored} has not improved for {patience} epochs "
                  f"(best epoch {self.best_epoch}).")
            self.model.stop_training = True
            self.stopped = True
