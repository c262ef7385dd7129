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

import contextlib
import logging
from pathlib import Path

import keras

from captioning.cache.identity import ENCODER_FILE
from captioning.errors import CacheError, ConfigError
from captioning.models import layers  # noqa: F401  (registers the custom layers)
from captioning.release.load import load_model_file
from captioning.training.batches import (
    CaptionBatches,
    check_training_batches,
    encode_images,
    usable_validation,
)
from captioning.training.callbacks import BleuMonitor, EpochCheckpoint, ValidationBleu
from captioning.training.objective import compile_for_captions, make_optimizer
from captioning.training.run_state import RunState
from captioning.training.strategies import drops_remainder, make_strategy
from captioning.utils.checks import check_int

logger = logging.getLogger(__name__)

# Offsets the shuffling seed, so that fine-tuning does not replay the first phase's order.
_SHUFFLE_STREAM = 1000


def unfreeze_top(encoder: keras.Model, count: int) -> list[str]:
    """Makes the top `count` weighted layers of the encoder's CNN trainable.

    BatchNormalization layers are neither counted nor unfrozen: they stay frozen (and the
    encoder runs in inference mode), so `count` layers with kernels are trained.

    Args:
        encoder: an encoder built by `captioning.models.encoders.build_encoder` (or loaded).
        count: how many layers to unfreeze, from the top.

    Returns:
        The names of the layers made trainable, bottom first (`count` of them).

    Raises:
        ConfigError: `count` is below 1 or more than the CNN's weighted layers.
    """
    check_int("fine_tune", count, 1)
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


def fine_tune(run, cache, decoder, tokenizer, config, images_dir=None, progress=True,
              strategy=None, after_epoch: int = 0):
    """Runs the fine-tuning phase; returns the fine-tuned encoder model.

    Args:
        run: the run folder (checkpoints go to `run/checkpoints/fine_tune/`); each epoch
            rewrites its `history.csv`.
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

    Returns:
        The fine-tuned encoder (a Keras model sharing its weights with the joint model).

    Raises:
        CacheError: `images_dir` is not a folder.
        ConfigError: the training captions make no full batch.
    """
    images_dir = Path(images_dir or cache.manifest.get("images_dir", ""))
    if not images_dir.is_dir():
        raise CacheError(f"fine-tuning reads the images, but {images_dir} is not a folder; pass "
                         "--images with the folder the cache was made from")
    strategy = strategy or make_strategy("none")
    run_state = RunState(run, config)
    done = _finished_epochs(run_state, after_epoch)
    with strategy.scope():
        joint, encoder, unfrozen = _joint_model(cache, decoder, config)
        if done:
            joint.optimizer.build(joint.trainable_variables)
            joint.load_weights(run_state.fine_tune.weights(done))
    if done:
        logger.info("Resuming fine-tuning after epoch %d of %d.", done, config.fine_tune_epochs)
    else:
        logger.info("Fine-tuning %d CNN layers (%s .. %s) from images at learning rate %s.",
                    len(unfrozen), unfrozen[0], unfrozen[-1], config.fine_tune_learning_rate)
    make = _image_batches(cache, images_dir, tokenizer, config, strategy, decoder, encoder,
                          done)
    table = cache.captions()
    val_part = table[table["split"] == "val"]
    with contextlib.ExitStack() as stack:
        train_batches = check_training_batches(
            stack.enter_context(make(table[table["split"] == "train"], True)))
        val_batches = usable_validation(
            stack.enter_context(make(val_part, False)) if not val_part.empty else None,
            "fine-tuning")

        def features_of(names):
            return encode_images(encoder, names, train_batches.fetch.pixels)

        callbacks = [
            BleuMonitor(ValidationBleu(decoder.step, tokenizer, val_part, config), features_of,
                        "fine-tuning epoch"),
            EpochCheckpoint(run_state.fine_tune, "fine_tune", first_epoch=after_epoch,
                            fields={"after_epoch": after_epoch, "layers": config.fine_tune},
                            after_save=run_state.write_history),
        ]
        if done < config.fine_tune_epochs:
            joint.fit(train_batches, validation_data=val_batches,
                      epochs=config.fine_tune_epochs, initial_epoch=done, callbacks=callbacks,
                      verbose=1 if progress else 2)
    return encoder


def _image_batches(cache, images_dir, tokenizer, config, strategy, decoder, encoder,
                   done: int):
    """`make(part, shuffle)`: the `CaptionBatches` of a part of the captions table, its
    images decoded at the encoder's input size, in global batches."""
    size = int(encoder.inputs[0].shape[1])
    length = int(decoder.training.inputs[1].shape[1]) + 1
    global_batch = config.batch_size * strategy.num_replicas_in_sync

    def make(part, shuffle: bool) -> CaptionBatches:
        part = part[tokenizer.keep_mask(part["caption"].tolist())]
        return CaptionBatches.from_images(
            images_dir, part["image"], tokenizer.to_matrix(part["caption"].tolist(), length),
            global_batch, size, seed=config.seed, epoch=done, shuffle=shuffle,
            drop_remainder=drops_remainder(strategy), stream=_SHUFFLE_STREAM)

    return make


def _finished_epochs(run_state: RunState, after_epoch: int) -> int:
    """The fine-tuning epochs a resumed run has done (0 for a new or stale phase)."""
    state = run_state.fine_tune.state()
    reason = state and run_state.fine_tune_stale(state, after_epoch)
    if reason:
        logger.info("Fine-tuning starts over: %s.", reason)
        run_state.fine_tune.clear()
        return 0
    return int(state["epoch"]) if state else 0


def _joint_model(cache, decoder, config):
    """The cache's encoder, its top layers unfrozen, joined to the decoder's training model
    (pixels + caption in, logits out) and compiled: `(joint, encoder, unfrozen layers)`."""
    encoder = load_model_file(cache.path / ENCODER_FILE)
    unfrozen = unfreeze_top(encoder, config.fine_tune)
    size = int(encoder.inputs[0].shape[1])
    pixels = keras.Input((size, size, 3), name="image")
    tokens = keras.Input(tuple(decoder.training.inputs[1].shape[1:]), dtype="int32",
                         name="tokens")
    logits = decoder.training([encoder(pixels, training=False), tokens])
    joint = keras.Model([pixels, tokens], logits, name="fine_tune")
    compile_for_captions(joint, make_optimizer(config.fine_tune_learning_rate,
                                               config.clipnorm),
                         label_smoothing=config.label_smoothing)
    return joint, encoder, unfrozen
