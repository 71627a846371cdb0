"""Water clusters: read structures with ASE and turn each into a graph dict.

Nodes are atoms (O = 0, H = 1). Edges are covalent O-H bonds (type 0) and hydrogen bonds
H...O (type 1), each stored in both directions and sorted by receiver, with the H-O
distance in Angstrom. Energies are in kcal/mol.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

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


class WaterGraphError(ValueError):
    """A structure that is not a valid water cluster (the message says why)."""


def water_graph(atoms: Atoms, energy: float, record_id: str = "") -> dict[str, np.ndarray]:
    """Build the graph dict of a water cluster.

    Args:
        atoms: the cluster; O and H in any order, positions in Angstrom.
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
    symbols = np.array(atoms.get_chemical_symbols())
    others = sorted(set(symbols.tolist()) - set(ATOM_VOCAB))
    if others:
        raise WaterGraphError(f"element(s) other than O/H: {', '.join(others)}")
    if not np.all(np.isfinite(atoms.positions)):
        raise WaterGraphError("non-finite coordinates")
    if energy is None or not math.isfinite(energy):
        raise WaterGraphError(f"energy is {energy}")
    is_oxygen = symbols == "O"
    if not is_oxygen.any():
        raise WaterGraphError("no oxygen atoms")

    hydrogen, oxygen, o_to_h = _covalent_bonds(atoms, is_oxygen)
    hb_hydrogen, hb_acceptor, hb_length = _hydrogen_bonds(atoms, hydrogen, oxygen, o_to_h)

    # Undirected edges between an O end and an H end, then both directions.
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


def _covalent_bonds(atoms: Atoms, is_oxygen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign every H to its nearest O and check that each O has exactly two.

    Returns:
        ``hydrogen [n_H]``, ``oxygen [n_H]`` (atom indices of each O-H bond) and
        ``o_to_h [n_H, 3]``, the O->H vectors in Angstrom.
    """
    # Imported here, not above: it brings in scipy (about 0.1 s), which conversion workers
    # that only see tutorial records (no coordinates) never need.
    from ase.neighborlist import neighbor_list

    i, j, d, vec = neighbor_list("ijdD", atoms, MAX_COVALENT_OH)
    keep = ~is_oxygen[i] & is_oxygen[j]  # i = H, j = O; vec = r_O - r_H
    i, j, d, vec = i[keep], j[keep], d[keep], vec[keep]
    order = np.lexsort((d, i))  # per H, nearest O first
    i, j, vec = i[order], j[order], vec[order]
    first = np.ones(len(i), bool)
    first[1:] = i[1:] != i[:-1]
    hydrogen, oxygen, o_to_h = i[first], j[first], -vec[first]

    lonely = np.setdiff1d(np.flatnonzero(~is_oxygen), hydrogen)
    if len(lonely):
        raise WaterGraphError(
            f"H atom(s) {lonely[:5].tolist()} have no O within {MAX_COVALENT_OH} Angstrom"
        )
    h_count = np.bincount(oxygen, minlength=len(atoms))
    wrong = np.flatnonzero(is_oxygen & (h_count != 2))
    if len(wrong):
        raise WaterGraphError(
            f"O atom(s) {wrong[:5].tolist()} have {h_count[wrong[:5]].tolist()} H instead of two"
        )
    return hydrogen, oxygen, o_to_h


def _hydrogen_bonds(
    atoms: Atoms, hydrogen: np.ndarray, oxygen: np.ndarray, o_to_h: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hydrogen bonds by the Luzar-Chandler criterion (see `MAX_HBOND_OO`).

    Returns:
        ``hydrogen [n_hb]`` (donated H), ``acceptor [n_hb]`` (accepting O) and
        ``length [n_hb]``, the H...O distance in Angstrom.
    """
    from ase.neighborlist import neighbor_list  # see _covalent_bonds

    donor, acceptor, oo_vec = neighbor_list("ijD", atoms, {("O", "O"): MAX_HBOND_OO})
    # Expand each O...O pair to the donor's two O-H bonds.
    bonds_of = {}
    for bond, o in enumerate(oxygen):
        bonds_of.setdefault(o, []).append(bond)
    bond_pairs = np.array([bonds_of[o] for o in range(len(atoms)) if o in bonds_of]).reshape(-1, 2)
    row_of_o = np.full(len(atoms), -1)
    row_of_o[sorted(bonds_of)] = np.arange(len(bonds_of))
    bond = bond_pairs[row_of_o[donor]].reshape(-1)  # [2 * n_pairs]
    pair = np.repeat(np.arange(len(donor)), 2)

    oh, oo = o_to_h[bond], oo_vec[pair]
    cos_angle = np.einsum("ij,ij->i", oh, oo) / (np.linalg.norm(oh, axis=1) * np.linalg.norm(oo, axis=1))
    h_to_acceptor = np.linalg.norm(oo - oh, axis=1)
    ok = cos_angle > math.cos(math.radians(MAX_HBOND_ANGLE))
    bond, pair, h_to_acceptor = bond[ok], pair[ok], h_to_acceptor[ok]

    order = np.lexsort((h_to_acceptor, bond))  # per H, closest acceptor first
    bond, pair, h_to_acceptor = bond[order], pair[order], h_to_acceptor[order]
    first = np.ones(len(bond), bool)
    first[1:] = bond[1:] != bond[:-1]
    return hydrogen[bond[first]], acceptor[pair[first]], h_to_acceptor[first]
