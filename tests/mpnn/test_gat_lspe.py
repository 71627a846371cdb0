"""GAT-LSPE: attention softmax, isolated atoms, invariances, size, saving, training."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mpnn.models.attention import GATLSPEUpdate, GATv2Attention, segment_softmax
from mpnn.models.gat_lspe import GATLSPEConfig, build_gat_lspe
from mpnn.graph_format.features import N_ATOM_FEATURES, RWPE_ORDER

# Graph sizes of the test batch; the atoms listed in ISOLATED receive no edge (one inside
# the batch, and the batch's last atom so that aggregation must pad trailing rows).
SIZES = (5, 1, 4, 6, 3)
ISOLATED = {2: 0, 4: 2}  # graph -> local atom without edges


def random_graph(rng: np.random.Generator, n_atom: int, isolated: int | None = None) -> dict[str, np.ndarray]:
    """Random protein-ligand-like graph: edges in both directions, sorted by receiver."""
    pairs = [
        (i, j)
        for i in range(n_atom)
        for j in range(i + 1, n_atom)
        if isolated not in (i, j) and rng.random() < 0.6
    ]
    undirected = np.array(pairs, dtype=np.int32).reshape(-1, 2)
    directed = np.concatenate([undirected, undirected[:, ::-1]])
    return {
        "atom_features": rng.normal(size=(n_atom, N_ATOM_FEATURES)).astype(np.float32),
        "rwpe": rng.random((n_atom, RWPE_ORDER)).astype(np.float32),
        "connectivity": directed[np.lexsort((directed[:, 1], directed[:, 0]))],
    }


def merge(graphs: list[dict[str, np.ndarray]]) -> dict[str, tf.Tensor]:
    """The disjoint-graph batch of `mpnn.data.merge_batch`, from graph dicts."""
    offsets = np.cumsum([0] + [len(g["rwpe"]) for g in graphs])
    return {
        "atom_features": tf.constant(np.concatenate([g["atom_features"] for g in graphs])),
        "rwpe": tf.constant(np.concatenate([g["rwpe"] for g in graphs])),
        "connectivity": tf.constant(
            np.concatenate([g["connectivity"] + offset for g, offset in zip(graphs, offsets)]).astype(np.int32)
        ),
        "node_graph_indices": tf.constant(np.repeat(np.arange(len(graphs)), np.diff(offsets)).astype(np.int32)),
    }


def graphs(seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [random_graph(rng, n, ISOLATED.get(index)) for index, n in enumerate(SIZES)]


@pytest.fixture(scope="module")
def model() -> tf.keras.Model:
    tf.random.set_seed(0)
    return build_gat_lspe(GATLSPEConfig())


def test_segment_softmax_matches_numpy_and_survives_large_logits():
    logits = np.array([1000.0, 1001.0, -3.0, 2.0, 0.5, 0.5, -800.0], dtype=np.float32)
    receivers = np.array([0, 0, 0, 2, 3, 3, 3], dtype=np.int32)
    expected = np.empty_like(logits)
    for node in np.unique(receivers):
        mask = receivers == node
        shifted = np.exp(logits[mask] - logits[mask].max())
        expected[mask] = shifted / shifted.sum()
    got = segment_softmax(tf.constant(logits), tf.constant(receivers)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_attention_weights_of_each_receiver_sum_to_one_and_isolated_atoms_get_zeros():
    batch = merge(graphs())
    aggregated, alpha = GATv2Attention(8)([batch["rwpe"], batch["connectivity"]], return_attention=True)
    receivers = batch["connectivity"].numpy()[:, 0]
    n_nodes = len(batch["rwpe"])
    totals = np.bincount(receivers, weights=alpha.numpy(), minlength=n_nodes)
    receiving = np.bincount(receivers, minlength=n_nodes) > 0
    np.testing.assert_allclose(totals[receiving], 1.0, rtol=1e-5)
    assert np.all(alpha.numpy() > 0)
    assert aggregated.shape == (n_nodes, 8)
    np.testing.assert_array_equal(aggregated.numpy()[~receiving], 0.0)
    assert (~receiving).sum() >= 3  # the single-atom graph and the two ISOLATED atoms


def test_layers_round_trip_their_config():
    layer = GATLSPEUpdate(16, dropout=0.1, negative_slope=0.3, update_positions=False, name="x")
    clone = GATLSPEUpdate.from_config(layer.get_config())
    assert (clone.units, clone.dropout, clone.negative_slope, clone.update_positions) == (16, 0.1, 0.3, False)
    attention = GATv2Attention.from_config(GATv2Attention(8, negative_slope=0.1).get_config())
    assert (attention.units, attention.negative_slope) == (8, 0.1)


def test_one_finite_score_per_complex(model):
    batch = merge(graphs())
    for training in (False, True):
        scores = model(batch, training=training).numpy()
        assert scores.shape == (len(SIZES),)
        assert np.all(np.isfinite(scores))


def test_parameter_count_matches_the_documented_breakdown(model):
    # See the table in mpnn.models.gat_lspe: the study reports about 94,000, but the stated
    # widths need at least 100,609, so this is 10.2% (trainable) above it.
    assert model.count_params() == 104_577
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 103_553


def test_permuting_the_complexes_permutes_the_scores(model):
    original = graphs(seed=1)
    order = [3, 0, 4, 2, 1]
    before = model(merge(original)).numpy()
    after = model(merge([original[i] for i in order])).numpy()
    np.testing.assert_allclose(after, before[order], rtol=1e-5, atol=1e-6)


def test_saved_model_reloads_and_predicts_the_same(model, tmp_path):
    batch = merge(graphs(seed=2))
    before = model(batch).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.testing.assert_allclose(tf.keras.models.load_model(path)(batch).numpy(), before, rtol=1e-6)
    # mpnn-train saves a clone (without the Horovod optimizer): that needs from_config too.
    clone = tf.keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(batch).numpy(), before, rtol=1e-6)


@pytest.mark.integration  # about 15 s of training
def test_training_with_the_study_optimizer_lowers_the_mse_on_a_fixed_batch():
    tf.random.set_seed(1)
    # Without dropout, so that the training-mode losses Keras reports before each step
    # follow the optimisation alone (inference-mode losses would still use batch norm's
    # initial moving statistics after a few steps).
    model = build_gat_lspe(GATLSPEConfig(dropout=0.0))
    target = np.random.default_rng(3).normal(6.0, 1.5, len(SIZES)).astype(np.float32)
    # One disjoint-graph batch per step (Keras must not slice the node arrays itself).
    data = tf.data.Dataset.from_tensors((merge(graphs(seed=3)), tf.constant(target)))
    model.compile(optimizer=tf.keras.optimizers.AdamW(1e-3, weight_decay=1e-4), loss="mse")
    losses = model.fit(data, epochs=5, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    # Every weight takes part: the last layer has no position update that nothing reads.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(next(iter(data))[0], training=True) - target) ** 2)
    assert all(g is not None for g in tape.gradient(loss, model.trainable_weights))
