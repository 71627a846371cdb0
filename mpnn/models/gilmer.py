"""The Gilmer-style message-passing network for extensive targets (water-cluster energy),
model family ``mpnn`` of `mpnn.models`.

Atom and bond types are embedded (plus an RBF expansion of the edge distance when the
records have one), then `message_steps` rounds of `NodeUpdate` (each preceded by an
`EdgeUpdate` with ``edge_updates``). Each atom
predicts an energy contribution and the graph's energy is the sum over its atoms, plus an
optional graph-level term from the mean atom state and a per-graph constant. The per-type
means and the constant start from the least-squares fit in the manifest, so the network
only learns how the topology moves a cluster away from that linear baseline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import tensorflow as tf
from nfp.layers import RBFExpansion

from mpnn.graph_format.manifest import Manifest
from mpnn.models.layers import EdgeUpdate, GatherSenders, GraphMean, GraphSum, NodeUpdate, ScalarOffset, per_type_energy
from mpnn.settings import AT_LEAST_0, AT_LEAST_1, BELOW_1, setting


@dataclass(frozen=True)
class MPNNConfig:
    """Architecture of `build_mpnn`.

    Attributes:
        width: features per atom and per bond (F).
        message_steps: rounds of edge + node updates.
        activation: activation of the update MLPs (any Keras name).
        dropout: dropout rate on every update.
        global_readout: add a graph-level MLP on the mean atom state to the sum of
            per-atom energies (for effects that are not additive over atoms).
        rbf_bins, rbf_max_distance: RBF expansion of the edge distance (Angstrom); used
            only when the data has distances.
        readout_hidden: hidden units of the per-atom energy readout (a two-layer MLP on
            the final atom state); 0: a linear readout.
        edge_updates: update the bond states before every node update (`EdgeUpdate`);
            without, a bond's state stays the embedding of its type (and distance), and
            a step costs about half as much.

    The defaults are deep and cheap (16 node-only steps) rather than shallow and rich (4
    steps with edge updates, the default until 2026-12): in the atom graph a water-to-water
    hop takes two steps (O-H covalent, then H...O hydrogen bond), so 4 steps see only a
    cluster's second neighbours, and the deeper model learns the energy's dependence on
    the whole hydrogen-bond network (test MAE 0.68 against 0.83 after 12 epochs, at about
    1.4x the time per epoch; benchmarks/log/2026-12-02-accuracy-session-3.md, "Issue 14").

    How a batch is run on a machine (threads, the batch cut of `mpnn.batch_cut`) is not
    part of the architecture: a model built from this config is the same everywhere.
    """

    width: int = setting(32, "mpnn: features per atom and bond", AT_LEAST_1)
    message_steps: int = setting(16, "mpnn: message-passing steps", AT_LEAST_1)
    activation: str = setting("swish", "mpnn: activation of the update MLPs (a Keras name)")
    dropout: float = setting(0.0, "mpnn: dropout rate of every update", BELOW_1)
    global_readout: bool = True
    rbf_bins: int = setting(32, "mpnn: Gaussians of the distance expansion", AT_LEAST_1)
    rbf_max_distance: float = 4.0
    readout_hidden: int = setting(
        0, "mpnn: hidden units of the per-atom energy readout MLP (0: a linear readout)", AT_LEAST_0
    )
    edge_updates: bool = setting(
        False,
        "mpnn: update the bond states at every message step (--no-edge-updates: bond states stay their type (and "
        "distance) embedding, about half the cost per step)",
    )

    def to_json(self) -> dict:
        return asdict(self)


def build_mpnn(
    config: MPNNConfig,
    n_atom_types: int,
    n_bond_types: int,
    atom_type_means: Sequence[float],
    graph_offset: float = 0.0,
    output_scale: float = 1.0,
    with_distance: bool = False,
) -> tf.keras.Model:
    """Build the MPNN.

    Args:
        config: architecture.
        n_atom_types, n_bond_types: sizes of the type vocabularies.
        atom_type_means: ``[n_atom_types]`` initial per-atom energy of each type (target
            units, e.g. kcal/mol), from the manifest's target statistics.
        graph_offset: initial per-graph constant (target units), from the same fit.
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

    # Unit-scale embeddings: with Keras' default (uniform +-0.05) the messages h_s * e start
    # near 1e-3 and training sits for many epochs on the linear baseline before the graph
    # structure contributes.
    atom_state = tf.keras.layers.Embedding(
        n_atom_types, config.width, tf.keras.initializers.RandomNormal(stddev=1.0), name="atom_embedding"
    )(inputs["atom"])
    bond_state = tf.keras.layers.Embedding(
        n_bond_types, config.width, tf.keras.initializers.RandomNormal(stddev=1.0), name="bond_embedding"
    )(inputs["bond"])
    if with_distance:
        # nfp's Gaussian expansion (it takes no layer name).
        rbf = RBFExpansion(dimension=config.rbf_bins, init_max_distance=config.rbf_max_distance)(inputs["distance"])
        bond_state = bond_state + tf.keras.layers.Dense(config.width, name="distance_embedding")(rbf)

    for step in range(config.message_steps):
        common = dict(units=config.width, activation=config.activation, dropout=config.dropout)
        # Both updates of a step read the same atom states: gather them at the senders once.
        senders = GatherSenders(name=f"senders_{step}")([atom_state, inputs["connectivity"]])
        if config.edge_updates:
            bond_state = EdgeUpdate(**common, name=f"edge_update_{step}")(
                [atom_state, bond_state, inputs["connectivity"], senders]
            )
        atom_state = NodeUpdate(**common, name=f"node_update_{step}")(
            [atom_state, bond_state, inputs["connectivity"], senders]
        )

    graph_index = inputs["node_graph_indices"]
    # Output layers start at zero, so an untrained model predicts the linear baseline
    # exactly, whatever the scale of the hidden states.
    readout_input = atom_state
    if config.readout_hidden > 0:
        readout_input = tf.keras.layers.Dense(
            config.readout_hidden, activation=config.activation, name="atom_readout_hidden"
        )(atom_state)
    correction = tf.keras.layers.Dense(1, kernel_initializer="zeros", name="atom_correction")(readout_input)
    correction = tf.keras.layers.Rescaling(output_scale, name="correction_scale")(correction)
    type_mean = per_type_energy(inputs["atom"], list(atom_type_means), "atom_type_mean")
    atom_energy = tf.keras.layers.Add(name="atom_energy")([correction, type_mean])
    energy = GraphSum(name="graph_sum")([atom_energy, graph_index])  # [B, 1]
    if config.global_readout:
        # Non-additive part: an MLP on the mean atom state of each graph.
        pooled = GraphMean(name="graph_mean")([atom_state, graph_index])
        hidden = tf.keras.layers.Dense(config.width, activation=config.activation, name="global_hidden")(pooled)
        global_term = tf.keras.layers.Dense(1, kernel_initializer="zeros", name="global_correction")(hidden)
        global_term = tf.keras.layers.Rescaling(output_scale, name="global_scale")(global_term)
        energy = tf.keras.layers.Add(name="add_global")([energy, global_term])
    energy = ScalarOffset(graph_offset, name="graph_offset")(energy)
    energy = tf.keras.layers.Reshape((), name="energy")(energy)
    return tf.keras.Model(inputs, energy, name="mpnn")


def build_from_manifest(config: MPNNConfig, manifest: Manifest) -> tf.keras.Model:
    """`build_mpnn` sized and initialised from the manifest: its type vocabularies, the
    linear baseline of its target statistics (per-type means, per-graph offset) and the
    residual scale per atom; distances are used when the records have them."""
    stats = manifest.target_stats
    atom_vocab = manifest.vocab["atom"]
    output_scale = stats.residual_std / math.sqrt(max(stats.atoms_per_graph_mean, 1.0))
    return build_mpnn(
        config,
        n_atom_types=len(atom_vocab),
        n_bond_types=len(manifest.vocab["bond"]),
        atom_type_means=[stats.per_atom_type_mean[t] for t in atom_vocab],
        graph_offset=stats.graph_offset,
        output_scale=max(output_scale, 1e-3),
        with_distance="distance" in manifest.features,
    )
