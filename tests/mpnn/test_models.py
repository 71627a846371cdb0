"""The MPNN: layers, per-type initialisation, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import mpnn.models.gilmer
from mpnn import models
from mpnn.batch_cut import cut_batch, cut_batch_trainer
from mpnn.data import Manifest, manifest_dataset, merge_batch
from mpnn.models.layers import EdgeUpdate, NodeUpdate, gather_receivers, sum_onto_receivers, swish
from mpnn.models import load_model, only_model_inputs, save_for_inference
from mpnn.models.gilmer import MPNNConfig, build_mpnn
from tests.helpers import parse_batch, random_graph


class ReferenceEdgeUpdate(EdgeUpdate):
    """`EdgeUpdate` computed the plain way, for comparison: gather both ends with
    `tf.gather`, concatenate, apply the MLP (Keras' own swish)."""

    def call(self, inputs, training=None):
        atom_state, bond_state, connectivity = inputs[:3]
        receiver, sender = tf.gather(atom_state, connectivity[:, 0]), tf.gather(atom_state, connectivity[:, 1])
        return bond_state + self.drop(self.mlp(tf.concat([receiver, sender, bond_state], -1)), training=training)


class ReferenceNodeUpdate(NodeUpdate):
    """`NodeUpdate` computed the plain way, for comparison (see `ReferenceEdgeUpdate`)."""

    def call(self, inputs, training=None):
        atom_state, bond_state, connectivity = inputs[:3]
        messages = tf.gather(atom_state, connectivity[:, 1]) * bond_state
        received = tf.math.unsorted_segment_sum(messages, connectivity[:, 0], tf.shape(atom_state)[0])
        return atom_state + self.drop(self.mlp(tf.concat([atom_state, received], -1)), training=training)


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
        # Files saved while the layers had a reference computation name the choice.
        old = layer_class.from_config({**layer.get_config(), "fused": False})
        assert (old.units, old.activation, old.dropout) == (8, "relu", 0.1)


def test_fast_gather_and_swish_have_the_gradients_of_the_tensorflow_ops():
    rng = np.random.default_rng(1)
    states = tf.constant(rng.normal(size=(6, 3)), tf.float32)
    receivers = tf.constant([0, 0, 1, 3, 3, 3, 4])  # sorted; nodes 2 and 5 receive nothing
    upstream = tf.constant(rng.normal(size=(7, 3)), tf.float32)
    x = tf.constant(np.linspace(-30.0, 30.0, 61), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([states, x])
        fast, slow = gather_receivers(states, receivers), tf.gather(states, receivers)
        fast_swish, slow_swish = swish(x), tf.nn.silu(x)
    np.testing.assert_array_equal(fast.numpy(), slow.numpy())
    np.testing.assert_allclose(tape.gradient(fast, states, upstream).numpy(),
                               tf.convert_to_tensor(tape.gradient(slow, states, upstream)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(fast_swish.numpy(), slow_swish.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(fast_swish, x).numpy(), tape.gradient(slow_swish, x).numpy(),
                               rtol=1e-5, atol=1e-7)


def _loss_and_gradients(model, inputs, target):
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.MeanAbsoluteError()(target, model(inputs, training=True))
    return float(loss), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.integration  # the reference path on a real batch: about 7 s per case
@pytest.mark.parametrize("groups", [1, 2], ids=["whole-batch", "batch-cut-2"])
def test_fast_paths_compute_the_reference_loss_and_gradients_on_a_real_batch(
    water_dataset, tmp_path, monkeypatch, groups
):
    # The model's computation, trained on the whole batch and cut into 2 groups as the
    # default thread plan on 2 cores does, against the reference computation with the same
    # weights on one batch of 64 real water clusters; then the model saved as mpnn-train
    # does, reloaded, and given a batch of another size.
    manifest = Manifest.load(str(water_dataset))
    architecture = MPNNConfig(width=32, message_steps=8, edge_updates=True)
    with monkeypatch.context() as patch:
        patch.setattr(mpnn.models.gilmer, "EdgeUpdate", ReferenceEdgeUpdate)
        patch.setattr(mpnn.models.gilmer, "NodeUpdate", ReferenceNodeUpdate)
        reference = models.build_from_manifest("mpnn", architecture, manifest)
    fast = models.build_from_manifest("mpnn", architecture, manifest)
    assert not any(isinstance(layer, (ReferenceEdgeUpdate, ReferenceNodeUpdate)) for layer in fast.layers)
    fast.set_weights(reference.get_weights())
    trainer = cut_batch_trainer(fast, groups)
    dataset, _ = manifest_dataset(manifest, "train", 64)
    inputs, target = next(iter(only_model_inputs(dataset, fast)))
    reference_loss, reference_gradients = _loss_and_gradients(reference, inputs, target)
    fast_loss, fast_gradients = _loss_and_gradients(trainer, inputs, target)
    assert np.isfinite(reference_loss)
    assert fast_loss == pytest.approx(reference_loss, rel=1e-6)
    assert len(fast_gradients) == len(reference_gradients) == len(reference.trainable_variables)
    for fast_gradient, slow, variable in zip(fast_gradients, reference_gradients, reference.trainable_variables):
        tolerance = 1e-5 * np.abs(slow).max()
        np.testing.assert_allclose(fast_gradient, slow, rtol=1e-4, atol=tolerance, err_msg=variable.name)

    path = str(tmp_path / "model.keras")
    save_for_inference(fast, path)
    small, _ = manifest_dataset(manifest, "valid", 7)
    inputs, _ = next(iter(only_model_inputs(small, fast)))
    np.testing.assert_allclose(load_model(path)(inputs).numpy(), reference(inputs).numpy(), rtol=1e-5)


@pytest.mark.integration  # builds and differentiates a deep model: 3-4 s per seed
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(
    "architecture",
    [MPNNConfig(), MPNNConfig(width=32, message_steps=8, edge_updates=True)],
    ids=["default-16-node-steps", "8-steps-with-edge-updates"],
)
def test_an_untrained_deep_mpnn_gives_finite_loss_and_gradients(water_dataset, architecture, seed):
    # The tutorial's size (8 message steps) once overflowed float32 before any training.
    manifest = Manifest.load(str(water_dataset))
    tf.keras.utils.set_random_seed(seed)
    model = models.build_from_manifest("mpnn", architecture, manifest)
    dataset, _ = manifest_dataset(manifest, "train", 256)
    loss, gradients = _loss_and_gradients(model, *next(iter(only_model_inputs(dataset, model))))
    assert np.isfinite(loss) and loss < 10.0  # kcal/mol: the linear baseline's error, not a blown-up one
    assert all(np.isfinite(g).all() for g in gradients)


def test_more_groups_than_fit_leave_some_empty_and_change_nothing():
    batch = {k: v for k, v in _batch(n_graphs=2, seed=4).items() if k != "distance"}
    assert [int(tf.shape(part["atom"])[0]) == 0 for part in cut_batch(batch, 5)].count(True) >= 3
    whole = build_mpnn(MPNNConfig(width=8, message_steps=2), 2, 2, [-1.0, 0.5])
    np.testing.assert_allclose(cut_batch_trainer(whole, 5)(batch).numpy(), whole(batch).numpy(), rtol=1e-6)


def test_cut_batch_gives_whole_graphs_that_are_batches_of_their_own():
    batch = _batch(n_graphs=7, seed=6)
    parts = cut_batch(batch, 3)
    graph = batch["node_graph_indices"].numpy()
    offset_nodes = offset_graphs = 0
    for part in parts:
        n_nodes, n_graphs = len(part["atom"]), len(np.unique(part["node_graph_indices"].numpy()))
        np.testing.assert_array_equal(part["atom"].numpy(), batch["atom"].numpy()[offset_nodes:offset_nodes + n_nodes])
        np.testing.assert_array_equal(part["node_graph_indices"].numpy() + offset_graphs,
                                      graph[offset_nodes:offset_nodes + n_nodes])
        connectivity = part["connectivity"].numpy()
        assert connectivity.min() >= 0 and connectivity.max() < n_nodes  # edges stay inside the group
        assert len(part["distance"]) == len(part["bond"]) == len(connectivity)
        offset_nodes, offset_graphs = offset_nodes + n_nodes, offset_graphs + n_graphs
    assert offset_nodes == len(graph) and offset_graphs == graph.max() + 1
    assert sum(len(part["bond"]) for part in parts) == len(batch["bond"])


def test_the_training_twin_checkpoints_as_the_model_whatever_its_cut(tmp_path):
    model = build_mpnn(MPNNConfig(width=8, message_steps=2), 2, 2, [-1.0, 0.5], with_distance=True)
    cut_in_two = cut_batch_trainer(model, 2)
    path = tf.train.Checkpoint(model=cut_in_two).write(str(tmp_path / "ckpt"))
    tf.keras.utils.set_random_seed(9)
    other = build_mpnn(MPNNConfig(width=8, message_steps=2), 2, 2, [-1.0, 0.5], with_distance=True)
    tf.train.Checkpoint(model=cut_batch_trainer(other, 1)).read(path).assert_consumed()
    for saved, loaded in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(saved, loaded)


def test_untrained_model_starts_from_the_linear_baseline():
    batch = _batch()
    model = build_mpnn(MPNNConfig(width=8, message_steps=2), 2, 2, atom_type_means=[-5.0, 1.0], graph_offset=3.0)
    for name in ("atom_correction", "global_correction"):
        model.get_layer(name).set_weights([np.zeros((8, 1)), np.zeros(1)])
    energy = model({k: v for k, v in batch.items() if k != "distance"}).numpy()
    atom = batch["atom"].numpy()
    expected = np.bincount(batch["node_graph_indices"].numpy(), weights=np.where(atom == 0, -5.0, 1.0)) + 3.0
    np.testing.assert_allclose(energy, expected, rtol=1e-6)


@pytest.mark.parametrize("readout_hidden, edge_updates", [(0, True), (12, True), (0, False)])
def test_saved_model_reloads_and_predicts_the_same(tmp_path, readout_hidden, edge_updates):
    batch = _batch(seed=3)
    config = MPNNConfig(width=16, message_steps=2, readout_hidden=readout_hidden, edge_updates=edge_updates)
    model = build_mpnn(config, 2, 2, [-1.0, 0.5], 0.3, with_distance=True)
    # The readout starts at zero; random weights make the per-atom readout count.
    readout = model.get_layer("atom_correction")
    rng = np.random.default_rng(0)
    readout.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in readout.get_weights()])
    assert (readout_hidden > 0) == any(layer.name == "atom_readout_hidden" for layer in model.layers)
    before = model(batch).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    after = load_model(path)(batch).numpy()
    np.testing.assert_allclose(after, before, rtol=1e-6)


def test_without_edge_updates_messages_still_depend_on_bond_types():
    # --no-edge-updates: every step updates the atoms only, from messages h_sender * e with
    # e the bond's type (and distance) embedding, so bond types must still matter.
    with_updates = build_mpnn(MPNNConfig(width=8, message_steps=3, edge_updates=True), 2, 2, [-1.0, 0.5])
    model = build_mpnn(MPNNConfig(width=8, message_steps=3, edge_updates=False), 2, 2, [-1.0, 0.5])
    names = [layer.name for layer in model.layers]
    assert not any(name.startswith("edge_update") for name in names)
    assert sum(name.startswith("node_update") for name in names) == 3
    assert model.count_params() < with_updates.count_params()
    readout = model.get_layer("atom_correction")
    readout.set_weights([np.ones_like(w) for w in readout.get_weights()])
    batch = {k: v for k, v in _batch(seed=6).items() if k != "distance"}
    swapped = {**batch, "bond": 1 - batch["bond"]}
    assert not np.allclose(model(batch).numpy(), model(swapped).numpy())


def test_update_layers_start_from_different_weights():
    # One shared unseeded Keras initializer would give every layer the same start.
    model = build_mpnn(MPNNConfig(width=8, message_steps=2, edge_updates=True), 2, 2, [-1.0, 0.5])
    kernels = [model.get_layer(f"{kind}_update_{step}").mlp.layers[1].kernel.numpy()
               for kind in ("edge", "node") for step in range(2)]
    for index, kernel in enumerate(kernels):
        assert 0 < np.abs(kernel).max() < 1.0
        assert all(not np.array_equal(kernel, other) for other in kernels[index + 1:])


def test_a_distance_model_nested_in_another_clones():
    # The crash of issue 12: Keras rebuilt a nested model holding nfp's RBFExpansion from
    # its config, found no layer of that name, and called the name.
    inner = build_mpnn(MPNNConfig(width=8, message_steps=1), 2, 2, [-1.0, 0.5], with_distance=True)
    outer = tf.keras.Model(inner.input, inner(inner.input), name="outer")
    clone = tf.keras.models.clone_model(outer)
    clone.set_weights(outer.get_weights())
    batch = _batch(seed=5)
    np.testing.assert_allclose(clone(batch).numpy(), outer(batch).numpy(), rtol=1e-6)


def test_type_counts_are_the_sizes_of_the_embeddings_of_type_inputs(tmp_path):
    from mpnn.models.schnet import SchNetConfig, build_schnet

    mpnn_model = build_mpnn(MPNNConfig(width=8, message_steps=1), 3, 2, [-1.0, 0.5, 0.2], 0.0)
    schnet_model = build_schnet(SchNetConfig(width=8, message_steps=1, rbf_bins=4, readout_hidden=4), 5, 4.0, [0.0] * 5)
    path = str(tmp_path / "model.keras")
    mpnn_model.save(path)
    assert models.type_counts(load_model(path)) == models.type_counts(mpnn_model) == {"atom": 3, "bond": 2}
    assert models.type_counts(schnet_model) == {"atom": 5}
