"""Keras layers for message passing on a disjoint-graph batch (see `mpnn.data`).

Shapes: ``atom_state [N, F]`` (N atoms in the batch), ``bond_state [E, F]`` (E directed
edges), ``connectivity [E, 2]`` (receiver, sender; sorted by receiver),
``node_graph_indices [N]`` (sorted). Every layer has ``get_config`` so saved models load.
"""

from __future__ import annotations

import tensorflow as tf

_PACKAGE = "mpnn"


def sum_onto_receivers(messages: tf.Tensor, receivers: tf.Tensor, n_nodes: tf.Tensor) -> tf.Tensor:
    """Sum edge messages ``[E, F]`` onto their receivers: ``[n_nodes, F]``.

    Uses the sorted `tf.math.segment_sum`: receivers are sorted by construction (records
    are written sorted and merging adds increasing offsets), and the sorted kernel needs no
    atomic adds. It returns ``max(receivers) + 1`` rows, so trailing nodes that receive
    nothing are padded with zeros.
    """
    summed = tf.math.segment_sum(messages, receivers)
    return tf.pad(summed, [[0, n_nodes - tf.shape(summed)[0]], [0, 0]])


def _mlp(units: int, activation: str, name: str) -> tf.keras.Sequential:
    return tf.keras.Sequential(
        [tf.keras.layers.Dense(units, activation=activation), tf.keras.layers.Dense(units)], name=name
    )


class _UpdateLayer(tf.keras.layers.Layer):
    """Shared configuration of the update layers: width, activation, dropout."""

    def __init__(self, units: int, activation: str = "swish", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation
        self.dropout = dropout
        self.mlp = _mlp(units, activation, "mlp")
        self.drop = tf.keras.layers.Dropout(dropout)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "activation": self.activation, "dropout": self.dropout}


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class EdgeUpdate(_UpdateLayer):
    """Residual edge update from both end atoms.

    Inputs: ``[atom_state [N, F], bond_state [E, F], connectivity [E, 2]]``.
    Returns ``bond_state + MLP([h_receiver || h_sender || bond_state])``, shape ``[E, F]``.
    """

    def call(self, inputs, training=None):
        atom_state, bond_state, connectivity = inputs
        receiver = tf.gather(atom_state, connectivity[:, 0])
        sender = tf.gather(atom_state, connectivity[:, 1])
        update = self.mlp(tf.concat([receiver, sender, bond_state], axis=-1))
        return bond_state + self.drop(update, training=training)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class NodeUpdate(_UpdateLayer):
    """Residual node update from edge-conditioned messages (Gilmer et al., 2017).

    Inputs: ``[atom_state [N, F], bond_state [E, F], connectivity [E, 2]]``.
    Message on edge (r, s): ``h_s * bond_state``, gathered from senders and summed onto
    receivers (`sum_onto_receivers`). Returns ``atom_state + MLP([h || messages])``,
    shape ``[N, F]``.
    """

    def call(self, inputs, training=None):
        atom_state, bond_state, connectivity = inputs
        messages = tf.gather(atom_state, connectivity[:, 1]) * bond_state
        received = sum_onto_receivers(messages, connectivity[:, 0], tf.shape(atom_state)[0])
        update = self.mlp(tf.concat([atom_state, received], axis=-1))
        return atom_state + self.drop(update, training=training)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class GraphSum(tf.keras.layers.Layer):
    """Sum per-node values onto their graphs.

    Inputs: ``[node_values [N, ...], node_graph_indices [N]]`` (sorted; every graph has at
    least one node). Returns ``[B, ...]``.
    """

    def call(self, inputs):
        node_values, node_graph_indices = inputs
        return tf.math.segment_sum(node_values, node_graph_indices)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class GraphMean(tf.keras.layers.Layer):
    """Mean of per-node values over each graph; inputs as `GraphSum`. Returns ``[B, ...]``."""

    def call(self, inputs):
        node_values, node_graph_indices = inputs
        return tf.math.segment_mean(node_values, node_graph_indices)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class ScalarOffset(tf.keras.layers.Layer):
    """Add one trainable scalar (initialised to `initial`) to the input, any shape."""

    def __init__(self, initial: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape):
        self.offset = self.add_weight(
            name="offset", shape=(), initializer=tf.keras.initializers.Constant(self.initial)
        )

    def call(self, inputs):
        return inputs + self.offset

    def get_config(self) -> dict:
        return {**super().get_config(), "initial": self.initial}
