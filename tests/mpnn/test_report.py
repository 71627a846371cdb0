"""mpnn.report: the terminal summary and the Markdown tables show the per-group metrics."""

from __future__ import annotations

import json

import numpy as np

from mpnn.cli.report import main
from mpnn.evaluate import split_metrics
from mpnn.predictions import Predictions
from mpnn.report import format_summary, markdown


def _metrics() -> dict:
    # 20 clusters of 9 waters pulled halfway to their mean (9.5): the lowest (0) is
    # predicted 4.75 (bias +4.75), the ranking is perfect.
    truth = np.arange(20.0)
    pred = 0.5 * truth + 4.75
    test = split_metrics(Predictions(np.array([""] * 20), np.full(20, 9), truth, pred), "n_waters")
    return {
        "target": {"name": "energy", "units": "kcal/mol"}, "test": test, "epochs_run": 3, "train_seconds": 12.0,
        "ranks": 2, "model": "mpnn", "parameters": 100,
    }


def test_summary_shows_the_group_table_with_tails_and_worst_group():
    text = format_summary(_metrics(), "runs/x")
    lines = text.splitlines()
    header = next(line for line in lines if "Spearman" in line)
    assert header.split()[:5] == ["n_waters", "n", "MAE", "MAE/water", "Spearman"]
    row = next(line for line in lines if line.split()[0] == "9")
    assert row.split()[1:6] == ["20", "2.500", "0.2778", "1.000", "4.750"] and "+4.750" in row
    assert "test energy MAE per water 0.2778 kcal/mol" in text
    worst = next(line for line in lines if line.split()[0] == "worst")
    assert "2.500 (9)" in worst
    assert "lowest/highest 5%" in text


def test_markdown_and_command_line(tmp_path, capsys):
    metrics = _metrics()
    table = markdown(metrics)
    assert "| 9 | 20 | 2.500 | 0.2778 | 1.000 | 4.750 | +4.750 | 4.750 | -4.750 |" in table
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert main(["--model", str(tmp_path)]) == 0
    assert "| weighted | 20 |" in capsys.readouterr().out
    assert main(["--model", str(tmp_path / "missing")]) == 1  # an input that cannot be used
    assert capsys.readouterr().err.splitlines() == [
        f"mpnn-report: error: {tmp_path / 'missing' / 'metrics.json'}: no such file (has the run finished?)"
    ]
    (tmp_path / "metrics.json").write_text("{ not json")
    assert main([str(tmp_path)]) == 1  # the run directory given the old way still works
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("mpnn-report: warning: the positional RUN_DIR is deprecated for the run, use --model")
    assert err[1].startswith(f"mpnn-report: error: {tmp_path / 'metrics.json'}: cannot read (")


def test_runs_without_groups_keep_the_plain_tables():
    metrics = _metrics()
    metrics["test"] = {k: v for k, v in metrics["test"].items() if k not in ("by_group", "group_summary")}
    assert "Spearman" not in format_summary(metrics, "r") and "Spearman" not in markdown(metrics)
