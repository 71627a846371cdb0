"""MPNNCalculator: the model's energy in eV on real minima. A topology model has no forces,
with the reason; a geometry model's forces are minus the gradient of its energy, invariant
and equivariant as physics requires, extensive, and relax a cluster with rigid waters."""

from __future__ import annotations

import ase.io
import ase.units
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import CalculationFailed, PropertyNotImplementedError
from ase.optimize import BFGS
from scipy.spatial.transform import Rotation

from data_prep.geometry import geometry_features
from data_prep.structures import read_structures
from data_prep.water import water_graph
from mpnn.ase import MPNNCalculator, rigid_waters
from mpnn.predict import TrainedModel, keras_trained_model, load_trained
from tests.helpers import WATER

EV_PER_KCAL_PER_MOL = ase.units.kcal / ase.units.mol


@pytest.fixture(scope="module")
def model(distance_run):
    return load_trained(str(distance_run))


@pytest.fixture(scope="module")
def geometry_model() -> TrainedModel:
    """A small geometry model (schnet) with random weights: a smooth energy of the positions
    whose forces reach about 0.6 eV/Angstrom on the minima (untrained, the learned part
    would start at zero, and so would every force)."""
    import tensorflow as tf

    from mpnn.models.schnet import SchNetConfig, build_schnet

    tf.keras.utils.set_random_seed(0)
    network = build_schnet(
        SchNetConfig(width=16, message_steps=2, rbf_bins=16, readout_hidden=16), n_atom_types=2, cutoff=5.0,
        reference_energies=[-1.1, -2.2], output_scale=1.0,
    )
    rng = np.random.default_rng(0)
    network.set_weights([w + rng.normal(scale=0.3, size=w.shape) for w in network.get_weights()])
    return keras_trained_model(network, "random schnet", "kcal/mol", {})


def _minimum(waters: int, model: TrainedModel) -> Atoms:
    atoms = ase.io.read(str(WATER / "minima" / f"w{waters}_lowest.xyz"))
    atoms.calc = MPNNCalculator(model)
    return atoms


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_energy_is_the_models_in_ev(model):
    path = str(WATER / "minima" / "w10_lowest.xyz")
    structure = next(read_structures(path))
    kcal_per_mol = float(model.predict_graphs([water_graph(structure.atoms, structure.energy)])[0])
    atoms = ase.io.read(path)
    atoms.calc = MPNNCalculator(model)
    assert atoms.get_potential_energy() == pytest.approx(kcal_per_mol * ase.units.kcal / ase.units.mol, rel=1e-6)
    # Moving the cluster rigidly changes no distance, so not the energy either.
    moved = atoms.copy()
    moved.translate([1.0, -2.0, 0.5])
    moved.calc = MPNNCalculator(model)
    assert moved.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-5)


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_forces_are_refused_with_the_reason(model):
    atoms = ase.io.read(str(WATER / "minima" / "w5_lowest.xyz"))
    atoms.calc = MPNNCalculator(model)
    with pytest.raises(PropertyNotImplementedError, match="hard cutoffs.*not for relaxation or dynamics"):
        atoms.get_forces()


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_what_is_not_a_water_cluster_fails_with_the_reason(model):
    atoms = ase.io.read(str(WATER / "minima" / "w5_lowest.xyz"))
    del atoms[1]  # an O left with one H
    atoms.calc = MPNNCalculator(model)
    with pytest.raises(CalculationFailed, match="instead of two"):
        atoms.get_potential_energy()


def test_geometry_forces_are_minus_the_gradient_of_the_energy(geometry_model):
    """Central differences (step 1e-3 Angstrom) of the calculator's own energy.

    The model computes in float32, which sets the tolerance (measured on this model: 7e-4
    at most, falling with larger steps as rounding, not truncation, would): positions near
    5 Angstrom are rounded to about 5e-7 Angstrom, so the 2e-3 Angstrom step is off by up to
    5e-4 of itself (3e-4 eV/Angstrom on these forces), and the energy of about 2 eV is
    rounded to a few 1e-7 eV, a few 1e-4 eV/Angstrom once divided by the step; truncation
    (h^2 / 6 times a third derivative of order 1 eV/A^3) is about 1e-7. 2e-3 eV/Angstrom,
    against forces of up to 0.6 eV/Angstrom, still catches a wrong sign, a missing unit
    conversion (x 23) or a force put on another atom."""
    atoms = _minimum(6, geometry_model)
    forces = atoms.get_forces()
    assert forces.shape == (18, 3) and np.abs(forces).max() > 0.3  # not vanishing, so the test can fail
    step, finite = 1e-3, np.zeros_like(forces)
    for i in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, k] += sign * step
                moved.calc = MPNNCalculator(geometry_model)
                energies.append(moved.get_potential_energy())
            finite[i, k] = -(energies[0] - energies[1]) / (2 * step)
    np.testing.assert_allclose(forces, finite, atol=2e-3)


def test_geometry_energy_is_invariant_and_forces_equivariant(geometry_model):
    """A random rotation and translation, then a random order of the atoms: the energy stays
    and the forces rotate and move with their atoms (the pair list is rebuilt each time).
    Tolerances: float32 positions of about 10 Angstrom are rounded to about 1e-6 Angstrom,
    which moves energies by about 1e-6 eV and forces by about 1e-5 eV/Angstrom."""
    atoms = _minimum(10, geometry_model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    rng = np.random.default_rng(1)
    rotation = Rotation.random(random_state=2).as_matrix()
    order = rng.permutation(len(atoms))
    moved = atoms[order]
    moved.positions = moved.positions @ rotation.T + rng.normal(scale=5.0, size=3)
    moved.calc = MPNNCalculator(geometry_model)
    assert moved.get_potential_energy() == pytest.approx(energy, abs=2e-5)
    np.testing.assert_allclose(moved.get_forces(), forces[order] @ rotation.T, atol=2e-4)


def test_geometry_energy_is_extensive(geometry_model):
    """Two copies of a cluster 30 Angstrom apart (beyond the cutoff): twice the energy, and
    each copy's atoms feel the forces of the cluster alone."""
    single = _minimum(5, geometry_model)
    energy, forces = single.get_potential_energy(), single.get_forces()
    shifted = single.copy()
    shifted.translate([30.0, 0.0, 0.0])
    double = single + shifted
    double.calc = MPNNCalculator(geometry_model)
    assert double.get_potential_energy() == pytest.approx(2 * energy, abs=2e-5)
    np.testing.assert_allclose(double.get_forces(), np.concatenate([forces, forces]), atol=2e-4)


def test_geometry_model_gives_energy_and_forces_in_ev(geometry_model):
    """The calculator's numbers are the model's (kcal/mol) on the converter's graph
    (`task_graphs` makes it so), converted to eV."""
    atoms = _minimum(4, geometry_model)
    graph = {**water_graph(atoms, 0.0), **geometry_features(atoms, geometry_model.cutoff)}
    (energy,), (forces,) = geometry_model.predict_graphs_with_forces([graph])
    assert atoms.get_potential_energy() == pytest.approx(energy * EV_PER_KCAL_PER_MOL, rel=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), forces * EV_PER_KCAL_PER_MOL, rtol=1e-6)
    assert set(MPNNCalculator(geometry_model).implemented_properties) == {"energy", "forces"}
    with pytest.raises(PropertyNotImplementedError, match="stress: .*finite clusters"):
        atoms.get_stress()


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda atoms: atoms.positions.__setitem__(1, atoms.positions[0] + [0.2, 0.0, 0.0]),
         "atoms 0 and 1 are 0.200 Angstrom apart, closer than the floor of 0.5"),
        (lambda atoms: atoms.__imul__((1, 1, 1)) if atoms.set_pbc(True) is None and atoms.set_cell([20] * 3) is None
         else None, "periodic cell"),
        (lambda atoms: atoms.append("Na"), "other than O/H: Na"),
    ],
    ids=["overlapping atoms", "periodic", "sodium"],
)
def test_a_structure_the_geometry_model_cannot_read_fails_with_the_reason(geometry_model, change, reason):
    atoms = _minimum(3, geometry_model)
    change(atoms)
    with pytest.raises(CalculationFailed, match=reason):
        atoms.get_forces()


def test_rigid_waters_fixes_each_waters_three_distances():
    atoms = ase.io.read(str(WATER / "minima" / "w4_lowest.xyz"))
    pairs = rigid_waters(atoms).pairs
    assert len(pairs) == 12 and len({i for pair in pairs for i in pair}) == 12
    lengths = np.sort(atoms.get_distances(pairs[:, 0], pairs[:, 1]))
    assert np.all((lengths[:8] > 0.9) & (lengths[:8] < 1.05))  # O-H
    assert np.all((lengths[8:] > 1.45) & (lengths[8:] < 1.65))  # H-H
    assert set(atoms.numbers[pairs[8:].ravel()]) == {1}


@pytest.mark.integration  # a geometry model trained for the session (tests/mpnn/conftest.py)
def test_bfgs_relaxes_a_cluster_with_rigid_waters(geometry_run):
    """A perturbed 6-water minimum, its waters rigid: BFGS lowers the model's energy and
    stops with every (constrained) force below fmax, the waters' shapes unchanged."""
    atoms = _minimum(6, load_trained(str(geometry_run)))
    atoms.positions += np.random.default_rng(3).normal(scale=0.05, size=atoms.positions.shape)
    constraint = rigid_waters(atoms)
    lengths = atoms.get_distances(constraint.pairs[:, 0], constraint.pairs[:, 1])
    atoms.set_constraint(constraint)
    start = atoms.get_potential_energy()
    assert BFGS(atoms, logfile=None).run(fmax=0.05, steps=300)
    assert atoms.get_potential_energy() < start - 1e-3
    assert np.abs(atoms.get_forces()).max() < 0.05
    np.testing.assert_allclose(atoms.get_distances(constraint.pairs[:, 0], constraint.pairs[:, 1]), lengths, atol=1e-8)
