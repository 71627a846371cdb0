"""mpnn-train as users run it: one process, and two Horovod ranks with horovodrun."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from mpnn import models
from mpnn.cli.train import parse_config
from mpnn.data import Manifest, manifest_dataset
from mpnn.distributed import per_rank_batch_size, scaled_learning_rate
from mpnn.errors import UsageError
from mpnn.host import usable_cores
from mpnn.models.gilmer import MPNNConfig
from tests.helpers import HOROVODRUN_TWO_RANKS, REPO, prepare_coordinate_records, read_log, run_checked

SMALL = ["--epochs", "4", "--batch-size", "32", "--width", "16", "--message-steps", "2", "--verbose", "0"]


@pytest.mark.integration  # mpnn-train in its own process, 24 epochs
def test_single_process_training_lowers_the_loss_writes_the_run_directory_and_evaluates_the_same(
    water_dataset, tmp_path
):
    run_dir = tmp_path / "run"
    # The model starts from the target fit and its update MLPs start small, so the loss
    # stays near the fit's for a few hundred steps (also in the demo) and moves by less
    # than its epoch-to-epoch noise in 4 epochs: 24 epochs (about 1,200 steps) of the
    # small model, and the first three epochs against the last three.
    epochs = ["--epochs", "24"]
    result = run_checked(
        [sys.executable, "-m", "mpnn.cli.train", "--data", str(water_dataset), "--run-dir", str(run_dir), *SMALL, *epochs]
    )
    assert "test" in result.stdout and str(run_dir) in result.stdout

    log = read_log(run_dir)
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

    # The saved model, evaluated by mpnn-evaluate, gives the run's test metrics.
    result = run_checked(
        [sys.executable, "-m", "mpnn.cli.evaluate", "--model", str(run_dir / "model.keras"), "--data", str(water_dataset)]
    )
    assert f"MAE {metrics['test']['mae']:.4f}" in result.stdout


@pytest.mark.integration  # horovodrun
def test_horovodrun_two_ranks(water_dataset, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        *HOROVODRUN_TWO_RANKS,
        sys.executable, "-m", "mpnn.cli.train", "--data", str(water_dataset), "--run-dir", str(run_dir),
        "--batch-strategy", "gbs", *SMALL,
    ]
    run_checked(command)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((water_dataset / "manifest.json").read_text())
    assert metrics["ranks"] == 2 and metrics["batch_per_rank"] == 16
    assert metrics["weights_identical_across_ranks"] is True
    assert metrics["test"]["count"] == manifest["splits"]["test"]["records"]
    host_info = json.loads((run_dir / "host_info.json").read_text())
    assert host_info["ranks"] == 2
    assert len(read_log(run_dir)) == 4


def test_config_file_is_overridden_by_flags(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("data: a\nepochs: 7\nmodel_options:\n  width: 12\n  message_steps: 3\n")
    config = parse_config(["--config", str(config_file), "--epochs", "9", "--width", "20"])
    assert (config.data, config.epochs, config.model_options) == ("a", 9, {"width": 20, "message_steps": 3})
    assert parse_config(["--data", "a", "--no-edge-updates"]).model_options == {"edge_updates": False}
    assert parse_config(["--data", "a", "--edge-updates"]).model_options == {"edge_updates": True}
    with pytest.raises(ValueError, match="unknown configuration keys"):
        bad = tmp_path / "bad.json"
        bad.write_text('{"data": "a", "epoch": 3}')
        parse_config(["--config", str(bad)])


def test_shipped_configurations_are_valid_settings():
    shipped = sorted((REPO / "jobs" / "configs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        config = parse_config(["--data", "a", "--config", str(path)])
        models.model_config("mpnn" if config.family == "auto" else config.family, config.model_options)


def test_model_options_of_the_wrong_type_are_usage_errors():


    with pytest.raises(UsageError, match="model 'mpnn' option edge_updates must be a bool, got 'maybe'"):
        models.model_config("mpnn", {"edge_updates": "maybe"})  # a YAML string: truthy
    with pytest.raises(UsageError, match="option width must be a int, got '64'"):
        models.model_config("mpnn", {"width": "64"})
    assert models.model_config("mpnn", {"dropout": 0, "edge_updates": True}).dropout == 0  # an int for a float
    assert models.model_config("gat-lspe", {"readout_units": [32, 16]}).readout_units == [32, 16]  # JSON list


def test_batch_strategies_and_learning_rate_rules():
    assert per_rank_batch_size(256, "dbs", 4) == 256
    assert per_rank_batch_size(256, "gbs", 4) == 64
    with pytest.raises(ValueError, match="not divisible by 3 ranks"):
        per_rank_batch_size(256, "gbs", 3)
    assert scaled_learning_rate(1e-3, 1024, 256, "linear") == pytest.approx(4e-3)
    assert scaled_learning_rate(1e-3, 1024, 256, "sqrt") == pytest.approx(2e-3)
    assert scaled_learning_rate(1e-3, 256, 256, "linear") == pytest.approx(1e-3)


@pytest.mark.integration  # horovodrun
def test_horovodrun_trains_gat_lspe_on_pdbbind_records(pdbbind_dataset, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        *HOROVODRUN_TWO_RANKS,
        sys.executable, "-m", "mpnn.cli.train", "--data", str(pdbbind_dataset), "--run-dir", str(run_dir),
        "--epochs", "2", "--batch-size", "1", "--verbose", "0",
    ]
    run_checked(command)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "gat-lspe" and metrics["loss"] == "mse"
    assert metrics["test"]["count"] == 2
    assert {"r2", "pearson_r"} <= set(metrics["test"])
    assert metrics["weights_identical_across_ranks"] is True


def test_a_saved_config_with_the_old_model_cut_resumes_with_the_cut_as_a_training_setting(tmp_path):
    # config.json of runs made while the cut was a model option, and the thread plan a run
    # records beside its settings (what its machine chose, not a setting).
    saved = {"data": "a", "model_options": {"width": 8, "parallel_shards": 2, "fused_updates": True},
             "thread_plan": {"intra_op_threads": 1, "inter_op_threads": 2, "batch_cut": 2}}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = parse_config(["--run-dir", str(tmp_path), "--resume"])
    assert (config.model_options, config.batch_cut) == ({"width": 8}, 2)
    assert parse_config(["--data", "a", "--batch-cut", "1"]).batch_cut == 1
    with pytest.raises(UsageError, match=r"argument --batch-cut: must be a whole number >= 0, got -1"):
        parse_config(["--data", "a", "--batch-cut", "-1"])


@pytest.mark.parametrize("family, dataset", [
    ("mpnn", "water_dataset"),
    pytest.param("schnet", "geometry_dataset", marks=pytest.mark.integration),  # TIP4P clusters made for it
])
def test_every_variable_of_the_trainer_exists_before_fit_so_its_step_is_traced_once(family, dataset, request):
    # A tf.function that makes variables on its first call is traced twice; the training
    # step's trace is the longest part of a process's start.
    import tensorflow as tf

    from mpnn import distributed
    from mpnn.config import TrainConfig
    from mpnn.training import build_trainer, fit_data, plan_run

    distributed.init()
    data = str(request.getfixturevalue(dataset))
    manifest = Manifest.load(data)
    config = TrainConfig(data=data, family=family, batch_size=16, model_options={"width": 8, "message_steps": 1})
    plan = plan_run(config, manifest, distributed.ThreadPlan(intra_op_threads=1, inter_op_threads=1, batch_cut=2))
    model, trainer = build_trainer(plan, manifest)
    train_data, _, valid_data, _ = fit_data(plan, manifest, model, seed=0, rank=0, ranks=1)
    created = []

    def record(next_creator, **kwargs):
        created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(record):
        trainer.fit(train_data, steps_per_epoch=2, validation_data=valid_data, validation_steps=1, verbose=0)
    assert created == []
    assert trainer.train_function.experimental_get_tracing_count() == 1
    assert trainer.test_function.experimental_get_tracing_count() == 1


@pytest.fixture(scope="module")
def coordinate_dataset(tmp_path_factory):
    """280 perturbed copies of the shipped minima (with distances), 2 shards per split."""
    return prepare_coordinate_records(tmp_path_factory.mktemp("coordinates") / "data", copies=10, shards=2)


def test_the_cache_switches_itself_off_over_its_budget(coordinate_dataset, caplog):
    import tensorflow as tf

    from mpnn.data import CACHE_OVERHEAD_BYTES, cache_bytes_estimate
    from mpnn.training import cache_fits

    manifest = Manifest.load(str(coordinate_dataset))
    files, _ = manifest.split("train")
    sizes = [len(r) for f in files for r in tf.data.TFRecordDataset(f, compression_type="GZIP").as_numpy_iterator()]
    needed = cache_bytes_estimate(manifest, "train")
    # From a sample of the first shard, within a few percent of the records' real sizes.
    assert needed == pytest.approx(len(sizes) * (np.mean(sizes) + CACHE_OVERHEAD_BYTES), rel=0.05)
    assert cache_bytes_estimate(manifest, "train", rank=1, size=2) == pytest.approx(needed / 2, rel=0.05)
    assert cache_fits(manifest, 0, 1, budget_gb=2 * needed / 1e9)
    with caplog.at_level(logging.WARNING, logger="mpnn-train"):
        assert not cache_fits(manifest, 0, 1, budget_gb=needed / 2 / 1e9)
    assert "cache off" in caplog.text and "--cache-budget-gb" in caplog.text


def _predictions_csv(path):
    with open(path) as handle:
        return {row["record_id"]: row for row in csv.DictReader(handle)}


def _assert_saved_model_predicts_as_the_run(run_dir, data):
    """model.keras predicts exactly what the run's best weights predict in a model built
    afresh, the run's test_predictions.csv (the in-memory model's) to its printed digits,
    and mpnn-evaluate writes the same predictions."""
    from mpnn import distributed
    from mpnn.cli import evaluate
    from mpnn.evaluate import predict_split

    distributed.init()
    manifest = Manifest.load(str(data))
    saved = models.load_model(str(run_dir / "model.keras"))
    options = json.loads((run_dir / "config.json").read_text())["model_options"]
    fresh = models.build_from_manifest("mpnn", models.model_config("mpnn", options), manifest)
    fresh.load_weights(str(run_dir / "checkpoints" / "best.weights.h5"))
    # The same batches through both (the loader interleaves the shards in no fixed order).
    batches = [models.model_inputs(saved, inputs) for inputs, _ in manifest_dataset(manifest, "test", 16)[0]]
    for inputs in batches:
        np.testing.assert_array_equal(saved(inputs).numpy(), fresh(inputs).numpy())
    from_file = predict_split(saved, manifest, "test", 16)

    run_rows = _predictions_csv(run_dir / "test_predictions.csv")
    assert sorted(run_rows) == sorted(from_file.record_id)
    predicted = np.array([float(run_rows[rid]["predicted"]) for rid in from_file.record_id])
    np.testing.assert_allclose(from_file.y_pred, predicted, rtol=1e-5)  # the CSV prints 6 digits

    output = run_dir / "evaluated.csv"  # mpnn-evaluate in this process (its process: the 24-epoch test)
    assert evaluate.main(["--model", str(run_dir / "model.keras"), "--data", str(data), "--output", str(output)]) == 0
    assert _predictions_csv(output) == run_rows


COORDINATE_RUN = ["--epochs", "2", "--batch-size", "16", "--width", "16", "--message-steps", "2", "--verbose", "0"]


@pytest.mark.integration
@pytest.mark.parametrize("plan", [["--inter-op-threads", "1"], []], ids=["one-inter-op-thread", "default-plan"])
def test_coordinate_records_train_save_reload_and_evaluate_in_each_thread_plan(coordinate_dataset, tmp_path, plan):
    # Issue 12: the default plan on 2+ cores (batches cut in two) crashed after training
    # on records with distances, when the model was saved.
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "mpnn.cli.train", "--data", str(coordinate_dataset), "--run-dir", str(run_dir)]
    run_checked([*command, *COORDINATE_RUN, *plan])
    config = json.loads((run_dir / "config.json").read_text())
    expected_cut = 1 if plan or usable_cores() < 2 else 2
    assert config["thread_plan"]["batch_cut"] == expected_cut
    # Every architecture option is recorded, the defaults resolved, so a resume rebuilds this model.
    assert config["model_options"] == {**dataclasses.asdict(MPNNConfig()), "width": 16, "message_steps": 2}
    log = read_log(run_dir)
    assert len(log) == 2 and all(float(row["peak_rss_mib"]) > 100 for row in log)  # TensorFlow alone takes more
    assert float(log[1]["peak_rss_mib"]) >= float(log[0]["peak_rss_mib"])  # a peak so far never falls
    _assert_saved_model_predicts_as_the_run(run_dir, coordinate_dataset)


@pytest.mark.integration
def test_coordinate_records_train_save_reload_and_evaluate_with_two_ranks_and_write_profiles(
    coordinate_dataset, tmp_path
):
    # One launch for both checks: the saved model of a two-rank run, and the TensorBoard,
    # Horovod timeline and autotune files the profiling flags ask for.
    run_dir, timeline = tmp_path / "run", tmp_path / "timeline.json"
    command = [
        *HOROVODRUN_TWO_RANKS,
        sys.executable, "-m", "mpnn.cli.train", "--data", str(coordinate_dataset), "--run-dir", str(run_dir),
        *COORDINATE_RUN, "--tensorboard", "--horovod-timeline", str(timeline), "--autotune",
    ]
    run_checked(command)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["weights_identical_across_ranks"] is True
    _assert_saved_model_predicts_as_the_run(run_dir, coordinate_dataset)
    assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert "ALLREDUCE" in timeline.read_text()  # the gradient exchanges
    with open(run_dir / "autotune.csv") as handle:
        assert len(handle.readline().split(",")) > 2  # the header of Horovod's trial log


@pytest.fixture(scope="module")
def tip4p_records(tmp_path_factory) -> Path:
    """240 TIP4P clusters of 3-6 waters with energies and forces, the geometry model's data
    (4 shards per split, so the two ranks read whole shards)."""
    from mpnn.cli.prep_water import main
    from mpnn.bench.water_set import WaterSetOptions, write_water_set

    root = tmp_path_factory.mktemp("tip4p")
    write_water_set(str(root / "structures"), WaterSetOptions(count=240, sizes=(3, 4, 5, 6), seed=5))
    assert main([str(root / "structures"), "-o", str(root / "records"), "--cutoff", "5", "--shards", "2",
                 "--quiet"]) == 0
    return root / "records"


@pytest.mark.integration  # horovodrun, a geometry model trained on forces
def test_horovodrun_two_ranks_trains_the_geometry_model_on_energies_and_forces(tip4p_records, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--data", str(tip4p_records), "--run-dir", str(run_dir), "--family", "schnet", "--width", "16",
              "--message-steps", "2", "--batch-size", "4", "--verbose", "0"]
    run_checked([*HOROVODRUN_TWO_RANKS, sys.executable, "-m", "mpnn.cli.train", *common, "--epochs", "3"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["weights_identical_across_ranks"] is True
    test = metrics["test"]
    assert test["forces"]["count"] == 3 * sum(int(size) * row["count"] for size, row in test["by_group"].items())
    assert set(test["forces"]["by_component"]) == {"x", "y", "z"}
    assert test["mae_per_water"] > 0 and all("mae_per_water" in row for row in test["by_group"].values())
    log = read_log(run_dir)
    assert len(log) == 3 and "force_mae" in log[0] and "val_force_mae" in log[0]
    # Training on forces lowers the force error from the untrained model's (zero forces).
    assert float(log[-1]["force_mae"]) < float(log[0]["force_mae"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["family"] == "schnet" and config["model_options"]["force_weight"] > 0

    # Resumed on one rank, it continues from epoch 3 with its own architecture.
    run_checked([sys.executable, "-m", "mpnn.cli.train", *common, "--epochs", "4", "--resume"])
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["epochs_run"] == 4 and resumed["resumed_from_epoch"] == [3]
    assert resumed["architecture"] == metrics["architecture"]
