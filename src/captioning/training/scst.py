"""Self-critical sequence training (SCST): REINFORCE with the CIDEr-D of sampled captions.

For each batch of training images, `ScstTrainer.step` samples K captions per image
(`captioning.models.sampling.CaptionSampler`, one compiled call), scores each against its
image's training references with CIDEr-D (`captioning.text.cider.CiderD`, document
frequencies from the training references, the end token counted as a word: see
`reward_scorer`), and subtracts a baseline: the mean reward of the image's other K-1
samples (`"mean"`, the "new SCST" variant) or the reward of its greedy caption (`"greedy"`,
Rennie et al.). It then takes one gradient step of

    loss = -sum_t advantage * log p(w_t) / tokens        (padding masked)

REINFORCE on fixed samples is a cross-entropy on them weighted by the advantage, so the step
is the teacher-forcing model's own `train_on_batch` on `(features, sampled tokens in) ->
sampled tokens out` with `sample_weight = advantage x token mask`: the stock Keras trainer
on TensorFlow and on JAX (Keras takes negative weights as they are). The captions are
sampled without dropout and scored with it, as the training model runs in training mode.

`scst_epoch` runs one epoch in an order fixed by the seed and the epoch, and reseeds the
sampler from them, so a resumed run samples what an uninterrupted one would have (up to the
weights it resumed from). `train_scst` is a small driver over epochs. Neither knows about
run folders, checkpoints or the CLI: `captioning.training.scst_phase` runs SCST in a run.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np

from captioning.config import SCST_BASELINES
from captioning.errors import ConfigError
from captioning.models.sampling import CaptionSampler, teacher_forcing
from captioning.text.cider import CiderD
from captioning.training.objective import make_optimizer
from captioning.utils.checks import check_choice, check_int

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ScstStep:
    """What one SCST step measured (means over the batch's samples)."""

    reward: float
    baseline: float
    loss: float
    greedy_reward: float | None = None


class ScstTrainer:
    """The state of an SCST phase: the sampler, the CIDEr-D scorer, the compiled model.

    Args:
        decoder: the `Decoder` from `build_decoder` (its `training` and `step` models share
            weights; the trained weights loaded).
        tokenizer: the run's tokenizer.
        references: one list of caption strings per training image, in the order of
            `features`; they are the rewards' references and give the document frequencies.
        features: the training images' features: an array `(images, *feature_shape)` (a
            memory map will do) or a function `features(indices) -> array`.
        config: the run's `CaptionConfig` (`scst_samples`, `scst_baseline`,
            `scst_learning_rate`, `scst_lr_schedule`, `batch_size` captions per step,
            `max_decode_length`, `clipnorm`, `seed`).
        optimizer: the optimizer; default Adam at `scst_learning_rate` (constant, or a
            cosine decay over `decay_epochs` epochs' steps with `scst_lr_schedule`
            "cosine"), clipped by `clipnorm`. The training model is compiled with it (its
            cross-entropy phase compilation is replaced).
        decay_epochs: the cosine schedule's length in epochs; default `scst_epochs` (a
            resumed phase passes the length it started with).
        replicas: the strategy's replicas in sync. A step takes `batch_size // scst_samples`
            images (at least 1) per replica, so that it trains on about `batch_size`
            sampled captions per replica, as a cross-entropy step does.
        drop_remainder: leave out each epoch's last, partial batch of images (static,
            evenly divisible batches for TPUs and `DataParallel`).
    """

    def __init__(self, decoder, tokenizer, references, features, config, *, optimizer=None,
                 replicas: int = 1, drop_remainder: bool = False,
                 decay_epochs: int | None = None):
        check_int("scst_samples", config.scst_samples, 2)
        check_choice("scst_baseline", config.scst_baseline, SCST_BASELINES)
        self.decoder, self.tokenizer, self.config = decoder, tokenizer, config
        self.samples, self.baseline = int(config.scst_samples), config.scst_baseline
        self.features = features if callable(features) else (lambda index: features[index])
        check_int("replicas", replicas, 1)
        self.images_per_step = max(1, config.batch_size // self.samples) * int(replicas)
        self.drop_remainder = bool(drop_remainder)
        self.num_images = len(references)
        if self.num_images == 0:
            raise ValueError("SCST needs training images; the references list is empty")
        self.scorer = reward_scorer(tokenizer, references)
        self.steps = int(decoder.training.inputs[1].shape[1])
        self.sampler = CaptionSampler(
            decoder.step, start_id=tokenizer.start_id, end_id=tokenizer.end_id,
            pad_id=tokenizer.pad_id, max_length=min(config.max_decode_length, self.steps),
            seed=config.seed)
        self.decay_epochs = int(config.scst_epochs if decay_epochs is None else decay_epochs)
        check_int("decay_epochs", self.decay_epochs, 0)
        compile_for_scst(decoder.training, optimizer or make_optimizer(
            config.scst_learning_rate, config.clipnorm, schedule=config.scst_lr_schedule,
            decay_steps=len(self.batches(1)) * self.decay_epochs))
        # The step weighs the log-probability of each sampled word given the sampled words
        # before it: a scheduled-sampling layer must feed them unchanged.
        for layer in decoder.training.layers:
            if layer.name == "scheduled_sampling":
                layer.probability.assign(0.0)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The image indices of each step of `epoch` (from 1), in an order fixed by the
        seed and the epoch."""
        order = np.random.default_rng([self.config.seed, 7, epoch]).permutation(self.num_images)
        size = self.images_per_step
        end = self.num_images - self.num_images % size if self.drop_remainder else None
        return [order[i:i + size] for i in range(0, end or self.num_images, size)]

    def reseed(self, epoch: int) -> None:
        """Sets the sampler's random state from the seed and the epoch."""
        words = np.random.SeedSequence([self.config.seed, epoch]).generate_state(2)
        state = self.sampler.seed_generator.state
        state.assign(np.asarray(words % (2 ** 31 - 1), dtype=state.dtype))

    def step(self, images) -> ScstStep:
        """One SCST step on the training images at positions `images`."""
        images = np.asarray(images)
        k = self.samples
        features = np.asarray(self.features(images), np.float32)
        samples = self.sampler.sample(features, k)
        each = np.repeat(images, k)
        rewards = self.scorer.score(samples.ids, each)  # (B * K,)
        greedy_reward = None
        if self.baseline == "greedy":
            greedy = self.scorer.score(self.sampler.greedy(features).ids, images)
            baseline, greedy_reward = np.repeat(greedy, k), float(greedy.mean())
        else:
            per_image = rewards.reshape(-1, k)
            baseline = ((per_image.sum(axis=1, keepdims=True) - per_image) / (k - 1)).ravel()
        tokens_in, tokens_out = teacher_forcing(samples, self.tokenizer.start_id, self.steps)
        weights = (rewards - baseline)[:, None] * (tokens_out != self.tokenizer.pad_id)
        loss = self.decoder.training.train_on_batch(
            [np.repeat(features, k, axis=0), tokens_in], tokens_out,
            sample_weight=weights.astype(np.float32))
        return ScstStep(reward=float(rewards.mean()), baseline=float(baseline.mean()),
                        loss=float(np.asarray(loss).ravel()[0]), greedy_reward=greedy_reward)


def reward_scorer(tokenizer, references) -> CiderD:
    """The CIDEr-D scorer of SCST rewards: the references' words and end token.

    The end token counts as the last word of every caption, the references' and the sampled
    ones' (as in self-critical.pytorch), so a sample that stops where its references stop
    gains their closing n-grams ("blue square <end>"), and one cut off at the length limit
    gains none. Without it SCST learns captions that never end: listing one more shape
    raises the expected CIDEr-D more than the length penalty takes away. The scores are
    pycocoevalcap's CIDEr-D of the captions with the end token as a word.

    Args:
        tokenizer: the run's tokenizer.
        references: one list of caption strings per image; they give the document
            frequencies.

    Returns:
        A `CiderD` that scores id captions (`(N, T)`, padded with `pad_id`, the end token
        kept) against the images' references by index.
    """
    corpus = [[ids[1:] for ids in tokenizer.encode(list(captions))] for captions in references]
    return CiderD(corpus, start_id=tokenizer.start_id, end_id=None, pad_id=tokenizer.pad_id,
                  vocab_size=tokenizer.vocab_size)


def compile_for_scst(model: keras.Model, optimizer) -> None:
    """Compiles a teacher-forcing model (logits out) for SCST steps: the cross-entropy with
    padding (id 0) ignored, to be weighted by the advantages; no metrics (they would be
    weighted too)."""
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=0))


def scst_epoch(trainer: ScstTrainer, epoch: int, *, progress: bool = False) -> dict:
    """One SCST epoch over every training image.

    Args:
        trainer: the phase's `ScstTrainer`.
        epoch: the epoch's number in the phase (from 1); it fixes the image order and the
            sampler's seed.
        progress: show a Keras progress bar.

    Returns:
        The epoch's logs: `reward` (mean CIDEr-D of the samples), `baseline`, `loss`,
        `greedy_reward` (with the greedy baseline), `learning_rate`.
    """
    check_int("epoch", epoch, 1)
    trainer.reseed(epoch)
    batches = trainer.batches(epoch)
    bar = keras.utils.Progbar(len(batches), stateful_metrics=("reward",)) if progress else None
    totals, count = {}, 0
    for index, images in enumerate(batches):
        measured = dataclasses.asdict(trainer.step(images))
        weight = len(images)
        for name, value in measured.items():
            if value is not None:
                totals[name] = totals.get(name, 0.0) + value * weight
        count += weight
        if bar is not None:
            bar.update(index + 1, [("reward", measured["reward"]), ("loss", measured["loss"])])
    if not count:
        raise ConfigError(f"{trainer.num_images} training images make no full batch of "
                          f"{trainer.images_per_step} images; lower --batch-size")
    logs = {name: value / count for name, value in totals.items()}
    logs["learning_rate"] = _learning_rate(trainer.decoder.training.optimizer)
    return logs


def describe(epoch: int, logs: dict, run_epoch: int | None = None) -> str:
    """The one line that reports an SCST epoch: its mean reward (CIDEr-D of the samples),
    the baseline, and the validation CIDEr-D and BLEU-4 when `logs` has them.

    Args:
        epoch: the epoch's number in the phase.
        logs: the epoch's logs (`scst_epoch`'s, with `val_cider`, `val_bleu_4`).
        run_epoch: the epoch's number in the whole run, when it differs.
    """
    parts = [f"reward {logs['reward']:.4f}", f"baseline {logs['baseline']:.4f}"]
    for key, name in (("val_cider", "val CIDEr-D"), ("val_bleu_4", "val BLEU-4")):
        if logs.get(key) is not None:
            parts.append(f"{name} {logs[key]:.4f}")
    where = f" (run epoch {run_epoch})" if run_epoch is not None else ""
    return f"SCST epoch {epoch}{where}: {', '.join(parts)}"


def train_scst(decoder, tokenizer, references, features, config, *, first_epoch: int = 1,
               progress: bool = False, on_epoch_end=None) -> list[dict]:
    """Runs SCST epochs `first_epoch..config.scst_epochs` (see `ScstTrainer` for the
    arguments).

    Args:
        first_epoch: the first epoch to run (after a resume, the last finished one + 1).
        progress: show a progress bar per epoch.
        on_epoch_end: called as `on_epoch_end(epoch, logs)` after each epoch (validation,
            checkpoint); may add to `logs`.

    Returns:
        The logs of the epochs run, in order.
    """
    check_int("first_epoch", first_epoch, 1)
    trainer = ScstTrainer(decoder, tokenizer, references, features, config)
    history = []
    for epoch in range(first_epoch, config.scst_epochs + 1):
        logs = scst_epoch(trainer, epoch, progress=progress)
        if on_epoch_end is not None:
            on_epoch_end(epoch, logs)
        logger.info("%s", describe(epoch, logs))
        history.append(logs)
    return history


def _learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
