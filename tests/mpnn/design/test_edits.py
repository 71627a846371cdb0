"""The one-step edits of the 5-water minimum: how many of each kind, and what they change."""

from __future__ import annotations

from math import comb

import numpy as np

from mpnn.design.edits import one_step_edits
from mpnn.design.graph import HYDROGEN_BOND
from mpnn.design.reward import penalties
from mpnn.design.search import read_start
from tests.helpers import WATER


def test_edits_of_the_five_water_minimum():
    network = read_start(str(WATER / "minima" / "w5_lowest.xyz"))
    n_hb = len(network.hydrogen_bonds)
    edits = one_step_edits(network, max_waters=6)
    kinds = {"add water": [], "add H bond": [], "remove H bond": []}
    for edit in edits:
        kinds[next(k for k in kinds if edit.description.startswith(k))].append(edit)
    # 10 H x 4 O of other waters, minus the existing bonds.
    assert len(kinds["add H bond"]) == 10 * 4 - n_hb
    assert all(len(e.network.hydrogen_bonds) == n_hb + 1 for e in kinds["add H bond"])
    # 1 or 2 bonds: donate to 1 or 2 of 5 O, accept from 1 or 2 of 10 H, or one of each.
    assert len(kinds["add water"]) == 5 + 10 + comb(5, 2) + 5 * 10 + comb(10, 2)
    for edit in kinds["add water"]:
        assert edit.network.n_waters == 6 and len(edit.network.hydrogen_bonds) - n_hb in (1, 2)
        assert penalties(edit.network)["disconnected_waters"] == 0
    # The cyclic pentamer: removing any one of its 5 bonds keeps the ring connected.
    assert n_hb == 5 and len(kinds["remove H bond"]) == 5
    assert not one_step_edits(network, max_waters=5)[-1].description.startswith("add water")


def test_removing_a_bridge_is_not_proposed():
    network = read_start(str(WATER / "minima" / "w5_lowest.xyz"))
    ring_bond = np.flatnonzero(network.bond == HYDROGEN_BOND)[0]
    keep = np.arange(len(network.edges)) != ring_bond
    chain = type(network)(network.atom, network.edges[keep], network.bond[keep])
    assert not [e for e in one_step_edits(chain, 5) if e.description.startswith("remove")]
