"""``mpnn.scaling``: planning a study, reading a run directory, laying runs out on nodes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mpnn.scaling import collect, plan, submit


def make_study(data: Path, **values) -> plan.Study:
    return plan.make_study({"data": str(data), **values})


# --- plan -------------------------------------------------------------------------------


def test_plan_expands_every_combination_with_one_shared_baseline_per_batch_and_repeat(tmp_path):
    study = make_study(tmp_path, ranks=[4, 1, 2], batch_sizes=[8, 16], repeats=3, seed=5)
    runs = plan.expand(study)
    # per repeat and batch size: one 1-rank run + 2 strategies x 2 rank counts
    assert len(runs) == 3 * 2 * (1 + 2 * 2)
    assert len({r.id for r in runs}) == len(runs) and len({r.run_dir for r in runs}) == len(runs)
    baselines = [r for r in runs if r.ranks == 1]
    assert len(baselines) == 3 * 2
    assert all(r.serves == ["dbs", "gbs"] for r in baselines)
    for run in runs:
        assert run.seed == 5 + run.repeat
        if run.strategy == "gbs":
            assert (run.batch_per_rank, run.global_batch) == (run.batch_size // run.ranks, run.batch_size)
        else:
            assert (run.batch_per_rank, run.global_batch) == (run.batch_size, run.batch_size * run.ranks)
    assert {r.seed for r in runs} == {5, 6, 7}  # repeats differ
    args = runs[-1].mpnn_train_args(study, str(tmp_path / "study"))
    assert args[args.index("--seed") + 1] == str(runs[-1].seed)
    assert args[args.index("--run-dir") + 1] == str(tmp_path / "study" / runs[-1].run_dir)


@pytest.mark.parametrize("values, message", [
    ({"ranks": [2, 4]}, "lack 1"),
    ({"ranks": [1, 3], "batch_sizes": [16]}, "not divisible by 3"),
    ({"train_args": ["--epochs", "3"]}, "controls"),
    ({"strategies": ["dbs", "fast"]}, "strategies"),
])
def test_plan_rejects_studies_that_cannot_run(tmp_path, values, message):
    with pytest.raises(plan.StudyError, match=message):
        plan.expand(make_study(tmp_path, **values))


def test_collect_reads_the_within_group_metrics_of_a_run(tmp_path):
    """The design metrics of metrics.json (see mpnn.metrics.group_metrics) reach the table;
    runs without groups (e.g. PDBbind) get NaN, not an error."""
    run = plan.Run("r1", 1, "dbs", ["dbs", "gbs"], 16, 16, 16, 0, 0, "runs/r1", [])
    summary = {"weighted": {"spearman": 0.61, "low_tail_mae": 1.5, "low_tail_bias": 1.4},
               "worst": {"spearman": {"group": "11", "value": 0.39}}}
    metrics = {"ranks": 1, "batch_per_rank": 16, "global_batch": 16, "epochs_run": 2, "train_seconds": 9.0,
               "test": {"r2": 0.99, "pearson_r": 0.995, "mae": 0.77, "group_summary": summary}}
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "metrics.json").write_text(json.dumps(metrics))
    values = collect.read_run(run, str(tmp_path)).values
    assert (values["test_mae"], values["test_spearman"], values["test_spearman_worst"]) == (0.77, 0.61, 0.39)
    assert (values["test_low_tail_mae"], values["test_low_tail_bias"]) == (1.5, 1.4)
    del metrics["test"]["group_summary"]
    (tmp_path / "runs" / "r1" / "metrics.json").write_text(json.dumps(metrics))
    values = collect.read_run(run, str(tmp_path)).values
    assert values["test_mae"] == 0.77 and math.isnan(values["test_spearman"])



def test_node_layout_rejects_uneven_nodes():
    with pytest.raises(submit.SubmitError, match="do not fill nodes of 3"):
        submit.node_layout(4, cpus_per_node=3)
