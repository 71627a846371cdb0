"""The engine seam (`mpnn.engines`): which engine ``--engine`` gives, what each refuses, that
gradients are averaged inside the optimizer on both, and the tf.distribute engine's copy of
Horovod's learning-rate schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpnn import engines
from mpnn.callbacks import cosine_multiplier
from mpnn.engines.tf_distribute import LearningRateSchedule, warmup_multiplier
from mpnn.errors import UsageError
from tests.helpers import HOROVODRUN_TWO_RANKS

HOROVOD = pytest.mark.skipif(not engines.horovod_installed(), reason="Horovod is not installed (the current stack)")
NO_HOROVOD = pytest.mark.skipif(engines.horovod_installed(), reason="Horovod is installed (the horovod stack)")
WORKER = Path(__file__).with_name("custom_step_worker.py")


def test_auto_is_tf_distribute_when_launched_for_it_else_horovod_if_installed():
    assert engines.resolve("auto", {"TF_CONFIG": '{"cluster": {}}'}) == "tf-distribute"
    assert engines.resolve("auto", {}) == ("horovod" if engines.horovod_installed() else "tf-distribute")
    assert engines.resolve("tf-distribute", {}) == "tf-distribute"
    with pytest.raises(UsageError, match="invalid choice 'mpi'"):
        engines.resolve("mpi", {})


def test_elastic_is_horovod_only(capsys):
    engines.check_elastic("horovod", True)
    engines.check_elastic("tf-distribute", False)
    with pytest.raises(UsageError, match="elastic training needs --engine horovod, not tf-distribute"):
        engines.check_elastic("tf-distribute", True)
    from mpnn.cli.train import main

    assert main(["--data", "x", "--run-dir", "r", "--elastic", "--engine", "tf-distribute"]) == 2
    assert capsys.readouterr().err == (
        "mpnn-train: error: argument --elastic: elastic training needs --engine horovod, not tf-distribute\n"
    )


@NO_HOROVOD
def test_horovod_where_it_is_not_installed_is_one_line_and_exit_2(capsys):
    from mpnn.cli.train import main

    assert main(["--data", "x", "--engine", "horovod"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mpnn-train: error: argument --engine: horovod is not installed") and error.count("\n") == 1


@NO_HOROVOD
@pytest.mark.integration  # a process of its own, to see what it imports
def test_the_current_stack_never_imports_horovod(water_dataset, tmp_path):
    code = ("import sys; from mpnn.config import TrainConfig; from mpnn.training import train\n"
            f"train(TrainConfig(data={str(water_dataset)!r}, run_dir={str(tmp_path / 'run')!r}, epochs=1, "
            "batch_size=64, verbose=0, model_options={'width': 8, 'message_steps': 1}))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'horovod'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _two_ranks(engine: str, path: str) -> list[str]:
    if engine == "horovod":
        command = [*HOROVODRUN_TWO_RANKS, sys.executable, str(WORKER), engine, path]
    else:
        command = [sys.executable, "-m", "mpnn.cli.launch", "-np", "2", sys.executable, str(WORKER), engine, path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return sorted(line.split(":", 1)[1] for line in done.stdout.splitlines() if " w " in line)


@pytest.mark.integration  # two ranks
@pytest.mark.parametrize("engine", [pytest.param("horovod", marks=HOROVOD), "tf-distribute"])
@pytest.mark.parametrize("path", ["minimize", "apply_gradients"])
def test_a_custom_train_step_steps_on_the_mean_gradient(engine, path):
    """Rank r's gradient is -2 (r + 1): the mean, -3, times the rate 0.1 gives w = 0.3 on both
    ranks; a rank stepping on its own gradient would hold 0.2 or 0.4 (Horovod 0.28.1 alone
    averages in ``minimize`` but not in ``apply_gradients``: `mpnn.engines.horovod`)."""
    assert _two_ranks(engine, path) == ["rank 0 w 0.300000", "rank 1 w 0.300000"]


def _rates(callback, epochs: int, steps: int) -> list[float]:
    """The learning rate set before each batch of `epochs` epochs of `steps` batches."""
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.0), loss="mse")
    callback.set_model(model)
    callback.on_train_begin()
    rates = []
    for epoch in range(epochs):
        callback.on_epoch_begin(epoch)
        for batch in range(steps):
            callback.on_train_batch_begin(batch)
            rates.append(float(tf.keras.backend.get_value(model.optimizer.learning_rate)))
    return rates


@HOROVOD
def test_the_tf_distribute_schedule_sets_horovods_rates():
    """Our `LearningRateSchedule` sets, batch by batch, the rates Horovod's warm-up and
    schedule callbacks set (Horovod's callbacks run alone here: one rank, its size 1 replaced
    by the 4 the formula is checked for)."""
    import horovod.tensorflow.keras as hvd

    hvd.init()
    ranks, steps, initial = 4, 5, 0.004
    multiplier = cosine_multiplier(6, 2, 0.01)
    ours = [LearningRateSchedule(initial, warmup_multiplier(2, steps, ranks), 0, 2, steps),
            LearningRateSchedule(initial, multiplier, 2, None, steps)]
    warmup = hvd.callbacks.LearningRateWarmupCallback(initial_lr=initial, warmup_epochs=2, steps_per_epoch=steps)
    warmup.multiplier = warmup_multiplier(2, steps, ranks)  # Horovod's formula reads hvd.size() (1 here)
    theirs = [warmup, hvd.callbacks.LearningRateScheduleCallback(
        initial_lr=initial, multiplier=multiplier, start_epoch=2, staircase=False, steps_per_epoch=steps)]
    for mine, horovods in zip(ours, theirs):
        assert _rates(mine, 6, steps) == _rates(horovods, 6, steps)
    # The formula itself: 1/ranks of the rate one step in, the whole rate at the warm-up's end.
    assert warmup_multiplier(2, steps, ranks)(0.0) == pytest.approx((1 + 3 * 0.1) / 4)
    assert warmup_multiplier(2, steps, ranks)(2 - 1 / steps) == pytest.approx(1.0)


@pytest.mark.integration  # three trainings
def test_tf_distribute_resumes_a_run_on_another_worker_count(water_dataset, tmp_path):
    """One worker trains 1 epoch, two workers resume it to 2, one worker again to 3."""
    run_dir = tmp_path / "run"
    common = [sys.executable, "-m", "mpnn.cli.train", "--data", str(water_dataset), "--run-dir", str(run_dir),
              "--batch-size", "64", "--width", "8", "--message-steps", "1", "--verbose", "0", "--engine", "tf-distribute"]
    launch = [sys.executable, "-m", "mpnn.cli.launch", "-np", "2"]
    for prefix, epochs in (([], 1), (launch, 2), ([], 3)):
        done = subprocess.run([*prefix, *common, "--epochs", str(epochs), "--resume"], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert (metrics["epochs_run"], metrics["ranks"]) == (epochs, 2 if prefix else 1)
    assert metrics["resumed_from_epoch"] == [1, 2] and metrics["weights_identical_across_ranks"]
