"""`WaterNetwork`: a water cluster as a graph without coordinates, what the design search
edits and scores.

Atoms are O (0) and H (1) as in `data_prep.water.ATOM_VOCAB`; edges are undirected, each
with a type, covalent (0) or hydrogen (1) as in `data_prep.water.BOND_VOCAB`. A network
converts to and from the graph dicts of `mpnn.graph_format.features` (both directions of each edge,
sorted by receiver) and to and from JSON::

    {"atoms": ["O", "H", "H", ...], "edges": [[0, 1, "covalent"], [4, 0, "hydrogen"], ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from data_prep.water import ATOM_VOCAB, BOND_VOCAB

OXYGEN, HYDROGEN = ATOM_VOCAB.index("O"), ATOM_VOCAB.index("H")
COVALENT, HYDROGEN_BOND = BOND_VOCAB.index("covalent"), BOND_VOCAB.index("hydrogen")


@dataclass(frozen=True, eq=False)
class WaterNetwork:
    """A graph of O and H atoms joined by covalent bonds and hydrogen bonds.

    Attributes:
        atom: ``[n_atom] int64`` atom types (O = 0, H = 1).
        edges: ``[n_edges, 2] int64`` undirected edges ``(i, j)`` with ``i < j``, sorted.
        bond: ``[n_edges] int64`` edge types (covalent = 0, hydrogen = 1).
    """

    atom: np.ndarray
    edges: np.ndarray
    bond: np.ndarray

    @classmethod
    def build(cls, atom: Any, edges: Any, bond: Any) -> "WaterNetwork":
        """A network with its edges normalised (``i < j``, sorted, duplicates kept).

        Raises:
            ValueError: unknown atom or bond types, edges outside the atoms or loops.
        """
        atom = np.asarray(atom, np.int64).reshape(-1)
        edges = np.asarray(edges, np.int64).reshape(-1, 2)
        bond = np.asarray(bond, np.int64).reshape(-1)
        if len(bond) != len(edges):
            raise ValueError(f"{len(edges)} edges but {len(bond)} bond types")
        if np.any((atom < 0) | (atom >= len(ATOM_VOCAB))) or np.any((bond < 0) | (bond >= len(BOND_VOCAB))):
            raise ValueError(f"atom types must be in {ATOM_VOCAB}, bond types in {BOND_VOCAB}")
        if edges.size and (edges.min() < 0 or edges.max() >= len(atom)):
            raise ValueError("an edge refers to an atom outside the graph")
        if np.any(edges[:, 0] == edges[:, 1]):
            raise ValueError("an edge joins an atom to itself")
        edges = np.sort(edges, axis=1)
        order = np.lexsort((bond, edges[:, 1], edges[:, 0]))
        return cls(atom, edges[order], bond[order])

    @property
    def n_atom(self) -> int:
        return len(self.atom)

    @property
    def n_waters(self) -> int:
        return int(np.sum(self.atom == OXYGEN))

    @property
    def hydrogen_bonds(self) -> np.ndarray:
        """``[n_hb, 2]`` the hydrogen-bond edges."""
        return self.edges[self.bond == HYDROGEN_BOND]

    def water_of_atom(self) -> np.ndarray:
        """``[n_atom]`` the O each atom belongs to (see `NetworkBatch.water_of_atom`)."""
        return NetworkBatch.of([self]).water_of_atom()

    def to_graph(self) -> dict[str, Any]:
        """The graph dict of `mpnn.graph_format.features` (both directions, sorted by receiver), without
        ``energy`` and ``distance``."""
        receivers = np.concatenate([self.edges[:, 0], self.edges[:, 1]])
        senders = np.concatenate([self.edges[:, 1], self.edges[:, 0]])
        order = np.lexsort((senders, receivers))
        return {
            "n_atom": np.int64(self.n_atom),
            "n_bond": np.int64(2 * len(self.edges)),
            "n_waters": np.int64(self.n_waters),
            "atom": self.atom,
            "bond": np.concatenate([self.bond, self.bond])[order],
            "connectivity": np.stack([receivers, senders], axis=1)[order],
        }

    @classmethod
    def from_graph(cls, graph: Mapping[str, Any]) -> "WaterNetwork":
        """From a graph dict (`mpnn.graph_format.features`; each edge stored in both directions)."""
        connectivity = np.asarray(graph["connectivity"], np.int64).reshape(-1, 2)
        bond = np.asarray(graph["bond"], np.int64)
        one_way = connectivity[:, 0] < connectivity[:, 1]
        return cls.build(graph["atom"], connectivity[one_way], bond[one_way])

    def to_json(self) -> dict[str, Any]:
        return {
            "atoms": [ATOM_VOCAB[a] for a in self.atom],
            "edges": [[int(i), int(j), BOND_VOCAB[b]] for (i, j), b in zip(self.edges, self.bond)],
        }

    @classmethod
    def from_json(cls, content: Mapping[str, Any]) -> "WaterNetwork":
        """From `to_json`'s form (extra keys are ignored).

        Raises:
            ValueError: unknown element or bond type, or a malformed edge.
        """
        try:
            atom = [ATOM_VOCAB.index(symbol) for symbol in content["atoms"]]
            edges = [(int(i), int(j)) for i, j, _ in content["edges"]]
            bond = [BOND_VOCAB.index(kind) for _, _, kind in content["edges"]]
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"not a water network: {type(exc).__name__}: {exc}") from exc
        return cls.build(atom, edges, bond)

    def key(self) -> bytes:
        """A key equal for isomorphic networks (see `NetworkBatch.keys`)."""
        return NetworkBatch.of([self]).keys()[0]

    def save(self, path: str, **extra: Any) -> None:
        with open(path, "w") as handle:
            json.dump({**self.to_json(), "n_waters": self.n_waters, **extra}, handle, indent=1)
            handle.write("\n")


WL_ROUNDS = 4


@dataclass(frozen=True)
class NetworkBatch:
    """Several networks as one disjoint graph, for work on all of them at once (the search
    handles hundreds of candidates per step; one NumPy pass over all of them is about 20x
    faster than one per network).

    Attributes:
        atom: ``[N]`` atom types of all networks, in order.
        edges: ``[M, 2]`` undirected edges, atom indices into the batch.
        bond: ``[M]`` edge types.
        atom_graph, edge_graph: ``[N]``, ``[M]`` the network of each atom and edge.
        n_graphs: number of networks.
    """

    atom: np.ndarray
    edges: np.ndarray
    bond: np.ndarray
    atom_graph: np.ndarray
    edge_graph: np.ndarray
    n_graphs: int

    @classmethod
    def of(cls, networks: Sequence[WaterNetwork]) -> "NetworkBatch":
        n_atoms = np.array([n.n_atom for n in networks], np.int64)
        n_edges = np.array([len(n.edges) for n in networks], np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
        graphs = np.arange(len(networks))
        return cls(
            atom=np.concatenate([n.atom for n in networks]) if networks else np.zeros(0, np.int64),
            edges=np.concatenate([n.edges for n in networks]).reshape(-1, 2) + np.repeat(offsets, n_edges)[:, None]
            if networks else np.zeros((0, 2), np.int64),
            bond=np.concatenate([n.bond for n in networks]) if networks else np.zeros(0, np.int64),
            atom_graph=np.repeat(graphs, n_atoms),
            edge_graph=np.repeat(graphs, n_edges),
            n_graphs=len(networks),
        )

    def water_of_atom(self) -> np.ndarray:
        """``[N]`` the O each atom belongs to: an O itself, an H the O of its first covalent
        O-H bond, -1 for an H without one."""
        water = np.where(self.atom == OXYGEN, np.arange(len(self.atom)), -1)
        covalent = self.edges[self.bond == COVALENT]
        oh = covalent[self.atom[covalent[:, 0]] != self.atom[covalent[:, 1]]]
        if len(oh):
            o_first = self.atom[oh[:, 0]] == OXYGEN
            o_end = np.where(o_first, oh[:, 0], oh[:, 1])
            h_end = np.where(o_first, oh[:, 1], oh[:, 0])
            # Reversed, so that the first bond of each H is the one assigned last.
            water[h_end[::-1]] = o_end[::-1]
        return water

    def keys(self) -> list[bytes]:
        """Per network, a key equal for isomorphic networks (atom and edge types respected):
        its sorted Weisfeiler-Lehman labels after `WL_ROUNDS` rounds. Written here rather
        than taken from networkx (not a dependency) to hash a whole batch in a few NumPy
        passes. Like every WL hash it may give two non-isomorphic graphs the same key,
        which only makes the search skip one of them."""
        labels = _mix(self.atom.astype(np.uint64) + np.uint64(1))
        ends = np.concatenate([self.edges, self.edges[:, ::-1]])
        types = np.concatenate([self.bond, self.bond]).astype(np.uint64)
        for _ in range(WL_ROUNDS):
            # A sum of mixed (type, neighbour label) words: independent of the neighbours' order.
            words = _mix(labels[ends[:, 1]] * np.uint64(3) + types)
            gathered = np.zeros(len(labels), np.uint64)
            np.add.at(gathered, ends[:, 0], words)
            labels = _mix(labels ^ _mix(gathered + np.uint64(0x9E3779B97F4A7C15)))
        order = np.lexsort((labels, self.atom_graph))
        splits = np.cumsum(np.bincount(self.atom_graph, minlength=self.n_graphs))[:-1]
        return [part.tobytes() for part in np.split(labels[order], splits)]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of 64-bit words (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
