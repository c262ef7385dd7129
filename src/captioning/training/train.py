"""Training on the feature cache: streamed batches, masked loss, resumable epochs.

`train` runs the phases of a run and exports its release. Its first phase, the
cross-entropy phase, knows nothing about the model beyond `build_decoder`'s two graphs: it
feeds `(features, caption[:-1]) -> caption[1:]` batches read from the cache's memory maps,
and at every epoch end it greedy-decodes a fixed validation subset for `val_cider` and
`val_bleu_4`, checkpoints the weights and the optimizer atomically, and rewrites `history.csv`
(`captioning.training.run_state`). Killed at any moment, the same command resumes from the
last finished epoch. The best epoch by `config.monitor` (val CIDEr-D by default) is what
gets exported. With
`config.fine_tune` the fine-tuning phase (`captioning.training.finetune`) follows; with
`config.scst_epochs` (10 by default) the SCST phase (`captioning.training.scst_phase`) comes
last, and its best epoch by val CIDEr-D is what gets exported.

`history.csv` is always rewritten from the checkpoints' state (the first phase's, then the
fine-tuning phase's, then SCST's), so it lists each finished epoch exactly once, in order,
with its `phase` (`frozen`: on cached features; `fine_tune`: from images, the top CNN layers
unfrozen; `scst`: self-critical, with `val_cider` and `reward`). The learning-rate
schedule spans the epochs the run was first started with: a run resumed with more `--epochs`
keeps that schedule (no jump in the learning rate), and the added epochs of a cosine
schedule run at its final rate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import keras
import pandas as pd

from captioning.cache import FeatureCache, weights_identity
from captioning.config import CaptionConfig
from captioning.errors import CacheError, ConfigError
from captioning.models.decoders import build_decoder, check_features
from captioning.models.precision import policy_scope, with_precision
from captioning.release import export_release
from captioning.text import CaptionTokenizer, load_tokenizer
from captioning.training.batches import (
    CaptionBatches,
    check_training_batches,
    usable_validation,
)
from captioning.training.callbacks import (
    AveragedWeights,
    BleuMonitor,
    EpochCheckpoint,
    ResumableEarlyStopping,
    ScheduledSamplingRamp,
    ValidationBleu,
    monitored,
)
from captioning.training.finetune import fine_tune
from captioning.training.objective import compile_for_captions, make_optimizer
from captioning.training.run_state import RunState
from captioning.training.scst_phase import scst_phase
from captioning.training.strategies import drops_remainder, make_strategy, worker_folder

logger = logging.getLogger(__name__)

# CaptionConfig field -> the cache setting it must agree with.
_FROM_CACHE = {"encoder": "encoder", "weights": "weights", "image_size": "image_size",
               "features": "features", "feature_dtype": "dtype"}


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
            with a checkpoint of the same run is resumed. The non-chief workers of a
            `multi_worker` cluster keep their copy in `run_dir/worker-N`.
        config: the settings; defaults to `CaptionConfig()`.
        progress: show Keras' progress bar.
        dataset: a note on the training data, recorded in the release manifest; default
            the one `build_cache` recorded in the cache (the CLI's `--format` and file).
        images_dir: the images, for fine-tuning (`config.fine_tune`); default the folder
            the cache was made from.

    Returns:
        A `TrainResult`.

    Raises:
        ConfigError: the config contradicts the cache or the run folder's run.
        CacheError: the cache is unfinished or has no training captions.
    """
    cache = FeatureCache(cache_dir)
    config = config_for_cache(config or CaptionConfig(), cache)
    check_features(config, cache.feature_shape)
    strategy = make_strategy(config.strategy)
    run = worker_folder(Path(run_dir), strategy)
    run.mkdir(parents=True, exist_ok=True)
    run_state = RunState(run, config)
    run_state.check_run(cache)
    keras.utils.set_random_seed(config.seed)
    train_table, val_table = _splits(cache)
    tokenizer = _run_tokenizer(run, config, train_table)
    run_state.write_history()  # a kill after state.json, before history.csv, left it stale
    decoder = _cross_entropy_phase(run_state, cache, tokenizer, train_table, val_table,
                                   strategy, progress)
    state = run_state.frozen.state()
    if not state:
        raise ConfigError(f"{run}: no epoch finished; nothing to export")
    decoder.training.load_weights(run_state.frozen.best_weights())
    encoder = cache.path / "encoder.hdf5"
    if config.fine_tune:
        encoder = fine_tune(run, cache, decoder, tokenizer, config, images_dir=images_dir,
                            progress=progress, strategy=strategy,
                            after_epoch=int(state["epoch"]))
    best = int(state["best_epoch"])
    if config.scst_epochs:
        best = scst_phase(run_state, cache, decoder, tokenizer, train_table, val_table,
                          after_epoch=run_state.epochs_before_scst(), strategy=strategy,
                          encoder=encoder if config.fine_tune else None,
                          images_dir=images_dir, progress=progress)
    history = run_state.write_history()
    manifest = export_release(
        run, encoder_file=encoder, step_model=with_precision(decoder.step, "none"),
        tokenizer=tokenizer, config=config, cache_settings=cache.settings,
        feature_shape=cache.feature_shape,
        extra={"best_epoch": best, "dataset": dataset or cache.manifest.get("dataset"),
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
    defaults = CaptionConfig()
    settings = cache.settings
    changes, conflicts = {}, []
    for field, key in _FROM_CACHE.items():
        value, cached = getattr(config, field), settings[key]
        same = value == cached
        if field == "weights" and not same:
            same = weights_identity(value) == cached
        if not same and value != getattr(defaults, field):
            conflicts.append(f"{field} is {value!r} in the config but {cached!r} in the cache")
        changes[field] = cached
    if conflicts:
        raise ConfigError(f"{cache.path} was made with other encoder settings than the config "
                          f"asks for: {'; '.join(conflicts)}; leave them out of the config (the "
                          "cache's are used), or make a cache with them")
    return config.replace(**changes)


def _splits(cache: FeatureCache):
    """The cache's training and validation captions."""
    table = cache.captions()
    train_table = table[table["split"] == "train"]
    if train_table.empty:
        raise CacheError(f"{cache.path}: no captions in the 'train' split; check the captions "
                         "file's splits")
    return train_table, table[table["split"] == "val"]


def _run_tokenizer(run: Path, config: CaptionConfig, train_table) -> CaptionTokenizer:
    """The run's tokenizer: the one saved in `run`, else fitted on the training captions
    and saved."""
    path = run / "tokenizer.pickle"
    if path.exists():
        return load_tokenizer(path)
    tokenizer = _make_tokenizer(config).fit(train_table["caption"].tolist())
    tokenizer.save(path)
    return tokenizer


def _make_tokenizer(config: CaptionConfig) -> CaptionTokenizer:
    return CaptionTokenizer(
        lower=config.lower, filters=config.filters, remove_articles=config.remove_articles,
        start_token=config.start_token, end_token=config.end_token,
        oov_token=config.oov_token, max_length=config.max_length,
        long_captions=config.long_captions, min_count=config.min_count,
        num_words=config.num_words,
    )


def _cross_entropy_phase(run_state: RunState, cache, tokenizer, train_table, val_table,
                         strategy, progress: bool):
    """Trains the decoder on cached features up to `config.epochs` (or an early stop),
    resuming after the run state's last epoch; returns the `Decoder`."""
    config = run_state.config
    state = run_state.frozen.state() or {}
    done = int(state.get("epoch", 0))
    make = _feature_batches(cache, tokenizer, config, strategy)
    with contextlib.ExitStack() as stack:
        train_batches = check_training_batches(
            stack.enter_context(make(train_table, True, done)))
        val_batches = usable_validation(
            stack.enter_context(make(val_table, False, 0)) if not val_table.empty else None,
            "training")
        steps = state.get("schedule_steps") or len(train_batches) * config.epochs
        stats = cache.statistics(cache.rows(sorted(set(train_table["image"]))))
        with strategy.scope(), policy_scope(config.mixed_precision):
            decoder = build_decoder(config, tokenizer.vocab_size, cache.feature_shape,
                                    config.max_length + 1, feature_stats=stats)
            compile_for_captions(decoder.training, make_optimizer(
                config.learning_rate, config.clipnorm, schedule=config.lr_schedule,
                decay_steps=steps, ema=config.ema), label_smoothing=config.label_smoothing)
            if done:
                decoder.training.optimizer.build(decoder.training.trainable_variables)
                decoder.training.load_weights(run_state.frozen.weights(done))
        _log_start(config, done, steps // len(train_batches), strategy, run_state.run)
        if done < config.epochs and not state.get("stopped"):
            callbacks = _callbacks(run_state, decoder, tokenizer, cache, val_table, state,
                                   steps, has_val_batches=val_batches is not None)
            decoder.training.fit(train_batches, validation_data=val_batches,
                                 epochs=config.epochs, initial_epoch=done,
                                 callbacks=callbacks, verbose=1 if progress else 2)
    return decoder


def _feature_batches(cache, tokenizer, config: CaptionConfig, strategy):
    """`make(part, shuffle, epoch)`: the `CaptionBatches` of a part of the captions table,
    on cached features, in global batches."""
    global_batch = config.batch_size * strategy.num_replicas_in_sync

    def make(part, shuffle: bool, epoch: int) -> CaptionBatches:
        part = part[tokenizer.keep_mask(part["caption"].tolist())]
        sequences = tokenizer.to_matrix(part["caption"].tolist(), config.max_length + 2)
        return CaptionBatches.from_cache(cache, cache.rows(part["image"]), sequences,
                                         global_batch, shuffle=shuffle, seed=config.seed,
                                         epoch=epoch, drop_remainder=drops_remainder(strategy))

    return make


def _callbacks(run_state: RunState, decoder, tokenizer, cache, val_table, state: dict,
               steps: int, *, has_val_batches: bool) -> list:
    """The first phase's epoch-end callbacks: val scores, early stopping, the save."""
    config = run_state.config
    bleu = ValidationBleu(decoder.step, tokenizer, val_table, config)
    monitor = monitored(bleu, has_val_batches, config.monitor)
    callbacks = [AveragedWeights(resumed=bool(state.get("epoch")))] if config.ema else []
    callbacks.append(BleuMonitor(bleu, lambda names: cache.gather(cache.rows(names))))
    callbacks.append(ScheduledSamplingRamp(config.scheduled_sampling, config.epochs))
    if config.early_stopping:
        callbacks.append(ResumableEarlyStopping(
            monitor, config.early_stopping, best_score=state.get("best_score"),
            best_epoch=state.get("best_epoch"), last_epoch=int(state.get("epoch", 0))))
    callbacks.append(EpochCheckpoint(
        run_state.frozen, "frozen", monitor=monitor, best_score=state.get("best_score"),
        fields={"schedule_steps": steps}, after_save=run_state.write_history))
    return callbacks


def _log_start(config: CaptionConfig, done: int, planned: int, strategy, run: Path) -> None:
    if done:
        logger.info("Resuming %s after epoch %d of %d.", run, done, config.epochs)
        if config.lr_schedule == "cosine" and config.epochs > planned and done < config.epochs:
            logger.info("The cosine learning-rate schedule keeps the %d epochs the run started "
                        "with; epochs %d..%d run at its final rate.", planned, planned + 1,
                        config.epochs)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        logger.info("Training on %d replicas (%s), global batch %d.", replicas,
                    strategy.__class__.__name__, config.batch_size * replicas)


def _row_dict(history: pd.DataFrame, epoch: int) -> dict:
    row = history[history["epoch"] == epoch]
    if not len(row):
        return {}
    return {k: (None if pd.isna(v) else v if isinstance(v, str) else float(v))
            for k, v in row.iloc[0].items()}
