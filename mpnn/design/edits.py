"""One-step edits of a water network, the moves of the design search.

- add a water (O and two covalently bonded H) that donates and/or accepts hydrogen bonds
  to existing waters: 1 to `new_water_bonds` of them, donating from its H to distinct
  O, accepting from any existing H;
- add a hydrogen bond from an H to the O of another water that it is not bonded to;
- remove a hydrogen bond, unless that leaves the waters in two clusters.

Edits may break the rules the reward's penalties punish (an H donating twice, an O
accepting three, a water with five hydrogen bonds): the reward, not the edit, keeps the
search away from them, as in the design slides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from mpnn.design.graph import COVALENT, HYDROGEN, HYDROGEN_BOND, OXYGEN, WaterNetwork


@dataclass(frozen=True)
class Edit:
    """A proposed network and what was changed to get it (e.g. ``"add H bond H7->O3"``)."""

    description: str
    network: WaterNetwork


def one_step_edits(network: WaterNetwork, max_waters: int, new_water_bonds: int = 2) -> list[Edit]:
    """Every one-step edit of `network` (see the module docstring); waters are added only
    while the network has fewer than `max_waters`."""
    edits = _add_hydrogen_bonds(network) + _remove_hydrogen_bonds(network)
    if network.n_waters < max_waters:
        edits += _add_water(network, new_water_bonds)
    return edits


def _with_edges(network: WaterNetwork, atom: np.ndarray, new_edges: list[tuple[int, int]], new_types: list[int]) -> WaterNetwork:
    return WaterNetwork.build(
        atom,
        np.concatenate([network.edges, np.asarray(new_edges, np.int64).reshape(-1, 2)]),
        np.concatenate([network.bond, np.asarray(new_types, np.int64)]),
    )


def _add_hydrogen_bonds(network: WaterNetwork) -> list[Edit]:
    water = network.water_of_atom()
    existing = {tuple(pair) for pair in network.hydrogen_bonds.tolist()}
    edits = []
    for h in np.flatnonzero(network.atom == HYDROGEN):
        for o in np.flatnonzero(network.atom == OXYGEN):
            pair = (min(h, o), max(h, o))
            if water[h] != o and pair not in existing:
                edits.append(Edit(f"add H bond H{h}->O{o}", _with_edges(network, network.atom, [pair], [HYDROGEN_BOND])))
    return edits


def _remove_hydrogen_bonds(network: WaterNetwork) -> list[Edit]:
    water = network.water_of_atom()
    hb_rows = np.flatnonzero(network.bond == HYDROGEN_BOND)
    edits = []
    for row in hb_rows:
        keep = np.ones(len(network.edges), bool)
        keep[row] = False
        others = network.edges[hb_rows[hb_rows != row]]
        if not _waters_connected(water, others, np.flatnonzero(network.atom == OXYGEN)):
            continue
        i, j = network.edges[row]
        edits.append(Edit(f"remove H bond {i}-{j}", WaterNetwork(network.atom, network.edges[keep], network.bond[keep])))
    return edits


def _waters_connected(water: np.ndarray, hydrogen_bonds: np.ndarray, oxygens: np.ndarray) -> bool:
    """Whether the hydrogen bonds join all waters (named by their O) into one cluster."""
    parent = {int(o): int(o) for o in oxygens}

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in water[hydrogen_bonds].tolist():
        if a >= 0 and b >= 0:
            parent[root(a)] = root(b)
    return len({root(o) for o in parent}) == 1


def _add_water(network: WaterNetwork, new_water_bonds: int) -> list[Edit]:
    n = network.n_atom
    o_new, h_new = n, (n + 1, n + 2)
    atom = np.concatenate([network.atom, [OXYGEN, HYDROGEN, HYDROGEN]])
    covalent = [(o_new, h_new[0]), (o_new, h_new[1])]
    oxygens = np.flatnonzero(network.atom == OXYGEN).tolist()
    hydrogens = np.flatnonzero(network.atom == HYDROGEN).tolist()
    edits = []
    for n_donated in range(0, min(2, new_water_bonds) + 1):
        for n_accepted in range(0, min(2, new_water_bonds - n_donated) + 1):
            if n_donated + n_accepted == 0:
                continue
            for acceptors in itertools.combinations(oxygens, n_donated):
                for donors in itertools.combinations(hydrogens, n_accepted):
                    hbonds = [(h_new[k], o) for k, o in enumerate(acceptors)] + [(h, o_new) for h in donors]
                    description = "add water" + "".join(f", donates to O{o}" for o in acceptors)
                    description += "".join(f", accepts from H{h}" for h in donors)
                    edits.append(Edit(description, _with_edges(
                        network, atom, covalent + hbonds, [COVALENT, COVALENT] + [HYDROGEN_BOND] * len(hbonds)
                    )))
    return edits
