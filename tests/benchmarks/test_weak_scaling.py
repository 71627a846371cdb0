"""benchmarks/weak_scaling.sh runs 1-rank and 2-rank `mpnn-bench train` and writes their JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.integration  # mpirun
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")
def test_one_round_on_two_ranks(water_dataset, tmp_path):
    out = tmp_path / "weak"
    env = {**os.environ, "BATCHES": "16", "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    script = REPO / "benchmarks" / "weak_scaling.sh"
    completed = subprocess.run(["bash", str(script), str(water_dataset), str(out), "2", "1"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    one, two = (json.loads((out / f"r1-n{n}.json").read_text()) for n in (1, 2))
    assert len(one["results"][0]["per_rank"]) == 1 and len(two["results"][0]["per_rank"]) == 2
    assert two["results"][0]["batch_size"] == 16 and two["results"][0]["graphs_per_second"] > 0
    # The 2-rank report holds its efficiency against the 1-rank run of the same round.
    expected = two["results"][0]["graphs_per_second"] / (2 * one["results"][0]["graphs_per_second"])
    assert two["results"][0]["scaling_efficiency"] == pytest.approx(expected)
    assert "scaling_efficiency" not in one["results"][0]
