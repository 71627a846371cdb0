"""The MPNN: layers, per-type initialisation, saving and loading."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mpnn.data import merge_batch
from mpnn.layers import EdgeUpdate, NodeUpdate, sum_onto_receivers
from mpnn.models import load_model
from mpnn.models.mpnn import MPNNConfig, build_mpnn
from tests.mpnn.test_data import parse_batch, random_graph


def _batch(n_graphs=5, seed=0):
    rng = np.random.default_rng(seed)
    return merge_batch(parse_batch([random_graph(rng, i) for i in range(n_graphs)]))


def test_sum_onto_receivers_pads_nodes_that_receive_nothing():
    messages = tf.constant([[1.0], [2.0], [4.0]])
    receivers = tf.constant([0, 0, 2])
    np.testing.assert_array_equal(sum_onto_receivers(messages, receivers, 5).numpy()[:, 0], [3, 0, 4, 0, 0])


def test_layers_round_trip_their_config():
    for layer_class in (EdgeUpdate, NodeUpdate):
        layer = layer_class(units=8, activation="relu", dropout=0.1, name="x")
        clone = layer_class.from_config(layer.get_config())
        assert (clone.units, clone.activation, clone.dropout) == (8, "relu", 0.1)


def test_untrained_model_starts_from_the_linear_baseline():
    batch = _batch()
    model = build_mpnn(MPNNConfig(width=8, message_steps=2), 2, 2, atom_type_means=[-5.0, 1.0], graph_offset=3.0)
    for name in ("atom_correction", "global_correction"):
        model.get_layer(name).set_weights([np.zeros((8, 1)), np.zeros(1)])
    energy = model({k: v for k, v in batch.items() if k != "distance"}).numpy()
    atom = batch["atom"].numpy()
    expected = np.bincount(batch["node_graph_indices"].numpy(), weights=np.where(atom == 0, -5.0, 1.0)) + 3.0
    np.testing.assert_allclose(energy, expected, rtol=1e-6)


def test_saved_model_reloads_and_predicts_the_same(tmp_path):
    batch = _batch(seed=3)
    model = build_mpnn(MPNNConfig(width=16, message_steps=2), 2, 2, [-1.0, 0.5], 0.3, with_distance=True)
    before = model(batch).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    after = load_model(path)(batch).numpy()
    np.testing.assert_allclose(after, before, rtol=1e-6)
