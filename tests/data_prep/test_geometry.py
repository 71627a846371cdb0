"""Geometry records: the pair list is every pair within the cutoff, and structures no model
should learn from are refused with their reason (as a skip in the manifest)."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from data_prep.geometry import MAX_NEIGHBOURS, MIN_DISTANCE, GeometryError, geometry_features
from data_prep.pipeline import OutputOptions
from data_prep.prep_water import WaterOptions, prepare_water
from mpnn.graph_format.features import validate_graph
from tests.helpers import MINIMA


@pytest.mark.parametrize("cutoff", [2.0, 4.5, 8.0])
def test_pairs_are_every_ordered_pair_within_the_cutoff_sorted_by_receiver(cutoff):
    atoms = ase.io.read(MINIMA[7], format="xyz")
    features = geometry_features(atoms, cutoff)
    distances = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    expected = {(i, j) for i, j in zip(*np.nonzero(distances < cutoff)) if i != j}
    pairs = features["pair_connectivity"]
    assert {tuple(p) for p in pairs.tolist()} == expected
    assert len(pairs) == len(expected) == features["n_pair"]
    assert np.all(np.diff(pairs[:, 0]) >= 0)
    np.testing.assert_array_equal(features["positions"], atoms.positions.astype(np.float32))


def test_graph_with_geometry_passes_the_schema_check():
    atoms = ase.io.read(MINIMA[3], format="xyz")
    graph = {"n_atom": np.int64(len(atoms)), "n_bond": np.int64(0), "atom": np.zeros(len(atoms), np.int64),
             "bond": np.zeros(0, np.int64), "connectivity": np.zeros((0, 2), np.int64),
             **geometry_features(atoms, 5.0, -atoms.positions, with_forces=True)}
    validate_graph(graph, list(graph))


def test_atoms_closer_than_the_floor_are_refused():
    atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [0.96 + MIN_DISTANCE / 2, 0, 0]])
    with pytest.raises(GeometryError, match=r"atoms 1 and 2 are 0\.250 Angstrom apart, closer than the floor of 0\.5"):
        geometry_features(atoms, 6.0)


def test_more_neighbours_than_the_budget_are_refused():
    grid = np.stack(np.meshgrid(*[np.arange(8)] * 3), axis=-1).reshape(-1, 3) * 1.0  # 512 atoms 1 A apart
    with pytest.raises(GeometryError, match=f"neighbours within 10.0 Angstrom, more than the budget of {MAX_NEIGHBOURS}"):
        geometry_features(Atoms(f"O{len(grid)}", positions=grid), 10.0)


@pytest.mark.parametrize(
    ("forces", "reason"),
    [(None, "no forces"), (np.zeros((2, 3)), r"forces of shape \[2, 3\], expected \[3, 3\]"),
     (np.array([[0, 0, np.nan]] * 3), "non-finite forces")],
)
def test_forces_missing_of_the_wrong_shape_or_not_finite_are_refused(forces, reason):
    atoms = ase.io.read(MINIMA[0], format="xyz")[:3]
    with pytest.raises(GeometryError, match=reason):
        geometry_features(atoms, 6.0, forces, with_forces=True)


def _frame(path, energy: float, forces: np.ndarray) -> Atoms:
    atoms = ase.io.read(path, format="xyz")
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def test_converter_writes_forces_in_kcal_per_mol_and_skips_bad_geometries(tmp_path):
    n_atom = len(ase.io.read(MINIMA[0], format="xyz"))
    good = _frame(MINIMA[0], -0.5, np.full((n_atom, 3), 0.25))  # eV and eV/Angstrom
    clash = _frame(MINIMA[0], -0.4, np.zeros((n_atom, 3)))
    clash.positions[1] = clash.positions[0] + [0.1, 0, 0]
    no_forces = ase.io.read(MINIMA[1], format="xyz")
    no_forces.info["energy"] = -0.3
    path = tmp_path / "set.extxyz"
    ase.io.write(path, [good, clash, no_forces], format="extxyz")

    manifest = prepare_water(
        [str(path)],
        WaterOptions(OutputOptions(str(tmp_path / "out"), fractions=(1, 0, 0), show_progress=False), "eV", cutoff=5.0),
    )
    reasons = {entry.index: entry.reason for entry in manifest.skipped}
    assert reasons[1].startswith("atoms 0 and 1 are 0.100 Angstrom apart")
    assert reasons[2].startswith("no forces")
    assert manifest.summary.converted == 1
    geometry = json.loads(open(tmp_path / "out" / "manifest.json").read())["geometry"]
    assert geometry == {"cutoff": 5.0, "forces": True,
                        "units": {"positions": "Angstrom", "forces": "kcal/mol/Angstrom"}}
    from mpnn.graph_format.example import Example
    from mpnn.graph_format.tfrecord import read_records

    record = Example.FromString(next(read_records(manifest.split("train")[0][0])))
    forces = np.asarray(record.features.feature["forces"].float_list.value)
    np.testing.assert_allclose(forces, 0.25 * 23.0605, rtol=1e-4)  # eV/A -> kcal/mol/A


def test_cutoff_zero_and_tutorial_records_carry_no_geometry(tmp_path):
    manifest = prepare_water(
        [str(MINIMA[0])], WaterOptions(OutputOptions(str(tmp_path / "out"), show_progress=False), cutoff=0.0)
    )
    assert "positions" not in manifest.features and "geometry" not in manifest.extra
