"""Keras layers of models that see geometry: distances from positions, a radial basis with
a smooth cutoff, and the continuous-filter interaction of SchNet (Schütt et al., J. Chem.
Phys. 148, 241722, 2018), on a disjoint-graph batch (see `mpnn.data`).

Shapes: ``positions [N, 3]`` (Angstrom), ``pair_connectivity [P, 2]`` (receiver, sender of
the P directed atom pairs within the cutoff, sorted by receiver), ``atom_state [N, F]``,
``rbf [P, K]``. Distances are computed here from the positions, so that the gradient of an
energy with respect to the positions (the forces) passes through them; the pair list only
says which pairs count, and the cutoff function takes each pair's contribution smoothly to
zero at the cutoff, so pairs entering or leaving the list do not make the energy jump.
Every layer has ``get_config`` so saved models load.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from mpnn.models.layers import sum_onto_receivers

_PACKAGE = "mpnn"


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
def shifted_softplus(x: tf.Tensor) -> tf.Tensor:
    """``softplus(x) - log 2``, SchNet's activation: smooth (so forces are), zero at zero.
    Registered with Keras, so that saved models that use it load."""
    return tf.nn.softplus(x) - math.log(2.0)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class PairDistances(tf.keras.layers.Layer):
    """Distances ``[P]`` (Angstrom) between the atoms of each pair.

    Inputs: ``[positions [N, 3], pair_connectivity [P, 2]]``. Computed as the square root
    of the summed squares, whose gradient is finite for every pair the converter keeps
    (atoms closer than `data_prep.geometry.MIN_DISTANCE` are refused).
    """

    def call(self, inputs):
        positions, pairs = inputs
        vectors = tf.gather(positions, pairs[:, 1]) - tf.gather(positions, pairs[:, 0])
        return tf.sqrt(tf.reduce_sum(vectors * vectors, axis=-1))


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class RadialBasis(tf.keras.layers.Layer):
    """Gaussians on the distance: ``[P]`` -> ``[P, bins]``, ``exp(-(d - mu_k)^2 / (2 w^2))``
    with `bins` centres ``mu_k`` evenly from 0 to `cutoff` (Angstrom) and width ``w`` their
    spacing. The cutoff itself is `CosineCutoff`'s, applied to the filters."""

    def __init__(self, bins: int, cutoff: float, **kwargs):
        super().__init__(**kwargs)
        self.bins = bins
        self.cutoff = cutoff
        self._centres = np.linspace(0.0, cutoff, bins, dtype=np.float32)
        spacing = cutoff / max(bins - 1, 1)
        self._gamma = 0.5 / spacing**2

    def call(self, distance):
        offsets = distance[:, tf.newaxis] - self._centres
        return tf.exp(-self._gamma * offsets * offsets)

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "cutoff": self.cutoff}


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class CosineCutoff(tf.keras.layers.Layer):
    """Behler's cutoff ``f(d) = (cos(pi d / cutoff) + 1) / 2`` below `cutoff` (Angstrom), 0
    beyond: ``[P]`` -> ``[P, 1]``. It and its first derivative vanish at the cutoff, so
    energies and forces are continuous as atoms cross it."""

    def __init__(self, cutoff: float, **kwargs):
        super().__init__(**kwargs)
        self.cutoff = cutoff

    def call(self, distance):
        inside = tf.cast(distance < self.cutoff, distance.dtype)
        envelope = 0.5 * (tf.cos(math.pi * tf.minimum(distance, self.cutoff) / self.cutoff) + 1.0) * inside
        return envelope[:, tf.newaxis]

    def get_config(self):
        return {**super().get_config(), "cutoff": self.cutoff}


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class ContinuousFilterInteraction(tf.keras.layers.Layer):
    """One SchNet interaction, a residual update of the atom states.

    Inputs: ``[atom_state [N, F], rbf [P, K], envelope [P, 1], pair_connectivity [P, 2]]``.
    The filter of each pair is an MLP of its radial basis (``[P, K] -> [P, F]``) times its
    cutoff envelope (`CosineCutoff`: zero at and beyond the cutoff); the message is the sender's state (after a linear map) times the
    filter, summed onto the receiver with the sorted `tf.math.segment_sum` (pairs are sorted
    by receiver, so no atomic adds); an MLP of the sum is added to the state. Output
    ``[N, F]``.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.filter_hidden = tf.keras.layers.Dense(units, activation=shifted_softplus, name="filter_hidden")
        self.filter_out = tf.keras.layers.Dense(units, name="filter_out")
        self.atom_in = tf.keras.layers.Dense(units, use_bias=False, name="atom_in")
        self.update_hidden = tf.keras.layers.Dense(units, activation=shifted_softplus, name="update_hidden")
        self.update_out = tf.keras.layers.Dense(units, name="update_out")

    def call(self, inputs):
        atom_state, rbf, envelope, pairs = inputs
        filters = self.filter_out(self.filter_hidden(rbf)) * envelope  # [P, F]
        senders = tf.gather(self.atom_in(atom_state), pairs[:, 1])  # [P, F]
        summed = sum_onto_receivers(senders * filters, pairs[:, 0], tf.shape(atom_state)[0])
        return atom_state + self.update_out(self.update_hidden(summed))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
