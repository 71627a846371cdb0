"""The TF-free graph format: example serialiser, TFRecord writer, shard names, manifest."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_prep.structures import read_structures
from data_prep.tutorial_records import tutorial_graph
from data_prep.water import FEATURES, water_graph
from mpnn.atomic import WriteError
from mpnn.graph_format.example import Example, NonFiniteFeatureError, serialize_graph
from mpnn.graph_format.features import feature_dtypes
from mpnn.graph_format.manifest import Manifest, ManifestError, Shard, Split, Target
from mpnn.graph_format.shards import shard_file_name
from mpnn.graph_format.tfrecord import ShardWriter, TFRecordError, count_records, read_records
from tests.helpers import MINIMA


def _with_tensorflow(graph, names) -> bytes:
    """The same features serialised with TensorFlow's own classes: the reference."""
    feature = {}
    for name, dtype in feature_dtypes(names):
        value = np.asarray(graph[name])
        if dtype == "int64":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=value.reshape(-1)))
        elif dtype == "float32":
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value.reshape(-1)))
        else:
            data = value.item() if value.shape == () else value
            data = data.encode() if isinstance(data, str) else data
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_records_are_byte_identical_to_tensorflows(tutorial_subset):
    no_distance = [f for f in FEATURES if f != "distance"]
    serialized = list(read_records(str(tutorial_subset)))[:200]
    graphs = [(tutorial_graph(r, f"subset:{i}"), no_distance) for i, r in enumerate(serialized)]
    for path in MINIMA[:5]:
        (structure,) = read_structures(str(path))
        graphs.append((water_graph(structure.atoms, structure.energy, structure.record_id), list(FEATURES)))
    for graph, names in graphs:
        assert serialize_graph(graph, feature_dtypes(names)) == _with_tensorflow(graph, names)


def test_parses_what_tensorflow_wrote(tutorial_subset):
    raw = next(iter(tf.data.TFRecordDataset(str(tutorial_subset), compression_type="GZIP"))).numpy()
    ours = Example.FromString(raw).features.feature
    theirs = tf.train.Example.FromString(raw).features.feature
    assert set(ours) == set(theirs)
    assert list(ours["connectivity"].int64_list.value) == list(theirs["connectivity"].int64_list.value)
    assert list(ours["energy"].float_list.value) == list(theirs["energy"].float_list.value)


RECORDS = [b"", b"a", bytes(range(256)) * 40, b"\x00" * 5, b"last record"]


@pytest.mark.parametrize("compression", ["GZIP", "none"])
def test_tensorflow_reads_our_shards(tmp_path, compression):
    path = tmp_path / shard_file_name("train", 0, 1, compression)
    with ShardWriter(str(path), compression) as writer:
        for record in RECORDS:
            writer.write(record)
    tf_compression = "GZIP" if compression == "GZIP" else ""
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type=tf_compression)] == RECORDS
    assert list(read_records(str(path), compression)) == RECORDS
    assert list(read_records(str(path), compression, skip=2)) == RECORDS[2:]
    assert count_records(str(path), compression) == len(RECORDS)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_uncompressed_shard_is_byte_identical_to_tensorflows_and_reports_itself(tmp_path):
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    writer = ShardWriter(str(ours), "none")
    for record in RECORDS:
        writer.write(record)
    info = writer.close()
    with tf.io.TFRecordWriter(str(theirs)) as reference:
        for record in RECORDS:
            reference.write(record)
    data = ours.read_bytes()
    assert data == theirs.read_bytes()
    assert (info.file, info.records, info.bytes) == ("ours.tfrecord", len(RECORDS), len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()


def test_gzip_shard_reports_its_file_and_is_deterministic(tmp_path):
    infos = []
    for name in ("a.tfrecord.gz", "b.tfrecord.gz"):
        writer = ShardWriter(str(tmp_path / name), "GZIP")
        for record in RECORDS:
            writer.write(record)
        infos.append(writer.close())
    data = (tmp_path / "a.tfrecord.gz").read_bytes()
    assert infos[0].sha256 == infos[1].sha256 == hashlib.sha256(data).hexdigest()
    assert infos[0].bytes == len(data)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("energy", np.float32(np.nan), "non-finite 'energy': 1 value(s) of 1 (nan)"),
        ("energy", np.float64(1e39), "non-finite 'energy': 1 value(s) of 1 (inf)"),  # inf as float32
        # A feature the schema may not know yet (per-atom forces): the check takes every float.
        ("forces", np.array([[0.0, 1.0, 2.0], [np.inf, -np.inf, 0.5]]), "non-finite 'forces': 2 value(s) of 6 "
         "(first inf at element 3)"),
    ],
    ids=["nan energy", "energy beyond float32", "inf forces"],
)
def test_the_record_writer_refuses_a_non_finite_float_of_any_feature(name, value, message):
    with pytest.raises(NonFiniteFeatureError) as refused:
        serialize_graph({"record_id": "x", name: value}, [("record_id", "string"), (name, "float32")])
    assert (str(refused.value), refused.value.feature) == (message, name)


def test_a_failed_write_names_the_shard_and_survives_pickling_from_a_worker(tmp_path):
    error = WriteError(tmp_path / "train.tfrecord.gz", "No space left on device", errno.ENOSPC)
    back = pickle.loads(pickle.dumps(error))  # how a conversion worker's error reaches the parent
    assert (type(back), str(back), back.errno) == (WriteError, str(error), errno.ENOSPC)
    assert str(error) == f"cannot write {tmp_path}/train.tfrecord.gz: No space left on device"


def test_an_error_while_writing_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(str(tmp_path / "x.tfrecord.gz")) as writer:
        writer.write(b"record")
        raise RuntimeError("converter failed")
    assert list(tmp_path.iterdir()) == []


def test_reader_names_the_file_of_a_corrupt_record(tmp_path):
    path = tmp_path / "bad.tfrecord"
    with ShardWriter(str(path), "none") as writer:
        writer.write(b"some record data")
    data = bytearray(path.read_bytes())
    data[14] ^= 0xFF  # a byte of the record's data
    path.write_bytes(bytes(data))
    with pytest.raises(TFRecordError, match=r"bad.tfrecord: corrupt record 0 \(data CRC mismatch\)"):
        list(read_records(str(path)))


def test_shard_names():
    assert shard_file_name("train", 1, 4, "GZIP") == "train-00001-of-00004.tfrecord.gz"
    assert shard_file_name("test", 0, 2, "none", part=3) == "test-p0003-00000-of-00002.tfrecord"


@pytest.mark.integration  # a fresh interpreter
def test_graph_format_imports_no_tensorflow():
    code = "import sys, mpnn.graph_format.manifest, mpnn.graph_format.tfrecord, mpnn.graph_format.example, " \
           "mpnn.graph_format.shards; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def _manifest() -> Manifest:
    return Manifest(
        kind="water",
        target=Target("energy", "kcal/mol", True),
        features={"n_atom": {"dtype": "int64", "level": "graph", "inner_shape": [], "description": ""}},
        vocab={"atom": ["O", "H"], "bond": ["covalent", "hydrogen"]},
        splits={"train": Split(3, (Shard("train-00000-of-00001.tfrecord.gz", 3, 120, "ab" * 32),)),
                "test": Split(0, ())},
        extra={"group": {"name": "n_waters", "description": "number of water molecules"}},
    )


def test_manifest_round_trip(tmp_path):
    saved = _manifest().save(str(tmp_path))
    assert saved.path == str(tmp_path / "manifest.json")
    loaded = Manifest.load(str(tmp_path))
    assert loaded == saved
    content = json.loads((tmp_path / "manifest.json").read_text())
    assert content["group"] == {"name": "n_waters", "description": "number of water molecules"}
    assert content["splits"]["train"]["shards"][0] == {
        "file": "train-00000-of-00001.tfrecord.gz", "records": 3, "bytes": 120, "sha256": "ab" * 32,
    }
    assert loaded.split("train") == ([str(tmp_path / "train-00000-of-00001.tfrecord.gz")], [3])
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_manifest_that_cannot_be_written_names_it_and_leaves_the_old_one(tmp_path, read_only_view):
    (tmp_path / "data").mkdir()
    old = _manifest().save(str(tmp_path / "data"))
    before = (tmp_path / "data" / "manifest.json").read_bytes()
    view = read_only_view(tmp_path / "data")
    with pytest.raises(WriteError) as failed:
        dataclasses.replace(old, notes={"changed": 1}).save(str(view))
    assert str(failed.value) == f"cannot write {view}/manifest.json: Read-only file system"
    assert (view / "manifest.json").read_bytes() == before


def test_manifest_of_the_previous_converter_loads(tmp_path):
    """Manifests written before shards had sizes and hashes still load."""
    content = _manifest().to_json()
    for split in content["splits"].values():
        for shard in split["shards"]:
            del shard["bytes"], shard["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(content))
    assert Manifest.load(str(tmp_path)).splits["train"].shards[0].sha256 is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("vocab"), "manifest has no 'vocab' section"),
        (lambda c: c.update(schema_version=99), "schema version 99"),
        (lambda c: c["splits"].update(holdout=c["splits"]["test"]), r"unknown split\(s\) \['holdout'\]"),
        (lambda c: c["splits"]["train"].update(records=4), "split 'train' lists 4 records, its shards 3"),
        (lambda c: c.update(target={"name": "energy"}), "malformed manifest"),
    ],
    ids=["missing-key", "version", "split", "counts", "malformed"],
)
def test_manifest_errors_name_the_file_and_problem(tmp_path, change, message):
    content = _manifest().to_json()
    change(content)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ManifestError, match=f"{re.escape(str(path))}: .*{message}"):
        Manifest.load(str(path))


def test_manifest_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _manifest().kind = "pdbbind"
