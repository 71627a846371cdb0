"""mpnn-train as users run it: one process, and two Horovod ranks with horovodrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mpnn.config import config_from_args
from mpnn.distributed import per_rank_batch_size, scaled_learning_rate

VENV_BIN = os.path.dirname(sys.executable)
SMALL = ["--epochs", "4", "--batch-size", "32", "--width", "16", "--message-steps", "2", "--verbose", "0"]


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def _read_log(run_dir):
    with open(run_dir / "log.csv") as handle:
        return list(csv.DictReader(handle))


def test_single_process_training_lowers_the_loss_and_writes_the_run_directory(water_dataset, tmp_path):
    run_dir = tmp_path / "run"
    # The model starts from the target fit and its update MLPs start small, so the loss
    # stays near the fit's for a few hundred steps (also in the demo) and moves by less
    # than its epoch-to-epoch noise in 4 epochs: 24 epochs (about 1,200 steps) of the
    # small model, and the first three epochs against the last three.
    epochs = ["--epochs", "24"]
    result = _run(
        [sys.executable, "-m", "mpnn.train", "--data", str(water_dataset), "--run-dir", str(run_dir), *SMALL, *epochs]
    )
    assert "test" in result.stdout and str(run_dir) in result.stdout

    log = _read_log(run_dir)
    assert len(log) == 24
    losses = [float(row["loss"]) for row in log]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert {"lr", "epoch_seconds", "graphs_per_second", "val_loss"} <= set(log[0])
    for name in ("config.json", "host_info.json", "model.keras", "checkpoints/best.weights.h5"):
        assert (run_dir / name).exists(), name

    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((water_dataset / "manifest.json").read_text())
    assert metrics["test"]["count"] == manifest["splits"]["test"]["records"]
    assert {"mae", "rmse", "r2", "pearson_r", "by_group", "group_summary"} <= set(metrics["test"])
    with open(run_dir / "test_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len({row["record_id"] for row in rows}) == metrics["test"]["count"]
    mae = np.mean([abs(float(row["error"])) for row in rows])
    assert mae == pytest.approx(metrics["test"]["mae"], rel=1e-3)


def test_saved_model_evaluates_to_the_same_metrics(water_dataset, tmp_path):
    run_dir = tmp_path / "run"
    _run([sys.executable, "-m", "mpnn.train", "--data", str(water_dataset), "--run-dir", str(run_dir), *SMALL])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = _run(
        [sys.executable, "-m", "mpnn.evaluate", "--model", str(run_dir / "model.keras"), "--data", str(water_dataset)]
    )
    assert f"MAE {metrics['test']['mae']:.4f}" in result.stdout


def test_horovodrun_two_ranks(water_dataset, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        os.path.join(VENV_BIN, "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
        sys.executable, "-m", "mpnn.train", "--data", str(water_dataset), "--run-dir", str(run_dir),
        "--batch-strategy", "gbs", *SMALL,
    ]
    _run(command)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((water_dataset / "manifest.json").read_text())
    assert metrics["ranks"] == 2 and metrics["batch_per_rank"] == 16
    assert metrics["weights_identical_across_ranks"] is True
    assert metrics["test"]["count"] == manifest["splits"]["test"]["records"]
    host_info = json.loads((run_dir / "host_info.json").read_text())
    assert host_info["ranks"] == 2
    assert len(_read_log(run_dir)) == 4


def test_config_file_is_overridden_by_flags(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("data: a\nepochs: 7\nmodel_options:\n  width: 12\n  message_steps: 3\n")
    config = config_from_args(["--config", str(config_file), "--epochs", "9", "--width", "20"])
    assert (config.data, config.epochs, config.model_options) == ("a", 9, {"width": 20, "message_steps": 3})
    with pytest.raises(ValueError, match="unknown configuration keys"):
        bad = tmp_path / "bad.json"
        bad.write_text('{"data": "a", "epoch": 3}')
        config_from_args(["--config", str(bad)])


def test_batch_strategies_and_learning_rate_rules():
    assert per_rank_batch_size(256, "dbs", 4) == 256
    assert per_rank_batch_size(256, "gbs", 4) == 64
    with pytest.raises(ValueError, match="not divisible by 3 ranks"):
        per_rank_batch_size(256, "gbs", 3)
    assert scaled_learning_rate(1e-3, 1024, 256, "linear") == pytest.approx(4e-3)
    assert scaled_learning_rate(1e-3, 1024, 256, "sqrt") == pytest.approx(2e-3)
    assert scaled_learning_rate(1e-3, 256, 256, "linear") == pytest.approx(1e-3)


def test_horovodrun_trains_gat_lspe_on_pdbbind_records(pdbbind_dataset, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        os.path.join(VENV_BIN, "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
        sys.executable, "-m", "mpnn.train", "--data", str(pdbbind_dataset), "--run-dir", str(run_dir),
        "--epochs", "2", "--batch-size", "1", "--verbose", "0",
    ]
    _run(command)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "gat-lspe" and metrics["loss"] == "mse"
    assert metrics["test"]["count"] == 2
    assert {"r2", "pearson_r"} <= set(metrics["test"])
    assert metrics["weights_identical_across_ranks"] is True
