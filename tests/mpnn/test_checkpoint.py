"""Resumable training: the checkpoint files, and mpnn-train killed and resumed for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from mpnn import checkpoint
from tests.helpers import HOROVODRUN_TWO_RANKS, prepare_coordinate_records, read_log


@pytest.fixture(autouse=True, scope="module")
def one_rank():
    """The checkpoint functions ask the engine which rank writes; here, a single rank."""
    from mpnn import distributed

    distributed.init()


SMALL = ["--batch-size", "32", "--width", "16", "--message-steps", "2", "--verbose", "0"]


def _compiled_model(seed: int) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _fit_one_epoch(model: tf.keras.Model, callbacks=(), initial_epoch: int = 0) -> None:
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    model.fit(
        x, x.sum(axis=1), initial_epoch=initial_epoch, epochs=initial_epoch + 1, batch_size=16, verbose=0,
        callbacks=list(callbacks),
    )


def test_restore_returns_the_weights_optimizer_and_callback_state_that_were_saved(tmp_path):
    os.makedirs(checkpoint.checkpoint_directory(str(tmp_path)))
    model = _compiled_model(seed=1)
    stopping = tf.keras.callbacks.EarlyStopping(monitor="loss", patience=5)
    state = checkpoint.TrainingState(seeds={"0": 7})
    _fit_one_epoch(model, [stopping, checkpoint.SaveTrainingState(str(tmp_path), state, [stopping])])

    fresh = _compiled_model(seed=2)
    restored = checkpoint.restore(str(tmp_path), fresh)
    assert restored is not None and restored.epochs_done == 1 and restored.seeds == {"0": 7}
    assert restored.callbacks["EarlyStopping"]["best"] == pytest.approx(stopping.best)
    for saved, loaded in zip(model.variables + model.optimizer.variables, fresh.variables + fresh.optimizer.variables):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())
    assert int(fresh.optimizer.iterations.numpy()) == 4


class _WeightsAfterEachEpoch(tf.keras.callbacks.Callback):
    """Copies of the weights at the end of each epoch, keyed by epochs done."""

    def __init__(self):
        super().__init__()
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = [w.copy() for w in self.model.get_weights()]


@pytest.fixture
def three_epochs(tmp_path):
    """A run directory after 3 epochs (so checkpoints 2 and 3 are kept), and the weights
    after each epoch."""
    run_dir = str(tmp_path / "run")
    model = _compiled_model(seed=1)
    weights = _WeightsAfterEachEpoch()
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    saver = checkpoint.SaveTrainingState(run_dir, checkpoint.TrainingState(), [])
    model.fit(x, x.sum(axis=1), epochs=3, batch_size=16, verbose=0, callbacks=[weights, saver])
    return run_dir, weights.weights


def _state_dir(run_dir) -> str:
    return checkpoint.state_directory(run_dir)


def test_the_last_two_states_are_kept_each_with_its_state_file(three_epochs):
    run_dir, _ = three_epochs
    names = sorted(os.listdir(_state_dir(run_dir)))
    assert names == [
        "checkpoint",
        "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-2.state.json",
        "ckpt-3.data-00000-of-00001", "ckpt-3.index", "ckpt-3.state.json",
    ]


def _indexes(run_dir: str) -> list[str]:
    """The ``.index`` files of the checkpoints kept, sorted."""
    return sorted(n for n in os.listdir(_state_dir(run_dir)) if n.endswith(".index"))


def _truncate(path: str, keep_fraction: float = 0.5) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(int(size * keep_fraction))


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _point_at(run_dir: str, *numbers: int) -> None:
    """Rewrite the manager's pointer file to name `numbers` (newest last)."""
    names = [f"ckpt-{n}" for n in numbers]
    lines = [f'model_checkpoint_path: "{names[-1]}"'] + [f'all_model_checkpoint_paths: "{n}"' for n in names]
    _write(os.path.join(_state_dir(run_dir), "checkpoint"), "\n".join(lines) + "\n")


# Each damage of the latest checkpoint (ckpt-3), and the epoch the run resumes after.
DAMAGED_LATEST = {
    "index deleted": (lambda d: os.remove(f"{d}/ckpt-3.index"), 2),
    "data deleted": (lambda d: os.remove(f"{d}/ckpt-3.data-00000-of-00001"), 2),
    "data truncated": (lambda d: _truncate(f"{d}/ckpt-3.data-00000-of-00001"), 2),
    "data emptied": (lambda d: _truncate(f"{d}/ckpt-3.data-00000-of-00001", 0.0), 2),
    "index truncated": (lambda d: _truncate(f"{d}/ckpt-3.index"), 2),
    "state.json garbage": (lambda d: _write(f"{d}/ckpt-3.state.json", "\x00garbage{"), 2),
    "state.json truncated": (lambda d: _truncate(f"{d}/ckpt-3.state.json"), 2),
    "state.json not a state": (lambda d: _write(f"{d}/ckpt-3.state.json", "[1, 2]"), 2),
    "state.json unknown keys": (lambda d: _write(f"{d}/ckpt-3.state.json", '{"epochs_done": 3, "x": 1}'), 2),
    "state.json deleted": (lambda d: os.remove(f"{d}/ckpt-3.state.json"), 2),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_LATEST))
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(three_epochs, damage, caplog):
    run_dir, weights = three_epochs
    apply_damage, expected_epochs = DAMAGED_LATEST[damage]
    apply_damage(_state_dir(run_dir))
    fresh = _compiled_model(seed=2)
    with caplog.at_level("WARNING", logger="mpnn.checkpoint"):
        state = checkpoint.restore(run_dir, fresh)
    assert state.epochs_done == expected_epochs
    for expected, loaded in zip(weights[expected_epochs], fresh.get_weights()):
        np.testing.assert_array_equal(expected, loaded)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "mpnn.checkpoint"]
    assert "ckpt-3 is unusable" in warning and warning.endswith("ckpt-2")


def test_a_pointer_to_missing_files_falls_back_to_the_newest_checkpoint_on_disk(three_epochs, caplog):
    run_dir, weights = three_epochs
    _point_at(run_dir, 2, 3, 9)  # ckpt-9 does not exist
    fresh = _compiled_model(seed=2)
    with caplog.at_level("WARNING", logger="mpnn.checkpoint"):
        assert checkpoint.restore(run_dir, fresh).epochs_done == 3
    assert any("ckpt-9 is unusable" in r.getMessage() and r.getMessage().endswith("ckpt-3") for r in caplog.records)


@pytest.mark.parametrize("pointer", ["", "\x00\xff not a text proto {", None])
def test_a_garbage_or_missing_pointer_still_finds_the_checkpoints_on_disk(three_epochs, pointer):
    run_dir, weights = three_epochs
    path = os.path.join(_state_dir(run_dir), "checkpoint")
    if pointer is None:
        os.remove(path)
    else:
        _write(path, pointer)
    fresh = _compiled_model(seed=2)
    state = checkpoint.restore(run_dir, fresh)
    assert state.epochs_done == 3
    for expected, loaded in zip(weights[3], fresh.get_weights()):
        np.testing.assert_array_equal(expected, loaded)
    # Training goes on and keeps the last two states.
    _fit_one_epoch(fresh, [checkpoint.SaveTrainingState(run_dir, state, [])], initial_epoch=3)
    assert _indexes(run_dir) == ["ckpt-3.index", "ckpt-4.index"]


def test_no_usable_checkpoint_is_one_error_naming_the_run_directory(three_epochs):
    run_dir, _ = three_epochs
    os.remove(os.path.join(_state_dir(run_dir), "ckpt-3.index"))
    _write(os.path.join(_state_dir(run_dir), "ckpt-2.state.json"), "garbage")
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.restore(run_dir, _compiled_model(seed=2))
    message = str(error.value)
    assert message.startswith(f"{run_dir}: no usable checkpoint") and "\n" not in message
    assert "ckpt-3:" in message and "ckpt-2:" in message


def test_a_run_directory_without_checkpoints_starts_afresh(tmp_path):
    assert checkpoint.restore(str(tmp_path / "never-written"), _compiled_model(seed=1)) is None
    os.makedirs(checkpoint.state_directory(str(tmp_path)))
    assert checkpoint.restore(str(tmp_path), _compiled_model(seed=1)) is None
    assert not checkpoint.has_checkpoint(str(tmp_path))


def test_the_earlier_layout_is_a_clear_error_not_a_traceback(tmp_path):
    directory = checkpoint.checkpoint_directory(str(tmp_path))
    os.makedirs(os.path.join(directory, "state-epoch-0002"))
    _write(os.path.join(directory, "latest.json"), '{"directory": "state-epoch-0009"}')
    assert checkpoint.has_checkpoint(str(tmp_path))
    with pytest.raises(checkpoint.CheckpointError, match="earlier mpnn .*cannot be resumed; start a new run"):
        checkpoint.restore(str(tmp_path), _compiled_model(seed=1))


def test_a_resumed_run_saves_over_the_damaged_checkpoint_and_keeps_two(three_epochs):
    run_dir, _ = three_epochs
    _truncate(os.path.join(_state_dir(run_dir), "ckpt-3.data-00000-of-00001"))
    model = _compiled_model(seed=2)
    state = checkpoint.restore(run_dir, model)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    saver = checkpoint.SaveTrainingState(run_dir, state, [])
    model.fit(x, x.sum(axis=1), initial_epoch=2, epochs=4, batch_size=16, verbose=0, callbacks=[saver])
    assert _indexes(run_dir) == ["ckpt-3.index", "ckpt-4.index"]
    assert checkpoint.restore(run_dir, _compiled_model(seed=3)).epochs_done == 4


def test_trim_log_keeps_each_checkpointed_epoch_once(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.5\n")
    checkpoint.trim_log(str(path), epochs_done=2)
    assert path.read_text().split() == ["epoch,loss", "0,3.0", "1,2.0"]


def _latest_epochs_done(run_dir) -> int:
    pointer = tf.train.get_checkpoint_state(checkpoint.state_directory(str(run_dir)))
    return int(pointer.model_checkpoint_path.rsplit("-", 1)[1]) if pointer else 0


@pytest.mark.integration  # mpnn-train processes, killed and resumed
def test_a_killed_run_resumes_without_repeating_or_skipping_epochs(water_dataset, tmp_path):
    epochs = 4  # two of warm-up, two of the cosine: both parts of the schedule
    command = [sys.executable, "-m", "mpnn.cli.train", "--data", str(water_dataset), "--epochs", str(epochs), *SMALL]
    run_dir = tmp_path / "killed"
    job = subprocess.Popen([*command, "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while _latest_epochs_done(run_dir) < 1 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)  # as a scheduler does at the wall-time limit
    output = job.communicate()[0].decode()
    killed_at = _latest_epochs_done(run_dir)
    assert 1 <= killed_at < epochs, output[-3000:]
    assert not (run_dir / "metrics.json").exists()

    # The job script runs the same command again, with --resume.
    resumed = subprocess.run([*command, "--run-dir", str(run_dir), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    log = read_log(run_dir)
    assert [int(row["epoch"]) for row in log] == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == epochs and metrics["resumed_from_epoch"] == [killed_at]

    # The learning-rate schedule (warm-up, then cosine) continues as in an uninterrupted run.
    uninterrupted = tmp_path / "uninterrupted"
    started = time.monotonic()
    subprocess.run([*command, "--run-dir", str(uninterrupted)], check=True, capture_output=True)
    wall_seconds = time.monotonic() - started
    expected_lr = [float(row["lr"]) for row in read_log(uninterrupted)]
    assert [float(row["lr"]) for row in log] == pytest.approx(expected_lr, rel=1e-5)
    # Training time counts each epoch once: within the process's wall time, above its epochs'.
    seconds = json.loads((uninterrupted / "metrics.json").read_text())["train_seconds"]
    assert sum(float(row["epoch_seconds"]) for row in read_log(uninterrupted)) <= seconds < wall_seconds

    # Resuming a finished run trains nothing more.
    again = subprocess.run([*command, "--run-dir", str(run_dir), "--resume"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-5000:]
    assert len(read_log(run_dir)) == epochs


@pytest.mark.integration
def test_a_checkpoint_resumes_under_another_batch_cut_and_rank_count(tmp_path):
    # The cut is a training setting, not part of the model: a run resumes cut in two after
    # an epoch without the cut, and the other way round, then under two Horovod ranks
    # after a one-rank epoch. Each restore checks that every variable of the model and
    # optimizer is found in the checkpoint.
    data = prepare_coordinate_records(tmp_path / "data", copies=4, shards=2)
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "mpnn.cli.train", "--data", str(data), "--run-dir", str(run_dir), *SMALL]
    legs = [
        [*train, "--epochs", "1", "--batch-cut", "1"],
        [*train, "--epochs", "2", "--batch-cut", "2", "--resume"],
        [*train, "--epochs", "3", "--batch-cut", "1", "--resume"],
        [*HOROVODRUN_TWO_RANKS, *train, "--epochs", "4", "--resume"],
    ]
    for leg in legs:
        done = subprocess.run(leg, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == [1, 2, 3] and metrics["epochs_run"] == 4 and metrics["ranks"] == 2
    assert [int(row["epoch"]) for row in read_log(run_dir)] == [0, 1, 2, 3]
