"""Algorithm 1 from the 5-water minimum with a small topology model, and mpnn-design."""

from __future__ import annotations

import json

import pytest

from mpnn.design.reward import score
from mpnn.cli.design import main
from mpnn.design.search import SearchOptions, read_start, search
from mpnn.predict import TrainedModel, load_trained
from tests.helpers import WATER

pytestmark = pytest.mark.integration  # every test uses a small model trained for the session (tests/mpnn/conftest.py)

W5 = WATER / "minima" / "w5_lowest.xyz"


class CountingModel(TrainedModel):
    """The model, counting its batched calls."""

    calls = 0

    def predict_graphs(self, graphs):
        CountingModel.calls += 1
        return super().predict_graphs(graphs)


def test_search_finds_penalty_free_networks_of_the_target_size(topology_run):
    loaded = load_trained(str(topology_run))
    model = CountingModel(**{f: getattr(loaded, f) for f in loaded.__dataclass_fields__})
    options = SearchOptions(target_waters=7, branching=3, beam=8, top=4, max_steps=8)
    result = search(read_start(str(W5)), model, options)
    assert len(result.steps) == 8
    assert CountingModel.calls == 1 + 8  # the start, then ONE batched call per step
    assert 1 <= len(result.results) <= 4
    rewards = [found.reward.reward for found in result.results]
    assert rewards == sorted(rewards, reverse=True)
    assert len({found.network.key() for found in result.results}) == len(result.results)
    for found in result.results:
        assert found.network.n_waters == 7 and found.reward.penalty_free
        assert sum(e.startswith("add water") for e in found.edits) == 2
        # The recorded reward is what scoring the network alone gives.
        assert score([found.network], loaded)[0].reward == pytest.approx(found.reward.reward, abs=1e-4)
    assert all(step.open_pathways <= 8 for step in result.steps)


def test_mpnn_design_writes_the_best_networks_and_the_log(topology_run, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--model", str(topology_run), "--start", str(W5), "--target-waters", "6", "--branching", "2",
            "--beam", "4", "--top", "2", "--max-steps", "3", "-o", str(out),
            "--reference", str(WATER / "minima" / "w6_lowest.xyz")]
    assert main(args) == 0
    best = json.loads((out / "best-01.json").read_text())
    assert best["n_waters"] == 6 and len(best["atoms"]) == 18 and best["penalty_free"]
    assert set(best["penalties"]) >= {"disconnected_waters", "over_coordinated", "hydrogen_donates"}
    assert best["reward"] == pytest.approx(-best["energy"] + sum(20.0 * v for v in best["penalties"].values()))
    summary = json.loads((out / "search.json").read_text())
    assert len(summary["steps"]) == 3 and summary["start"]["n_waters"] == 5
    reference = summary["reference"]
    assert reference["n_waters"] == 6 and reference["penalty_free"]
    assert reference["reward"] == pytest.approx(-reference["energy"])
    assert all(step["candidates"] > 0 for step in summary["steps"])
    # The best network is a valid start for another search.
    assert read_start(str(out / "best-01.json")).n_waters == 6
    assert "best-01.json: reward" in capsys.readouterr().out


def test_bad_requests_are_one_line_errors(distance_run, topology_run, tmp_path, capsys):
    common = ["--start", str(W5), "-o", str(tmp_path / "out")]
    assert main(["--model", str(distance_run), "--target-waters", "6", *common]) == 1
    assert "without coordinates" in capsys.readouterr().err
    assert main(["--model", str(topology_run), "--target-waters", "4", *common]) == 2  # a flag's value
    assert "argument --target-waters: the start has 5 waters, more than the target 4" in capsys.readouterr().err
