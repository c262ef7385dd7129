"""The run folder's state, one for every phase: checkpoints, state files, `history.csv`.

    run/run.json                          the settings and cache the run started with
    run/history.csv                       every finished epoch, rewritten from the states
    run/checkpoints/state.json            the first (`frozen`) phase
    run/checkpoints/epoch-NNNN.weights.h5 its last finished epoch (weights and optimizer)
    run/checkpoints/best-NNNN.weights.h5  its best epoch, the one exported
    run/checkpoints/fine_tune/...         the same for the fine-tuning phase (no best)
    run/checkpoints/scst/...              the same for the SCST phase (best by val CIDEr)

Every file is written whole (tmp + fsync + rename, `captioning.utils.files`), the weights
first and `state.json` last, so a run killed at any moment resumes from the last epoch its
`state.json` names. `history.csv` is derived from the states, so it lists each finished epoch
exactly once, in order, with its `phase`.

Keras' `BackupAndRestore` and `CSVLogger` do not fit, which is why this module exists:
`BackupAndRestore` keeps one `latest.weights.h5`, writes it and its epoch number without a
rename between them (a kill in between retrains an epoch on the newer weights), keeps no best
epoch and deletes its backup when `fit` ends, so a rerun of a finished run would train again;
`CSVLogger` numbers epochs from 0, orders columns by name (`masked_accuracy`, not
`accuracy`), knows no `phase`, and appends, so an epoch killed after its row was written is
listed twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd

from captioning.cache import describe_differences
from captioning.config import CaptionConfig
from captioning.errors import ConfigError
from captioning.release.model_bytes import weights_file_bytes
from captioning.utils.files import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_bleu_4",
                   "val_cider", "reward", "learning_rate", "phase")
# Settings that may change when a run is resumed: they do not change what was trained. The
# encoder settings come from the cache, which the resume check compares on its own.
RESUMABLE = ("epochs", "early_stopping", "beam", "length_penalty", "max_decode_length",
             "strategy", "fine_tune", "fine_tune_epochs", "fine_tune_learning_rate",
             "scst_epochs", "scst_samples", "scst_baseline", "scst_learning_rate",
             "scst_lr_schedule",
             "encoder", "weights", "image_size", "features", "feature_dtype")
# What the SCST phase starts from and how it samples: a state that differs is stale.
SCST_ORIGIN = ("after_epoch", "fine_tune", "samples", "baseline", "learning_rate",
               "lr_schedule")
# What an SCST state from before an origin field existed did.
_SCST_BEFORE_FIELD = {"lr_schedule": "constant"}


def history_row(epoch: int, phase: str, logs: dict, learning_rate: float) -> dict:
    """One `history.csv` row (the `HISTORY_COLUMNS`) from the logs Keras gives at epoch end.

    Args:
        epoch: the epoch's number in the whole run (from 1, across phases).
        phase: `"frozen"`, `"fine_tune"` or `"scst"`.
        logs: the epoch's logs (`loss`, `masked_accuracy`, `val_*`, `val_bleu_4`; SCST's
            `reward` and `val_cider`).
        learning_rate: the optimizer's learning rate at the epoch's end.
    """
    return {"epoch": epoch, "loss": logs.get("loss"), "accuracy": logs.get("masked_accuracy"),
            "val_loss": logs.get("val_loss"), "val_accuracy": logs.get("val_masked_accuracy"),
            "val_bleu_4": logs.get("val_bleu_4"), "val_cider": logs.get("val_cider"),
            "reward": logs.get("reward"), "learning_rate": learning_rate, "phase": phase}


class PhaseCheckpoint:
    """One phase's resumable state in `folder`.

    `state.json` holds `epoch` (the phase's last finished epoch, from 1), `history` (its
    `history.csv` rows) and whatever fields the phase adds (the best epoch and its score,
    the schedule's length, ...). It names the weights of that epoch
    (`epoch-NNNN.weights.h5`, with the optimizer) and, with `keep_best`, of the best epoch
    (`best-NNNN.weights.h5`); older weights are removed once the state names newer ones.

    Args:
        folder: where the files go (made on the first save).
        keep_best: also keep the best epoch's weights (`save(..., best_score=...)`).
    """

    def __init__(self, folder, *, keep_best: bool = False):
        self.folder, self.keep_best = Path(folder), keep_best

    def state(self) -> dict | None:
        """The last saved state, or None before the first finished epoch."""
        path = self.folder / "state.json"
        return json.loads(path.read_text()) if path.exists() else None

    def weights(self, epoch: int) -> Path:
        """The weights file of the phase's epoch `epoch`."""
        return self.folder / f"epoch-{epoch:04d}.weights.h5"

    def clear(self) -> None:
        """Forgets the phase: removes its state, then its weights (the phase starts over)."""
        (self.folder / "state.json").unlink(missing_ok=True)
        for old in self.folder.glob("*.weights.h5"):
            old.unlink(missing_ok=True)

    def best_weights(self, epoch: int | None = None) -> Path:
        """The weights file of the best epoch: `epoch`, default the one the state names."""
        epoch = int(self.state()["best_epoch"]) if epoch is None else epoch
        return self.folder / f"best-{epoch:04d}.weights.h5"

    def save(self, model, epoch: int, row: dict, *, best_score: float | None = None,
             **fields) -> dict:
        """Saves a finished epoch: its weights (and as the best's), then the state.

        Args:
            model: the model trained (its weights and optimizer are saved).
            epoch: the phase's epoch number, from 1.
            row: the epoch's `history.csv` row; rows of later epochs (of a run continued
                from an earlier checkpoint) are dropped.
            best_score: with `keep_best`, this epoch's score when it is the best so far:
                its weights are kept as the best's, the state records it as `best_epoch`
                and `best_score`.
            **fields: more state fields to record (`stopped`, `schedule_steps`, ...).

        Returns:
            The new state.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        state = self.state() or {"history": []}
        _save_weights(model, self.weights(epoch))
        if self.keep_best and best_score is not None:
            _save_weights(model, self.best_weights(epoch))
            state.update(best_epoch=epoch, best_score=best_score)
        keep = {self.weights(epoch).name}
        if state.get("best_epoch") is not None:
            keep.add(self.best_weights(int(state["best_epoch"])).name)
        history = [r for r in state["history"] if r["epoch"] < row["epoch"]] + [row]
        state.update(fields, epoch=epoch, history=history)
        atomic_write_json(self.folder / "state.json", state)
        for old in self.folder.glob("*.weights.h5"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return state


def _save_weights(model, path: Path) -> None:
    # Made in memory, then written as plain bytes: HDF5 failing to write (a full disk)
    # crashes the process inside h5py, where an OSError here is one line.
    data = weights_file_bytes(model)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), suffix=".tmp.weights.h5",
                 again="run the same command again to resume")


class RunState:
    """The run folder's state, every phase: see the module's docstring.

    Args:
        run: the run folder.
        config: the run's settings (`fine_tune` and `scst_epochs` say whether the
            fine-tuning and SCST phases count).
    """

    def __init__(self, run, config: CaptionConfig):
        self.run, self.config = Path(run), config
        self.frozen = PhaseCheckpoint(self.run / "checkpoints", keep_best=True)
        self.fine_tune = PhaseCheckpoint(self.run / "checkpoints" / "fine_tune")
        self.scst = PhaseCheckpoint(self.run / "checkpoints" / "scst", keep_best=True)

    def check_run(self, cache) -> None:
        """Writes `run.json` for a new run; for an existing one, refuses settings or a cache
        that differ from the ones it started with (but those of `RESUMABLE`).

        Raises:
            ConfigError: the run folder holds another run; the message names what differs.
        """
        path = self.run / "run.json"
        current = {"config": self.config.to_dict(), "cache": cache.identity,
                   "images_fingerprint": cache.manifest["images_fingerprint"]}
        if path.exists():
            differences = _run_differences(json.loads(path.read_text()), current, cache.path)
            if differences:
                raise ConfigError(f"{self.run} holds a different run ({'; '.join(differences)})"
                                  "; use another --out folder, or delete it to start over")
        atomic_write_json(path, current)

    def fine_tune_stale(self, state: dict, after_epoch: int) -> str | None:
        """Why a fine-tuning state no longer fits the run, or None when it does: the first
        phase trained on since (`after_epoch` is its last epoch now), or `fine_tune` (the
        layers unfrozen) changed."""
        if state.get("after_epoch", after_epoch) != after_epoch:
            return (f"the first phase trained on to epoch {after_epoch} since fine-tuning "
                    f"started after epoch {state['after_epoch']}")
        if state.get("layers", self.config.fine_tune) != self.config.fine_tune:
            return (f"fine-tuning started with {state['layers']} unfrozen layers, now "
                    f"{self.config.fine_tune}")
        return None

    def fine_tune_rows(self, after_epoch: int) -> list[dict]:
        """The fine-tuning phase's `history.csv` rows; none when its state is absent or stale
        (see `fine_tune_stale`)."""
        state = self.fine_tune.state()
        if not state or self.fine_tune_stale(state, after_epoch):
            return []
        return state["history"]

    def scst_origin(self, after_epoch: int) -> dict:
        """What an SCST phase starting after the run's epoch `after_epoch` (the last one of
        the phases before it) starts from and how it samples: recorded in its state."""
        config = self.config
        return {"after_epoch": after_epoch, "fine_tune": config.fine_tune,
                "samples": config.scst_samples, "baseline": config.scst_baseline,
                "learning_rate": config.scst_learning_rate,
                "lr_schedule": config.scst_lr_schedule}

    def scst_stale(self, state: dict, after_epoch: int) -> str | None:
        """Why an SCST state no longer fits the run, or None when it does: the phases before
        it trained on since, or its sampling settings changed (`SCST_ORIGIN`)."""
        origin = self.scst_origin(after_epoch)
        saved = {key: state.get(key, _SCST_BEFORE_FIELD.get(key)) for key in SCST_ORIGIN}
        changed = [f"{key} {saved[key]!r} -> {origin[key]!r}" for key in SCST_ORIGIN
                   if saved[key] != origin[key]]
        if not changed:
            return None
        return (f"the phases before it or its settings changed since it started "
                f"({'; '.join(changed)})")

    def history(self) -> pd.DataFrame:
        """Every finished epoch, in order: the first phase's, then fine-tuning's (when the
        run fine-tunes and its state follows the first phase's last epoch), then SCST's
        (when the run has SCST epochs and its state follows the phases before it)."""
        rows = self._rows_before_scst()
        scst = self.scst.state()
        if rows and scst and self.config.scst_epochs \
                and not self.scst_stale(scst, int(rows[-1]["epoch"])):
            rows += scst["history"]
        frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
        # A column no phase filled (`val_cider` before SCST) is float, as `history.csv` reads.
        numeric = [c for c in HISTORY_COLUMNS if c not in ("epoch", "phase")]
        return frame.astype({c: "float64" for c in numeric})

    def epochs_before_scst(self) -> int:
        """The run's last epoch of the phases before SCST (0 before the first)."""
        rows = self._rows_before_scst()
        return int(rows[-1]["epoch"]) if rows else 0

    def _rows_before_scst(self) -> list[dict]:
        state = self.frozen.state()
        rows = [{"phase": "frozen", **row} for row in (state["history"] if state else [])]
        if state and self.config.fine_tune:
            rows += self.fine_tune_rows(int(state["epoch"]))
        return rows

    def write_history(self) -> pd.DataFrame:
        """Rewrites `history.csv` from the states (once an epoch has finished); returns the
        history."""
        frame = self.history()
        if self.frozen.state():
            atomic_write(self.run / "history.csv",
                         lambda tmp: frame.to_csv(tmp, index=False))
        return frame


# What a run did before the setting existed, where that is not the setting's default.
_BEFORE_SETTING = {"monitor": "val_bleu_4", "ema": 0.0}


def _run_differences(saved: dict, current: dict, cache_path) -> list[str]:
    # A setting added after the run started is read as its default (the run had no choice),
    # or as what the run did before the setting existed, where the default changed that.
    defaults = {field.name: field.default for field in dataclasses.fields(CaptionConfig)}
    defaults.update(_BEFORE_SETTING)
    before = {key: saved["config"].get(key, defaults.get(key)) for key in current["config"]}
    differences = [f"{key}: run has {before[key]!r}, now {value!r}"
                   for key, value in current["config"].items()
                   if key not in RESUMABLE and before[key] != value]
    # Runs started before the cache identity grew more keys are compared on what they hold.
    changed = describe_differences(
        {**current["cache"], "images_fingerprint": current["images_fingerprint"]},
        {**saved["cache"], "images_fingerprint": saved.get("images_fingerprint")},
        found_name="cache", expected_name="run")
    if changed:
        differences.append(f"the cache {cache_path} differs from the one the run started "
                           f"with: {', '.join(changed)}")
    return differences
