"""The TensorFlow-free `tf.train.Example` of the conversion workers writes the same bytes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_prep.example_proto import Example, serialize_graph
from data_prep.structures import read_structures
from data_prep.tutorial_records import tutorial_graph, tutorial_record_chunks
from data_prep.water import FEATURES, water_graph
from mpnn.schema import feature_dtypes
from tests.conftest import MINIMA


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
    serialized = next(tutorial_record_chunks(str(tutorial_subset), 200))
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
