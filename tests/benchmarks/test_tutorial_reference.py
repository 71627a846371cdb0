"""benchmarks/tutorial_reference.py drives a tutorial checkout and writes valid JSON.

The tutorial itself is not in this repository, so the test writes a stand-in checkout
with the same interface (``graphsage.mpnn.data`` and ``graphsage.mpnn.layers``): what is
tested is the driver, on tiny inputs, not the tutorial's speed.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.helpers import load_benchmark_script

STAND_IN_DATA = '''
import tensorflow as tf

def parse_records(serialized):
    spec = {"energy": tf.io.FixedLenFeature([], tf.float32), "n_atom": tf.io.FixedLenFeature([], tf.int64),
            "n_bond": tf.io.FixedLenFeature([], tf.int64), "atom": tf.io.VarLenFeature(tf.int64),
            "bond": tf.io.VarLenFeature(tf.int64), "connectivity": tf.io.VarLenFeature(tf.int64)}
    return tf.io.parse_example(serialized, spec)

def prepare_for_batching(batch):
    return {k: (v.values if isinstance(v, tf.sparse.SparseTensor) else v) for k, v in batch.items()}

def combine_graphs(batch):
    graph = tf.range(tf.size(batch["n_atom"]))
    batch["node_graph_indices"] = tf.repeat(graph, batch["n_atom"])
    offsets = tf.repeat(tf.cumsum(batch["n_atom"], exclusive=True), batch["n_bond"])
    batch["connectivity"] = tf.reshape(batch["connectivity"], (-1, 2)) + offsets[:, None]
    return batch

def make_training_tuple(batch):
    return {k: v for k, v in batch.items() if k != "energy"}, batch["energy"][:, None]

def make_data_loader(path, batch_size=32, n_threads=tf.data.AUTOTUNE):
    dataset = tf.data.TFRecordDataset(path).batch(batch_size)
    for step in (parse_records, prepare_for_batching, combine_graphs, make_training_tuple):
        dataset = dataset.map(step, n_threads)
    return dataset
'''

STAND_IN_LAYERS = '''
import tensorflow as tf

class Squeeze(tf.keras.layers.Layer):
    def __init__(self, axis=1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return tf.squeeze(inputs, axis=self.axis)

class GraphNetwork(tf.keras.layers.Layer):
    def __init__(self, atom_classes, bond_classes, atom_dimension, num_messages, **kwargs):
        super().__init__(**kwargs)
        self.embedding = tf.keras.layers.Embedding(atom_classes, atom_dimension)
        self.output_layer = tf.keras.layers.Dense(1)

    def call(self, inputs):
        atom, bond, node_graph_indices, connectivity = inputs
        return tf.math.segment_sum(self.output_layer(self.embedding(atom)), node_graph_indices)
'''


@pytest.fixture(scope="module")
def driver():
    return load_benchmark_script("tutorial_reference")


@pytest.fixture(scope="module")
def stand_in_checkout(tmp_path_factory):
    root = tmp_path_factory.mktemp("design-tutorial")
    package = root / "graphsage" / "mpnn"
    package.mkdir(parents=True)
    for init in (root / "graphsage" / "__init__.py", package / "__init__.py"):
        init.write_text("")
    (package / "data.py").write_text(textwrap.dedent(STAND_IN_DATA))
    (package / "layers.py").write_text(textwrap.dedent(STAND_IN_LAYERS))
    return root


@pytest.mark.integration  # times five loaders over the subset: about 5 s
def test_loader_times_every_pipeline_and_ours(driver, stand_in_checkout, tutorial_subset, water_dataset, tmp_path):
    output = tmp_path / "loader.json"
    driver.main(["--tutorial", str(stand_in_checkout), "--records", str(tutorial_subset), "--repeats", "1",
                 "--output", str(output), "loader", "--batch-sizes", "256", "--ours", str(water_dataset)])
    report = json.loads(output.read_text())
    assert report["benchmark"] == "tutorial-loader" and report["machine"]["usable_cores"] >= 1
    pipelines = [r["pipeline"] for r in report["results"]]
    assert pipelines == ["standard", "no-compression", "prefetch", "autotune", "fixed-2",
                         f"mpnn-hpc:{water_dataset.name}"]
    for result in report["results"]:
        assert result["fresh_graphs_per_second"][0] > 0 and result["window_graphs_per_second"][0] > 0


# The tutorial's loader yields n_atom and n_bond beside the model's inputs, and the driver
# times it as the tutorial runs it, so Keras says it ignores them.
@pytest.mark.filterwarnings(r"ignore:Input dict contained keys \['n_atom', 'n_bond'\] which did not match:UserWarning")
def test_train_reports_graphs_per_second(driver, stand_in_checkout, tutorial_subset, tmp_path):
    output = tmp_path / "train.json"
    driver.main(["--tutorial", str(stand_in_checkout), "--records", str(tutorial_subset), "--repeats", "1",
                 "--output", str(output), "train", "--batch-sizes", "32", "--features", "4", "--message-steps", "1",
                 "--steps", "3", "--warmup-steps", "1"])
    (result,) = json.loads(output.read_text())["results"]
    assert result["batch_size"] == 32 and result["parameters"] > 0 and result["graphs_per_second"][0] > 0


def test_rejects_a_directory_that_is_not_the_tutorial(driver, tmp_path):
    with pytest.raises(SystemExit, match="not a checkout"):
        driver.main(["--tutorial", str(tmp_path), "loader"])
