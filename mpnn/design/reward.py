"""The graph-theoretic reward of the ExaLearn design slides ("Developing Reward Functions via
Graph-Theoretic Chemical Descriptors", "Introducing Punishments into the Reward").

    reward = -(surrogate energy) + sum_k weight_k * penalty_k

Each penalty is zero for a chemically sound water network and negative otherwise; D(v) is
the hydrogen-bond degree of water v in the water graph (waters as nodes, one edge per
hydrogen bond between two waters):

- ``disconnected_waters``: -|{v : D(v) = 0}|, waters with no hydrogen bond (when there are
  two waters or more);
- ``over_coordinated``: -sum_v relu(D(v) - 4), more than 4 hydrogen bonds on a water;
- ``same_element_bonds``: minus the number of O-O and H-H edges (of either type);
- ``oxygen_covalent``: minus the number of O without exactly 2 covalent bonds;
- ``hydrogen_covalent``: minus the number of H without exactly 1 covalent bond;
- ``oxygen_accepts``: -sum_O relu(accepted - 2), an O accepting more than 2 hydrogen bonds;
- ``hydrogen_donates``: -sum_H relu(donated - 1), an H donating more than 1.

The penalties need only atoms, bond types and connectivity, so the reward scores networks
without coordinates, with a surrogate that needs none (a model trained without distances).
Energies and the reward are in the surrogate's unit (kcal/mol for water clusters); the
weights convert one violation into that unit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np

from mpnn.design.graph import COVALENT, HYDROGEN, HYDROGEN_BOND, OXYGEN, NetworkBatch, WaterNetwork
from mpnn.predict import ModelError, TrainedModel

# Above the few kcal/mol a hydrogen bond is worth to the surrogate, so that no violation
# pays for itself by lowering the predicted energy.
DEFAULT_WEIGHT = 20.0


@dataclass(frozen=True)
class PenaltyWeights:
    """Weight of each penalty (reward units per violation; see the module docstring)."""

    disconnected_waters: float = DEFAULT_WEIGHT
    over_coordinated: float = DEFAULT_WEIGHT
    same_element_bonds: float = DEFAULT_WEIGHT
    oxygen_covalent: float = DEFAULT_WEIGHT
    hydrogen_covalent: float = DEFAULT_WEIGHT
    oxygen_accepts: float = DEFAULT_WEIGHT
    hydrogen_donates: float = DEFAULT_WEIGHT

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def penalties(network: WaterNetwork) -> dict[str, float]:
    """The penalties of `network`, each zero or negative (see the module docstring)."""
    return batch_penalties([network])[0]


def batch_penalties(networks: Sequence[WaterNetwork]) -> list[dict[str, float]]:
    """`penalties` of each network, computed for all of them in one pass."""
    batch = NetworkBatch.of(networks)
    atom, edges, bond = batch.atom, batch.edges, batch.bond
    n, graphs = len(atom), batch.n_graphs
    is_o, is_h = atom == OXYGEN, atom == HYDROGEN
    same = atom[edges[:, 0]] == atom[edges[:, 1]]
    covalent_degree = np.bincount(edges[bond == COVALENT].reshape(-1), minlength=n)

    hb = edges[(bond == HYDROGEN_BOND) & ~same]
    h_first = atom[hb[:, 0]] == HYDROGEN
    donated = np.bincount(np.where(h_first, hb[:, 0], hb[:, 1]), minlength=n)
    accepted = np.bincount(np.where(h_first, hb[:, 1], hb[:, 0]), minlength=n)

    # Water graph: each hydrogen bond (of any element pair) between atoms of two waters.
    water = batch.water_of_atom()
    all_hb = edges[bond == HYDROGEN_BOND]
    wa, wb = water[all_hb[:, 0]], water[all_hb[:, 1]]
    between = (wa != wb) & (wa >= 0) & (wb >= 0)
    degree = np.bincount(np.concatenate([wa[between], wb[between]]), minlength=n)  # per O atom

    def per_graph(values: np.ndarray, where: np.ndarray) -> np.ndarray:
        return -np.bincount(batch.atom_graph[where], weights=values[where], minlength=graphs)

    waters = np.bincount(batch.atom_graph[is_o], minlength=graphs)
    columns = {
        "disconnected_waters": np.where(waters > 1, per_graph((degree == 0).astype(float), is_o), 0.0),
        "over_coordinated": per_graph(np.maximum(degree - 4, 0).astype(float), is_o),
        "same_element_bonds": -np.bincount(batch.edge_graph[same], minlength=graphs).astype(float),
        "oxygen_covalent": per_graph((covalent_degree != 2).astype(float), is_o),
        "hydrogen_covalent": per_graph((covalent_degree != 1).astype(float), is_h),
        "oxygen_accepts": per_graph(np.maximum(accepted - 2, 0).astype(float), is_o),
        "hydrogen_donates": per_graph(np.maximum(donated - 1, 0).astype(float), is_h),
    }
    # + 0.0 turns the -0.0 of an empty sum into 0.0.
    return [{name: float(values[index]) + 0.0 for name, values in columns.items()} for index in range(graphs)]


@dataclass(frozen=True)
class Reward:
    """The reward of one network and its parts (surrogate units).

    Attributes:
        reward: ``-energy + sum(weights * penalties)``.
        energy: the surrogate's energy.
        penalties: each penalty (zero or negative), unweighted.
    """

    reward: float
    energy: float
    penalties: dict[str, float]

    @property
    def penalty_free(self) -> bool:
        return all(value == 0 for value in self.penalties.values())

    def to_json(self) -> dict:
        return asdict(self)


def check_surrogate(model: TrainedModel) -> None:
    """Raise `ModelError` unless `model` can score networks without coordinates."""
    if model.needs_coordinates:
        reads = "interatomic distances" if model.uses_distance else "atom positions"
        raise ModelError(
            f"{model.source} uses {reads}; scoring graphs without coordinates needs a "
            "model trained without them (e.g. on the tutorial's topology-only records)"
        )


def score(
    networks: Sequence[WaterNetwork], model: TrainedModel, weights: PenaltyWeights = PenaltyWeights()
) -> list[Reward]:
    """Rewards of `networks`, with one batched call of the surrogate `model`."""
    check_surrogate(model)
    energies = model.predict_graphs([network.to_graph() for network in networks])
    rewards = []
    for parts, energy in zip(batch_penalties(networks), energies):
        total = -float(energy) + sum(getattr(weights, name) * value for name, value in parts.items())
        rewards.append(Reward(total, float(energy), parts))
    return rewards
