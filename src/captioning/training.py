"""Training on the feature cache: streamed batches, masked loss, resumable epochs.

The loop knows nothing about the model beyond `build_decoder`'s two graphs: it feeds
`(features, caption[:-1]) -> caption[1:]` batches read from the cache's memory maps, and at
every epoch end it greedy-decodes a fixed validation subset for `val_bleu_4`, checkpoints
the weights and the optimizer atomically, and rewrites `history.csv`. Killed at any moment,
the same command resumes from the last finished epoch. The best epoch by `val_bleu_4` is
what gets exported.
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
from captioning.decoders import build_decoder, check_features
from captioning.decoding import SequenceDecoder
from captioning.errors import CacheError, ConfigError
from captioning.features import FeatureCache
from captioning.strategies import is_tpu, make_strategy
from captioning.tokenizer import CaptionTokenizer, load_tokenizer

logger = logging.getLogger("captioning")

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_bleu_4",
                   "learning_rate")
# Settings that may change when a run is resumed: they do not change what was trained.
_RESUMABLE = ("epochs", "early_stopping", "beam", "length_penalty", "max_decode_length",
              "strategy", "fine_tune", "fine_tune_epochs", "fine_tune_learning_rate")


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
        batch_size: captions per batch.
        shuffle: reshuffle every epoch (the order depends only on `seed` and the epoch).
        seed: shuffling seed.
        epoch: the epoch the first pass counts as (set when resuming).
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

    Args:
        cache_dir: a finished feature cache.
        run_dir: the run folder: checkpoints, `history.csv`, `config.json` and the release
            (`Encoder.hdf5`, `Decoder.hdf5`, `tokenizer.pickle`, `manifest.json`). A run folder
            with a checkpoint of the same run is resumed.
        config: the settings; defaults to `CaptionConfig()`.
        progress: show Keras' progress bar.
        dataset: a note on the training data, recorded in the release manifest.
        images_dir: the images, for fine-tuning (`config.fine_tune`); default the folder
            the cache was made from.

    Returns:
        A `TrainResult`.
    """
    from captioning.release import export_release

    config = config or CaptionConfig()
    cache = FeatureCache(cache_dir)
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
    checkpoint = _Checkpoint(run)
    state = checkpoint.state()
    initial_epoch = state["epoch"] if state else 0
    train_batches = batches(train_table, True, epoch=initial_epoch)
    val_batches = batches(val_table, False) if not val_table.empty else None
    if len(train_batches) == 0:
        raise ConfigError(f"{len(train_batches.rows)} training captions make no full batch of "
                          f"{config.batch_size * replicas}; lower --batch-size")
    steps = len(train_batches) * config.epochs
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
    if replicas > 1:
        print(f"Training on {replicas} replicas ({strategy.__class__.__name__}), global batch "
              f"{config.batch_size * replicas}.")

    monitor = _ValidationMonitor(decoder, tokenizer, cache, val_table, config, checkpoint,
                                 state)
    if initial_epoch < config.epochs and not monitor.stopped:
        decoder.training.fit(
            train_batches,
            validation_data=val_batches,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            callbacks=[monitor],
            verbose=1 if progress else 2,
        )
    history = checkpoint.history()
    if history.empty:
        raise ConfigError(f"{run}: no epoch finished; nothing to export")
    best = int(checkpoint.state()["best_epoch"])
    decoder.training.load_weights(checkpoint.best_weights())
    encoder_file = cache.path / "encoder.hdf5"
    if config.fine_tune:
        from captioning.finetune import fine_tune

        encoder_file = fine_tune(run, cache, decoder, tokenizer, config, images_dir=images_dir,
                                 progress=progress)
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
    return keras.optimizers.Adam(learning_rate=rate, global_clipnorm=config.clipnorm)


def _check_or_write_run_config(run: Path, config: CaptionConfig, cache: FeatureCache):
    path = run / "run.json"
    from captioning.features import describe_differences

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
    return {k: (None if pd.isna(v) else float(v)) for k, v in row.iloc[0].items()} if len(row) else {}


class _Checkpoint:
    """The run's resumable state: `checkpoints/state.json` names the last finished epoch's
    weights (with the optimizer) and the best epoch's; each file is written whole, then
    renamed, and state.json last."""

    def __init__(self, run: Path):
        self.dir = run / "checkpoints"
        self.run = run
        self.dir.mkdir(exist_ok=True)

    def state(self):
        path = self.dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else None

    def weights(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:04d}.weights.h5"

    def best_weights(self) -> Path:
        return self.dir / f"best-{int(self.state()['best_epoch']):04d}.weights.h5"

    def history(self) -> pd.DataFrame:
        state = self.state()
        return pd.DataFrame(state["history"] if state else [], columns=list(HISTORY_COLUMNS))

    def save(self, model, epoch, row, score, is_best, stopped):
        state = self.state() or {"history": [], "best_epoch": None, "best_score": None}
        path = self.weights(epoch)
        _save_weights(model, path)
        if is_best:
            best = self.dir / f"best-{epoch:04d}.weights.h5"
            _save_weights(model, best)
            state["best_epoch"], state["best_score"] = epoch, score
        history = [r for r in state["history"] if r["epoch"] < epoch] + [row]
        previous = state.get("epoch")
        state.update({"epoch": epoch, "history": history, "stopped": stopped})
        _atomic_json(self.dir / "state.json", state)
        frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
        tmp = self.run / "history.csv.tmp"
        frame.to_csv(tmp, index=False)
        os.replace(tmp, self.run / "history.csv")
        for old in self.dir.glob("*.weights.h5"):
            keep = {path.name, f"best-{int(state['best_epoch']):04d}.weights.h5"}
            if old.name not in keep and previous is not None:
                old.unlink(missing_ok=True)


def _save_weights(model, path: Path):
    tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    model.save_weights(tmp)
    os.replace(tmp, path)


class _ValidationMonitor(keras.callbacks.Callback):
    """Epoch end: val_bleu_4 on a fixed validation subset, checkpoint, history, early stop."""

    def __init__(self, decoder, tokenizer, cache, val_table, config, checkpoint, state):
        super().__init__()
        from captioning.evaluation import bleu4

        self._bleu4 = bleu4
        self.decoder, self.tokenizer, self.cache = decoder, tokenizer, cache
        self.config, self.checkpoint = config, checkpoint
        self.stopped = bool(state and state.get("stopped"))
        self.best = state.get("best_score") if state else None
        self.best_epoch = state.get("best_epoch") if state else None
        images = sorted(set(val_table["image"]))[:config.val_images]
        self.images = images
        self.references = {
            image: [" ".join(tokenizer.words(c)) for c in group["caption"]]
            for image, group in val_table[val_table["image"].isin(images)].groupby("image")
        }
        self.search = SequenceDecoder(decoder.step, start_id=tokenizer.start_id,
                                      end_id=tokenizer.end_id,
                                      max_length=config.max_decode_length)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        number = epoch + 1
        bleu = None
        if self.images:
            predictions = {}
            for start in range(0, len(self.images), 128):
                names = self.images[start:start + 128]
                beams = self.search.decode(self.cache.gather(self.cache.rows(names)))
                for name, ids in zip(names, beams.ids[:, 0]):
                    predictions[name] = self.tokenizer.decode(ids)
            bleu = float(self._bleu4(predictions, self.references))
            logs["val_bleu_4"] = bleu
            print(f"epoch {number}: val_bleu_4 {bleu:.4f} on {len(self.images)} images")
        score = bleu if bleu is not None else -float(logs.get("val_loss", logs.get("loss", 0)))
        is_best = self.best is None or score > self.best
        if is_best:
            self.best, self.best_epoch = score, number
        lr = self.model.optimizer.learning_rate
        row = {"epoch": number, "loss": logs.get("loss"), "accuracy": logs.get("masked_accuracy"),
               "val_loss": logs.get("val_loss"),
               "val_accuracy": logs.get("val_masked_accuracy"), "val_bleu_4": bleu,
               "learning_rate": float(ops.convert_to_numpy(lr))}
        patience = self.config.early_stopping
        stop = bool(patience) and number - self.best_epoch >= patience
        self.checkpoint.save(self.model, number, row, score, is_best, stop)
        if stop:
            print(f"Early stopping: val_bleu_4 has not improved for {patience} epochs.")
            self.model.stop_training = True
            self.stopped = True
