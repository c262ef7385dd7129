"""Fine-tuning: a second training phase from images, with the top CNN layers unfrozen.

After the decoder has learnt on cached features, the encoder and decoder are joined into one
model (pixels + caption in, logits out), the top `fine_tune` weighted layers of the CNN are
made trainable (BatchNormalization layers are not counted and stay frozen, in inference mode,
as Keras' transfer-learning guide recommends), and training goes on from the images at a
lower learning rate. The fine-tuned encoder is then exported with the decoder. The joint model
is built and compiled inside the run's `tf.distribute` strategy, with the same global batch
as the first phase. Each fine-tuning epoch is checkpointed like the first phase, so a killed
run resumes, and is a `fine_tune` row of `history.csv`, numbered after the first phase's.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
from pathlib import Path

import keras
import numpy as np
from keras import ops

from captioning.errors import CacheError, ConfigError
from captioning.models import layers  # noqa: F401  (registers the custom layers)


class ImageCaptionBatches(keras.utils.PyDataset):
    """`((pixels, tokens_in), tokens_out)` batches, the images decoded by the one loader in
    a thread pool.

    Args:
        images_dir: the folder holding the images.
        names: image file of each caption (relative to `images_dir`).
        sequences: int32 `(captions, length)` encoded captions with markers.
        batch_size: captions per batch (the global batch under a strategy).
        image_size: the encoder's input side in pixels.
        seed: shuffling seed.
        epoch: the epoch the first pass counts as (set when resuming).
        shuffle: reshuffle every epoch.
        drop_remainder: leave out the last, partial batch (static shapes, for TPUs).
    """

    def __init__(self, images_dir, names, sequences, batch_size, image_size, *, seed=0,
                 epoch=0, shuffle=True, drop_remainder=False):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images_dir, self.names = Path(images_dir), list(names)
        self.sequences = np.asarray(sequences)
        self.batch_size, self.image_size = batch_size, image_size
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.drop_remainder = drop_remainder
        self._pool = concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2))
        self._order = self._make_order()

    def _make_order(self):
        if not self.shuffle:
            return np.arange(len(self.names))
        return np.random.default_rng([self.seed, 1000 + self.epoch]).permutation(len(self.names))

    def __len__(self):
        if self.drop_remainder:
            return len(self.names) // self.batch_size
        return math.ceil(len(self.names) / self.batch_size)

    def __getitem__(self, index):
        picked = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        pixels = load_pixels(self.images_dir, [self.names[i] for i in picked], self.image_size,
                             self._pool)
        tokens = self.sequences[picked]
        return (pixels, tokens[:, :-1]), tokens[:, 1:]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()


def load_pixels(images_dir, names, size, pool=None) -> np.ndarray:
    """`(len(names), size, size, 3)` float32 pixels of the named images, read by the one
    loader (`captioning.images.load_and_resize`), in `pool` when one is given."""
    from captioning.data.images import load_and_resize

    paths = [Path(images_dir) / name for name in names]
    load = (lambda p: load_and_resize(p, size))
    return np.stack(list(pool.map(load, paths) if pool else map(load, paths)))


def unfreeze_top(encoder: keras.Model, count: int) -> list[str]:
    """Makes the top `count` weighted layers of the encoder's CNN trainable.

    BatchNormalization layers are neither counted nor unfrozen: they stay frozen (and the
    encoder runs in inference mode), so `count` layers with kernels are trained.

    Args:
        encoder: an encoder built by `captioning.encoders.build_encoder` (or loaded).
        count: how many layers to unfreeze, from the top.

    Returns:
        The names of the layers made trainable, bottom first (`count` of them).

    Raises:
        ConfigError: `count` is below 1 or more than the CNN's weighted layers.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"fine_tune must be a positive number of layers, got {count!r}")
    backbone = next((layer for layer in encoder.layers if isinstance(layer, keras.Model)), None)
    if backbone is None:
        raise ConfigError("the encoder holds no CNN sub-model to fine-tune")
    weighted = [layer for layer in backbone.layers if layer.weights
                and not isinstance(layer, keras.layers.BatchNormalization)]
    if count > len(weighted):
        raise ConfigError(f"fine_tune={count} but the CNN {backbone.name!r} has only "
                          f"{len(weighted)} layers with weights (BatchNormalization not "
                          f"counted); use --fine-tune {len(weighted)} or fewer")
    encoder.trainable = True
    for layer in encoder.layers:
        layer.trainable = layer is backbone
    for layer in backbone.layers:
        layer.trainable = False
    chosen = weighted[-count:]
    for layer in chosen:
        layer.trainable = True
    return [layer.name for layer in chosen]


def fine_tune(run: Path, cache, decoder, tokenizer, config, images_dir=None, progress=True,
              strategy=None, after_epoch: int = 0, on_epoch=None):
    """Runs the fine-tuning phase; returns the fine-tuned encoder model.

    Args:
        run: the run folder (checkpoints go to `run/checkpoints/fine_tune/`).
        cache: the `FeatureCache` of the first phase (its encoder is the starting point).
        decoder: the trained `Decoder` (its weights are the first phase's best), built under
            `strategy`.
        tokenizer: the run's tokenizer.
        config: the run's `CaptionConfig` (`fine_tune`, `fine_tune_epochs`,
            `fine_tune_learning_rate`, `batch_size` per replica, `clipnorm`, `val_images`).
        images_dir: the images; default the folder the cache was made from.
        progress: show Keras' progress bar.
        strategy: the `tf.distribute` strategy the decoder was built under (default: the
            current one). The joint model is built and compiled in its scope; the global
            batch is `batch_size` times its replicas, without a partial batch on a TPU.
        after_epoch: the first phase's last epoch. Fine-tuning epochs are numbered after it;
            a fine-tuning checkpoint made after another first-phase epoch (the first phase
            was continued since) is stale and fine-tuning starts over.
        on_epoch: called with no argument after each fine-tuning epoch is saved (the run
            rewrites `history.csv`).

    Returns:
        The fine-tuned encoder (a Keras model sharing its weights with the joint model).
    """
    import tensorflow as tf

    from captioning.training.strategies import is_tpu
    from captioning.training.train import _ValidationBleu, masked_accuracy, usable_validation

    images_dir = Path(images_dir or cache.manifest.get("images_dir", ""))
    if not images_dir.is_dir():
        raise CacheError(f"fine-tuning reads the images, but {images_dir} is not a folder; pass "
                         "--images with the folder the cache was made from")
    strategy = strategy or tf.distribute.get_strategy()
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    folder = run / "checkpoints" / "fine_tune"
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = read_state(run)
    reason = state and _stale(state, config, after_epoch)
    if reason:
        print(f"Fine-tuning starts over: {reason}.")
        state = None
    state = state or {"epoch": 0, "history": []}
    state.update({"after_epoch": after_epoch, "layers": config.fine_tune})

    with strategy.scope():
        encoder = keras.saving.load_model(cache.path / "encoder.hdf5", safe_mode=True,
                                          compile=False)
        unfrozen = unfreeze_top(encoder, config.fine_tune)
        size = int(encoder.inputs[0].shape[1])
        pixels = keras.Input((size, size, 3), name="image")
        tokens = keras.Input(tuple(decoder.training.inputs[1].shape[1:]), dtype="int32",
                             name="tokens")
        logits = decoder.training([encoder(pixels, training=False), tokens])
        joint = keras.Model([pixels, tokens], logits, name="fine_tune")
        joint.compile(
            optimizer=keras.optimizers.Adam(config.fine_tune_learning_rate,
                                            global_clipnorm=config.clipnorm or None),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
            metrics=[masked_accuracy],
        )
        if state["epoch"]:
            joint.optimizer.build(joint.trainable_variables)
            joint.load_weights(folder / f"epoch-{state['epoch']:04d}.weights.h5")
    table = cache.captions()
    length = int(decoder.training.inputs[1].shape[1]) + 1

    def batches(part, shuffle):
        part = part[tokenizer.keep_mask(part["caption"].tolist())]
        return ImageCaptionBatches(images_dir, part["image"], tokenizer.to_matrix(
            part["caption"].tolist(), length), global_batch, size, seed=config.seed,
            epoch=state["epoch"], shuffle=shuffle, drop_remainder=is_tpu(strategy))

    train_batches = batches(table[table["split"] == "train"], True)
    if len(train_batches) == 0:
        raise ConfigError(f"{len(train_batches.names)} training captions make no full batch of "
                          f"{global_batch}; lower --batch-size")
    val_part = table[table["split"] == "val"]
    val_batches = usable_validation(batches(val_part, False) if not val_part.empty else None,
                                    "fine-tuning")
    if state["epoch"]:
        print(f"Resuming fine-tuning after epoch {state['epoch']} of {config.fine_tune_epochs}.")
    else:
        print(f"Fine-tuning {len(unfrozen)} CNN layers ({unfrozen[0]} .. {unfrozen[-1]}) from "
              f"images at learning rate {config.fine_tune_learning_rate}.")
    bleu = _ValidationBleu(decoder.step, tokenizer, val_part, config)
    pool = concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2))

    def features_of(names):
        return ops.convert_to_numpy(encoder(load_pixels(images_dir, names, size, pool),
                                            training=False))

    class _Save(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            number = epoch + 1
            path = folder / f"epoch-{number:04d}.weights.h5"
            tmp = folder / f"epoch-{number:04d}.tmp.weights.h5"
            joint.save_weights(tmp)
            os.replace(tmp, path)
            score = bleu(features_of)
            if score is not None:
                print(f"fine-tuning epoch {number}: val_bleu_4 {score:.4f} on "
                      f"{len(bleu.images)} images")
            row = {"epoch": after_epoch + number, "phase": "fine_tune",
                   "loss": logs.get("loss"), "accuracy": logs.get("masked_accuracy"),
                   "val_loss": logs.get("val_loss"),
                   "val_accuracy": logs.get("val_masked_accuracy"), "val_bleu_4": score,
                   "learning_rate": float(ops.convert_to_numpy(joint.optimizer.learning_rate))}
            history = [r for r in state["history"] if r["epoch"] < row["epoch"]] + [row]
            state.update({"epoch": number, "history": history})
            tmp_state = folder / "state.json.tmp"
            tmp_state.write_text(json.dumps(state, indent=2))
            os.replace(tmp_state, state_path)
            for old in folder.glob("epoch-*.weights.h5"):
                if old != path:
                    old.unlink(missing_ok=True)
            if on_epoch is not None:
                on_epoch()

    if state["epoch"] < config.fine_tune_epochs:
        joint.fit(train_batches, validation_data=val_batches, epochs=config.fine_tune_epochs,
                  initial_epoch=state["epoch"], callbacks=[_Save()],
                  verbose=1 if progress else 2)
    pool.shutdown(wait=False)
    return encoder


def read_state(run: Path):
    """The fine-tuning phase's `checkpoints/fine_tune/state.json`, or None before its first
    epoch: `epoch` (fine-tuning epochs done), `after_epoch` (the first phase's last epoch
    when it started), `layers` (the layers unfrozen) and `history` (its rows of
    `history.csv`)."""
    path = Path(run) / "checkpoints" / "fine_tune" / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _stale(state, config, after_epoch) -> str | None:
    """Why a fine-tuning checkpoint no longer fits the run, or None when it does."""
    if state.get("after_epoch", after_epoch) != after_epoch:
        return (f"the first phase trained on to epoch {after_epoch} since fine-tuning started "
                f"after epoch {state['after_epoch']}")
    if state.get("layers", config.fine_tune) != config.fine_tune:
        return (f"fine-tuning started with {state['layers']} unfrozen layers, now "
                f"{config.fine_tune}")
    return None


def history_rows(run: Path, config, after_epoch: int) -> list[dict]:
    """The fine-tuning phase's `history.csv` rows, or none when its checkpoint is stale
    (see `fine_tune`'s `after_epoch`) or absent."""
    state = read_state(run)
    if not state or _stale(state, config, after_epoch):
        return []
    return state["history"]

