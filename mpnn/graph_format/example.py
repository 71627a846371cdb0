"""`tf.train.Example` records built and parsed without importing TensorFlow.

Conversion runs in spawned worker processes. Importing TensorFlow only for its
``tf.train.Example`` class would cost each of them about 2.3 s of CPU (importing
``tensorflow.core.example`` runs all of ``tensorflow/__init__``), more than half of what it
takes to convert the tutorial's 29,399 clusters. So this module makes the message classes
from the wire format of TensorFlow's ``example.proto`` and ``feature.proto`` with
protobuf's own descriptor API, in a private descriptor pool (no clash with TensorFlow's
classes in the same process). Records serialised here are byte for byte those that
TensorFlow's own ``tf.train.Example`` makes of the same features
(tests/mpnn/test_graph_format.py checks it). This is the one record serialiser of the
project; `mpnn.graph_format.features.feature_dtypes` names what it writes.

It refuses a float feature with a NaN or infinite value (`NonFiniteFeatureError`), whatever
the feature: the converters turn such an input into a skip earlier, and this is the last
line of defence, so that no record with a non-finite number reaches a model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

# Field names and numbers as in tensorflow/core/example/{feature,example}.proto (proto3,
# so repeated numbers are packed).
_FILE = """
name: "mpnn_data_prep_example.proto"
package: "mpnn_data_prep"
syntax: "proto3"
message_type {
  name: "BytesList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
}
message_type {
  name: "FloatList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_FLOAT }
}
message_type {
  name: "Int64List"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64 }
}
message_type {
  name: "Feature"
  field { name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".mpnn_data_prep.BytesList" oneof_index: 0 }
  field { name: "float_list" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".mpnn_data_prep.FloatList" oneof_index: 0 }
  field { name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".mpnn_data_prep.Int64List" oneof_index: 0 }
  oneof_decl { name: "kind" }
}
message_type {
  name: "Features"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".mpnn_data_prep.Features.FeatureEntry" }
  nested_type {
    name: "FeatureEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".mpnn_data_prep.Feature" }
    options { map_entry: true }
  }
}
message_type {
  name: "Example"
  field { name: "features" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".mpnn_data_prep.Features" }
}
"""

_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(text_format.Parse(_FILE, descriptor_pb2.FileDescriptorProto()))
Example, _Features, _Feature, _BytesList, _FloatList, _Int64List = (
    message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"mpnn_data_prep.{name}"))
    for name in ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List")
)


class NonFiniteFeatureError(ValueError):
    """A float feature holding NaN or +-inf (as float32, the record's precision); the message
    names the feature, how many values and the first one.

    Attributes:
        feature: the feature's name.
    """

    def __init__(self, feature: str, values: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(values))
        detail = f"first {values[bad[0]]} at element {bad[0]}" if values.size > 1 else f"{values[bad[0]]}"
        super().__init__(f"non-finite {feature!r}: {len(bad)} value(s) of {values.size} ({detail})")
        self.feature = feature


def finite_float32(name: str, value: np.ndarray) -> np.ndarray:
    """`value` flattened as float32 (what a ``FloatList`` stores: a float64 beyond float32's
    range becomes inf there, so it is checked after the cast).

    Raises:
        NonFiniteFeatureError: a value is NaN or infinite.
    """
    with np.errstate(over="ignore"):
        flat = np.asarray(value, dtype=np.float32).reshape(-1)
    if not np.isfinite(flat).all():
        raise NonFiniteFeatureError(name, flat)
    return flat


def serialize_graph(graph: Mapping[str, np.ndarray], dtypes: Sequence[tuple[str, str]]) -> bytes:
    """The serialised `tf.train.Example` of one graph dict.

    Args:
        graph: graph dict (see `mpnn.graph_format.features`).
        dtypes: ``(name, dtype)`` of the features to store, in order; dtype ``"int64"``,
            ``"float32"`` or ``"string"`` (`mpnn.graph_format.features.feature_dtypes`). Node and edge
            features are flattened row-major (``[n_rows * row_size]``).

    Raises:
        NonFiniteFeatureError: a float feature has a NaN or infinite value (no record).
    """
    feature = {}
    for name, dtype in dtypes:
        value = np.asarray(graph[name])
        if dtype == "int64":
            feature[name] = _Feature(int64_list=_Int64List(value=value.reshape(-1).tolist()))
        elif dtype == "float32":
            feature[name] = _Feature(float_list=_FloatList(value=finite_float32(name, value).tolist()))
        else:
            data = value.item() if value.shape == () else value
            feature[name] = _Feature(bytes_list=_BytesList(value=[data.encode() if isinstance(data, str) else data]))
    # A dict of features, then the message, as with TensorFlow's classes: the order in which
    # protobuf writes map entries depends on how the map was filled.
    return Example(features=_Features(feature=feature)).SerializeToString()


def nonfinite_features(record: bytes) -> list[str]:
    """Names of the float features of the serialised `tf.train.Example` `record` that hold a
    NaN or infinite value (written before the writer refused them, or by another writer)."""
    features = Example.FromString(record).features.feature
    return [
        name
        for name, feature in sorted(features.items())
        if feature.WhichOneof("kind") == "float_list"
        and not np.isfinite(np.asarray(feature.float_list.value, dtype=np.float32)).all()
    ]
