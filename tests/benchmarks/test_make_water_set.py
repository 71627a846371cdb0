"""benchmarks/make_water_set.py, the command over `mpnn.bench.water_set` (tested in
tests/mpnn/bench/test_water_set.py)."""

from __future__ import annotations

from tests.helpers import load_benchmark_script


def test_command_refuses_to_overwrite_a_set(tmp_path, caplog):
    script = load_benchmark_script("make_water_set")
    args = ["--count", "5", "--energy", "none", "--quiet", "-o", str(tmp_path)]
    assert script.main(args) == 0
    assert script.main(args) == 1
    assert "exists" in caplog.text
    assert script.main(["--count", "5", "--sizes", "2", "--quiet", "-o", str(tmp_path / "y")]) == 1
    assert "no minimum w<N>_lowest.xyz for N = [2]" in caplog.text
