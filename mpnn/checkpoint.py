"""Resumable training state, so a job killed at its wall-time limit continues where it was.

After every epoch rank 0 saves the state of the run into ``checkpoints/state/``:

- a TensorFlow checkpoint of the model and the optimizer (weights, Adam moments, step
  counter, learning rate), ``ckpt-N.index`` and ``ckpt-N.data-*`` with N the epochs done,
  written by `tf.train.CheckpointManager`, which also keeps the pointer file ``checkpoint``
  (the saved checkpoints, newest last; replaced atomically) and deletes all but the last
  `KEEP` checkpoints;
- beside each, ``ckpt-N.state.json``, the `TrainingState` (epochs completed, training
  seconds so far, the state of the stopping and checkpoint callbacks, the seeds), which a
  TensorFlow checkpoint does not hold. It is written (atomically, `mpnn.atomic`) before the
  checkpoint, so every checkpoint the pointer names has its state file.

On ``--resume`` rank 0 loads the newest usable checkpoint: one whose files are missing or
unreadable (deleted files, truncated data, a garbage or missing state file, a pointer naming
files that are gone) is passed over, with a warning naming it and the one used instead. If
there are checkpoints but none is usable, `CheckpointError` names the run directory and why;
a run directory without any checkpoint starts afresh. Run directories of the earlier layout
(``checkpoints/latest.json`` and ``state-epoch-NNNN/``) cannot be resumed: `CheckpointError`
says so (start a new run directory).

Rank 0 then broadcasts what it loaded (weights, optimizer variables, callback state) to
every rank, so ranks need not see the same file system. Training continues at the next
epoch; the learning-rate schedule follows from the epoch number (Horovod's warm-up and
schedule callbacks) and the stored learning rate (plateau decay). A resumed run whose
scaled learning rate differs from the one the checkpoint was trained with (``--resume
--learning-rate X``, e.g. after a divergence, or another rank count) takes the new rate
from its first step, with a log line saying so: the schedule (warm-up, cosine) starts
from it, and plateau decay starts again from it.

Every file is written under a temporary name and renamed (`mpnn.atomic`;
`AtomicModelCheckpoint` for Keras' weight files), so a write that fails (a full disk, a
read-only file system) leaves the previous checkpoint as it was and raises
`mpnn.atomic.WriteError` naming the file and the cause. Each (re)start seeds
TensorFlow, NumPy and the data shuffle with ``seed + start epoch`` and records the seeds it
used: a resumed run is reproducible given its restart points, though its shuffle order
differs from an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import tensorflow as tf

from mpnn import atomic, distributed
from mpnn.errors import InputError

log = logging.getLogger(__name__)

STATE_DIRECTORY = "state"
CHECKPOINT_NAME = "ckpt"
STATE_SUFFIX = ".state.json"
# The last good training states kept: the newest, and one to fall back to if it is damaged.
KEEP = 2
# Files of the earlier layout (a pointer file and one directory per state), not resumable.
OLD_LAYOUT = ("latest.json", "state-epoch-*")
# Attributes of Keras' callbacks that carry state from one epoch to the next.
CALLBACK_STATE = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "AtomicModelCheckpoint": ("best",),
}


class CheckpointError(InputError):
    """A run directory whose checkpoints cannot be resumed (the message says which and why)."""


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
        base_learning_rate: the scaled learning rate the run was configured with (before
            schedules), to notice a resume with another one (None in older states).
    """

    epochs_done: int = 0
    train_seconds: float = 0.0
    learning_rate: float | None = None
    stopped: bool = False
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    resumed_from_epoch: list[int] = field(default_factory=list)
    base_learning_rate: float | None = None

    @classmethod
    def from_json(cls, values: Any) -> "TrainingState":
        """Rebuild from ``state.json`` content; `ValueError` if it is not one."""
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or not names.issuperset(values) or "epochs_done" not in values:
            raise ValueError(f"not a training state: {str(values)[:80]!r}")
        return cls(**values)


def checkpoint_directory(run_dir: str) -> str:
    """``run_dir/checkpoints``: the training state, and the best and last weights."""
    return os.path.join(run_dir, "checkpoints")


def state_directory(run_dir: str) -> str:
    """Where `tf.train.CheckpointManager` keeps the training states of `run_dir`."""
    return os.path.join(checkpoint_directory(run_dir), STATE_DIRECTORY)


def state_file(prefix: str) -> str:
    """The `TrainingState` file of the checkpoint with `prefix` (``.../ckpt-N``)."""
    return prefix + STATE_SUFFIX


def _tracked(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=model, optimizer=optimizer)


def _manager(run_dir: str, tracked: tf.train.Checkpoint) -> tf.train.CheckpointManager:
    return tf.train.CheckpointManager(tracked, state_directory(run_dir), max_to_keep=KEEP, checkpoint_name=CHECKPOINT_NAME)


def _number(prefix: str) -> int:
    match = re.search(rf"{CHECKPOINT_NAME}-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def candidates(run_dir: str) -> list[str]:
    """Checkpoint prefixes of `run_dir`, newest first: those the pointer file names (even
    if their files are gone) and any other complete-looking one on disk (``.index``
    present), e.g. one saved by a job killed before it updated the pointer."""
    directory = state_directory(run_dir)
    named: list[str] = []
    pointer = _pointer(directory)
    if pointer is not None:
        named = [os.path.join(directory, os.path.basename(p)) for p in pointer.all_model_checkpoint_paths]
    on_disk = [p[: -len(".index")] for p in glob.glob(os.path.join(directory, f"{CHECKPOINT_NAME}-*.index"))]
    return sorted(set(named) | set(on_disk), key=_number, reverse=True)


def _pointer(directory: str):
    """The manager's pointer file of `directory` (a ``CheckpointState``), or None if it is
    missing or unreadable (TensorFlow logs why)."""
    try:
        return tf.train.get_checkpoint_state(directory)
    except ValueError:  # parsed, but names no checkpoint (e.g. an empty file)
        return None


def has_checkpoint(run_dir: str) -> bool:
    """Whether `run_dir` holds any training state, usable or not (of either layout)."""
    return bool(candidates(run_dir)) or bool(_old_layout_files(run_dir))


def _old_layout_files(run_dir: str) -> list[str]:
    return [p for pattern in OLD_LAYOUT for p in glob.glob(os.path.join(checkpoint_directory(run_dir), pattern))]


def _load(prefix: str, model: tf.keras.Model) -> TrainingState:
    """Read checkpoint `prefix` into `model` and its optimizer; raises on any damage."""
    with open(state_file(prefix)) as handle:
        state = TrainingState.from_json(json.load(handle))
    # expect_partial: the manager also saved its save counter, which is not restored.
    _tracked(model, model.optimizer).read(prefix).assert_existing_objects_matched().expect_partial()
    return state


def load_latest(run_dir: str, model: tf.keras.Model) -> TrainingState | None:
    """Load the newest usable checkpoint of `run_dir` into `model` (this process only).

    Returns None when `run_dir` has no checkpoint. A damaged checkpoint is passed over with
    a warning naming it and the one loaded instead; `CheckpointError` when none is usable or
    the run directory has the earlier layout.
    """
    prefixes = candidates(run_dir)
    if not prefixes:
        old = _old_layout_files(run_dir)
        if old:
            raise CheckpointError(
                f"{run_dir}: checkpoints of an earlier mpnn ({os.path.basename(old[0])}) cannot be resumed; "
                "start a new run directory"
            )
        return None
    failures: list[str] = []
    for prefix in prefixes:
        try:
            state = _load(prefix, model)
        # What damaged files raise: a missing or short file (OSError, IndexError "Read less
        # bytes than requested"), bad JSON or state (ValueError, TypeError), variables
        # that do not match (AssertionError), TensorFlow's DataLoss/NotFound (OpError).
        except (OSError, IndexError, ValueError, TypeError, AssertionError, tf.errors.OpError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append(f"{os.path.basename(prefix)}: {reason}")
            continue
        if failures:
            log.warning(
                "checkpoint %s is unusable (%s); resuming from the previous one, %s",
                prefixes[0], failures[0].split(": ", 1)[1], prefix,
            )
        return state
    message = f"{run_dir}: no usable checkpoint in {state_directory(run_dir)} ({'; '.join(failures)})"
    if all("incompatible tensor" in failure for failure in failures):
        message += (
            "; its checkpoints hold another architecture than the configured one: pass the run's model flags "
            "(an MPNN run made before 2026-12-02 without them: --message-steps 4 --edge-updates)"
        )
    raise CheckpointError(message)


def restore(run_dir: str, model: tf.keras.Model, collective: bool = True) -> TrainingState | None:
    """Load the latest usable state of `run_dir` into `model` and its optimizer on every rank.

    Rank 0 reads the files (`load_latest`); every rank then holds rank 0's weights,
    optimizer variables and `TrainingState`, or raises rank 0's `CheckpointError`. Returns
    None (on every rank) when there is nothing to resume. The model must be compiled; its
    optimizer's variables are created here. With ``collective=False`` (elastic training,
    which syncs the state itself) nothing is broadcast: other ranks get None.
    """
    if not collective:
        model.optimizer.build(model.trainable_variables)
        return load_latest(run_dir, model) if distributed.is_root() else None
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    state, error = None, None
    if distributed.is_root():
        try:
            state = load_latest(run_dir, model)
        except CheckpointError as exc:
            error = str(exc)
    state, error = distributed.broadcast_object((state, error), "resume_state")
    if error is not None:
        raise CheckpointError(error)
    if state is not None:
        distributed.broadcast_variables(model.variables + optimizer.variables)
    return state


def take_new_learning_rate(state: TrainingState, base_learning_rate: float) -> None:
    """On ``--resume``: if this run's scaled learning rate differs from the one `state` was
    trained with (``--learning-rate`` given again, or another rank count), continue at the
    new rate rather than the stored one (logged). Call where the restored state is decided
    for every rank (rank 0 before its broadcast or the elastic sync), so ranks agree."""
    stored = state.base_learning_rate
    if state.learning_rate is not None and stored is not None and stored != base_learning_rate:
        log.info(
            "learning rate %.3g instead of the checkpoint's %.3g (trained from %.3g): --learning-rate or the rank "
            "count changed on --resume", base_learning_rate, state.learning_rate, stored,
        )
        state.learning_rate = base_learning_rate


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
    with atomic.atomic_open(path, newline="") as handle:
        csv.writer(handle).writerows(kept)


class SaveTrainingState(tf.keras.callbacks.Callback):
    """Write the resumable state after every epoch (rank 0) and put the restored callback
    state back at the start of training (every rank).

    Must come after the callbacks whose state it keeps, so that it sees their state at the
    end of an epoch and overrides their reset at the start of training.

    Args:
        run_dir: the run directory.
        state: the state training starts from (a fresh one, or the restored one).
        keep_callbacks: the callbacks whose `CALLBACK_STATE` attributes are saved (one of
            each class: the first).
        base_learning_rate: this run's scaled learning rate (see the module docstring).
    """

    def __init__(
        self,
        run_dir: str,
        state: TrainingState,
        keep_callbacks: list[tf.keras.callbacks.Callback],
        base_learning_rate: float | None = None,
    ):
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.keep_callbacks: dict[str, tf.keras.callbacks.Callback] = {}
        for callback in keep_callbacks:
            if type(callback).__name__ in CALLBACK_STATE:
                self.keep_callbacks.setdefault(type(callback).__name__, callback)
        self.base_learning_rate = base_learning_rate
        self._started = 0.0
        self._seconds_before = state.train_seconds
        self._manager: tf.train.CheckpointManager | None = None
        self._tracked: tf.train.Checkpoint | None = None

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()
        if self._tracked is None:
            # On every rank, though only rank 0 saves: the checkpoint's save counter is a
            # variable, and under tf.distribute creating one is a collective operation.
            self._tracked = _tracked(self.model, self.model.optimizer)
            self._tracked.save_counter  # noqa: B018 (created on first access)
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
        self.state.base_learning_rate = self.base_learning_rate
        self.state.stopped = bool(self.model.stop_training)
        self.state.callbacks = {
            name: {attribute: _plain(getattr(callback, attribute)) for attribute in CALLBACK_STATE[name]}
            for name, callback in self.keep_callbacks.items()
        }
        if distributed.is_root():
            self._write()

    def _write(self) -> None:
        if self._manager is None:
            directory = state_directory(self.run_dir)
            os.makedirs(directory, exist_ok=True)
            on_disk = candidates(self.run_dir)
            if _pointer(directory) is None and on_disk:
                # Lost or unreadable: rebuilt from the checkpoints on disk, so that the
                # manager keeps the newest of them besides the one it saves now.
                log.warning("%s: checkpoint pointer unreadable, rebuilt from the files", directory)
                names = [os.path.basename(p) for p in reversed(on_disk)]
                # Timestamps after the last preserved one (0): the manager manages them.
                tf.compat.v1.train.update_checkpoint_state(
                    directory, names[-1], names, all_model_checkpoint_timestamps=[time.time()] * len(names),
                    last_preserved_timestamp=0.0,
                )
            self._manager = _manager(self.run_dir, self._tracked)
        number = self.state.epochs_done
        prefix = os.path.join(state_directory(self.run_dir), f"{CHECKPOINT_NAME}-{number}")
        atomic.write_json(state_file(prefix), asdict(self.state))
        try:
            self._manager.save(checkpoint_number=number)
        except (tf.errors.OpError, OSError) as exc:  # e.g. a full disk; the older checkpoints stay
            with contextlib.suppress(OSError):  # this one's files, if any
                _remove_unmanaged(self.run_dir, self._manager.checkpoints)
            raise atomic.WriteError.of(prefix, _first_line(exc)) from exc
        _remove_unmanaged(self.run_dir, self._manager.checkpoints)


class AtomicModelCheckpoint(tf.keras.callbacks.ModelCheckpoint):
    """Keras' `ModelCheckpoint`, whose file is replaced only by a complete new one: a failed
    save (a full disk, a read-only file system) leaves the previous file intact and raises
    `mpnn.atomic.WriteError` naming it.

    Keras writes weight files with HDF5, which crashes the process (a segmentation fault,
    seen here with h5py 3 on a full tmpfs) when a write fails under it. So the file is
    written in this node's temporary directory first, then copied under a temporary name
    beside its target (a plain copy fails cleanly) and renamed over it.
    """

    def _save_handler(self, filepath):
        with tempfile.TemporaryDirectory(prefix="mpnn-weights-") as scratch:
            local = os.path.join(scratch, os.path.basename(filepath))  # same name: Keras picks the format by it
            super()._save_handler(local)
            with atomic.replacing(filepath) as tmp:
                shutil.copyfile(local, tmp)


def _first_line(exc: BaseException) -> Exception:
    """`exc` as an exception whose message is its first line (TensorFlow's run on)."""
    text = str(exc).strip()
    return RuntimeError(text.splitlines()[0] if text else type(exc).__name__)


def _remove_unmanaged(run_dir: str, kept: list[str]) -> None:
    """Delete checkpoint and state files of `run_dir` that are not among `kept` (the
    manager's prefixes): state files of deleted checkpoints, and checkpoints the manager
    does not know of (left when a pointer file was lost)."""
    kept_names = {os.path.basename(p) for p in kept}
    for path in glob.glob(os.path.join(state_directory(run_dir), f"{CHECKPOINT_NAME}-*")):
        name = os.path.basename(path)
        prefix = re.match(rf"{CHECKPOINT_NAME}-\d+", name)
        if prefix and prefix.group(0) not in kept_names:
            if os.path.isdir(path):  # the temporary directory of a save that was killed
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a callback attribute (numpy scalars and tensors -> float)."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return float(value)
