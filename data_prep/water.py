"""Water clusters: read structures with ASE and turn each into a graph dict.

Nodes are atoms (O = 0, H = 1). Edges are covalent O-H bonds (type 0) and hydrogen bonds
H...O (type 1), each stored in both directions and sorted by receiver, with the H-O
distance in Angstrom. Energies are in kcal/mol.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

ATOM_VOCAB = ("O", "H")
BOND_VOCAB = ("covalent", "hydrogen")
FEATURES = ("record_id", "n_atom", "n_bond", "n_waters", "atom", "bond", "connectivity", "distance", "energy")

# Covalent O-H: each H belongs to its nearest O, which must lie within this distance.
# Cluster O-H bonds are 0.95-1.05 Angstrom; 1.3 tolerates strained geometries while still
# rejecting an H that belongs to no water.
MAX_COVALENT_OH = 1.3  # Angstrom

# Hydrogen bonds: the geometric criterion of Luzar & Chandler, Nature 379, 55 (1996) and
# J. Chem. Phys. 104, 6546 (1996): donor O and acceptor O closer than 3.5 Angstrom, and the
# angle between the donor's O-H bond and the O...O axis below 30 degrees. Each H donates at
# most one hydrogen bond, to the qualifying acceptor closest to it.
MAX_HBOND_OO = 3.5  # Angstrom
MAX_HBOND_ANGLE = 30.0  # degrees

_ATOMIC_NUMBERS = [chemical_symbols.index(symbol) for symbol in ATOM_VOCAB]  # [O, H]


class WaterGraphError(ValueError):
    """A structure that is not a valid water cluster (the message says why)."""


def water_graph(atoms: Atoms, energy: float, record_id: str = "") -> dict[str, np.ndarray]:
    """Build the graph dict of a water cluster.

    Args:
        atoms: the cluster; O and H in any order, positions in Angstrom. Periodic cells
            (any ``atoms.pbc``) are supported: bonds across the cell boundary count (found
            by ASE's neighbour list; other clusters by a KD-tree, see `bond_candidates`).
        energy: total energy in kcal/mol.
        record_id: where the structure came from (kept in the record).

    Returns:
        graph dict (see `mpnn.graph_format.features`): ``atom [n_atom]`` (O = 0, H = 1), ``bond [n_bond]``
        (covalent = 0, hydrogen = 1), ``connectivity [n_bond, 2]`` (receiver, sender),
        ``distance [n_bond]`` (Angstrom), ``n_atom``, ``n_bond``, ``n_waters`` and
        ``energy`` (kcal/mol).

    Raises:
        WaterGraphError: other elements, non-finite positions or energy, an H with no O
            within `MAX_COVALENT_OH`, or an O without exactly two H.
    """
    numbers = atoms.numbers
    is_oxygen = numbers == _ATOMIC_NUMBERS[0]
    known = is_oxygen | (numbers == _ATOMIC_NUMBERS[1])
    if not known.all():
        others = sorted({chemical_symbols[z] for z in numbers[~known].tolist()})
        raise WaterGraphError(f"element(s) other than O/H: {', '.join(others)}")
    if not np.all(np.isfinite(atoms.positions)):
        raise WaterGraphError("non-finite coordinates")
    if energy is None or not math.isfinite(energy):
        raise WaterGraphError(f"energy is {energy}")
    if not is_oxygen.any():
        raise WaterGraphError("no oxygen atoms")

    oh_pairs, oo_pairs = bond_candidates(atoms, is_oxygen)
    hydrogen, oxygen, o_to_h = _covalent_bonds(oh_pairs, is_oxygen)
    hb_hydrogen, hb_acceptor, hb_length = _hydrogen_bonds(oo_pairs, hydrogen, oxygen, o_to_h)

    # Undirected edges between an O end and an H end, then both directions.
    o_end = np.concatenate([oxygen, hb_acceptor])
    h_end = np.concatenate([hydrogen, hb_hydrogen])
    bond_type = np.concatenate([np.zeros(len(oxygen), np.int64), np.ones(len(hb_acceptor), np.int64)])
    length = np.concatenate([_norm(o_to_h), hb_length])
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


def water_molecules(atoms: Atoms) -> np.ndarray:
    """Atom indices ``[n_waters, 3]`` of each water of the cluster `atoms`, as O, H, H (by
    the covalent bonds of `water_graph`), waters in the order of their O.

    Raises:
        WaterGraphError: `atoms` is not a water cluster (see `water_graph`).
    """
    graph = water_graph(atoms, 0.0)
    receiver, sender = graph["connectivity"].T
    covalent = (graph["bond"] == 0) & (graph["atom"][receiver] == 0)  # O <- H, sorted by O then H
    oxygen = np.flatnonzero(graph["atom"] == 0)
    return np.column_stack([oxygen, sender[covalent].reshape(-1, 2)])


class Pairs(NamedTuple):
    """Ordered atom pairs (`first`, `second`) and the vector between them.

    Attributes:
        first, second: atom indices ``[n_pairs]``.
        vector: ``[n_pairs, 3]``, position of `second` minus position of `first`,
            Angstrom (in a periodic cell, of the image of `second` concerned: each image
            within range makes a pair).
        distance: ``[n_pairs]``, the norm of `vector`, Angstrom.
    """

    first: np.ndarray
    second: np.ndarray
    vector: np.ndarray
    distance: np.ndarray


def bond_candidates(atoms: Atoms, is_oxygen: np.ndarray) -> tuple[Pairs, Pairs]:
    """The atom pairs that may form bonds, in no set order: every H -> O pair closer than
    `MAX_COVALENT_OH`, and every O -> O pair (both directions) closer than `MAX_HBOND_OO`.

    One neighbour search, for the larger of the two cutoffs. Clusters that are not
    periodic use a KD-tree (`scipy.spatial.cKDTree`): for a 50-atom cluster about 0.03
    against 6.5 ms for ASE's general neighbour list, whose bin-grid set-up dominates at
    that size (issue 12). Periodic cells (any ``atoms.pbc``) use ASE's `ase.neighborlist.neighbor_list`,
    which finds every image within range. Both give the same pairs, vectors and distances
    bit for bit: the tree only proposes candidates (within a slightly larger radius, as its
    own distances may differ in the last bit), and the vectors, distances and the
    ``distance < cutoff`` test are ASE's own expressions.

    Args:
        atoms: the cluster (positions in Angstrom).
        is_oxygen: ``[n_atom]`` bool; every other atom is an H.

    Returns:
        the H -> O pairs (`Pairs.first` the H) and the O -> O pairs.
    """
    cutoff = max(MAX_COVALENT_OH, MAX_HBOND_OO)
    if atoms.pbc.any():
        # Imported here, not above: it brings in scipy (about 0.2 s of import), which
        # conversion workers that only see tutorial records (no coordinates) never need.
        from ase.neighborlist import neighbor_list

        i, j, vector, distance = neighbor_list("ijDd", atoms, cutoff)
        oh = ~is_oxygen[i] & is_oxygen[j] & (distance < MAX_COVALENT_OH)
        oo = is_oxygen[i] & is_oxygen[j] & (distance < MAX_HBOND_OO)
        return (
            Pairs(i[oh], j[oh], vector[oh], distance[oh]),
            Pairs(i[oo], j[oo], vector[oo], distance[oo]),
        )
    # Imported here for the same reason; costs nothing in a worker that reads structures
    # (ase.io imports scipy.spatial).
    from scipy.spatial import cKDTree

    positions = atoms.positions
    a, b = cKDTree(positions).query_pairs(cutoff * (1 + 1e-9), output_type="ndarray").T  # a < b
    oxygen_a, oxygen_b = is_oxygen[a], is_oxygen[b]
    mixed = oxygen_a != oxygen_b
    oh = _within(positions, np.where(oxygen_a, b, a)[mixed], np.where(oxygen_a, a, b)[mixed], MAX_COVALENT_OH)
    both = oxygen_a & oxygen_b
    oo = _within(positions, a[both], b[both], MAX_HBOND_OO)
    # The reverse pairs: -(r_b - r_a) is r_a - r_b exactly, and the distance the same.
    oo = Pairs(*(np.concatenate(halves) for halves in zip(oo, (oo.second, oo.first, -oo.vector, oo.distance))))
    return oh, oo


def _within(positions: np.ndarray, first: np.ndarray, second: np.ndarray, cutoff: float) -> Pairs:
    """The pairs (`first`, `second`) whose atoms are closer than `cutoff` (Angstrom)."""
    vector = positions[second] - positions[first]
    distance = _norm(vector)
    keep = distance < cutoff
    return Pairs(first[keep], second[keep], vector[keep], distance[keep])


def _covalent_bonds(oh_pairs: Pairs, is_oxygen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign every H to its nearest O and check that each O has exactly two.

    Args:
        oh_pairs: the H -> O pairs of `bond_candidates`.
        is_oxygen: ``[n_atom]`` bool.

    Returns:
        ``hydrogen [n_H]`` (ascending), ``oxygen [n_H]`` (atom indices of each O-H bond)
        and ``o_to_h [n_H, 3]``, the O->H vectors in Angstrom.
    """
    i, j, vec, d = oh_pairs  # i = H, j = O; vec = r_O - r_H
    order = np.lexsort((j, d, i))  # per H, nearest O first (equal distances: lower O index)
    i, j, vec = i[order], j[order], vec[order]
    first = np.ones(len(i), bool)
    first[1:] = i[1:] != i[:-1]
    hydrogen, oxygen, o_to_h = i[first], j[first], -vec[first]

    has_oxygen = is_oxygen.copy()
    has_oxygen[hydrogen] = True
    lonely = np.flatnonzero(~has_oxygen)
    if len(lonely):
        raise WaterGraphError(
            f"H atom(s) {lonely[:5].tolist()} have no O within {MAX_COVALENT_OH} Angstrom"
        )
    h_count = np.bincount(oxygen, minlength=len(is_oxygen))
    wrong = np.flatnonzero(is_oxygen & (h_count != 2))
    if len(wrong):
        raise WaterGraphError(
            f"O atom(s) {wrong[:5].tolist()} have {h_count[wrong[:5]].tolist()} H instead of two"
        )
    return hydrogen, oxygen, o_to_h


def _hydrogen_bonds(
    oo_pairs: Pairs, hydrogen: np.ndarray, oxygen: np.ndarray, o_to_h: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hydrogen bonds by the Luzar-Chandler criterion (see `MAX_HBOND_OO`).

    Args:
        oo_pairs: the O -> O pairs of `bond_candidates`.
        hydrogen, oxygen, o_to_h: the covalent bonds (see `_covalent_bonds`): every O
            has exactly two.

    Returns:
        ``hydrogen [n_hb]`` (donated H, ascending), ``acceptor [n_hb]`` (accepting O) and
        ``length [n_hb]``, the H...O distance in Angstrom.
    """
    donor, acceptor, oo_vec, _ = oo_pairs  # oo_vec = r_acceptor - r_donor
    # Expand each O...O pair to the donor's two O-H bonds: row o of `bonds_of` holds the
    # two covalent bonds of O atom o (ascending).
    two_bonds = np.argsort(oxygen, kind="stable").reshape(-1, 2)
    bonds_of = np.zeros((oxygen.max(initial=-1) + 1, 2), np.int64)
    bonds_of[oxygen[two_bonds[:, 0]]] = two_bonds
    bond = bonds_of[donor].reshape(-1)  # [2 * n_pairs]
    pair = np.repeat(np.arange(len(donor)), 2)

    oh, oo = o_to_h[bond], oo_vec[pair]
    cos_angle = np.einsum("ij,ij->i", oh, oo) / (_norm(oh) * _norm(oo))
    h_to_acceptor = _norm(oo - oh)
    ok = cos_angle > math.cos(math.radians(MAX_HBOND_ANGLE))
    bond, pair, h_to_acceptor = bond[ok], pair[ok], h_to_acceptor[ok]

    # Per H, closest acceptor first (equal distances: lower acceptor index).
    order = np.lexsort((acceptor[pair], h_to_acceptor, bond))
    bond, pair, h_to_acceptor = bond[order], pair[order], h_to_acceptor[order]
    first = np.ones(len(bond), bool)
    first[1:] = bond[1:] != bond[:-1]
    return hydrogen[bond[first]], acceptor[pair[first]], h_to_acceptor[first]


def _norm(vectors: np.ndarray) -> np.ndarray:
    """Norms ``[n]`` of `vectors` ``[n, 3]``: the expression of `ase.neighborlist` and of
    ``np.linalg.norm(vectors, axis=1)``, to the last bit, without the latter's overhead."""
    return np.sqrt(np.add.reduce(vectors * vectors, axis=1))
