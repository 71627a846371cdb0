"""Resumable training: the checkpoint files, and mpnn-train killed and resumed for real."""

from __future__ import annotations

import csv
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
from tests.mpnn import coordinate_records

VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture(autouse=True, scope="module")
def one_horovod_rank():
    """The checkpoint functions ask Horovod which rank writes; here, a single rank."""
    import horovod.tensorflow.keras as hvd

    hvd.init()


SMALL = ["--batch-size", "32", "--width", "16", "--message-steps", "2", "--verbose", "0"]


def _compiled_model(seed: int) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(4), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _fit_one_epoch(model: tf.keras.Model, callbacks=()) -> None:
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    model.fit(x, x.sum(axis=1), epochs=1, batch_size=16, verbose=0, callbacks=list(callbacks))


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


def test_only_the_checkpoint_latest_json_names_is_loaded(tmp_path):
    run_dir = str(tmp_path)
    assert checkpoint.restore(run_dir, _compiled_model(seed=1)) is None  # nothing to resume
    os.makedirs(checkpoint.checkpoint_directory(run_dir))
    model = _compiled_model(seed=1)
    _fit_one_epoch(model, [checkpoint.SaveTrainingState(run_dir, checkpoint.TrainingState(), [])])
    # A state directory a killed job was still writing: never pointed at, never read.
    half_written = os.path.join(checkpoint.checkpoint_directory(run_dir), ".tmp-state-epoch-0002-123")
    os.makedirs(half_written)
    with open(os.path.join(half_written, checkpoint.STATE_FILE), "w") as handle:
        handle.write('{"epochs_done": 2, "train')
    assert checkpoint.latest_state_directory(run_dir).endswith("state-epoch-0001")
    assert checkpoint.restore(run_dir, _compiled_model(seed=3)).epochs_done == 1

    with open(os.path.join(checkpoint.checkpoint_directory(run_dir), checkpoint.LATEST), "w") as handle:
        json.dump({"directory": "state-epoch-0009"}, handle)
    with pytest.raises(ValueError, match="latest.json: points at .*state-epoch-0009"):
        checkpoint.latest_state_directory(run_dir)


def test_trim_log_keeps_each_checkpointed_epoch_once(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.5\n")
    checkpoint.trim_log(str(path), epochs_done=2)
    assert path.read_text().split() == ["epoch,loss", "0,3.0", "1,2.0"]


def _read_log(run_dir):
    with open(run_dir / "log.csv") as handle:
        return list(csv.DictReader(handle))


def _latest_epochs_done(run_dir) -> int:
    try:
        with open(run_dir / "checkpoints" / checkpoint.LATEST) as handle:
            return json.load(handle)["epochs_done"]
    except (OSError, ValueError):
        return 0


def test_a_killed_run_resumes_without_repeating_or_skipping_epochs(water_dataset, tmp_path):
    epochs = 6
    command = [sys.executable, "-m", "mpnn.train", "--data", str(water_dataset), "--epochs", str(epochs), *SMALL]
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
    log = _read_log(run_dir)
    assert [int(row["epoch"]) for row in log] == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == epochs and metrics["resumed_from_epoch"] == [killed_at]

    # The learning-rate schedule (warm-up, then cosine) continues as in an uninterrupted run.
    uninterrupted = tmp_path / "uninterrupted"
    started = time.monotonic()
    subprocess.run([*command, "--run-dir", str(uninterrupted)], check=True, capture_output=True)
    wall_seconds = time.monotonic() - started
    expected_lr = [float(row["lr"]) for row in _read_log(uninterrupted)]
    assert [float(row["lr"]) for row in log] == pytest.approx(expected_lr, rel=1e-5)
    # Training time counts each epoch once: within the process's wall time, above its epochs'.
    seconds = json.loads((uninterrupted / "metrics.json").read_text())["train_seconds"]
    assert sum(float(row["epoch_seconds"]) for row in _read_log(uninterrupted)) <= seconds < wall_seconds

    # Resuming a finished run trains nothing more.
    again = subprocess.run([*command, "--run-dir", str(run_dir), "--resume"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-5000:]
    assert len(_read_log(run_dir)) == epochs


@pytest.mark.integration
def test_a_checkpoint_resumes_under_another_batch_cut_and_rank_count(tmp_path):
    # The cut is a training setting, not part of the model: a run resumes cut in two after
    # an epoch without the cut, and the other way round, then under two Horovod ranks
    # after a one-rank epoch. Each restore checks that every variable of the model and
    # optimizer is found in the checkpoint.
    data = coordinate_records.prepare(tmp_path / "data", copies=4, shards=2)
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "mpnn.train", "--data", str(data), "--run-dir", str(run_dir), *SMALL]
    horovodrun = [os.path.join(VENV_BIN, "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo"]
    legs = [
        [*train, "--epochs", "1", "--batch-cut", "1"],
        [*train, "--epochs", "2", "--batch-cut", "2", "--resume"],
        [*train, "--epochs", "3", "--batch-cut", "1", "--resume"],
        [*horovodrun, *train, "--epochs", "4", "--resume"],
    ]
    for leg in legs:
        done = subprocess.run(leg, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == [1, 2, 3] and metrics["epochs_run"] == 4 and metrics["ranks"] == 2
    assert [int(row["epoch"]) for row in _read_log(run_dir)] == [0, 1, 2, 3]
