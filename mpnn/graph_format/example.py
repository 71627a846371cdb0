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


def serialize_graph(graph: Mapping[str, np.ndarray], dtypes: Sequence[tuple[str, str]]) -> bytes:
    """The serialised `tf.train.Example` of one graph dict.

    Args:
        graph: graph dict (see `mpnn.graph_format.features`).
        dtypes: ``(name, dtype)`` of the features to store, in order; dtype ``"int64"``,
            ``"float32"`` or ``"string"`` (`mpnn.graph_format.features.feature_dtypes`). Node and edge
            features are flattened row-major (``[n_rows * row_size]``).
    """
    feature = {}
    for name, dtype in dtypes:
        value = np.asarray(graph[name])
        if dtype == "int64":
            feature[name] = _Feature(int64_list=_Int64List(value=value.reshape(-1).tolist()))
        elif dtype == "float32":
            feature[name] = _Feature(float_list=_FloatList(value=value.reshape(-1).tolist()))
        else:
            data = value.item() if value.shape == () else value
            feature[name] = _Feature(bytes_list=_BytesList(value=[data.encode() if isinstance(data, str) else data]))
    # A dict of features, then the message, as with TensorFlow's classes: the order in which
    # protobuf writes map entries depends on how the map was filled.
    return Example(features=_Features(feature=feature)).SerializeToString()
