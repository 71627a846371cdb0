"""mpnn-prep-water across MPI ranks gives the same data set as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import tensorflow as tf

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
