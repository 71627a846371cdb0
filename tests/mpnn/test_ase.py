"""MPNNCalculator: the model's energy in eV on real minima; no forces, with the reason."""

from __future__ import annotations

import ase.io
import ase.units
import pytest
from ase.calculators.calculator import CalculationFailed, PropertyNotImplementedError

from data_prep.structures import read_structures
from data_prep.water import water_graph
from mpnn.ase import MPNNCalculator
from mpnn.predict import load_trained
from tests.helpers import WATER

pytestmark = pytest.mark.integration  # every test uses a small model trained for the session (tests/mpnn/conftest.py)


@pytest.fixture(scope="module")
def model(distance_run):
    return load_trained(str(distance_run))


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


def test_forces_are_refused_with_the_reason(model):
    atoms = ase.io.read(str(WATER / "minima" / "w5_lowest.xyz"))
    atoms.calc = MPNNCalculator(model)
    with pytest.raises(PropertyNotImplementedError, match="hard cutoffs.*not for relaxation or dynamics"):
        atoms.get_forces()


def test_what_is_not_a_water_cluster_fails_with_the_reason(model):
    atoms = ase.io.read(str(WATER / "minima" / "w5_lowest.xyz"))
    del atoms[1]  # an O left with one H
    atoms.calc = MPNNCalculator(model)
    with pytest.raises(CalculationFailed, match="instead of two"):
        atoms.get_potential_energy()
