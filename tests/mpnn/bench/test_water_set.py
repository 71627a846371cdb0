"""`mpnn.bench.water_set`, the library of benchmarks/make_water_set.py: perturbed minima with
TIP4P energies and forces that the converter accepts, reproducibly, in files ASE reads back exactly."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase import units
from scipy import constants

from data_prep.structures import read_structures
from mpnn.bench import water_set
from tests.helpers import MINIMA, REPO

KCAL_PER_MOL = units.kcal / units.mol  # eV


def _frames(count: int, **options) -> water_set.Frames:
    opts = water_set.WaterSetOptions(count=count, **options)
    return water_set.make_block(water_set.Block(0, 0, count, opts, water_set.load_minima(opts.minima, opts.sizes)))


def _tip4p_by_hand(waters: np.ndarray) -> float:
    """TIP4P energy (kcal/mol) of waters ``[n, 3, 3]`` (O, H, H) from the published model
    (Jorgensen et al., J. Chem. Phys. 79, 926 (1983)): O-O Lennard-Jones A/r^12 - C/r^6,
    charges +0.52 e on H and -1.04 e on M, 0.15 Angstrom from O along the HOH bisector."""
    a, c, b = 600e3, 610.0, 0.15  # kcal A^12/mol, kcal A^6/mol, A
    coulomb = constants.e**2 / (4 * np.pi * constants.epsilon_0) / constants.angstrom * constants.N_A / 4184.0
    oxygen, h1, h2 = waters[:, 0], waters[:, 1], waters[:, 2]
    bisector = (h1 + h2) / 2 - oxygen
    m = oxygen + b * bisector / np.linalg.norm(bisector, axis=1, keepdims=True)
    sites, charges = np.stack([h1, h2, m], axis=1), np.array([0.52, 0.52, -1.04])
    energy = 0.0
    for i in range(len(waters)):
        for j in range(i + 1, len(waters)):
            r = np.linalg.norm(oxygen[i] - oxygen[j])
            energy += a / r**12 - c / r**6
            r_sites = np.linalg.norm(sites[i][:, None] - sites[j][None], axis=-1)
            energy += coulomb * (charges[:, None] * charges[None] / r_sites).sum()
    return energy


def _ase_tip4p(waters: np.ndarray) -> tuple[float, np.ndarray]:
    """The energy (kcal/mol) and forces ``[3 n, 3]`` (kcal/mol/Angstrom) of waters
    ``[n, 3, 3]`` by ASE's own TIP4P calculator (eV, eV/Angstrom), without cutoff: the
    reference of `water_set.tip4p_energies_and_forces`."""
    from ase.calculators.tip4p import TIP4P

    atoms = Atoms("OHH" * len(waters), positions=waters.reshape(-1, 3))
    atoms.calc = TIP4P(rc=np.inf)
    return atoms.get_potential_energy() / KCAL_PER_MOL, atoms.get_forces() / KCAL_PER_MOL


def test_tip4p_of_a_dimer_is_the_hand_computed_energy():
    # A hydrogen-bonded dimer: the first water donates its second H to the second's O.
    dimer = np.array([
        [[0.0, 0.0, 0.0], [-0.24, 0.93, 0.0], [0.96, 0.0, 0.0]],
        [[2.90, 0.05, 0.10], [3.20, 0.80, 0.55], [3.25, -0.70, 0.50]],
    ])
    expected = _tip4p_by_hand(dimer)
    assert -8.0 < expected < -3.0  # a bound dimer (TIP4P's minimum: -6.24 kcal/mol)
    assert _ase_tip4p(dimer)[0] == pytest.approx(expected, rel=1e-6)
    assert water_set.tip4p_energies_and_forces(dimer[None])[0][0] == pytest.approx(expected, rel=1e-6)


def test_tip4p_energies_and_forces_are_those_of_ase_calculator():
    minima = water_set.load_minima(water_set.DEFAULT_MINIMA, [3, 10, 30])
    rng = np.random.default_rng(2)
    options = water_set.WaterSetOptions(count=1, rotation=20.0, translation=0.2)
    for n, minimum in minima.items():
        clusters = np.concatenate([minimum[None], water_set.perturb(minimum, 4, rng, options)])
        energies, forces = water_set.tip4p_energies_and_forces(clusters)
        assert forces.shape == clusters.shape
        for cluster, energy, force in zip(clusters, energies, forces):
            expected_energy, expected_forces = _ase_tip4p(cluster)
            assert energy == pytest.approx(expected_energy, rel=1e-9)
            # Forces reach hundreds of kcal/mol/Angstrom on the strained copies.
            np.testing.assert_allclose(force.reshape(-1, 3), expected_forces, rtol=1e-7, atol=1e-9)


def test_tip4p_forces_are_minus_the_gradient_of_the_energy():
    """Central differences of the energy through the same function, on a perturbed trimer
    (the M sites moved off the minimum's geometry by the noise on O and H): every one of
    the 27 components, the M-site share passed on to O and H included."""
    options = water_set.WaterSetOptions(count=1, sizes=(3,), rotation=20.0, translation=0.2, noise=0.05)
    trimer = water_set.perturb(water_set.load_minima(options.minima, [3])[3], 1, np.random.default_rng(7), options)[0]
    _, forces = water_set.tip4p_energies_and_forces(trimer[None])
    step = 1e-5  # Angstrom
    gradient = np.zeros_like(trimer)
    for index in np.ndindex(*trimer.shape):
        moved = np.stack([trimer, trimer])
        moved[(0, *index)] += step
        moved[(1, *index)] -= step
        up, down = water_set.tip4p_energies_and_forces(moved)[0]
        gradient[index] = (up - down) / (2 * step)
    assert np.abs(forces[0]).max() > 5.0  # kcal/mol/Angstrom: a test with forces to get wrong
    np.testing.assert_allclose(forces[0], -gradient, atol=1e-6)
    # No intramolecular term: the forces on the whole cluster sum to zero.
    np.testing.assert_allclose(forces[0].sum(axis=(0, 1)), 0.0, atol=1e-9)


def test_tip4p_of_the_shipped_minima_is_close_to_their_own_energies():
    """The minima's energies (their comment lines, kcal/mol) come from another water
    model; TIP4P without cutoff on the same geometries agrees within 8%, and the binding
    energy per water grows with the size from about -5.8 (trimer) to -10.9 kcal/mol."""
    minima = water_set.load_minima(water_set.DEFAULT_MINIMA)
    assert sorted(minima) == list(range(3, 31))
    sizes = np.array(sorted(minima))
    energies = np.array([water_set.tip4p_energies_and_forces(minima[n][None])[0][0] for n in sizes])
    shipped = np.array([float(open(MINIMA[0].parent / f"w{n}_lowest.xyz").read().split()[1]) for n in sizes])
    np.testing.assert_allclose(energies / shipped, 1.0, atol=0.085)
    per_water = energies / sizes
    assert per_water.max() == pytest.approx(-5.75, abs=0.05)
    assert per_water.min() == pytest.approx(-10.89, abs=0.05)
    assert per_water[sizes >= 10].max() < per_water[sizes <= 6].min()


def test_perturbed_waters_keep_their_shape_and_energies_stay_physical():
    frames = _frames(200, shuffle_fraction=0.0, seed=4)
    minima = water_set.load_minima(water_set.DEFAULT_MINIMA)
    sizes = np.array([len(z) // 3 for z in frames.numbers])

    def bond_lengths(waters):  # O-H lengths [n, 2] of waters [n, 3, 3]
        return np.linalg.norm(waters[:, 1:] - waters[:, :1], axis=-1)

    stretch = []
    for numbers, positions in zip(frames.numbers, frames.positions):
        assert numbers.tolist() == [8, 1, 1] * (len(numbers) // 3)  # O, H, H: not shuffled
        waters = positions.reshape(-1, 3, 3)
        stretch.append(bond_lengths(waters) - bond_lengths(minima[len(waters)]))
    # Rigid moves keep each O-H length; the noise (0.02 A per coordinate on O and H)
    # changes it by about 0.02 * sqrt(2).
    stretch = np.concatenate(stretch).ravel()
    assert abs(stretch.mean()) < 0.002
    assert stretch.std() == pytest.approx(0.02 * np.sqrt(2), rel=0.1)
    per_water = frames.energies / sizes
    assert np.all(per_water < 0)  # every cluster bound
    assert -8.0 < per_water.mean() < -6.0  # above the minima's -5.8 .. -10.9: perturbed
    assert np.corrcoef(sizes, frames.energies)[0, 1] < -0.95  # binding grows with size
    assert set(sizes.tolist()) == set(range(3, 31))


def test_text_frames_read_back_as_ase_writes_them():
    frames = _frames(30, shuffle_fraction=0.5, seed=6)
    assert frames.shuffled.any() and not frames.shuffled.all()
    ours = list(ase.io.iread(io.StringIO("".join(frames.texts)), index=":", format="extxyz"))
    written = io.StringIO()
    for z, p, e, f in zip(frames.numbers, frames.positions, frames.energies.tolist(), frames.forces):
        atoms = Atoms(numbers=z, positions=p)
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        atoms.info.update(energy_unit="kcal/mol", forces_unit="kcal/mol/Angstrom")
        ase.io.write(written, atoms, format="extxyz")
    theirs = list(ase.io.iread(io.StringIO(written.getvalue()), index=":", format="extxyz"))
    assert len(ours) == len(theirs) == 30
    for a, b, e, f in zip(ours, theirs, frames.energies.tolist(), frames.forces):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        assert np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.pbc, b.pbc) and np.array_equal(a.cell.array, b.cell.array)
        assert a.get_potential_energy() == b.get_potential_energy() == e
        assert np.array_equal(a.get_forces(), b.get_forces())
        np.testing.assert_allclose(a.get_forces(), f, rtol=0, atol=5e-9)  # 8 decimals
        assert a.info == b.info == {"energy_unit": "kcal/mol", "forces_unit": "kcal/mol/Angstrom"}


def test_written_set_reads_back_with_tip4p_forces_in_kcal_per_mol_angstrom(tmp_path):
    """What a user reads with ASE: ``get_forces()`` of shape [n_atom, 3], in the unit the
    report states, equal to ASE's own TIP4P forces (eV/Angstrom) converted, for each
    structure as written, its atoms shuffled or not."""
    options = water_set.WaterSetOptions(count=12, sizes=(3, 7, 12), shuffle_fraction=0.5, seed=9)
    report = water_set.write_water_set(str(tmp_path), options)
    assert (report["energy_unit"], report["forces_unit"]) == ("kcal/mol", "kcal/mol/Angstrom")
    assert json.loads((tmp_path / "water_set.json").read_text())["forces_unit"] == "kcal/mol/Angstrom"
    frames = ase.io.read(tmp_path / "water_0000.extxyz", index=":", format="extxyz")
    assert len(frames) == 12
    for atoms in frames:
        forces = atoms.get_forces()
        assert forces.shape == (len(atoms), 3)
        # ASE's calculator needs O, H, H per water: undo a shuffle by the converter's grouping.
        waters = water_set.molecules(atoms, "read back")
        order = [int(np.flatnonzero((atoms.positions == atom).all(axis=1))[0]) for atom in waters.reshape(-1, 3)]
        expected_energy, expected_forces = _ase_tip4p(waters)
        # Positions are written with 8 decimals: the energy and forces at them differ a little.
        assert atoms.get_potential_energy() == pytest.approx(expected_energy, abs=1e-4)
        np.testing.assert_allclose(forces[order], expected_forces, rtol=1e-6, atol=1e-4)
    assert report["shuffled"] >= 3  # some of them with their atoms out of O, H, H order


@pytest.mark.integration  # a spawned worker
def test_same_seed_same_set_whatever_the_workers_and_files(tmp_path):
    count = 2 * water_set.BLOCK_SIZE + 300
    common = dict(count=count, energy="none", shuffle_fraction=0.2, seed=11)
    water_set.write_water_set(str(tmp_path / "a"), water_set.WaterSetOptions(**common))
    report = water_set.write_water_set(str(tmp_path / "b"), water_set.WaterSetOptions(**common, files=3, workers=2))
    water_set.write_water_set(str(tmp_path / "c"), water_set.WaterSetOptions(**{**common, "seed": 12}))
    one = (tmp_path / "a" / "water_0000.extxyz").read_bytes()
    parts = [(tmp_path / "b" / name).read_bytes() for name in sorted(report["files"])]
    assert b"".join(parts) == one
    assert [p.count(b"Properties=") for p in parts] == list(report["files"].values()) == [766, 767, 767]
    assert (tmp_path / "c" / "water_0000.extxyz").read_bytes() != one
    assert json.loads((tmp_path / "b" / "water_set.json").read_text())["shuffled"] == report["shuffled"]
    assert 0.15 * count < report["shuffled"] < 0.25 * count


def test_database_holds_the_same_structures_as_the_text(tmp_path):
    common = dict(count=25, shuffle_fraction=0.3, seed=3)
    water_set.write_water_set(str(tmp_path / "x"), water_set.WaterSetOptions(**common))
    water_set.write_water_set(str(tmp_path / "d"), water_set.WaterSetOptions(**common, file_format="db"))
    text = list(read_structures(str(tmp_path / "x" / "water_0000.extxyz")))
    rows = list(read_structures(str(tmp_path / "d" / "water_0000.db")))
    assert len(text) == len(rows) == 25
    for a, b in zip(text, rows):
        assert a.error is None and b.error is None
        assert a.energy == b.energy  # kcal/mol, exactly
        np.testing.assert_allclose(a.atoms.get_forces(), b.atoms.get_forces(), rtol=0, atol=5e-9)
        assert a.atoms.get_chemical_symbols() == b.atoms.get_chemical_symbols()
        np.testing.assert_allclose(a.atoms.positions, b.atoms.positions, atol=5e-9)  # 8 decimals in text


@pytest.mark.integration  # the converter in its own process
def test_small_set_converts_with_shuffled_structures_accepted(tmp_path):
    """mpnn-prep-water converts a generated set, shuffled atom orders included (it
    assigns each H to its nearest O); the records keep the TIP4P energies."""
    options = water_set.WaterSetOptions(count=120, files=2, shuffle_fraction=0.4, seed=8)
    water_set.write_water_set(str(tmp_path / "set"), options)
    frames = [f for name in ("water_0000.extxyz", "water_0001.extxyz")
              for f in ase.io.read(tmp_path / "set" / name, index=":", format="extxyz")]
    shuffled = sum(f.get_chemical_symbols() != ["O", "H", "H"] * (len(f) // 3) for f in frames)
    assert shuffled >= 30
    command = [sys.executable, "-m", "mpnn.cli.prep_water", str(tmp_path / "set"), "-o", str(tmp_path / "out"),
               "--quiet", "--fractions", "1", "0", "0"]
    subprocess.run(command, check=True, cwd=REPO, timeout=300)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # Every structure converts; the set's own report is the one file passed over.
    assert manifest["summary"] == {"converted": 120, "skipped": 1}
    assert [(os.path.basename(s["source"]), s["reason"].split(":")[0]) for s in manifest["skipped"]] == [
        ("water_set.json", "not a structure file")
    ]
    energies = np.array([f.get_potential_energy() for f in frames])
    assert manifest["target_stats"]["mean"] == pytest.approx(energies.mean(), rel=1e-5)
