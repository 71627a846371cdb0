"""Graph construction on the 28 real water-cluster minima."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms

from data_prep.structures import read_structures
from data_prep.water import WaterGraphError, water_graph
from tests.conftest import MINIMA


def _load(path):
    (structure,) = list(read_structures(str(path)))
    assert structure.error is None
    return structure


def test_all_minima_are_shipped():
    assert len(MINIMA) == 28


def test_energy_is_read_from_the_comment_line():
    structure = _load(MINIMA[0])
    first_lines = open(MINIMA[0]).read().splitlines()
    assert structure.energy == pytest.approx(float(first_lines[1]))


@pytest.mark.parametrize("path", MINIMA, ids=[p.stem for p in MINIMA])
def test_minimum_graph_is_chemically_sane(path):
    structure = _load(path)
    graph = water_graph(structure.atoms, structure.energy)
    n_waters = int(graph["n_waters"])
    atom, bond, connectivity = graph["atom"], graph["bond"], graph["connectivity"]

    assert int(graph["n_atom"]) == 3 * n_waters == len(atom)
    assert (atom == 0).sum() == n_waters
    # Sorted by receiver, and every directed edge has its reverse with the same type.
    assert np.all(np.diff(connectivity[:, 0]) >= 0)
    forward = {(r, s, t) for (r, s), t in zip(connectivity.tolist(), bond.tolist())}
    assert {(s, r, t) for r, s, t in forward} == forward
    # Every O has exactly two covalent bonds, every H exactly one.
    covalent_received = np.bincount(connectivity[bond == 0, 0], minlength=len(atom))
    assert np.all(covalent_received[atom == 0] == 2)
    assert np.all(covalent_received[atom == 1] == 1)
    # Hydrogen bonds join an H to an O, at most one donated per H; minima of n >= 3 form
    # rings or cages with between n and 2n hydrogen bonds.
    hbonds = connectivity[(bond == 1) & (atom[connectivity[:, 0]] == 1)]
    assert np.all(atom[hbonds[:, 1]] == 0)
    assert len(np.unique(hbonds[:, 0])) == len(hbonds)
    assert n_waters <= len(hbonds) <= 2 * n_waters
    # Distances: covalent O-H about 1 Angstrom, hydrogen bonds 1.5-2.6 Angstrom.
    assert np.all((graph["distance"][bond == 0] > 0.9) & (graph["distance"][bond == 0] < 1.1))
    assert np.all((graph["distance"][bond == 1] > 1.4) & (graph["distance"][bond == 1] < 2.7))


@pytest.mark.parametrize("path", MINIMA[::5], ids=[p.stem for p in MINIMA[::5]])
def test_graph_does_not_depend_on_atom_order(path):
    structure = _load(path)
    graph = water_graph(structure.atoms, structure.energy)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(structure.atoms))
    shuffled = water_graph(structure.atoms[order], structure.energy)
    # Map the shuffled graph's node indices back to the original ones.
    original_index = order
    edges = {
        (original_index[r], original_index[s], t)
        for (r, s), t in zip(shuffled["connectivity"].tolist(), shuffled["bond"].tolist())
    }
    assert edges == {(r, s, t) for (r, s), t in zip(graph["connectivity"].tolist(), graph["bond"].tolist())}


def test_rejects_other_elements():
    atoms = ase.io.read(MINIMA[0], format="xyz")
    atoms[0].symbol = "N"
    with pytest.raises(WaterGraphError, match="other than O/H: N"):
        water_graph(atoms, -10.0)


def test_rejects_hydrogen_without_oxygen():
    atoms = ase.io.read(MINIMA[0], format="xyz")
    atoms += Atoms("H", positions=[atoms.positions.max(axis=0) + 5.0])
    with pytest.raises(WaterGraphError, match="have no O within"):
        water_graph(atoms, -10.0)


def test_rejects_oxygen_without_two_hydrogens():
    atoms = ase.io.read(MINIMA[0], format="xyz")
    del atoms[[a.index for a in atoms if a.symbol == "H"][0]]
    with pytest.raises(WaterGraphError, match="instead of two"):
        water_graph(atoms, -10.0)


def test_rejects_nan_coordinates_and_energy():
    atoms = ase.io.read(MINIMA[0], format="xyz")
    with pytest.raises(WaterGraphError, match="energy"):
        water_graph(atoms, float("nan"))
    atoms.positions[0, 0] = np.nan
    with pytest.raises(WaterGraphError, match="non-finite"):
        water_graph(atoms, -10.0)
