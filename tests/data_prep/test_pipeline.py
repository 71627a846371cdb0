"""mpnn-prep-water with worker processes or across MPI ranks gives the same data set as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import tensorflow as tf

from data_prep import records
from data_prep.prep_water import main
from tests.conftest import MINIMA


def _records_by_split(out) -> dict[str, dict[str, tuple]]:
    manifest = json.loads((out / "manifest.json").read_text())
    result = {}
    for split, entry in manifest["splits"].items():
        result[split] = {}
        for shard in entry["shards"]:
            for raw in tf.data.TFRecordDataset(str(out / shard["file"]), compression_type="GZIP"):
                feature = tf.train.Example.FromString(raw.numpy()).features.feature
                record_id = feature["record_id"].bytes_list.value[0].decode()
                result[split][record_id] = (
                    feature["energy"].float_list.value[0],
                    feature["n_waters"].int64_list.value[0],
                    tuple(feature["connectivity"].int64_list.value),
                )
    return result


def _shard_records(out) -> dict[str, list[bytes]]:
    """Every shard's serialised records, in file order, by shard file name."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        shard["file"]: [r.numpy() for r in tf.data.TFRecordDataset(str(out / shard["file"]), compression_type="GZIP")]
        for entry in manifest["splits"].values()
        for shard in entry["shards"]
    }


def test_two_workers_write_the_same_shards_and_manifest_as_one(tutorial_subset, tmp_path):
    args = [str(tutorial_subset), str(MINIMA[0].parent), "--test-every", "10", "--shards", "3", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*args, "-o", str(tmp_path / "two"), "--workers", "2"]) == 0

    assert _shard_records(tmp_path / "two") == _shard_records(tmp_path / "one")
    one, two = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    for manifest in (one, two):
        assert manifest["summary"] == {"converted": 2028, "skipped": 0}
        phases = {"convert_seconds", "convert_cpu_seconds", "write_seconds", "write_cpu_seconds"}
        assert set(manifest["timing"]) == phases
        for key in ("created", "timing"):
            del manifest[key]
    assert two.pop("options") == {**one.pop("options"), "workers": 2, "output": str(tmp_path / "two")}
    assert two == one


def test_conversion_workers_do_not_import_tensorflow():
    """Spawned workers import the converter's module (and the command's): with TensorFlow
    each would spend seconds starting."""
    heavy = "('tensorflow', 'scipy')"
    code = f"import sys, data_prep.prep_water; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_two_mpi_ranks_write_the_same_data_set_as_one_process(tutorial_subset, tmp_path):
    args = [str(tutorial_subset), str(MINIMA[0].parent), "--test-every", "10", "--shards", "4", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "single")]) == 0
    mpirun = [os.path.join(os.path.dirname(sys.executable), "python"), "-m", "data_prep.prep_water"]
    result = subprocess.run(
        ["mpirun", "-np", "2", "--oversubscribe", *mpirun, *args, "-o", str(tmp_path / "mpi"), "--mpi"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    single = json.loads((tmp_path / "single" / "manifest.json").read_text())
    spread = json.loads((tmp_path / "mpi" / "manifest.json").read_text())
    assert spread["ranks"] == 2
    assert spread["summary"] == single["summary"] == {"converted": 2028, "skipped": 0}
    assert spread["target_stats"] == single["target_stats"]
    assert {s["file"][:11] for s in spread["splits"]["train"]["shards"]} == {"train-r0000", "train-r0001"}
    assert _records_by_split(tmp_path / "mpi") == _records_by_split(tmp_path / "single")


def test_metadata_columns_round_trip_every_field_but_the_example():
    converted = [
        records.Converted("a.xyz", 0, b"graph-0", -10.5, (1, 2), group=1, note=None, n_atom=3, n_bond=4),
        records.Converted("b.xyz", 7, b"graph-7", -3.25, (2, 4), group=2, note="repaired", n_atom=6, n_bond=10),
    ]

    back = records.from_metadata_columns(records.metadata_columns(converted))

    assert back == [r._replace(example=b"") for r in converted]
    assert records.from_metadata_columns(records.metadata_columns([])) == []
