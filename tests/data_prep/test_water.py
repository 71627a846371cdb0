"""Graph construction on the 28 real water-cluster minima, and the fast geometry against
the implementation it replaced on minima and generated clusters."""

from __future__ import annotations

import math

import ase.io
import numpy as np
import pytest
from ase import Atoms

from data_prep.structures import read_structures
from data_prep.water import (
    FEATURES,
    MAX_COVALENT_OH,
    MAX_HBOND_ANGLE,
    MAX_HBOND_OO,
    WaterGraphError,
    water_graph,
)
from mpnn.bench import water_set
from mpnn.graph_format.example import serialize_graph
from tests.helpers import MINIMA


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


def test_reports_every_other_element_once_in_alphabetical_order():
    atoms = ase.io.read(MINIMA[0], format="xyz")
    atoms[0].symbol, atoms[1].symbol, atoms[4].symbol = "N", "C", "N"
    with pytest.raises(WaterGraphError, match=r"other than O/H: C, N$"):
        water_graph(atoms, -10.0)


def test_an_h_equally_far_from_two_o_belongs_to_the_lower_index():
    # H 2 sits exactly halfway between O 0 and O 3 (distances exactly 1.0).
    positions = [[0, 0, 0], [-0.96, 0, 0], [1, 0, 0], [2, 0, 0], [2.5, 0.8, 0], [2.5, -0.8, 0]]
    graph = water_graph(Atoms("OHHOHH", positions=positions), -1.0)
    covalent = {tuple(e) for e in graph["connectivity"][graph["bond"] == 0].tolist()}
    assert (0, 2) in covalent and (3, 2) not in covalent


# ---------------------------------------------------------------------------------------
# The implementation before the KD-tree (ASE's general neighbour list, twice, and a Python
# loop over the oxygens), kept here only as the reference the fast one must match.
# ---------------------------------------------------------------------------------------


def reference_water_graph(atoms: Atoms, energy: float, record_id: str = "") -> dict[str, np.ndarray]:
    symbols = np.array(atoms.get_chemical_symbols())
    others = sorted(set(symbols.tolist()) - {"O", "H"})
    if others:
        raise WaterGraphError(f"element(s) other than O/H: {', '.join(others)}")
    if not np.all(np.isfinite(atoms.positions)):
        raise WaterGraphError("non-finite coordinates")
    if energy is None or not math.isfinite(energy):
        raise WaterGraphError(f"energy is {energy}")
    is_oxygen = symbols == "O"
    if not is_oxygen.any():
        raise WaterGraphError("no oxygen atoms")

    hydrogen, oxygen, o_to_h = _reference_covalent_bonds(atoms, is_oxygen)
    hb_hydrogen, hb_acceptor, hb_length = _reference_hydrogen_bonds(atoms, hydrogen, oxygen, o_to_h)

    o_end = np.concatenate([oxygen, hb_acceptor])
    h_end = np.concatenate([hydrogen, hb_hydrogen])
    bond_type = np.concatenate([np.zeros(len(oxygen), np.int64), np.ones(len(hb_acceptor), np.int64)])
    length = np.concatenate([np.linalg.norm(o_to_h, axis=1), hb_length])
    receivers = np.concatenate([o_end, h_end])
    senders = np.concatenate([h_end, o_end])
    order = np.lexsort((senders, receivers))
    return {
        "record_id": record_id,
        "n_atom": np.int64(len(atoms)),
        "n_bond": np.int64(len(order)),
        "n_waters": np.int64(is_oxygen.sum()),
        "atom": np.where(is_oxygen, 0, 1).astype(np.int64),
        "bond": np.concatenate([bond_type, bond_type])[order],
        "connectivity": np.stack([receivers, senders], axis=1)[order].astype(np.int64),
        "distance": np.concatenate([length, length])[order].astype(np.float32),
        "energy": np.float32(energy),
    }


def _reference_covalent_bonds(atoms, is_oxygen):
    from ase.neighborlist import neighbor_list

    i, j, d, vec = neighbor_list("ijdD", atoms, MAX_COVALENT_OH)
    keep = ~is_oxygen[i] & is_oxygen[j]
    i, j, d, vec = i[keep], j[keep], d[keep], vec[keep]
    order = np.lexsort((d, i))
    i, j, vec = i[order], j[order], vec[order]
    first = np.ones(len(i), bool)
    first[1:] = i[1:] != i[:-1]
    hydrogen, oxygen, o_to_h = i[first], j[first], -vec[first]

    lonely = np.setdiff1d(np.flatnonzero(~is_oxygen), hydrogen)
    if len(lonely):
        raise WaterGraphError(f"H atom(s) {lonely[:5].tolist()} have no O within {MAX_COVALENT_OH} Angstrom")
    h_count = np.bincount(oxygen, minlength=len(atoms))
    wrong = np.flatnonzero(is_oxygen & (h_count != 2))
    if len(wrong):
        raise WaterGraphError(f"O atom(s) {wrong[:5].tolist()} have {h_count[wrong[:5]].tolist()} H instead of two")
    return hydrogen, oxygen, o_to_h


def _reference_hydrogen_bonds(atoms, hydrogen, oxygen, o_to_h):
    from ase.neighborlist import neighbor_list

    donor, acceptor, oo_vec = neighbor_list("ijD", atoms, {("O", "O"): MAX_HBOND_OO})
    bonds_of = {}
    for bond, o in enumerate(oxygen):
        bonds_of.setdefault(o, []).append(bond)
    bond_pairs = np.array([bonds_of[o] for o in range(len(atoms)) if o in bonds_of]).reshape(-1, 2)
    row_of_o = np.full(len(atoms), -1)
    row_of_o[sorted(bonds_of)] = np.arange(len(bonds_of))
    bond = bond_pairs[row_of_o[donor]].reshape(-1)
    pair = np.repeat(np.arange(len(donor)), 2)

    oh, oo = o_to_h[bond], oo_vec[pair]
    cos_angle = np.einsum("ij,ij->i", oh, oo) / (np.linalg.norm(oh, axis=1) * np.linalg.norm(oo, axis=1))
    h_to_acceptor = np.linalg.norm(oo - oh, axis=1)
    ok = cos_angle > math.cos(math.radians(MAX_HBOND_ANGLE))
    bond, pair, h_to_acceptor = bond[ok], pair[ok], h_to_acceptor[ok]

    order = np.lexsort((h_to_acceptor, bond))
    bond, pair, h_to_acceptor = bond[order], pair[order], h_to_acceptor[order]
    first = np.ones(len(bond), bool)
    first[1:] = bond[1:] != bond[:-1]
    return hydrogen[bond[first]], acceptor[pair[first]], h_to_acceptor[first]


@pytest.fixture(scope="module")
def record_features():
    """The ``(name, dtype)`` features the converter writes for structure files."""
    from mpnn.graph_format.features import feature_dtypes

    return feature_dtypes(FEATURES)


def assert_same_outcome(atoms: Atoms, features) -> str:
    """Both implementations reject `atoms` with the same message, or build the same
    graph: every array equal in value and dtype, and the same record bytes. Returns
    "rejected" or "accepted"."""
    try:
        expected = reference_water_graph(atoms, -12.5, "set.xyz:7")
    except WaterGraphError as exc:
        with pytest.raises(WaterGraphError) as raised:
            water_graph(atoms, -12.5, "set.xyz:7")
        assert str(raised.value) == str(exc)
        return "rejected"
    graph = water_graph(atoms, -12.5, "set.xyz:7")
    assert graph.keys() == expected.keys()
    for name, value in expected.items():
        assert np.asarray(graph[name]).dtype == np.asarray(value).dtype, name
        assert np.array_equal(graph[name], value), name
    assert serialize_graph(graph, features) == serialize_graph(expected, features)
    return "accepted"


@pytest.mark.parametrize("path", MINIMA, ids=[p.stem for p in MINIMA])
def test_minimum_graph_is_the_reference_graph(path, record_features):
    assert assert_same_outcome(ase.io.read(path, format="xyz"), record_features) == "accepted"


def _generated(count: int, seed: int, **perturbation) -> list[Atoms]:
    options = water_set.WaterSetOptions(count=count, energy="none", seed=seed, **perturbation)
    minima = water_set.load_minima(options.minima, options.sizes)
    frames = water_set.make_block(water_set.Block(0, 0, count, options, minima))
    return [Atoms(numbers=z, positions=p) for z, p in zip(frames.numbers, frames.positions)]


def test_perturbed_clusters_give_the_reference_graphs(record_features):
    clusters = _generated(200, seed=1, shuffle_fraction=0.3)
    outcomes = [assert_same_outcome(atoms, record_features) for atoms in clusters]
    assert outcomes.count("accepted") >= 190


def test_strained_clusters_near_the_cutoffs_give_the_reference_graphs(record_features):
    """Waters pulled apart or pushed together (O...O around `MAX_HBOND_OO`), their O-H
    bonds stretched to around `MAX_COVALENT_OH`, and large rotations (angles around
    `MAX_HBOND_ANGLE`; some H closer to another water's O): many graphs sit on a cutoff,
    and many structures must be rejected, with the same reason."""
    rng = np.random.default_rng(5)
    clusters = _generated(240, seed=2, rotation=20.0, translation=0.3, noise=0.04, shuffle_fraction=0.0)
    outcomes = []
    near_cutoff = {"O-H": 0, "O...O": 0}
    for atoms in clusters:
        positions = atoms.positions.reshape(-1, 3, 3)  # O, H, H per water (not shuffled)
        oxygen = positions[:, :1]
        centre = oxygen.mean(axis=0)
        spread, stretch = rng.uniform(0.9, 1.15), rng.uniform(1.0, 1.37)
        positions = centre + (oxygen - centre) * spread + (positions - oxygen) * stretch
        strained = Atoms(atoms.numbers, positions=positions.reshape(-1, 3))
        distances = strained.get_all_distances()
        is_oxygen = strained.numbers == 8
        oh = distances[is_oxygen][:, ~is_oxygen]
        oo = distances[is_oxygen][:, is_oxygen]
        near_cutoff["O-H"] += int((np.abs(oh - MAX_COVALENT_OH) < 0.02).sum())
        near_cutoff["O...O"] += int((np.abs(oo - MAX_HBOND_OO) < 0.02).sum())
        order = rng.permutation(len(strained)) if rng.random() < 0.3 else np.arange(len(strained))
        outcomes.append(assert_same_outcome(strained[order], record_features))
    assert 40 <= outcomes.count("rejected") <= 200  # 159 with these seeds
    assert min(near_cutoff.values()) >= 50


def test_periodic_cell_uses_bonds_across_the_boundary_like_the_reference(record_features):
    isolated = ase.io.read(MINIMA[5], format="xyz")  # w15
    atoms = isolated.copy()
    atoms.set_cell(np.ptp(atoms.positions, axis=0) + 2.6)
    atoms.set_pbc(True)
    atoms.wrap()  # the cell boundary cuts waters: some O-H bonds cross it
    assert assert_same_outcome(atoms, record_features) == "accepted"
    # The same water O-H bonds as the isolated cluster, with the same lengths.
    periodic, reference = water_graph(atoms, -1.0), water_graph(isolated, -1.0)
    covalent, reference_covalent = periodic["bond"] == 0, reference["bond"] == 0
    assert np.array_equal(periodic["connectivity"][covalent], reference["connectivity"][reference_covalent])
    np.testing.assert_allclose(periodic["distance"][covalent], reference["distance"][reference_covalent], rtol=1e-6)
    # Without the periodic cell, the cut waters lose their H.
    atoms.set_pbc(False)
    with pytest.raises(WaterGraphError, match="have no O within"):
        water_graph(atoms, -1.0)
