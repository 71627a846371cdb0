"""The reward's penalties on real minima (none) and on networks broken one way at a time."""

from __future__ import annotations

import numpy as np
import pytest

from mpnn.design.graph import COVALENT, HYDROGEN_BOND, WaterNetwork
from mpnn.design.reward import PenaltyWeights, penalties, score
from mpnn.design.search import read_start
from mpnn.predict import ModelError, load_trained
from tests.helpers import WATER


def _minimum(n: int) -> WaterNetwork:
    return read_start(str(WATER / "minima" / f"w{n}_lowest.xyz"))


def _with(network: WaterNetwork, edges, types) -> WaterNetwork:
    return WaterNetwork.build(network.atom, np.concatenate([network.edges, edges]), np.concatenate([network.bond, types]))


def _violations(network: WaterNetwork) -> dict[str, float]:
    return {name: value for name, value in penalties(network).items() if value}


# By the converter's geometric criterion one water of the 22-, 24- and 30-water minima
# accepts three hydrogen bonds (five in all); every other minimum obeys all the rules.
THREE_ACCEPTED = (22, 24, 30)


@pytest.mark.parametrize("n", range(3, 31))
def test_real_minima_break_no_rule_but_a_three_fold_acceptor(n):
    expected = {"over_coordinated": -1.0, "oxygen_accepts": -1.0} if n in THREE_ACCEPTED else {}
    assert _violations(_minimum(n)) == expected


def test_each_broken_rule_costs_its_own_penalty():
    network = _minimum(5)
    water = network.water_of_atom()
    oxygens = np.flatnonzero(network.atom == 0)
    hb = network.hydrogen_bonds
    donor_h = hb[0][network.atom[hb[0]] == 1][0]
    acceptor = hb[0][network.atom[hb[0]] == 0][0]
    other_o = next(o for o in oxygens if o not in (water[donor_h], acceptor))
    assert _violations(_with(network, [[donor_h, other_o]], [HYDROGEN_BOND])) == {"hydrogen_donates": -1.0}
    o1, o2 = oxygens[:2]
    assert _violations(_with(network, [[o1, o2]], [COVALENT])) == {"same_element_bonds": -1.0, "oxygen_covalent": -2.0}
    h1 = np.flatnonzero((network.atom == 1) & (water == o1))[0]
    assert _violations(_with(network, [[h1, o2]], [COVALENT])) == {"hydrogen_covalent": -1.0, "oxygen_covalent": -1.0}
    # A water that loses all its hydrogen bonds is cut off from the cluster.
    lonely = oxygens[0]
    keep = ~((network.bond == HYDROGEN_BOND) & np.any(water[network.edges] == lonely, axis=1))
    cut = WaterNetwork(network.atom, network.edges[keep], network.bond[keep])
    assert _violations(cut) == {"disconnected_waters": -1.0}


def test_accepting_three_and_five_bonds_per_water_are_punished():
    # Six waters (O, H, H each); waters 1 to 5 each donate one H to water 0's O.
    atom = np.tile([0, 1, 1], 6)
    covalent = [[3 * w, 3 * w + k] for w in range(6) for k in (1, 2)]
    hydrogen = [[3 * w + 1, 0] for w in range(1, 6)]
    network = WaterNetwork.build(atom, covalent + hydrogen, [COVALENT] * 12 + [HYDROGEN_BOND] * 5)
    assert _violations(network) == {"over_coordinated": -1.0, "oxygen_accepts": -3.0}


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_reward_is_minus_energy_plus_weighted_penalties(topology_run):
    model = load_trained(str(topology_run))
    good = _minimum(6)
    water = good.water_of_atom()
    h, o = np.flatnonzero(good.atom == 1)[0], np.flatnonzero(good.atom == 0)[-1]
    assert water[h] != o
    bad = _with(good, [[h, o]], [HYDROGEN_BOND])
    weights = PenaltyWeights(hydrogen_donates=7.0, oxygen_accepts=3.0)
    rewards = score([good, bad], model, weights)
    energies = model.predict_graphs([good.to_graph(), bad.to_graph()])
    assert rewards[0].reward == pytest.approx(-energies[0], abs=1e-5) and rewards[0].penalty_free
    expected = -energies[1] + sum(getattr(weights, k) * v for k, v in penalties(bad).items())
    assert rewards[1].reward == pytest.approx(expected, abs=1e-5)
    assert rewards[1].reward < -energies[1] - 2.9  # at least one weighted violation


@pytest.mark.integration  # a small model trained for the session (tests/mpnn/conftest.py)
def test_a_distance_model_cannot_score_networks(distance_run):
    with pytest.raises(ModelError, match="without coordinates"):
        score([_minimum(5)], load_trained(str(distance_run)))


@pytest.mark.integration  # a geometry model trained for the session (tests/mpnn/conftest.py)
def test_a_geometry_model_cannot_score_networks(geometry_run):
    with pytest.raises(ModelError, match="uses atom positions; scoring graphs without coordinates"):
        score([_minimum(5)], load_trained(str(geometry_run)))
