"""``mpnn-scaling``: the plan command (study file, flags, mpnn-train's check of the runs'
arguments), a real tiny study (1 and 2 ranks with horovodrun, two epochs), its table and
figures, and job submission against fake ``sbatch``/``qsub``; errors in one line."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path

import pytest

from mpnn.cli.scaling import main
from mpnn.scaling import collect, plan, submit
from tests.helpers import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = "--width 16 --message-steps 2 --verbose 0"


# --- plan -------------------------------------------------------------------------------


@pytest.mark.parametrize("train_args, message", [
    ("--widht 3", "does not know"),
    ("--width x", "invalid int"),
])
def test_plan_rejects_arguments_mpnn_train_rejects(tmp_path, capsys, train_args, message):
    argv = ["plan", "-o", str(tmp_path / "s"), "--data", str(tmp_path), f"--train-args={train_args}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "mpnn-scaling: error: mpnn-train " in err and message in err
    assert not (tmp_path / "s" / "study.json").exists()


def test_plan_command_reads_a_study_file_flags_override_and_planning_again_is_harmless(tmp_path):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(f"data: {tmp_path}\nranks: [1, 2]\nbatch_sizes: [8]\nepochs: 3\ntrain_args: {TINY}\n")
    argv = ["plan", str(study_file), "-o", str(tmp_path / "s"), "--repeats", "2"]
    assert main(argv) == 0
    content = json.loads((tmp_path / "s" / "study.json").read_text())
    assert content["study"]["epochs"] == 3 and content["study"]["repeats"] == 2
    assert content["study"]["train_args"] == TINY.split()
    assert len(content["runs"]) == 2 * 3
    assert main(argv) == 0  # same plan: kept
    assert main([*argv[:-1], "3"]) == 1  # a different plan would mix two studies in one directory


# --- run --local and collect on a real tiny study ---------------------------------------


@pytest.fixture(scope="module")
def tiny_study(water_dataset, tmp_path_factory) -> Path:
    """Ranks 1 and 2, dbs and gbs, batch 16, two epochs: three horovodrun trainings."""
    study_dir = tmp_path_factory.mktemp("scaling") / "study"
    assert main(["plan", "-o", str(study_dir), "--data", str(water_dataset), "--ranks", "1", "2",
                 "--batch-sizes", "16", "--epochs", "2", f"--train-args={TINY}"]) == 0
    assert main(["run", "--local", str(study_dir)]) == 0
    return study_dir


def metrics_of(study_dir: Path, run_id: str) -> dict:
    return json.loads((study_dir / "runs" / run_id / "metrics.json").read_text())


@pytest.mark.integration  # horovodrun trainings (tiny_study)
def test_run_local_trains_every_run_with_its_rank_count_and_batch(tiny_study):
    expected = {"r1-b16-rep0": (1, 16, 16), "r2-dbs-b16-rep0": (2, 16, 32), "r2-gbs-b16-rep0": (2, 8, 16)}
    for run_id, (ranks, per_rank, global_batch) in expected.items():
        metrics = metrics_of(tiny_study, run_id)
        assert (metrics["ranks"], metrics["batch_per_rank"], metrics["global_batch"]) == (ranks, per_rank, global_batch)
        assert metrics["epochs_run"] == 2
        assert (tiny_study / "logs" / f"{run_id}.log").exists()


@pytest.mark.integration  # horovodrun trainings (tiny_study)
def test_run_local_skips_finished_runs(tiny_study, caplog):
    caplog.set_level(logging.INFO, logger="mpnn-scaling")
    before = {p: p.stat().st_mtime_ns for p in tiny_study.glob("runs/*/metrics.json")}
    assert main(["run", "--local", str(tiny_study)]) == 0
    assert {p: p.stat().st_mtime_ns for p in tiny_study.glob("runs/*/metrics.json")} == before
    assert caplog.text.count("finished before, skipped") == 3


@pytest.mark.integration  # horovodrun trainings (tiny_study)
def test_run_local_continues_an_interrupted_study(tiny_study, tmp_path):
    """A study stopped before a run wrote metrics.json: run --local again trains only that
    run, from its last checkpoint (here: after its last epoch, so it only evaluates)."""
    study_dir = tmp_path / "study"
    shutil.copytree(tiny_study, study_dir)
    (study_dir / "runs" / "r1-b16-rep0" / "metrics.json").unlink()
    others = {p: p.stat().st_mtime_ns for p in study_dir.glob("runs/r2-*/metrics.json")}
    assert main(["run", "--local", str(study_dir)]) == 0
    metrics = metrics_of(study_dir, "r1-b16-rep0")
    assert metrics["epochs_run"] == 2 and metrics["resumed_from_epoch"] == [2]
    assert {p: p.stat().st_mtime_ns for p in study_dir.glob("runs/r2-*/metrics.json")} == others
    with open(study_dir / "runs" / "r1-b16-rep0" / "log.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1"]


@pytest.mark.integration  # horovodrun trainings (tiny_study)
def test_collect_table_matches_the_run_directories(tiny_study, tmp_path):
    out = tmp_path / "out"
    assert main(["collect", str(tiny_study), "-o", str(out)]) == 0
    rows = {(r.strategy, r.ranks): r for r in collect.read_table(str(out / "scaling.csv"))}
    assert set(rows) == {("dbs", 1), ("dbs", 2), ("gbs", 1), ("gbs", 2)}
    base = metrics_of(tiny_study, "r1-b16-rep0")
    for strategy in ("dbs", "gbs"):
        row, run = rows[strategy, 2], metrics_of(tiny_study, f"r2-{strategy}-b16-rep0")
        assert (row.dbs, row.gbs, row.epochs, row.repeats) == (run["batch_per_rank"], run["global_batch"], 2, 1)
        assert row.stats["train_seconds"].mean == pytest.approx(run["train_seconds"])
        gain = 100 * (1 - run["train_seconds"] / base["train_seconds"])
        assert row.stats["time_gain_pct"].mean == pytest.approx(gain)
        r2_loss = 100 * (base["test"]["r2"] - run["test"]["r2"]) / base["test"]["r2"]
        assert row.stats["r2_loss_pct"].mean == pytest.approx(r2_loss)
        assert row.stats["test_pearson_r"].mean == pytest.approx(run["test"]["pearson_r"])
        assert row.stats["test_mae"].mean == pytest.approx(run["test"]["mae"])
        weighted = run["test"]["group_summary"]["weighted"]
        assert row.stats["test_low_tail_bias"].mean == pytest.approx(weighted["low_tail_bias"])
        with open(tiny_study / "runs" / f"r2-{strategy}-b16-rep0" / "log.csv") as handle:
            last_epoch = list(csv.DictReader(handle))[-1]  # epochs after the first: just the second here
        assert row.stats["graphs_per_second"].mean == pytest.approx(float(last_epoch["graphs_per_second"]))
        assert math.isnan(row.stats["train_seconds"].std)  # one repeat: no spread
        # the 1-rank row is the shared baseline: no gain, no loss
        assert rows[strategy, 1].stats["train_seconds"].mean == pytest.approx(base["train_seconds"])
        assert rows[strategy, 1].stats["time_gain_pct"].mean == 0
    markdown = (out / "scaling.md").read_text()
    assert "| dbs | 16 | 2 | 16 | 32 | 2 | 1/1 |" in markdown and "| gbs | 16 | 2 | 8 | 16 | 2 | 1/1 |" in markdown
    for name in ("time-gain.png", "metric-loss.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.integration  # horovodrun trainings (tiny_study)
def test_collect_reports_runs_that_did_not_finish(tiny_study, tmp_path):
    study_dir = tmp_path / "study"
    shutil.copytree(tiny_study, study_dir, ignore=shutil.ignore_patterns("*.keras", "checkpoints"))
    (study_dir / "runs" / "r2-gbs-b16-rep0" / "metrics.json").unlink()
    shutil.rmtree(study_dir / "runs" / "r2-dbs-b16-rep0")
    assert main(["collect", str(study_dir), "--no-plots"]) == 0
    rows = {(r.strategy, r.ranks): r for r in collect.read_table(str(study_dir / "scaling.csv"))}
    assert rows["gbs", 2].repeats == 0 and rows["gbs", 2].missing == ["r2-gbs-b16-rep0 (unfinished)"]
    assert rows["dbs", 2].missing == ["r2-dbs-b16-rep0 (not started)"]
    assert math.isnan(rows["gbs", 2].stats["time_gain_pct"].mean)
    markdown = (study_dir / "scaling.md").read_text()
    assert "r2-gbs-b16-rep0: unfinished" in markdown and "2 epoch(s) in log.csv" in markdown
    assert "r2-dbs-b16-rep0: not started" in markdown
    with open(study_dir / "runs.csv") as handle:
        statuses = {r["id"]: r["status"] for r in csv.DictReader(handle)}
    assert statuses == {"r1-b16-rep0": "ok", "r2-dbs-b16-rep0": "not started", "r2-gbs-b16-rep0": "unfinished"}


def test_collect_without_a_plan_names_the_directory(tmp_path, capsys):
    assert main(["collect", str(tmp_path)]) == 1
    assert f"{tmp_path}/study.json" in capsys.readouterr().err


# --- submit ---------------------------------------------------------------------------


@pytest.fixture
def fake_schedulers(tmp_path, monkeypatch) -> Path:
    """``sbatch`` and ``qsub`` on PATH that record their arguments (one JSON list a line
    in calls.jsonl) and print a job id as the real ones do."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    for name, reply in (("sbatch", "{n};cluster"), ("qsub", "{n}.pbs-server")):
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"with open({str(calls)!r}, 'a') as f:\n    f.write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
            f"n = sum(1 for _ in open({str(calls)!r}))\nprint({reply!r}.format(n=1000 + n))\n"
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("MPNN_HOME", raising=False)
    return calls


def recorded(calls: Path) -> list[list[str]]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


@pytest.fixture
def site_jobs(tmp_path) -> Path:
    """A site's copy of jobs/ (the scripts' contents do not matter to the fake schedulers)."""
    jobs = tmp_path / "site-jobs"
    for relative in submit.SCRIPTS.values():
        (jobs / relative).parent.mkdir(parents=True, exist_ok=True)
        (jobs / relative).write_text("#!/bin/bash\n")
    return jobs


def planned(tmp_path: Path) -> tuple[Path, list[plan.Run]]:
    study_dir = tmp_path / "study"
    assert main(["plan", "-o", str(study_dir), "--data", str(tmp_path), "--ranks", "1", "2", "4",
                 "--batch-sizes", "8", f"--train-args={TINY}"]) == 0
    return study_dir, plan.load_plan(str(study_dir))[1]


def exported(command: list[str]) -> dict[str, str]:
    listing = next(a for a in command if a.startswith("--export=")).removeprefix("--export=ALL,")
    return dict(item.split("=", 1) for item in listing.split(","))


def test_submit_slurm_one_gpu_job_per_run_with_its_nodes_and_variables(tmp_path, fake_schedulers, site_jobs):
    study_dir, runs = planned(tmp_path)
    argv = ["submit", str(study_dir), "--scheduler", "slurm", "--gpus-per-node", "2", "--jobs-dir", str(site_jobs),
            "--scheduler-args=--account=abc --time=01:00:00"]
    assert main(argv) == 0
    calls = recorded(fake_schedulers)
    assert len(calls) == len(runs) == 5
    by_name = {next(a for a in c if a.startswith("--job-name=")).split("=")[1]: c for c in calls}
    for run in runs:
        command = by_name[run.id]
        nodes, per_node = (2, 2) if run.ranks == 4 else (1, run.ranks)
        assert {f"--nodes={nodes}", f"--ntasks-per-node={per_node}", f"--gpus-per-node={per_node}"} <= set(command)
        assert {"--account=abc", "--time=01:00:00"} <= set(command)
        assert command[-1] == str(site_jobs / "slurm" / "train-gpu.sbatch")
        variables = exported(command)
        assert variables["DATA"] == str(tmp_path)
        assert variables["RUN_DIR"] == str(study_dir / run.run_dir)
        assert variables["TRAIN_ARGS"].split() == run.train_args  # the scripts word-split it
        # the scripts find jobs/common.sh in MPNN_HOME: this checkout, once it has the scripts
        assert variables.get("MPNN_HOME") == (str(REPO) if (REPO / "jobs" / "common.sh").exists() else None)
    jobs = json.loads((study_dir / "jobs.json").read_text())
    assert sorted(j["job_id"] for j in jobs.values()) == [str(1001 + i) for i in range(5)]
    # submitted before: not again, unless asked
    assert main(argv) == 0 and len(recorded(fake_schedulers)) == 5
    assert main([*argv, "--resubmit"]) == 0 and len(recorded(fake_schedulers)) == 10


def test_submit_pbs_cpu_jobs_pass_resources_and_ranks_per_node(tmp_path, fake_schedulers, site_jobs):
    study_dir, runs = planned(tmp_path)
    assert main(["submit", str(study_dir), "--scheduler", "pbs", "--cpus-per-node", "2",
                 "--jobs-dir", str(site_jobs)]) == 0
    calls = {c[c.index("-N") + 1]: c for c in recorded(fake_schedulers)}
    four = calls["r4-gbs-b8-rep0"]
    assert four[0] == "qsub" and four[-1] == str(site_jobs / "pbs" / "train-cpu.pbs")
    assert four[four.index("-l") + 1] == "select=2:mpiprocs=2:ncpus=2"
    variables = dict(item.split("=", 1) for item in four[four.index("-v") + 1].split(","))
    assert variables["RANKS_PER_NODE"] == "2" and variables["TRAIN_ARGS"].split()[:4] == ["--epochs", "10",
                                                                                          "--batch-size", "8"]
    assert calls["r1-b8-rep0"][calls["r1-b8-rep0"].index("-l") + 1] == "select=1:mpiprocs=1:ncpus=1"
    jobs = json.loads((study_dir / "jobs.json").read_text())
    assert jobs["r4-gbs-b8-rep0"]["job_id"].endswith(".pbs-server")


def test_submit_dry_run_prints_and_submits_nothing(tmp_path, fake_schedulers, site_jobs, capsys):
    study_dir, runs = planned(tmp_path)
    assert main(["submit", str(study_dir), "--scheduler", "slurm", "--cpus-per-node", "4",
                 "--jobs-dir", str(site_jobs), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(runs) and all(line.startswith("sbatch ") for line in printed)
    assert all(line.endswith("slurm/train-cpu.sbatch") for line in printed)
    assert not recorded(fake_schedulers) and not (study_dir / "jobs.json").exists()


def test_submit_skips_finished_runs(tmp_path, fake_schedulers, site_jobs):
    study_dir, runs = planned(tmp_path)
    finished = study_dir / runs[0].run_dir
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    assert main(["submit", str(study_dir), "--scheduler", "slurm", "--cpus-per-node", "4",
                 "--jobs-dir", str(site_jobs)]) == 0
    assert runs[0].id not in json.loads((study_dir / "jobs.json").read_text())


def test_submit_uses_the_repository_job_scripts_by_default(tmp_path, fake_schedulers, capsys):
    assert Path(submit.default_jobs_dir()) == REPO / "jobs"
    if not (REPO / "jobs" / "slurm" / "train-cpu.sbatch").exists():
        pytest.skip("jobs/slurm/train-cpu.sbatch is not in this checkout yet")
    study_dir, runs = planned(tmp_path)
    assert main(["submit", str(study_dir), "--scheduler", "slurm", "--cpus-per-node", "2", "--dry-run"]) == 0
    assert str(REPO / "jobs" / "slurm" / "train-cpu.sbatch") in capsys.readouterr().out


def test_plan_names_the_family_with_family_and_still_reads_the_old_model_flag_and_key(tmp_path, capsys, caplog):
    data = tmp_path / "data"
    data.mkdir()
    assert main(["plan", "-o", str(tmp_path / "a"), "--data", str(data), "--family", "schnet"]) == 0
    study, runs = plan.load_plan(str(tmp_path / "a"))
    assert study.family == "schnet" and runs[0].train_args[-2:] == ["--family", "schnet"]
    assert main(["plan", "-o", str(tmp_path / "b"), "--data", str(data), "--model", "mpnn"]) == 0
    assert "mpnn-scaling: warning: --model is deprecated for the model family, use --family" in capsys.readouterr().err
    assert plan.load_plan(str(tmp_path / "b"))[0].family == "mpnn"
    (tmp_path / "old.yaml").write_text(f"data: {data}\nmodel: gat-lspe\n")
    assert main(["plan", str(tmp_path / "old.yaml"), "-o", str(tmp_path / "c")]) == 0
    assert plan.load_plan(str(tmp_path / "c"))[0].family == "gat-lspe"
    assert f"{tmp_path / 'old.yaml'}: the study key 'model' is deprecated for the model family" in caplog.text
    with pytest.raises(SystemExit) as exit_:  # argparse's own check of the declared choices
        main(["plan", "-o", str(tmp_path / "d"), "--data", str(data), "--strategies", "dbs", "fast"])
    assert exit_.value.code == 2 and "argument --strategies: invalid choice: 'fast'" in capsys.readouterr().err
