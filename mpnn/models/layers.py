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


def gather_receivers(states: tf.Tensor, receivers: tf.Tensor) -> tf.Tensor:
    """``states[receivers]`` (``[N, F]`` -> ``[E, F]``) for *sorted* `receivers`.

    The same values as `tf.gather`; only the gradient differs in how it is computed. The
    gradient of `tf.gather` sums onto the gathered rows with `unsorted_segment_sum`, which
    on CPU is about 3.5x slower than the sorted `segment_sum` used here (measured:
    benchmarks/log/2026-11-23-training-throughput.md, "On the AMD machine").
    """

    @tf.custom_gradient
    def gather(params):
        def grad(upstream):
            return sum_onto_receivers(upstream, receivers, tf.shape(params)[0])

        return tf.gather(params, receivers), grad

    return gather(states)


@tf.custom_gradient
def swish(x: tf.Tensor) -> tf.Tensor:
    """``x * sigmoid(x)``, any shape, with a gradient that reuses the forward sigmoid.

    TensorFlow's own gradient of `tf.nn.silu` recomputes the sigmoid and takes six
    element-wise passes; this one keeps ``s = sigmoid(x)`` and ``y = x * s`` and takes four:
    ``dy/dx = s + y * (1 - s)``.
    """
    s = tf.sigmoid(x)
    y = x * s

    def grad(upstream):
        return upstream * (s + y * (1.0 - s))

    return y, grad


def per_type_energy(atom: tf.Tensor, energies: list[float], name: str) -> tf.Tensor:
    """``[N, 1]``: the energy of each atom's type, a trainable embedding that starts at
    `energies` (``[n_types]``, target units; e.g. a least-squares fit on the training split)."""
    return tf.keras.layers.Embedding(
        len(energies), 1, embeddings_initializer=tf.keras.initializers.Constant(energies), name=name
    )(atom)


def update_output_initializer() -> tf.keras.initializers.Initializer:
    """Initializer of the update MLPs' output layer: Glorot-uniform scaled by 0.1 in
    variance (about 0.3x the weights), so that each residual step starts as a small change
    of the states. A new instance per layer: Keras gives every call of one unseeded
    instance the same values."""
    return tf.keras.initializers.VarianceScaling(0.1, "fan_avg", "uniform")


def _mlp(units: int, activation: str, name: str) -> tf.keras.Sequential:
    """Two dense layers whose output layer starts small (`update_output_initializer`).

    The node messages are products of states (``h_s * bond_state``), so full-size residual
    updates square the state scale every step: with Keras' default initialiser an
    untrained 8-step model overflowed float32 (largest atom state 5, 21, 80, 4e3, 4e6,
    2e12, 5e24, NaN over the steps). With the small start it stays below about 20, and
    the 4-step model learns as fast as before (small residual branches at initialisation,
    as in Fixup, Zhang et al. 2019). Zero would also be stable but learns more slowly.
    """
    return tf.keras.Sequential(
        [tf.keras.layers.Dense(units, activation=activation),
         tf.keras.layers.Dense(units, kernel_initializer=update_output_initializer())],
        name=name,
    )


class _UpdateLayer(tf.keras.layers.Layer):
    """Shared part of the update layers: width, activation, dropout, and the two-layer
    ``mlp`` applied to the concatenation of the layer's inputs.

    The concatenation is never built: ``mlp(concat(blocks))`` is computed as the sum of each
    block times its block of the first kernel (`_mlp_of_blocks`), which needs no ``[E, 3F]``
    concatenation in the forward pass nor its slicing in the backward pass; receivers are
    gathered with the sorted-segment gradient (`gather_receivers`) and the swish activation
    reuses its sigmoid for the gradient (`swish`). The same function of the same weights as
    the plain ``mlp(tf.concat(...))``, to float32 rounding (the tests compare the two).

    Both layers take an optional fourth input, ``sender_state [E, F]`` = ``atom_state``
    gathered at the senders: a model that gives the same one to an `EdgeUpdate` and the
    `NodeUpdate` after it (they read the same atom states) gathers once instead of twice.
    """

    n_inputs = 0  # blocks of the first kernel (inputs of the concatenation)

    def __init__(self, units: int, activation: str = "swish", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation
        self.dropout = dropout
        self.mlp = _mlp(units, activation, "mlp")
        self.drop = tf.keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.mlp.build((None, self.n_inputs * self.units))
        super().build(input_shape)

    @staticmethod
    def _sender_state(inputs: list[tf.Tensor]) -> tf.Tensor:
        """``sender_state [E, F]``: the optional fourth input, else gathered here."""
        atom_state, _, connectivity = inputs[:3]
        return inputs[3] if len(inputs) > 3 else tf.gather(atom_state, connectivity[:, 1])

    def _mlp_of_blocks(self, blocks: list[tf.Tensor]) -> tf.Tensor:
        """``mlp(concat(blocks))`` without the concatenation: blocks ``[M, F]`` -> ``[M, F]``."""
        hidden_layer, output_layer = self.mlp.layers
        kernel = hidden_layer.kernel
        # MatMul + BiasAdd, which TensorFlow's graph optimiser fuses into one kernel.
        hidden = tf.nn.bias_add(tf.matmul(blocks[0], kernel[: self.units]), hidden_layer.bias)
        for index, block in enumerate(blocks[1:], start=1):
            hidden = hidden + tf.matmul(block, kernel[index * self.units : (index + 1) * self.units])
        if self.activation in ("swish", "silu"):
            hidden = swish(hidden)
        else:
            hidden = tf.keras.activations.get(self.activation)(hidden)
        return output_layer(hidden)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "activation": self.activation, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config: dict) -> "_UpdateLayer":
        # Models saved before the reference (concatenating) computation moved to the tests
        # name it in ``fused``; both computations are the same function of the same weights.
        return cls(**{key: value for key, value in config.items() if key != "fused"})


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class EdgeUpdate(_UpdateLayer):
    """Residual edge update from both end atoms.

    Inputs: ``[atom_state [N, F], bond_state [E, F], connectivity [E, 2]]``, optionally
    followed by ``sender_state [E, F]`` (see `_UpdateLayer`).
    Returns ``bond_state + MLP([h_receiver || h_sender || bond_state])``, shape ``[E, F]``.
    """

    n_inputs = 3

    def call(self, inputs, training=None):
        atom_state, bond_state, connectivity = inputs[:3]
        receiver = gather_receivers(atom_state, connectivity[:, 0])
        update = self._mlp_of_blocks([receiver, self._sender_state(inputs), bond_state])
        return bond_state + self.drop(update, training=training)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class NodeUpdate(_UpdateLayer):
    """Residual node update from edge-conditioned messages (Gilmer et al., 2017).

    Inputs: ``[atom_state [N, F], bond_state [E, F], connectivity [E, 2]]``, optionally
    followed by ``sender_state [E, F]`` (see `_UpdateLayer`).
    Message on edge (r, s): ``h_s * bond_state``, gathered from senders and summed onto
    receivers (`sum_onto_receivers`). Returns ``atom_state + MLP([h || messages])``,
    shape ``[N, F]``.
    """

    n_inputs = 2

    def call(self, inputs, training=None):
        atom_state, bond_state, connectivity = inputs[:3]
        messages = self._sender_state(inputs) * bond_state
        received = sum_onto_receivers(messages, connectivity[:, 0], tf.shape(atom_state)[0])
        update = self._mlp_of_blocks([atom_state, received])
        return atom_state + self.drop(update, training=training)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class GatherSenders(tf.keras.layers.Layer):
    """Atom states at the senders of the edges.

    Inputs: ``[atom_state [N, F], connectivity [E, 2]]``. Returns ``[E, F]``.
    """

    def call(self, inputs):
        atom_state, connectivity = inputs
        return tf.gather(atom_state, connectivity[:, 1])


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
