"""The graph record features: the one place that names, types and shapes every feature.

`data_prep` writes records with `mpnn.graph_format.example.serialize_graph` of the
:func:`feature_dtypes` below; the `tf.data` loader (`mpnn.data.parse_spec`) reads them.
Both take the specs below, so the writer and reader cannot drift apart. Free of
TensorFlow, so that conversion workers import it without starting TensorFlow.

A *graph dict* (what the converters produce, one per molecule or cluster) maps feature
names to numpy arrays:

- graph-level features are scalars (``n_atom``, ``energy``, ...);
- node-level features have shape ``[n_atom, *inner_shape]``;
- edge-level features have shape ``[n_bond, *inner_shape]``;
- pair-level features have shape ``[n_pair, *inner_shape]``.

Edges are directed and stored in both directions, sorted by receiver;
``connectivity[k] = (receiver, sender)``, node indices local to the graph.

Records with geometry (water structures read with coordinates) also carry the atom
``positions`` (Angstrom), optionally ``forces`` (target unit per Angstrom), and a second
edge set, the *pairs*: every ordered pair of distinct atoms closer than the data set's
cutoff (the manifest's ``geometry``), in both directions and sorted by receiver like the
bonds, ``pair_connectivity[k] = (receiver, sender)``. Models that see geometry compute
distances from the positions along these pairs; the bonds (the topology) stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

import numpy as np

SCHEMA_VERSION = 1
# Protein-ligand records: 36 atom features of the PDBbind scaling study + a ligand flag,
# and the order of the random-walk positional encoding.
N_ATOM_FEATURES = 37
RWPE_ORDER = 20

Level = Literal["graph", "node", "edge", "pair"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a graph record.

    Attributes:
        name: key in the `tf.train.Example`.
        dtype: ``"int64"``, ``"float32"`` or ``"string"``.
        level: ``"graph"`` (one value per graph), ``"node"`` (one row per atom),
            ``"edge"`` (one row per directed bond) or ``"pair"`` (one row per directed
            atom pair within the cutoff).
        inner_shape: trailing shape of one row; ``()`` for a scalar per node/edge.
        description: meaning and units.
    """

    name: str
    dtype: Literal["int64", "float32", "string"]
    level: Level
    inner_shape: tuple[int, ...] = ()
    description: str = ""

    @property
    def row_size(self) -> int:
        """Number of scalars per node/edge (product of `inner_shape`)."""
        return int(np.prod(self.inner_shape, dtype=np.int64))

    def to_json(self) -> dict:
        return {
            "dtype": self.dtype,
            "level": self.level,
            "inner_shape": list(self.inner_shape),
            "description": self.description,
        }


FEATURES: dict[str, FeatureSpec] = {
    s.name: s
    for s in [
        FeatureSpec("record_id", "string", "graph", description="source of the record, e.g. 'w10_lowest.xyz:0'"),
        FeatureSpec("n_atom", "int64", "graph", description="number of nodes (atoms)"),
        FeatureSpec("n_bond", "int64", "graph", description="number of directed edges"),
        FeatureSpec("n_waters", "int64", "graph", description="water clusters: number of water molecules"),
        FeatureSpec("atom", "int64", "node", description="atom type index into the manifest's atom vocabulary"),
        FeatureSpec("bond", "int64", "edge", description="edge type index into the manifest's bond vocabulary"),
        FeatureSpec(
            "connectivity",
            "int64",
            "edge",
            (2,),
            "(receiver, sender) node indices, local to the graph, sorted by receiver",
        ),
        FeatureSpec("distance", "float32", "edge", description="receiver-sender distance, Angstrom (optional)"),
        FeatureSpec("energy", "float32", "graph", description="water clusters: total energy, kcal/mol"),
        FeatureSpec(
            "atom_features",
            "float32",
            "node",
            (N_ATOM_FEATURES,),
            "protein-ligand: per-atom features of the PDBbind study (36) + ligand flag (see data_prep.pdbbind)",
        ),
        FeatureSpec(
            "rwpe",
            "float32",
            "node",
            (RWPE_ORDER,),
            "random-walk positional encoding: diagonal of (D^-1 A)^k, k = 1..RWPE_ORDER",
        ),
        FeatureSpec("affinity", "float32", "graph", description="protein-ligand: -log10(Kd or Ki / M)"),
        FeatureSpec("positions", "float32", "node", (3,), "atom position (x, y, z), Angstrom"),
        FeatureSpec(
            "forces", "float32", "node", (3,), "force on the atom (x, y, z), target unit per Angstrom (kcal/mol/A)"
        ),
        FeatureSpec("n_pair", "int64", "graph", description="number of directed atom pairs within the cutoff"),
        FeatureSpec(
            "pair_connectivity",
            "int64",
            "pair",
            (2,),
            "(receiver, sender) of every ordered pair of atoms closer than the cutoff, sorted by receiver",
        ),
    ]
}

# Features every record has, whatever the data source.
REQUIRED = ("n_atom", "n_bond", "atom", "bond", "connectivity")
# Features of records with geometry (`forces` only when the inputs give them).
GEOMETRY = ("positions", "n_pair", "pair_connectivity")
# Rows of a node / edge / pair feature: the graph-level count feature that gives them.
ROW_COUNTS = {"node": "n_atom", "edge": "n_bond", "pair": "n_pair"}


def feature_specs(names: Iterable[str]) -> dict[str, FeatureSpec]:
    """Look up the specs of `names`, raising ``KeyError`` with the known names."""
    specs = {}
    for name in names:
        if name not in FEATURES:
            raise KeyError(f"unknown record feature {name!r}; the schema knows {sorted(FEATURES)}")
        specs[name] = FEATURES[name]
    missing = [n for n in REQUIRED if n not in specs]
    if missing:
        raise KeyError(f"a record needs the features {list(REQUIRED)}; missing {missing}")
    return specs


def validate_graph(graph: Mapping[str, np.ndarray], names: Iterable[str]) -> None:
    """Check that `graph` has every feature in `names` with the schema's shape.

    Raises:
        ValueError: naming the first feature whose shape or values are wrong.
    """
    n_atom = int(graph["n_atom"])
    for name, spec in feature_specs(names).items():
        if name not in graph:
            raise ValueError(f"graph has no feature {name!r}")
        value = np.asarray(graph[name])
        if spec.level == "graph":
            expected: tuple[int, ...] = ()
        else:
            expected = (int(graph[ROW_COUNTS[spec.level]]), *spec.inner_shape)
        if value.shape != expected:
            raise ValueError(f"feature {name!r} has shape {value.shape}, expected {expected}")
        if spec.dtype == "float32" and not np.all(np.isfinite(value)):
            raise ValueError(f"feature {name!r} has non-finite values")
    for name in ("connectivity", "pair_connectivity"):
        connectivity = np.asarray(graph.get(name, np.zeros((0, 2), np.int64)))
        if len(connectivity) and (connectivity.min() < 0 or connectivity.max() >= n_atom):
            raise ValueError(f"{name} refers to atoms outside the graph")
        if len(connectivity) and np.any(np.diff(connectivity[:, 0]) < 0):
            raise ValueError(f"{name} is not sorted by receiver")


def feature_dtypes(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``(name, dtype)`` of the features `names`, what the record writer
    (`mpnn.graph_format.example.serialize_graph`) needs."""
    return tuple((name, spec.dtype) for name, spec in feature_specs(names).items())


def features_to_json(names: Iterable[str]) -> dict[str, dict]:
    """The manifest's description of the features `names`."""
    return {name: spec.to_json() for name, spec in feature_specs(names).items()}
