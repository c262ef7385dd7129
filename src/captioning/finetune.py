"""Fine-tuning: a second training phase from images, with the top CNN layers unfrozen.

After the decoder has learnt on cached features, the encoder and decoder are joined into one
model (pixels + caption in, logits out), the top `fine_tune` layers of the CNN are made
trainable (BatchNormalization layers stay frozen, in inference mode, as is standard), and
training goes on from the images at a lower learning rate. The fine-tuned encoder is then
exported with the decoder. Each fine-tuning epoch is checkpointed like the first phase, so a
killed run resumes.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
from pathlib import Path

import keras
import numpy as np

from captioning.errors import CacheError, ConfigError


class ImageCaptionBatches(keras.utils.PyDataset):
    """`((pixels, tokens_in), tokens_out)` batches, the images decoded by the one loader in
    a thread pool."""

    def __init__(self, images_dir, names, sequences, batch_size, image_size, *, seed=0,
                 epoch=0, shuffle=True):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images_dir, self.names = Path(images_dir), list(names)
        self.sequences = np.asarray(sequences)
        self.batch_size, self.image_size = batch_size, image_size
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self._pool = concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2))
        self._order = self._make_order()

    def _make_order(self):
        if not self.shuffle:
            return np.arange(len(self.names))
        return np.random.default_rng([self.seed, 1000 + self.epoch]).permutation(len(self.names))

    def __len__(self):
        return math.ceil(len(self.names) / self.batch_size)

    def __getitem__(self, index):
        from captioning.images import load_and_resize

        picked = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        paths = [self.images_dir / self.names[i] for i in picked]
        pixels = np.stack(list(self._pool.map(
            lambda p: load_and_resize(p, self.image_size), paths)))
        tokens = self.sequences[picked]
        return (pixels, tokens[:, :-1]), tokens[:, 1:]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()


def unfreeze_top(encoder: keras.Model, count: int) -> list[str]:
    """Makes the top `count` layers of the encoder's CNN trainable, BatchNorm excepted.

    Returns:
        The names of the layers made trainable.
    """
    backbone = next((layer for layer in encoder.layers if isinstance(layer, keras.Model)), None)
    if backbone is None:
        raise ConfigError("the encoder holds no CNN sub-model to fine-tune")
    encoder.trainable = True
    for layer in encoder.layers:
        layer.trainable = layer is backbone
    weighted = [layer for layer in backbone.layers if layer.weights]
    if count > len(weighted):
        raise ConfigError(f"fine_tune={count} but the CNN has only {len(weighted)} layers with "
                          "weights")
    for layer in backbone.layers:
        layer.trainable = False
    chosen = []
    for layer in weighted[-count:]:
        if not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
            chosen.append(layer.name)
    return chosen


def fine_tune(run: Path, cache, decoder, tokenizer, config, images_dir=None, progress=True):
    """Runs the fine-tuning phase; returns the fine-tuned encoder model.

    Args:
        run: the run folder (checkpoints go to `run/checkpoints/fine_tune/`).
        cache: the `FeatureCache` of the first phase (its encoder is the starting point).
        decoder: the trained `Decoder` (its weights are the first phase's best).
        tokenizer: the run's tokenizer.
        config: the run's `CaptionConfig` (`fine_tune`, `fine_tune_epochs`,
            `fine_tune_learning_rate`).
        images_dir: the images; default the folder the cache was made from.
        progress: show Keras' progress bar.
    """
    images_dir = Path(images_dir or cache.manifest.get("images_dir", ""))
    if not images_dir.is_dir():
        raise CacheError(f"fine-tuning reads the images, but {images_dir} is not a folder; pass "
                         "--images with the folder the cache was made from")
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
                                        global_clipnorm=config.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    folder = run / "checkpoints" / "fine_tune"
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"epoch": 0,
                                                                            "history": []}
    table = cache.captions()
    length = int(decoder.training.inputs[1].shape[1]) + 1

    def batches(split, shuffle):
        part = table[table["split"] == split]
        part = part[tokenizer.keep_mask(part["caption"].tolist())]
        return ImageCaptionBatches(images_dir, part["image"], tokenizer.to_matrix(
            part["caption"].tolist(), length), config.batch_size, size, seed=config.seed,
            epoch=state["epoch"], shuffle=shuffle)

    train_batches = batches("train", True)
    val_part = table[table["split"] == "val"]
    val_batches = batches("val", False) if not val_part.empty else None
    if state["epoch"]:
        joint.optimizer.build(joint.trainable_variables)
        joint.load_weights(folder / f"epoch-{state['epoch']:04d}.weights.h5")
        print(f"Resuming fine-tuning after epoch {state['epoch']} of {config.fine_tune_epochs}.")
    else:
        print(f"Fine-tuning {len(unfrozen)} CNN layers ({unfrozen[0]} .. {unfrozen[-1]}) from "
              f"images at learning rate {config.fine_tune_learning_rate}.")

    class _Save(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            number = epoch + 1
            path = folder / f"epoch-{number:04d}.weights.h5"
            tmp = folder / f"epoch-{number:04d}.tmp.weights.h5"
            joint.save_weights(tmp)
            os.replace(tmp, path)
            row = {"epoch": number, "loss": (logs or {}).get("loss"),
                   "val_loss": (logs or {}).get("val_loss")}
            history = [r for r in state["history"] if r["epoch"] < number] + [row]
            state.update({"epoch": number, "history": history})
            tmp_state = folder / "state.json.tmp"
            tmp_state.write_text(json.dumps(state, indent=2))
            os.replace(tmp_state, state_path)
            for old in folder.glob("epoch-*.weights.h5"):
                if old != path:
                    old.unlink(missing_ok=True)

    if state["epoch"] < config.fine_tune_epochs:
        joint.fit(train_batches, validation_data=val_batches, epochs=config.fine_tune_epochs,
                  initial_epoch=state["epoch"], callbacks=[_Save()],
                  verbose=1 if progress else 2)
    return encoder
