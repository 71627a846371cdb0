"""benchmarks/schnetpack_side_by_side.py: the parts that decide a fair comparison, without
SchNetPack (its virtualenv is made only by the benchmark itself, see the script's docstring).

The SchNetPack side trains on what our converter calls train and validates on what it calls
valid; the table divides ours by SchNetPack's figure for figure; bad flags and files are one
line. The training of each side is the benchmark's run, not a test here.
"""

from __future__ import annotations

import logging

import pytest
import tensorflow as tf

from data_prep.pipeline import OutputOptions
from data_prep.prep_water import WaterOptions, prepare_water
from mpnn.bench import water_set
from tests.helpers import load_benchmark_script


@pytest.fixture(scope="module")
def script():
    return load_benchmark_script("schnetpack_side_by_side")


def _valid_ids(out) -> list[str]:
    """Record ids of the valid split of prepared data `out` (uncompressed shards)."""
    ids = []
    for shard in sorted(out.glob("valid-*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(shard)):
            example = tf.train.Example.FromString(record.numpy())
            ids.append(example.features.feature["record_id"].bytes_list.value[0].decode())
    return ids


def test_schnetpack_validates_on_the_structures_our_converter_puts_in_valid(script, tmp_path):
    """The benchmark hands SchNetPack the indices of the train file's valid structures; they
    are those ``mpnn-prep-water --test-inputs`` writes to its valid split (the same seed and
    fraction), and the test file is all test."""
    for name, seed, count in (("train", 0, 80), ("test", 1, 20)):
        water_set.write_water_set(str(tmp_path / name), water_set.WaterSetOptions(count=count, sizes=(3, 4), seed=seed))
    train, test = tmp_path / "train" / "water_0000.extxyz", tmp_path / "test" / "water_0000.extxyz"
    fraction, seed = 0.25, 3
    output = OutputOptions(str(tmp_path / "records"), shards=1, compression="none",
                           fractions=(1 - fraction, fraction, 0.0), seed=seed, show_progress=False)
    manifest = prepare_water([str(train)], WaterOptions(output, cutoff=4.0, test_inputs=(str(test),)))
    assert (manifest.summary.converted, manifest.split_records("test")) == (100, 20)
    expected = sorted(int(record_id.split(":")[1]) for record_id in _valid_ids(tmp_path / "records"))
    assert script.count_frames(str(train)) == 80
    indices = script.validation_indices(str(train), 80, fraction, seed, str(test))
    assert indices == expected
    assert 10 <= len(indices) <= 30  # a quarter of 80, give or take the hash
    assert script.validation_indices(str(train), 80, fraction, seed + 1, str(test)) != indices


def _side(speed: float, mae: float, per_size: dict[str, float]) -> dict:
    return {
        "epochs_run": 4,
        "structures_per_second": {"fit": speed},
        "test": {"mae": mae, "forces": {"mae": 2 * mae, "rmse": 3 * mae},
                 "by_group": {size: {"mae_per_water": value} for size, value in per_size.items()}},
    }


def test_table_divides_ours_by_schnetpack_and_says_what_is_missing(script):
    ours = _side(speed=50.0, mae=0.3, per_size={"3": 0.01, "10": 0.02})
    theirs = _side(speed=20.0, mae=0.6, per_size={"3": 0.04})
    ratios = script.ratios(ours, theirs)
    assert ratios["structures/s, validation included"] == pytest.approx(2.5)
    assert ratios["energy MAE, kcal/mol"] == pytest.approx(0.5)
    assert ratios["force RMSE, kcal/mol/A"] == pytest.approx(0.5)
    assert ratios["epochs"] == pytest.approx(1.0)
    assert ratios["structures/s, training only"] is None  # neither side has it
    table = script.format_report({"ours": ours, "schnetpack": theirs, "ratios": ratios})
    rows = {line.split("  ")[0].strip(): line.split() for line in table.splitlines()}
    assert rows["structures/s, validation included"][-3:] == ["50", "20", "2.5"]
    assert rows["3"] == ["3", "0.01", "0.04", "0.25"]
    assert rows["10"] == ["10", "0.02", "n/a", "n/a"]  # a size SchNetPack's test lacked
    only_theirs = script.format_report({"schnetpack": theirs, "ratios": script.ratios(None, theirs)})
    assert "n/a" in only_theirs and "0.6" in only_theirs


def test_defaults_are_those_of_our_tools(script):
    """Without flags both sides train with our converter's and our model's defaults."""
    from data_prep.geometry import DEFAULT_CUTOFF
    from mpnn.config import TrainConfig
    from mpnn.models.schnet import SchNetConfig

    options, model, training = script.SideBySideOptions(train="a", test="b"), SchNetConfig(), TrainConfig()
    assert options.cutoff == DEFAULT_CUTOFF
    assert (options.width, options.interactions, options.rbf, options.readout_hidden, options.force_weight) == (
        model.width, model.message_steps, model.rbf_bins, model.readout_hidden, model.force_weight)
    assert (options.batch_size, options.learning_rate) == (training.batch_size, training.learning_rate)


def test_bad_flags_and_missing_files_are_one_line(script, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    existing = tmp_path / "set.extxyz"
    existing.write_text("")
    common = ["--train", str(existing), "--out", str(tmp_path / "r.json"), "--workdir", str(tmp_path / "w")]
    assert script.main([*common, "--test", str(tmp_path / "missing.extxyz")]) == 1
    assert caplog.records[-1].getMessage() == f"{tmp_path / 'missing.extxyz'}: no such file (an extended XYZ file of make_water_set.py)"
    assert script.main([*common, "--test", str(existing), "--width", "0"]) == 1
    assert caplog.records[-1].getMessage() == "--width must be positive, got 0"
    assert script.main([*common, "--test", str(existing), "--valid-fraction", "1"]) == 1
    assert "--valid-fraction in (0, 1)" in caplog.records[-1].getMessage()
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "w" / "schnetpack").exists()
