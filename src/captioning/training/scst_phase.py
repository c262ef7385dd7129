"""The SCST phase of a run: self-critical epochs after cross-entropy (and fine-tuning).

`scst_phase` runs `captioning.training.scst` in the run folder. It starts from the weights
the phases before it left (the first phase's best epoch, or the fine-tuned model), trains
`config.scst_epochs` epochs on the training images' features, and at each epoch's end
greedy-decodes the validation subset for val CIDEr-D (document frequencies from the
validation references, as coco-caption computes it) and val BLEU-4, checkpoints the weights
and the optimizer into `run/checkpoints/scst/`, keeps the best epoch by val CIDEr (by the
training reward without validation images), and rewrites `history.csv` (`phase=scst` rows,
numbered after the phases before). Killed at any moment, the same command resumes after the
last finished SCST epoch; an SCST state made after other earlier epochs, or with other
sampling settings or learning rate (or its schedule), is stale and the phase starts over.
A cosine schedule keeps the length it started with when `scst_epochs` is raised.

Without fine-tuning the features are the cache's. After fine-tuning the encoder has changed,
so the training images are encoded once with it into `run/checkpoints/scst/features-*.npy`
(named by a hash of its weights, in the cache's dtype, reused on resume), and the validation
images are encoded at every epoch's end.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from captioning.training.batches import ENCODE_BATCH, encode_images, load_pixels
from captioning.training.callbacks import ValidationBleu, ValidationScores
from captioning.training.run_state import RunState, history_row
from captioning.training.scst import ScstTrainer, describe, scst_epoch
from captioning.training.strategies import drops_remainder
from captioning.utils.files import atomic_write

logger = logging.getLogger(__name__)


def scst_phase(run_state: RunState, cache, decoder, tokenizer, train_table, val_table, *,
               after_epoch: int, strategy, encoder=None, images_dir=None,
               progress: bool = True) -> int:
    """Runs (or resumes) the SCST phase and leaves its best epoch's weights in `decoder`.

    Args:
        run_state: the run's `RunState`.
        cache: the run's `FeatureCache`.
        decoder: the trained `Decoder`, built under `strategy`, holding the weights SCST
            starts from.
        tokenizer: the run's tokenizer.
        train_table, val_table: the training and validation captions (image, caption).
        after_epoch: the run's last epoch before SCST; SCST epochs are numbered after it.
        strategy: the run's strategy; the trainer is compiled in its scope, and a step takes
            `batch_size // scst_samples` images (`batch_size` sampled captions) per replica.
        encoder: the fine-tuned encoder, after fine-tuning; None: the cache's features.
        images_dir: the images, with `encoder`; default the folder the cache was made from.
        progress: show a progress bar per epoch.

    Returns:
        The run's number of the best SCST epoch (the one exported).
    """
    config = run_state.config
    checkpoint = run_state.scst
    state = checkpoint.state()
    reason = state and run_state.scst_stale(state, after_epoch)
    if reason:
        logger.info("SCST starts over: %s.", reason)
        checkpoint.clear()
        state = None
    done = int(state["epoch"]) if state else 0
    images = sorted(set(train_table["image"]))
    references = train_table.groupby("image")["caption"].apply(list).loc[images].tolist()
    features, features_of = _features(run_state, cache, images, encoder, images_dir)
    with strategy.scope():
        # A resumed cosine keeps the length it started with (more epochs: the final rate).
        decay_epochs = int(state.get("decay_epochs", config.scst_epochs) if state
                           else config.scst_epochs)
        trainer = ScstTrainer(decoder, tokenizer, references, features, config,
                              replicas=strategy.num_replicas_in_sync,
                              drop_remainder=drops_remainder(strategy),
                              decay_epochs=decay_epochs)
        model = decoder.training
        model.optimizer.build(model.trainable_variables)
        if done:
            model.load_weights(checkpoint.weights(done))
    scores = ValidationScores(ValidationBleu(decoder.step, tokenizer, val_table, config))
    monitor = "val_cider" if scores.images else "reward"
    best = state.get("best_score") if state else None
    if done:
        logger.info("Resuming SCST after its epoch %d of %d.", done, config.scst_epochs)
    elif config.scst_epochs:
        start = scores(features_of).get("val_cider")
        logger.info("SCST after epoch %d: %d samples per image, %s baseline, learning rate %s"
                    "%s.", after_epoch, config.scst_samples, config.scst_baseline,
                    config.scst_learning_rate,
                    "" if start is None else f"; val CIDEr-D before: {start:.4f}")
    for epoch in range(done + 1, config.scst_epochs + 1):
        logs = scst_epoch(trainer, epoch, progress=progress)
        logs.update(scores(features_of))
        logger.info("%s", describe(epoch, logs, after_epoch + epoch))
        value = float(logs[monitor])
        improved = best is None or value > best
        best = value if improved else best
        # The advantage-weighted loss is no cross-entropy: not the `loss` column's measure.
        row = history_row(after_epoch + epoch, "scst", {**logs, "loss": None},
                          logs["learning_rate"])
        checkpoint.save(model, epoch, row, best_score=value if improved else None,
                        decay_epochs=decay_epochs, **run_state.scst_origin(after_epoch))
        run_state.write_history()
    best_epoch = int(checkpoint.state()["best_epoch"])
    model.load_weights(checkpoint.best_weights(best_epoch))
    return after_epoch + best_epoch


def _features(run_state: RunState, cache, images, encoder, images_dir):
    """`(features, features_of)`: the training images' features by position (an array or a
    function) and `features_of(names)`, the features of named images now."""
    if encoder is None:
        rows = cache.rows(images)
        return (lambda index: cache.gather(rows[index]),
                lambda names: cache.gather(cache.rows(names)))
    images_dir = Path(images_dir or cache.manifest.get("images_dir", ""))
    size = int(encoder.inputs[0].shape[1])

    def features_of(names):
        return encode_images(encoder, names, lambda part: load_pixels(images_dir, part, size))

    encoded = _encoded(run_state, encoder, images, features_of, cache.settings["dtype"])
    return encoded, features_of


def _encoded(run_state: RunState, encoder, images, features_of, dtype) -> np.ndarray:
    """The training images' features by the fine-tuned encoder, memory-mapped from the run
    folder (encoded once per encoder weights; other encoders' files removed)."""
    digest = hashlib.sha256()
    for weights in encoder.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    folder = run_state.scst.folder
    path = folder / f"features-{digest.hexdigest()[:16]}.npy"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("features-*.npy"):
            old.unlink(missing_ok=True)
        logger.info("Encoding the %d training images with the fine-tuned encoder for SCST.",
                    len(images))
        shape = (len(images), *encoder.outputs[0].shape[1:])

        def write(tmp):
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            for start in range(0, len(images), ENCODE_BATCH):
                array[start:start + ENCODE_BATCH] = features_of(
                    images[start:start + ENCODE_BATCH])
            array.flush()
            del array

        atomic_write(path, write, suffix=".tmp.npy")
    return np.load(path, mmap_mode="r")
