"""A SchNet-style continuous-filter network for energies (and forces) of structures with
coordinates, model family ``schnet`` of `mpnn.models`.

Atom types are embedded; `interactions` rounds of `ContinuousFilterInteraction` pass
messages along every atom pair within the data set's cutoff, filtered by a learned function
of the pair's distance (computed here from the positions: `PairDistances`). Each atom then
predicts an energy on top of a per-element reference energy (the least-squares fit without
intercept on the training split, `TargetStats.per_atom_type_reference`), and the structure's
energy is their sum: size-extensive, so two far-apart clusters have the sum of their
energies. Forces are minus the gradient of that energy with respect to the positions
(`mpnn.forces`), never a second output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import tensorflow as tf

from mpnn.models.continuous_filter import (
    ContinuousFilterInteraction,
    CosineCutoff,
    PairDistances,
    RadialBasis,
    shifted_softplus,
)
from mpnn.graph_format.features import GEOMETRY
from mpnn.graph_format.manifest import Manifest, ManifestError
from mpnn.models.layers import GraphSum, per_type_energy
from mpnn.settings import AT_LEAST_0, AT_LEAST_1, Allowed, setting

# What the model takes from a merged batch (`mpnn.data`).
INPUTS = ("atom", "positions", "pair_connectivity", "node_graph_indices")


@dataclass(frozen=True)
class SchNetConfig:
    """Architecture of `build_schnet`.

    Attributes:
        width: features per atom (F), also the filter width.
        message_steps: interaction rounds (SchNet's T; the flag is ``--message-steps`` as
            for the MPNN).
        rbf_bins: Gaussians of the radial basis between 0 and the cutoff.
        readout_hidden: hidden units of the per-atom energy MLP.
        force_weight: weight of the force term of the loss against the energy term (per
            atom: see `mpnn.forces`); used only when the records carry forces.

    The cutoff is the data set's (``manifest.extra["geometry"]["cutoff"]``): the pairs in
    the records were found with it.
    """

    width: int = setting(64, "schnet: features per atom, also the filter width", AT_LEAST_1)
    message_steps: int = setting(3, "schnet: interactions", AT_LEAST_1)
    rbf_bins: int = setting(32, "schnet: Gaussians of the radial basis up to the cutoff", AT_LEAST_1)
    readout_hidden: int = setting(32, "schnet: hidden units of the per-atom energy MLP", AT_LEAST_0)
    force_weight: float = setting(
        0.1,
        "schnet: weight of the force term of the loss (per force component) against the energy term (per atom), "
        "for records with forces",
        Allowed(lambda v: v >= 0, "a number >= 0 (0: energies only)"),
    )

    def to_json(self) -> dict:
        return asdict(self)


def build_schnet(
    config: SchNetConfig,
    n_atom_types: int,
    cutoff: float,
    reference_energies: Sequence[float],
    output_scale: float = 1.0,
) -> tf.keras.Model:
    """Build the network.

    Args:
        config: architecture.
        n_atom_types: size of the atom type vocabulary.
        cutoff: pair cutoff, Angstrom.
        reference_energies: ``[n_atom_types]`` initial per-element energy (target units).
        output_scale: scale of the learned per-atom energy (target units).

    Returns:
        a Keras model from the batch dict (`INPUTS`) to energies ``[B]`` (target units).
    """
    inputs = {
        "atom": tf.keras.Input(shape=(), dtype="int32", name="atom"),
        "positions": tf.keras.Input(shape=(3,), dtype="float32", name="positions"),
        "pair_connectivity": tf.keras.Input(shape=(2,), dtype="int32", name="pair_connectivity"),
        "node_graph_indices": tf.keras.Input(shape=(), dtype="int32", name="node_graph_indices"),
    }
    pairs = inputs["pair_connectivity"]
    distance = PairDistances(name="pair_distances")([inputs["positions"], pairs])
    rbf = RadialBasis(config.rbf_bins, cutoff, name="radial_basis")(distance)
    envelope = CosineCutoff(cutoff, name="cosine_cutoff")(distance)
    atom_state = tf.keras.layers.Embedding(n_atom_types, config.width, name="atom_embedding")(inputs["atom"])
    for step in range(config.message_steps):
        atom_state = ContinuousFilterInteraction(config.width, name=f"interaction_{step}")(
            [atom_state, rbf, envelope, pairs]
        )
    hidden = tf.keras.layers.Dense(config.readout_hidden, activation=shifted_softplus, name="atom_readout_hidden")(
        atom_state
    )
    # Starts at zero: an untrained model predicts the reference energies exactly.
    learned = tf.keras.layers.Dense(1, kernel_initializer="zeros", name="atom_energy_learned")(hidden)
    learned = tf.keras.layers.Rescaling(output_scale, name="atom_energy_scale")(learned)
    reference = per_type_energy(inputs["atom"], list(reference_energies), "atom_reference_energy")
    atom_energy = tf.keras.layers.Add(name="atom_energy")([learned, reference])
    energy = GraphSum(name="graph_sum")([atom_energy, inputs["node_graph_indices"]])  # [B, 1]
    energy = tf.keras.layers.Reshape((), name="energy")(energy)
    return tf.keras.Model(inputs, energy, name="schnet")


def check_data(manifest: Manifest) -> None:
    """Whether the model can learn from the data set.

    Raises:
        ManifestError: the records have no geometry (naming the data set and what to do).
    """
    missing = [name for name in GEOMETRY if name not in manifest.features]
    if missing or "geometry" not in manifest.extra:
        raise ManifestError(
            f"{manifest.path}: the records have no geometry ({', '.join(missing) or 'no cutoff'}): the schnet model "
            "needs coordinates; prepare the data from structure files (xyz/extxyz/db) with mpnn-prep-water --cutoff"
        )


def build_from_manifest(config: SchNetConfig, manifest: Manifest) -> tf.keras.Model:
    """`build_schnet` sized from the manifest: its atom vocabulary, cutoff and per-element
    reference energies; the learned part scaled to the residual of the linear fit per atom.

    Raises:
        ManifestError: the records have no geometry (`check_data`).
    """
    check_data(manifest)
    stats = manifest.target_stats
    atom_vocab = manifest.vocab["atom"]
    reference = stats.per_atom_type_reference or stats.per_atom_type_mean
    output_scale = stats.residual_std / math.sqrt(max(stats.atoms_per_graph_mean, 1.0))
    return build_schnet(
        config,
        n_atom_types=len(atom_vocab),
        cutoff=float(manifest.extra["geometry"]["cutoff"]),
        reference_energies=[reference[t] for t in atom_vocab],
        output_scale=max(output_scale, 1e-3),
    )


def model_cutoff(model: tf.keras.Model) -> float | None:
    """The pair cutoff (Angstrom) a geometry model was built with, None for other models:
    what a caller needs to build the model's pair list (`data_prep.geometry`)."""
    for layer in model.layers:
        if isinstance(layer, CosineCutoff):
            return float(layer.cutoff)
    return None
