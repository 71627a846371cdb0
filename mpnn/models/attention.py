"""Graph attention layers (GATv2, Brody et al. 2022) with learnable positional encodings
(LSPE, Dwivedi et al. 2022) on a disjoint-graph batch (see `mpnn.data`).

Shapes: ``x [N, F]`` node states (N atoms in the batch), ``connectivity [E, 2]``
(receiver, sender; sorted by receiver), attention weights ``alpha [E]``, one per directed
edge. Attention has a single head. Softmax and aggregation use the *sorted* segment ops
(`tf.math.segment_max`, `tf.math.segment_sum`): records are written sorted by receiver and
merging keeps that order, and the sorted kernels need no atomic adds.
"""

from __future__ import annotations

import tensorflow as tf

from mpnn.models.layers import sum_onto_receivers

_PACKAGE = "mpnn"


def segment_softmax(logits: tf.Tensor, receivers: tf.Tensor) -> tf.Tensor:
    """Softmax of edge logits ``[E]`` over the incoming edges of each receiver: ``[E]``.

    ``receivers [E]`` must be sorted. The per-receiver maximum is subtracted before `exp`
    (no overflow) and each denominator includes that edge's ``exp(0) = 1``, so the result
    is finite. Nodes that receive nothing have no entry; their empty segments are never
    gathered.
    """
    maxima = tf.stop_gradient(tf.math.segment_max(logits, receivers))  # the shift cancels
    weights = tf.exp(logits - tf.gather(maxima, receivers))
    return weights / tf.gather(tf.math.segment_sum(weights, receivers), receivers)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class GATv2Attention(tf.keras.layers.Layer):
    """Single-head GATv2 neighbourhood attention with one shared projection W.

    Inputs: ``[x [N, F_in], connectivity [E, 2]]``. With ``z = W x + b`` (``[N, units]``),
    edge (i <- j) scores ``e_ij = a^T LeakyReLU(z_i + z_j)``: the standard GATv2 form (the
    nonlinearity comes before ``a``, so the ranking of neighbours depends on the receiver),
    with the same W for receiver and sender (GATv2's ``share_weights`` option), which is
    ``W' [x_i || x_j]`` for ``W' = [W | W]``. ``alpha_ij`` = softmax of ``e_ij`` over the
    incoming edges of i (`segment_softmax`); the message is ``alpha_ij * z_j``, summed onto
    receivers (`sum_onto_receivers`; a node without incoming edges gets zeros).

    Returns ``[N, units]``, or ``([N, units], alpha [E])`` when called with
    ``return_attention=True``.
    """

    def __init__(self, units: int, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.negative_slope = negative_slope
        self.projection = tf.keras.layers.Dense(units, name="projection")

    def build(self, input_shape):
        self.attention_vector = self.add_weight(
            name="attention_vector", shape=(self.units,), initializer="glorot_uniform"
        )
        super().build(input_shape)

    def call(self, inputs, return_attention: bool = False):
        x, connectivity = inputs
        receivers, senders = connectivity[:, 0], connectivity[:, 1]
        z = self.projection(x)
        z_senders = tf.gather(z, senders)
        hidden = tf.nn.leaky_relu(tf.gather(z, receivers) + z_senders, alpha=self.negative_slope)
        alpha = segment_softmax(tf.linalg.matvec(hidden, self.attention_vector), receivers)
        aggregated = sum_onto_receivers(alpha[:, tf.newaxis] * z_senders, receivers, tf.shape(x)[0])
        return (aggregated, alpha) if return_attention else aggregated

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "negative_slope": self.negative_slope}


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class GATLSPEUpdate(tf.keras.layers.Layer):
    """One GAT-LSPE layer: structural update from ``[h || p]``, positional update from p.

    Inputs: ``[h [N, units], p [N, units], connectivity [E, 2]]``. Returns ``[h', p']``,
    both ``[N, units]``:

    - ``h' = Dropout(h + BatchNorm(ReLU(GATv2_h([h || p]))))``;
    - ``p' = p + tanh(GATv2_p(p))`` (tanh on positions as in LSPE), or ``p' = p`` when
      `update_positions` is False (the last layer of a model whose readout uses h only:
      a position update there would have no gradient).

    The two attentions are independent `GATv2Attention` layers, so features attend with
    structure and position while positions attend with positions only.
    """

    def __init__(
        self,
        units: int,
        dropout: float = 0.25,
        negative_slope: float = 0.2,
        update_positions: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.dropout = dropout
        self.negative_slope = negative_slope
        self.update_positions = update_positions
        self.feature_attention = GATv2Attention(units, negative_slope, name="feature_attention")
        if update_positions:
            self.position_attention = GATv2Attention(units, negative_slope, name="position_attention")
        self.norm = tf.keras.layers.BatchNormalization(name="norm")
        self.drop = tf.keras.layers.Dropout(dropout)

    def call(self, inputs, training=None):
        h, p, connectivity = inputs
        h_update = self.feature_attention([tf.concat([h, p], axis=-1), connectivity])
        h_update = self.norm(tf.nn.relu(h_update), training=training)
        if self.update_positions:
            p = p + tf.tanh(self.position_attention([p, connectivity]))
        return [self.drop(h + h_update, training=training), p]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "dropout": self.dropout,
            "negative_slope": self.negative_slope,
            "update_positions": self.update_positions,
        }
