"""Resumable training state, so a job killed at its wall-time limit continues where it was.

After every epoch rank 0 writes ``checkpoints/state-epoch-NNNN/``: a TensorFlow checkpoint
of the model and the optimizer (weights, Adam moments, step counter, learning rate) and
``state.json`` (epochs completed, training seconds so far, the state of the stopping and
checkpoint callbacks, the seeds). The directory is written under a temporary name and
renamed when complete; then ``checkpoints/latest.json`` is replaced (temporary file, then
rename) to point at it, and older state directories are removed. A checkpoint is loaded only
through ``latest.json``, so a half-written one is never read.

On ``--resume`` rank 0 reads the latest state and broadcasts it (weights, optimizer
variables, callback state) to every rank, so ranks need not see the same file system.
Training continues at the next epoch; the learning-rate schedule follows from the epoch
number (Horovod's warm-up and schedule callbacks) and the stored learning rate (plateau
decay). Each (re)start seeds TensorFlow, NumPy and the data shuffle with
``seed + start epoch`` and records the seeds it used: a resumed run is reproducible given
its restart points, though its shuffle order differs from an uninterrupted run's.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import tensorflow as tf

from mpnn import distributed, rundir

log = logging.getLogger(__name__)

LATEST = "latest.json"
STATE_FILE = "state.json"
CHECKPOINT_PREFIX = "model-and-optimizer"
# Attributes of Keras' callbacks that carry state from one epoch to the next.
CALLBACK_STATE = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "ModelCheckpoint": ("best",),
}


@dataclass
class TrainingState:
    """What a run needs to continue, besides model and optimizer variables.

    Attributes:
        epochs_done: epochs completed (the next epoch to run, 0-based).
        train_seconds: wall-clock seconds of training in all completed epochs, summed over
            restarts.
        learning_rate: the optimizer's learning rate at the end of the last epoch.
        stopped: a stopping rule (early stopping, time budget, NaN) ended training.
        callbacks: per callback class, its state attributes (see `CALLBACK_STATE`).
        seeds: the seed each (re)start used, keyed by its start epoch.
        resumed_from_epoch: the epochs at which a restart began.
    """

    epochs_done: int = 0
    train_seconds: float = 0.0
    learning_rate: float | None = None
    stopped: bool = False
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    resumed_from_epoch: list[int] = field(default_factory=list)


def checkpoint_directory(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def latest_state_directory(run_dir: str) -> str | None:
    """The complete state directory ``latest.json`` points at, or None."""
    pointer = os.path.join(checkpoint_directory(run_dir), LATEST)
    if not os.path.exists(pointer):
        return None
    try:
        with open(pointer) as handle:
            name = json.load(handle)["directory"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{pointer}: unreadable checkpoint pointer: {exc}") from exc
    path = os.path.join(checkpoint_directory(run_dir), name)
    if not os.path.exists(os.path.join(path, STATE_FILE)):
        raise ValueError(f"{pointer}: points at {path}, which holds no {STATE_FILE}")
    return path


def _tracked(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=model, optimizer=optimizer)


def restore(run_dir: str, model: tf.keras.Model) -> TrainingState | None:
    """Load the latest state of `run_dir` into `model` and its optimizer on every rank.

    Rank 0 reads the files; every rank then holds rank 0's weights, optimizer variables
    and `TrainingState`. Returns None (on every rank) when there is nothing to resume.
    The model must be compiled; its optimizer's variables are created here.
    """
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    state = None
    if distributed.is_root():
        path = latest_state_directory(run_dir)
        if path is not None:
            _tracked(model, optimizer).read(os.path.join(path, CHECKPOINT_PREFIX)).assert_existing_objects_matched()
            with open(os.path.join(path, STATE_FILE)) as handle:
                state = TrainingState(**json.load(handle))
    state = distributed.broadcast_object(state, "resume_state")
    if state is not None:
        distributed.broadcast_variables(model.variables + optimizer.variables)
    return state


def trim_log(path: str, epochs_done: int) -> None:
    """Drop rows of epochs >= `epochs_done` from a CSV log (epochs a killed job logged but
    did not checkpoint), so every epoch appears once after the restart."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    epoch_column = rows[0].index("epoch")
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[epoch_column]) < epochs_done]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    os.replace(tmp, path)


class SaveTrainingState(tf.keras.callbacks.Callback):
    """Write the resumable state after every epoch (rank 0) and put the restored callback
    state back at the start of training (every rank).

    Must come after the callbacks whose state it keeps, so that it sees their state at the
    end of an epoch and overrides their reset at the start of training.

    Args:
        run_dir: the run directory.
        state: the state training starts from (a fresh one, or the restored one).
        keep_callbacks: the callbacks whose `CALLBACK_STATE` attributes are saved.
    """

    def __init__(self, run_dir: str, state: TrainingState, keep_callbacks: list[tf.keras.callbacks.Callback]):
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.keep_callbacks = {type(c).__name__: c for c in keep_callbacks if type(c).__name__ in CALLBACK_STATE}
        self._started = 0.0
        self._seconds_before = state.train_seconds

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()
        for name, values in self.state.callbacks.items():
            if name in self.keep_callbacks:
                for attribute, value in values.items():
                    setattr(self.keep_callbacks[name], attribute, value)
        if self.state.learning_rate is not None:
            tf.keras.backend.set_value(self.model.optimizer.learning_rate, self.state.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        self.state.epochs_done = epoch + 1
        self.state.train_seconds = self._seconds_before + time.perf_counter() - self._started
        self.state.learning_rate = float(tf.keras.backend.get_value(self.model.optimizer.learning_rate))
        self.state.stopped = bool(self.model.stop_training)
        self.state.callbacks = {
            name: {attribute: _plain(getattr(callback, attribute)) for attribute in CALLBACK_STATE[name]}
            for name, callback in self.keep_callbacks.items()
        }
        if distributed.is_root():
            self._write()

    def _write(self) -> None:
        directory = checkpoint_directory(self.run_dir)
        name = f"state-epoch-{self.state.epochs_done:04d}"
        final = os.path.join(directory, name)
        tmp = os.path.join(directory, f".tmp-{name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        _tracked(self.model, self.model.optimizer).write(os.path.join(tmp, CHECKPOINT_PREFIX))
        rundir.write_json(os.path.join(tmp, STATE_FILE), asdict(self.state))
        shutil.rmtree(final, ignore_errors=True)  # left by a run killed after this rename
        os.replace(tmp, final)
        rundir.write_json(os.path.join(directory, LATEST), {"directory": name, "epochs_done": self.state.epochs_done})
        for entry in os.listdir(directory):
            if entry.startswith("state-epoch-") and entry != name:
                shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a callback attribute (numpy scalars and tensors -> float)."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return float(value)
