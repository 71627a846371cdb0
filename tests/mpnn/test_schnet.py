"""The geometry model proves its physics: forces are -dE/dR (finite differences), the energy
is invariant and the forces equivariant under rotation, translation and permutation of the
atoms, energies are extensive, and nothing jumps as a pair crosses the cutoff."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import tensorflow as tf
from ase import Atoms
from scipy.spatial.transform import Rotation

from data_prep.geometry import geometry_features
from mpnn.forces import energy_and_forces
from mpnn.graph_format.manifest import Manifest, ManifestError
from mpnn.models.schnet import SchNetConfig, build_from_manifest, build_schnet, model_cutoff
from tests.helpers import MINIMA

CUTOFF = 4.0


@pytest.fixture(scope="module")
def model() -> tf.keras.Model:
    """A small untrained model whose per-atom energy readout is random (it starts at zero)."""
    tf.keras.utils.set_random_seed(3)
    network = build_schnet(SchNetConfig(width=16, message_steps=2, rbf_bins=12, readout_hidden=8), 2, CUTOFF,
                           [-1.0, -0.5], output_scale=20.0)
    layer = network.get_layer("atom_energy_learned")
    layer.set_weights([np.random.default_rng(0).normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    return network


def batch_of(*structures: Atoms) -> dict[str, tf.Tensor]:
    """The merged batch (`mpnn.data` layout) of `structures`, pairs built by the converter."""
    atoms, positions, pairs, graph = [], [], [], []
    offset = 0
    for index, structure in enumerate(structures):
        features = geometry_features(structure, CUTOFF)
        atoms.append(np.where(structure.numbers == 8, 0, 1))
        positions.append(features["positions"])
        pairs.append(features["pair_connectivity"] + offset)
        graph.append(np.full(len(structure), index))
        offset += len(structure)
    return {
        "atom": tf.constant(np.concatenate(atoms), tf.int32),
        "positions": tf.constant(np.concatenate(positions), tf.float32),
        "pair_connectivity": tf.constant(np.concatenate(pairs), tf.int32),
        "node_graph_indices": tf.constant(np.concatenate(graph), tf.int32),
    }


def evaluate(model: tf.keras.Model, *structures: Atoms) -> tuple[np.ndarray, np.ndarray]:
    energy, forces = energy_and_forces(model, batch_of(*structures))
    return energy.numpy().astype(np.float64), forces.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def cluster() -> Atoms:
    return ase.io.read(MINIMA[2], format="xyz")  # 5 waters


def test_forces_are_minus_the_gradient_of_the_energy(model, cluster):
    _, forces = evaluate(model, cluster)
    assert np.abs(forces).max() > 0.05  # a model whose forces vanish would pass trivially
    step = 1e-2  # Angstrom: float32 energies of ~10 carry 1e-6 absolute noise, so smaller steps lose digits
    rng = np.random.default_rng(1)
    for atom, axis in zip(rng.choice(len(cluster), 6, replace=False), rng.integers(0, 3, 6)):
        moved = []
        for sign in (1, -1):
            copy = cluster.copy()
            copy.positions[atom, axis] += sign * step
            moved.append(evaluate(model, copy)[0][0])
        numerical = -(moved[0] - moved[1]) / (2 * step)
        assert forces[atom, axis] == pytest.approx(numerical, abs=2e-3, rel=2e-2)


def test_energy_invariant_and_forces_equivariant_under_rotation_and_translation(model, cluster):
    energy, forces = evaluate(model, cluster)
    rotation = Rotation.from_rotvec([0.3, -1.1, 0.7])
    moved = cluster.copy()
    moved.positions = rotation.apply(cluster.positions) + np.array([4.0, -2.5, 11.0])
    energy_moved, forces_moved = evaluate(model, moved)
    assert energy_moved == pytest.approx(energy, abs=1e-4)
    np.testing.assert_allclose(forces_moved, rotation.apply(forces), atol=1e-4)


def test_energy_invariant_and_forces_permuted_with_the_atoms(model, cluster):
    energy, forces = evaluate(model, cluster)
    order = np.random.default_rng(2).permutation(len(cluster))
    energy_permuted, forces_permuted = evaluate(model, cluster[order])
    assert energy_permuted == pytest.approx(energy, abs=1e-4)
    np.testing.assert_allclose(forces_permuted, forces[order], atol=1e-5)


def test_energy_is_extensive_for_far_apart_clusters(model, cluster):
    energy, forces = evaluate(model, cluster)
    far = cluster.copy()
    far.positions += [30.0, 0.0, 0.0]
    energy_both, forces_both = evaluate(model, cluster + far)
    assert energy_both[0] == pytest.approx(2 * energy[0], rel=1e-5)
    np.testing.assert_allclose(forces_both, np.concatenate([forces, forces]), atol=1e-5)


def test_energy_and_forces_continuous_as_a_pair_crosses_the_cutoff(model):
    pair = Atoms("OO", positions=[[0, 0, 0], [0, 0, CUTOFF - 1e-4]])
    inside = evaluate(model, pair)
    pair.positions[1, 2] = CUTOFF + 1e-4  # now no pair at all
    outside = evaluate(model, pair)
    assert inside[0] == pytest.approx(outside[0], abs=1e-5)
    np.testing.assert_allclose(inside[1], outside[1], atol=1e-4)


def test_a_batch_of_graphs_gives_each_graphs_own_energy_and_forces(model):
    small, large = (ase.io.read(path, format="xyz") for path in (MINIMA[0], MINIMA[4]))
    alone = [evaluate(model, structure) for structure in (small, large)]
    energy, forces = evaluate(model, small, large)
    np.testing.assert_allclose(energy, [alone[0][0][0], alone[1][0][0]], rtol=1e-6)
    np.testing.assert_allclose(forces, np.concatenate([alone[0][1], alone[1][1]]), atol=1e-5)


def test_saved_model_keeps_its_cutoff_and_energies(model, cluster, tmp_path):
    model.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert model_cutoff(loaded) == CUTOFF
    np.testing.assert_allclose(evaluate(loaded, cluster)[0], evaluate(model, cluster)[0], rtol=1e-6)


def test_records_without_geometry_are_refused_naming_the_data_set(water_dataset):
    manifest = Manifest.load(water_dataset)
    with pytest.raises(ManifestError, match=f"{manifest.path}: the records have no geometry"):
        build_from_manifest(SchNetConfig(), manifest)


def test_a_batch_cut_gives_the_same_energies_and_forces(model):
    """The training twin may cut batches (``mpnn-bench train`` variants ``batch_cut=K``):
    the pairs are cut with their atoms."""
    from mpnn.forces import force_trainer

    structures = [ase.io.read(path, format="xyz") for path in MINIMA[:5]]
    batch = batch_of(*structures)
    whole = energy_and_forces(model, batch)
    cut = energy_and_forces(force_trainer(model, 3, 0.1), batch)
    np.testing.assert_allclose(cut[0].numpy(), whole[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(cut[1].numpy(), whole[1].numpy(), atol=1e-5)
