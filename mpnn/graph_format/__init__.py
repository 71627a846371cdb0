"""The graph-format contract between the converters (`data_prep`) and the loader
(`mpnn.data`), free of TensorFlow:

- `features`: the record features (names, dtypes, shapes) and their checks;
- `example`: the `tf.train.Example` serialiser of a graph dict;
- `tfrecord`: the TFRecord shard writer (and a reader for converters);
- `shards`: shard file names;
- `manifest`: the typed ``manifest.json`` of a prepared data set.
"""
