"""The Gilmer-style message-passing network for extensive targets (water-cluster energy).

Atom and bond types are embedded (plus an RBF expansion of the edge distance when the
records have one), then `message_steps` rounds of `EdgeUpdate` and `NodeUpdate`. Each atom
predicts an energy contribution; the graph's energy is the sum over its atoms, and each atom
starts from the mean energy of its type (from the manifest), so the network only learns how
the topology moves a cluster away from the sum of its per-atom means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import tensorflow as tf
from nfp.layers import RBFExpansion

from mpnn.layers import EdgeUpdate, GraphSum, NodeUpdate


@dataclass(frozen=True)
class MPNNConfig:
    """Architecture of `build_mpnn`.

    Attributes:
        width: features per atom and per bond (F).
        message_steps: rounds of edge + node updates.
        activation: activation of the update MLPs (any Keras name).
        dropout: dropout rate on every update.
        rbf_bins, rbf_max_distance: RBF expansion of the edge distance (Angstrom); used
            only when the data has distances.
    """

    width: int = 64
    message_steps: int = 4
    activation: str = "swish"
    dropout: float = 0.0
    rbf_bins: int = 32
    rbf_max_distance: float = 4.0

    def to_json(self) -> dict:
        return asdict(self)


def build_mpnn(
    config: MPNNConfig,
    n_atom_types: int,
    n_bond_types: int,
    atom_type_means: Sequence[float],
    output_scale: float = 1.0,
    with_distance: bool = False,
) -> tf.keras.Model:
    """Build the MPNN.

    Args:
        config: architecture.
        n_atom_types, n_bond_types: sizes of the type vocabularies.
        atom_type_means: ``[n_atom_types]`` initial per-atom energy of each type (target
            units, e.g. kcal/mol), from the manifest's target statistics.
        output_scale: scale of the learned per-atom correction (target units).
        with_distance: use the ``distance`` input (Angstrom).

    Returns:
        a Keras model from the batch dict of `mpnn.data.merge_batch` to ``[B]`` energies.
    """
    inputs = {
        "atom": tf.keras.Input(shape=(), dtype="int32", name="atom"),
        "bond": tf.keras.Input(shape=(), dtype="int32", name="bond"),
        "connectivity": tf.keras.Input(shape=(2,), dtype="int32", name="connectivity"),
        "node_graph_indices": tf.keras.Input(shape=(), dtype="int32", name="node_graph_indices"),
    }
    if with_distance:
        inputs["distance"] = tf.keras.Input(shape=(), dtype="float32", name="distance")

    atom_state = tf.keras.layers.Embedding(n_atom_types, config.width, name="atom_embedding")(inputs["atom"])
    bond_state = tf.keras.layers.Embedding(n_bond_types, config.width, name="bond_embedding")(inputs["bond"])
    if with_distance:
        # nfp's Gaussian expansion (it takes no layer name).
        rbf = RBFExpansion(dimension=config.rbf_bins, init_max_distance=config.rbf_max_distance)(inputs["distance"])
        bond_state = bond_state + tf.keras.layers.Dense(config.width, name="distance_embedding")(rbf)

    for step in range(config.message_steps):
        common = dict(units=config.width, activation=config.activation, dropout=config.dropout)
        bond_state = EdgeUpdate(**common, name=f"edge_update_{step}")(
            [atom_state, bond_state, inputs["connectivity"]]
        )
        atom_state = NodeUpdate(**common, name=f"node_update_{step}")(
            [atom_state, bond_state, inputs["connectivity"]]
        )

    correction = tf.keras.layers.Dense(1, name="atom_correction")(atom_state)
    correction = tf.keras.layers.Rescaling(output_scale, name="correction_scale")(correction)
    offset = tf.keras.layers.Embedding(
        n_atom_types,
        1,
        embeddings_initializer=tf.keras.initializers.Constant(list(atom_type_means)),
        name="atom_type_mean",
    )(inputs["atom"])
    atom_energy = tf.keras.layers.Add(name="atom_energy")([correction, offset])
    energy = GraphSum(name="graph_sum")([atom_energy, inputs["node_graph_indices"]])
    energy = tf.keras.layers.Reshape((), name="energy")(energy)
    return tf.keras.Model(inputs, energy, name="mpnn")
