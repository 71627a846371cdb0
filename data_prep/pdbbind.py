"""PDBbind protein-ligand complexes: read a complex with RDKit and turn it into a graph dict.

A complex is a directory ``<pdbid>/`` holding ``<pdbid>_ligand.sdf`` (or
``<pdbid>_ligand.mol2``) and ``<pdbid>_pocket.pdb``. Nodes are the heavy atoms of the
ligand, then of the pocket (hydrogens too on request); pocket waters and ions are kept as
PDBbind wrote them. Every pair of atoms within a cutoff (Angstrom) is an edge, in both
directions, typed intra-ligand / intra-protein / ligand-protein, with its length in
Angstrom. Atom features follow the PDBbind scaling study (`ATOM_FEATURE_NAMES`) and all
chemistry (hybridisation, aromaticity, rings, Gasteiger charges, donors, acceptors,
hydrophobes) is RDKit's perception. The target is the affinity -log10(K / M).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import ChemicalFeatures, rdPartialCharges
from scipy import sparse
from scipy.spatial import cKDTree

from mpnn.graph_format.features import N_ATOM_FEATURES, RWPE_ORDER, validate_graph

ELEMENT_VOCAB = ("B", "C", "N", "O", "F", "P", "S", "other")
BOND_VOCAB = ("intra-ligand", "intra-protein", "ligand-protein")
FEATURES = (
    "record_id", "n_atom", "n_bond", "atom", "bond", "connectivity", "distance", "atom_features", "rwpe", "affinity",
)
DEFAULT_CUTOFF = 2.5  # Angstrom, as in the study

# Hybridisation classes of the study; RDKit calls square planar SP2D. S, UNSPECIFIED and
# OTHER fall into "other".
_HYBRIDISATION = {
    Chem.HybridizationType.SP: 1,
    Chem.HybridizationType.SP2: 2,
    Chem.HybridizationType.SP3: 3,
    Chem.HybridizationType.SP2D: 4,
    Chem.HybridizationType.SP3D: 5,
    Chem.HybridizationType.SP3D2: 6,
}
_MAX_DEGREE = 6  # degrees 0..5, then "6 or more"
_DEGREES = [str(d) for d in range(_MAX_DEGREE)] + [f"{_MAX_DEGREE}+"]
# The atom features, in column order. The study's list (element 8, hybridisation 7, heavy
# and hetero degree 7 each, Gasteiger charge, hydrophobic, aromatic, acceptor, donor, ring)
# has 35 columns, one short of the 36 that `mpnn.graph_format.features.N_ATOM_FEATURES` (37) reserves
# before the ligand flag; the number of attached hydrogens fills that column, since
# heavy-atom graphs otherwise lose it.
ATOM_FEATURE_NAMES = (
    *(f"element_{e}" for e in ELEMENT_VOCAB),
    *(f"hybridisation_{h}" for h in ("other", "sp", "sp2", "sp3", "square_planar", "sp3d", "sp3d2")),
    *(f"heavy_degree_{d}" for d in _DEGREES),  # heavy-atom neighbours
    *(f"hetero_degree_{d}" for d in _DEGREES),  # neighbours other than C and H
    "gasteiger_charge",  # elementary charges; NaN/inf -> 0
    "hydrophobic",  # RDKit BaseFeatures.fdef family Hydrophobe
    "aromatic",
    "hbond_acceptor",  # family Acceptor
    "hbond_donor",  # family Donor
    "in_ring",
    "hydrogen_count",  # attached H, explicit + implicit (not in the study's list; see above)
    "ligand",  # 1 ligand atom, 0 pocket atom
)

MAX_COORDINATE = 1e4  # Angstrom; anything larger is a broken file
_PARTIAL_SANITISATION = (
    Chem.SANITIZE_FINDRADICALS
    | Chem.SANITIZE_SETAROMATICITY
    | Chem.SANITIZE_SETCONJUGATION
    | Chem.SANITIZE_SETHYBRIDIZATION
    | Chem.SANITIZE_SYMMRINGS
)


class ComplexError(ValueError):
    """A complex that cannot become a graph.

    The message is ``"<reason>: <detail>"``; `reason` is a short category (``"missing
    file"``, ``"unreadable ligand"``, ...) and `path` the file or directory concerned.
    """

    def __init__(self, reason: str, detail: str, path: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.path = reason, path


@dataclass(frozen=True)
class Molecule:
    """A molecule read by RDKit, with how it was read (``note`` is None when fully sanitised)."""

    mol: Chem.Mol
    path: str
    note: str | None


def complex_files(directory: str) -> dict[str, str]:
    """Paths of ``ligand.sdf``, ``ligand.mol2`` and ``pocket.pdb`` of the complex in
    `directory`: ``<code>_<kind>`` matched in any case (``4YEF/4yef_ligand.sdf`` and
    ``4yef/4YEF_LIGAND.SDF`` both count; PDB codes are case-insensitive). A file that is
    not there gets its lower-case path (whose absence the reader reports)."""
    code = os.path.basename(os.path.normpath(directory)).lower()
    try:
        present = {name.lower(): name for name in sorted(os.listdir(directory), reverse=True)}
    except OSError:
        present = {}
    names = {kind: f"{code}_{kind}" for kind in ("ligand.sdf", "ligand.mol2", "pocket.pdb")}
    return {kind: os.path.join(directory, present.get(name, name)) for kind, name in names.items()}


# A ligand whose closest atom is farther than this from every pocket atom is not in the
# pocket (coordinates from another frame, or the wrong files): skipped. This is a sanity
# check, not the edge cutoff: at the study's 2.5 Angstrom heavy-atom cutoff most complexes
# have no ligand-protein edge (contacts are about 2.6-4 Angstrom), which is allowed.
MAX_LIGAND_POCKET_GAP = 4.5  # Angstrom


def complex_graph(
    directory: str, affinity: float | None, cutoff: float = DEFAULT_CUTOFF, hydrogens: bool = False
) -> dict[str, np.ndarray]:
    """Build the graph dict of the complex in `directory` (named by its PDB code).

    Args:
        directory: ``.../<pdbid>/`` with the ligand SDF or MOL2 and the pocket PDB.
        affinity: -log10(K / M) from the index; None if the index has none.
        cutoff: atoms at most this far apart (Angstrom) are joined by an edge.
        hydrogens: keep hydrogen atoms as nodes (element "other"); default heavy atoms only.

    Returns:
        graph dict (see `mpnn.graph_format.features`): ``atom [n_atom]`` (index into `ELEMENT_VOCAB`),
        ``atom_features [n_atom, 37]`` (`ATOM_FEATURE_NAMES`), ``rwpe [n_atom, 20]``,
        ``bond [n_bond]`` (index into `BOND_VOCAB`), ``connectivity [n_bond, 2]``
        (receiver, sender; sorted by receiver, then sender), ``distance [n_bond]``
        (Angstrom), ``n_atom``, ``n_bond``, ``affinity`` (-log10(K / M)), ``record_id``
        (PDB code, lower case), and ``note`` (str or None: what had to be worked around).

    Raises:
        ComplexError: no affinity, a missing or unreadable file, absurd coordinates, no
            edge at all, or a ligand that is not in its pocket (`MAX_LIGAND_POCKET_GAP`).
    """
    code = os.path.basename(os.path.normpath(directory)).lower()  # the index's and core set's case
    if affinity is None or not np.isfinite(affinity):
        raise ComplexError("no affinity", f"{code} has no affinity in the index files", directory)
    files = complex_files(directory)
    ligand = read_ligand(files["ligand.sdf"], files["ligand.mol2"])
    pocket = read_pocket(files["pocket.pdb"])

    parts = [_atoms(m, is_ligand, hydrogens) for m, is_ligand in ((ligand, True), (pocket, False))]
    positions = np.concatenate([p[0] for p in parts])
    element = np.concatenate([p[1] for p in parts])
    features = np.concatenate([p[2] for p in parts])
    is_ligand = np.arange(len(positions)) < len(parts[0][0])

    receivers, senders, distance = neighbour_pairs(positions, cutoff)
    if not len(receivers):
        raise ComplexError("no edges", f"no two atoms within {cutoff} Angstrom", directory)
    bond = np.where(is_ligand[receivers] == is_ligand[senders], np.where(is_ligand[receivers], 0, 1), 2)
    closest = cKDTree(positions[~is_ligand]).query(positions[is_ligand], k=1)[0].min()
    if closest > MAX_LIGAND_POCKET_GAP:
        detail = f"ligand is {closest:.1f} Angstrom from the nearest pocket atom (> {MAX_LIGAND_POCKET_GAP})"
        raise ComplexError("ligand not in pocket", detail, directory)

    graph = {
        "record_id": code,
        "n_atom": np.int64(len(positions)),
        "n_bond": np.int64(len(receivers)),
        "atom": element,
        "atom_features": features,
        "rwpe": random_walk_encoding(len(positions), receivers, senders),
        "bond": bond.astype(np.int64),
        "connectivity": np.stack([receivers, senders], axis=1),
        "distance": distance,
        "affinity": np.float32(affinity),
    }
    validate_graph(graph, FEATURES)
    notes = [n for n in (ligand.note, pocket.note) if n]
    graph["note"] = "; ".join(notes) if notes else None
    return graph


def read_ligand(sdf: str, mol2: str) -> Molecule:
    """Read the ligand: a fully sanitised molecule from the SDF, else from the MOL2, else a
    partially sanitised one (SDF, then MOL2).

    Raises:
        ComplexError: neither file exists, or RDKit reads neither.
    """
    existing = [p for p in (sdf, mol2) if os.path.exists(p)]
    if not existing:
        raise ComplexError("missing file", f"neither {sdf} nor {mol2} exists", sdf)
    readers = {sdf: Chem.MolFromMolFile, mol2: Chem.MolFromMol2File}
    for sanitize in (True, False):
        for path in existing:
            molecule = _read(readers[path], path, sanitize, "ligand")
            if molecule is not None:
                return molecule
    raise ComplexError("unreadable ligand", f"RDKit cannot read {' or '.join(existing)}", existing[0])


def read_pocket(pdb: str) -> Molecule:
    """Read the pocket PDB (sanitised, else partially sanitised).

    Raises:
        ComplexError: the file is missing or RDKit cannot read it.
    """
    if not os.path.exists(pdb):
        raise ComplexError("missing file", f"{pdb} does not exist", pdb)
    for sanitize in (True, False):
        molecule = _read(Chem.MolFromPDBFile, pdb, sanitize, "pocket")
        if molecule is not None:
            return molecule
    raise ComplexError("unreadable pocket", f"RDKit cannot read {pdb}", pdb)


def _read(reader: Callable[..., Chem.Mol | None], path: str, sanitize: bool, what: str) -> Molecule | None:
    """Read `path` keeping hydrogens; without `sanitize`, apply the sanitisation steps that
    perception needs (rings, aromaticity, conjugation, hybridisation) and tolerate failures."""
    with rdBase.BlockLogs():
        mol = reader(path, sanitize=sanitize, removeHs=False)
        if mol is None or mol.GetNumAtoms() == 0 or mol.GetNumConformers() == 0:
            return None
        if not sanitize:
            mol.UpdatePropertyCache(strict=False)
            Chem.SanitizeMol(mol, _PARTIAL_SANITISATION, catchErrors=True)
    notes = [f"{what} from mol2"] if path.endswith(".mol2") else []
    notes += [] if sanitize else [f"{what} partially sanitised"]
    return Molecule(mol, path, ", ".join(notes) or None)


def _atoms(molecule: Molecule, is_ligand: bool, hydrogens: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``[n, 3]`` (Angstrom), element indices ``[n]`` and features ``[n, 37]`` of
    the atoms of `molecule` that become nodes (heavy atoms, plus H with `hydrogens`).

    Raises:
        ComplexError: non-finite, huge (> `MAX_COORDINATE`) or all-zero coordinates.
    """
    mol = molecule.mol
    positions = mol.GetConformer().GetPositions()
    if not np.all(np.isfinite(positions)) or np.abs(positions).max() > MAX_COORDINATE or not positions.any():
        detail = f"non-finite, huge or all-zero coordinates in {molecule.path}"
        raise ComplexError("bad coordinates", detail, molecule.path)
    keep = np.array([hydrogens or a.GetAtomicNum() != 1 for a in mol.GetAtoms()])
    if not keep.any():
        raise ComplexError("no heavy atoms", f"{molecule.path} has only hydrogen atoms", molecule.path)
    features = atom_features(mol, is_ligand)[keep]
    element = np.argmax(features[:, : len(ELEMENT_VOCAB)], axis=1).astype(np.int64)
    return positions[keep], element, features


def atom_features(mol: Chem.Mol, is_ligand: bool) -> np.ndarray:
    """The `ATOM_FEATURE_NAMES` of every atom of `mol`: ``[n_atoms, 37]`` float32.

    Degrees count neighbours in `mol` (explicit hydrogens are never heavy or hetero
    neighbours); Gasteiger charges use explicit and implicit hydrogens.
    """
    n = mol.GetNumAtoms()
    features = np.zeros((n, N_ATOM_FEATURES), np.float32)
    rdPartialCharges.ComputeGasteigerCharges(mol, throwOnParamFailure=False)
    column = {name: i for i, name in enumerate(ATOM_FEATURE_NAMES)}
    element0, hybrid0 = column["element_B"], column["hybridisation_other"]
    heavy0, hetero0 = column["heavy_degree_0"], column["hetero_degree_0"]
    for atom in mol.GetAtoms():
        i = atom.GetIdx()
        symbol = atom.GetSymbol()
        element = ELEMENT_VOCAB.index(symbol) if symbol in ELEMENT_VOCAB[:-1] else len(ELEMENT_VOCAB) - 1
        neighbours = [a.GetAtomicNum() for a in atom.GetNeighbors()]
        heavy = sum(z > 1 for z in neighbours)
        hetero = sum(z not in (1, 6) for z in neighbours)
        charge = atom.GetDoubleProp("_GasteigerCharge") if atom.HasProp("_GasteigerCharge") else 0.0
        features[i, element0 + element] = 1
        features[i, hybrid0 + _HYBRIDISATION.get(atom.GetHybridization(), 0)] = 1
        features[i, heavy0 + min(heavy, _MAX_DEGREE)] = 1
        features[i, hetero0 + min(hetero, _MAX_DEGREE)] = 1
        features[i, column["gasteiger_charge"]] = charge if np.isfinite(charge) else 0.0
        features[i, column["aromatic"]] = atom.GetIsAromatic()
        features[i, column["in_ring"]] = atom.IsInRing()
        features[i, column["hydrogen_count"]] = atom.GetTotalNumHs(includeNeighbors=True)
    for family, name in (("Hydrophobe", "hydrophobic"), ("Acceptor", "hbond_acceptor"), ("Donor", "hbond_donor")):
        for feature in _feature_factory().GetFeaturesForMol(mol, includeOnly=family):
            features[list(feature.GetAtomIds()), column[name]] = 1
    features[:, column["ligand"]] = float(is_ligand)
    return features


@functools.lru_cache(maxsize=1)
def _feature_factory() -> ChemicalFeatures.MolChemicalFeatureFactory:
    """RDKit's feature factory from ``BaseFeatures.fdef`` (built once per process)."""
    return ChemicalFeatures.BuildFeatureFactory(os.path.join(RDConfig.RDDataDir, "BaseFeatures.fdef"))


def neighbour_pairs(positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges between atoms at most `cutoff` apart (Angstrom), found with a k-d tree.

    Args:
        positions: ``[n, 3]`` Angstrom.

    Returns:
        ``receivers [E]``, ``senders [E]`` (int64; both directions, sorted by receiver then
        sender) and ``distance [E]`` (float32, Angstrom).
    """
    pairs = cKDTree(positions).query_pairs(cutoff, output_type="ndarray").astype(np.int64)
    receivers = np.concatenate([pairs[:, 0], pairs[:, 1]])
    senders = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.lexsort((senders, receivers))
    receivers, senders = receivers[order], senders[order]
    distance = np.linalg.norm(positions[receivers] - positions[senders], axis=1).astype(np.float32)
    return receivers, senders, distance


def random_walk_encoding(
    n_atom: int, receivers: np.ndarray, senders: np.ndarray, order: int = RWPE_ORDER
) -> np.ndarray:
    """Random-walk positional encoding: ``[n_atom, order]`` float32, column k-1 is the
    diagonal of ``(D^-1 A)^k`` (the probability of returning after k steps), k = 1..order.

    ``A`` is the (symmetric, unweighted) adjacency of the edges and ``D`` its degree matrix;
    isolated atoms get zero rows.
    """
    adjacency = sparse.csr_matrix((np.ones(len(receivers)), (receivers, senders)), shape=(n_atom, n_atom))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    walk = (sparse.diags(inverse) @ adjacency).tocsr()
    encoding = np.zeros((n_atom, order), np.float32)
    power = sparse.identity(n_atom, format="csr")
    for k in range(order):
        power = power @ walk
        encoding[:, k] = power.diagonal()
    return encoding
