"""``mpnn-bench``: each sub-command runs on tiny inputs and writes a complete JSON report.

These tests check the reports, never the speed (that is the benchmark's job).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpnn.bench.__main__ import main
from mpnn.bench.loader import SETTING_NAMES
from tests.conftest import MINIMA


@pytest.fixture(scope="module")
def minima_dataset(tmp_path_factory) -> Path:
    """The 28 shipped minima prepared by mpnn-prep-water (22 training graphs)."""
    from data_prep.prep_water import main as prep_main

    out = tmp_path_factory.mktemp("minima")
    assert prep_main([str(MINIMA[0].parent), "-o", str(out), "--quiet"]) == 0
    return out


def check_environment(report: dict) -> None:
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["cpu"]
    assert report["machine"]["memory_gib"] > 0
    assert report["versions"]["tensorflow"] and report["versions"]["python"]
    assert report["date"].endswith("+00:00")  # UTC
    assert isinstance(report["command"], list)


def test_loader_reports_every_setting_and_batch_size(minima_dataset, tmp_path, capsys):
    output = tmp_path / "loader.json"
    argv = ["loader", "--data", str(minima_dataset / "manifest.json"), "--batch-sizes", "4", "8",
            "--repeats", "1", "--warmup-batches", "1", "--output", str(output)]
    assert main(argv) == 0

    report = json.loads(output.read_text())
    check_environment(report)
    assert report["benchmark"] == "loader"
    manifest = json.loads((minima_dataset / "manifest.json").read_text())
    assert report["data"]["compression"] == manifest["compression"]
    assert report["data"]["records"] == manifest["splits"]["train"]["records"]
    assert set(report["settings"]) == set(SETTING_NAMES)
    measured = {(r["setting"], r["batch_size"]): r for r in report["results"]}
    assert set(measured) == {(s, b) for s in SETTING_NAMES for b in (4, 8)}
    for result in measured.values():
        assert result["graphs_per_second"] > 0
        assert result["batches_per_second"] > 0
        assert result["peak_rss_kib"] > 0
        # One timed pass sees every training graph exactly once.
        assert result["graphs_per_pass"] == report["data"]["records"]

    table = capsys.readouterr().out
    for name in SETTING_NAMES:
        assert name in table


def test_prep_reports_rate_and_speedup(tmp_path, capsys):
    output = tmp_path / "prep.json"
    argv = ["prep", "--inputs", *map(str, MINIMA[:3]), "--workers", "1", "2", "--output", str(output)]
    assert main(argv) == 0

    report = json.loads(output.read_text())
    check_environment(report)
    assert [r["workers"] for r in report["results"]] == [1, 2]
    for result in report["results"]:
        assert result["records"] == 3 and result["skipped"] == 0
        assert result["records_per_second"] > 0
        assert result["speedup"] > 0
        assert result["peak_rss_kib"] > 0 and result["peak_rss_children_kib"] >= 0
    assert report["results"][0]["speedup"] == 1.0
    assert "records/s" in capsys.readouterr().out


def test_missing_manifest_fails_with_a_message(tmp_path, caplog):
    missing = tmp_path / "nothing" / "manifest.json"
    assert main(["loader", "--data", str(missing), "--output", str(tmp_path / "out.json")]) == 1
    assert str(missing) in caplog.text
    assert not (tmp_path / "out.json").exists()


def test_rejects_non_positive_batch_size(tmp_path):
    with pytest.raises(SystemExit):
        main(["loader", "--data", str(tmp_path), "--batch-sizes", "0"])
