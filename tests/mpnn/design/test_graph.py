"""WaterNetwork: the converter's graphs round-trip, and isomorphic networks share a key."""

from __future__ import annotations

import numpy as np

from data_prep.structures import read_structures
from data_prep.water import water_graph
from mpnn.design.graph import NetworkBatch, WaterNetwork
from mpnn.design.search import read_start
from tests.helpers import WATER

W5 = WATER / "minima" / "w5_lowest.xyz"


def test_the_converters_graph_round_trips():
    structure = next(read_structures(str(W5)))
    graph = water_graph(structure.atoms, structure.energy)
    network = WaterNetwork.from_graph(graph)
    assert network.n_waters == 5 and len(network.edges) == graph["n_bond"] // 2
    again = network.to_graph()
    for name in ("atom", "bond", "connectivity"):
        np.testing.assert_array_equal(again[name], graph[name])
    assert WaterNetwork.from_json(network.to_json()).key() == network.key()


def test_keys_ignore_atom_order_and_see_a_missing_bond():
    network = read_start(str(W5))
    permutation = np.random.default_rng(0).permutation(network.n_atom)
    inverse = np.argsort(permutation)  # new index of each old atom
    shuffled = WaterNetwork.build(network.atom[permutation], inverse[network.edges], network.bond)
    assert shuffled.key() == network.key()
    fewer = WaterNetwork(network.atom, network.edges[1:], network.bond[1:])
    assert fewer.key() != network.key()
    assert NetworkBatch.of([network, fewer, shuffled]).keys() == [network.key(), fewer.key(), network.key()]


def test_water_of_atom_names_each_hydrogens_oxygen():
    network = read_start(str(W5))
    water = network.water_of_atom()
    assert sorted(np.bincount(water, minlength=network.n_atom)[network.atom == 0].tolist()) == [3] * 5
