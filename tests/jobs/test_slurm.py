"""The Slurm CPU script on a real one-node Slurm cluster: a run, a run killed and resubmitted,
and a run that requeues itself as it would before its time limit."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest

from mpnn.engines import horovod_installed
from mpnn.graph_format.manifest import Manifest
from tests.helpers import REPO
from tests.jobs.conftest import SMALL_MODEL, SlurmCluster, job_env, wait_for

SCRIPT = REPO / "jobs" / "slurm" / "train-cpu.sbatch"
# The engine of the stack running the tests: Horovod's (srun --mpi=pmix) on .venv,
# tf-distribute's (srun mpnn-launch --slurm) on .venv-current.
ENGINE = "horovod" if horovod_installed() else "tf-distribute"
# Two ranks on this machine (the cluster's one node has this machine's cores).
RESOURCES = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"]
JOB_SECONDS = 900
# A test waits for up to two jobs; its own deadlines (with the cluster's logs in the message)
# must come before pytest-timeout's.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2 * JOB_SECONDS + 300)]


def sbatch(cluster: SlurmCluster, submit_dir: Path, data: Path, epochs: int, **variables: str) -> str:
    """Submit the CPU script from `submit_dir`; its job id."""
    env = job_env(DATA=str(data), TRAIN_ARGS=f"--epochs {epochs} {SMALL_MODEL}", MPNN_ENGINE=ENGINE, **variables)
    env["SLURM_CONF"] = str(cluster.conf)
    done = subprocess.run(["sbatch", "--parsable", *RESOURCES, str(SCRIPT)], env=env, cwd=submit_dir,
                          capture_output=True, text=True, timeout=60)
    job_id = done.stdout.strip().split(";")[0]
    assert done.returncode == 0, f"{done.stderr}\n{job_output(submit_dir, job_id)}"
    return job_id


# The states of a job that has ended (`scontrol show job`'s JobState).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}


def sbatch_to_the_end(cluster: SlurmCluster, submit_dir: Path, data: Path, epochs: int, **variables: str) -> str:
    """`sbatch`, then wait until the job has ended and check it completed with status 0; its
    job id. Polls every half second: ``sbatch --wait`` polls at growing intervals and
    returned about 20 s after the job had ended here."""
    job_id = sbatch(cluster, submit_dir, data, epochs, **variables)
    assert wait_for(lambda: cluster.job_field(job_id, "JobState") in ENDED, JOB_SECONDS), (
        cluster.describe(job_id) + job_output(submit_dir, job_id)
    )
    ended = (cluster.job_field(job_id, "JobState"), cluster.job_field(job_id, "ExitCode"))
    assert ended == ("COMPLETED", "0:0"), f"{ended}\n{job_output(submit_dir, job_id)}"
    return job_id


def job_output(submit_dir: Path, job_id: str) -> str:
    """What the job wrote to its output file (mpnn-<id>.out in the submit directory)."""
    path = submit_dir / f"mpnn-{job_id}.out"
    return path.read_text() if path.exists() else f"(no {path})"


def epochs_logged(run_dir: Path) -> list[int]:
    """The `epoch` column of the run's log.csv ([] before the first epoch ends)."""
    try:
        with open(run_dir / "log.csv") as handle:
            return [int(row["epoch"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError):
        return []


def assert_one_run_of(run_dir: Path, epochs: int) -> dict:
    """Every epoch 0..epochs-1 logged exactly once, and the metrics count all of them."""
    assert epochs_logged(run_dir) == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["engine"]["name"] == ENGINE
    assert metrics["epochs_run"] == epochs
    return metrics


def test_sbatch_cpu_script(slurm_cluster, water_dataset, tmp_path):
    job_id = sbatch_to_the_end(slurm_cluster, tmp_path, water_dataset, 2)
    metrics = assert_one_run_of(tmp_path / "runs" / job_id, 2)
    # The metrics cover the whole test set (its size is the split's hash draw, about 200).
    assert metrics["test"]["count"] == Manifest.load(str(water_dataset)).split_records("test")


def test_killed_job_resumes_when_resubmitted(slurm_cluster, water_dataset, tmp_path):
    run_dir = tmp_path / "run"
    epochs = 6
    first = sbatch(slurm_cluster, tmp_path, water_dataset, epochs, RUN_DIR=str(run_dir))
    # Two logged epochs: the checkpoint of the first is complete for sure.
    assert wait_for(lambda: len(epochs_logged(run_dir)) >= 2, JOB_SECONDS), job_output(tmp_path, first)
    slurm_cluster.run("scancel", first)
    assert wait_for(lambda: slurm_cluster.job_field(first, "JobState") == "CANCELLED", 60)
    assert len(epochs_logged(run_dir)) < epochs, "the job ended before it was cancelled; nothing to resume"

    sbatch_to_the_end(slurm_cluster, tmp_path, water_dataset, epochs, RUN_DIR=str(run_dir))
    metrics = assert_one_run_of(run_dir, epochs)
    assert metrics["resumed_from_epoch"]


def test_job_requeues_itself_and_resumes(slurm_cluster, water_dataset, tmp_path):
    """USR1 to the batch shell is what `#SBATCH --signal=B:USR1@300` sends before the time
    limit; the script requeues the job, which comes back with the same id and run directory."""
    epochs = 6
    job_id = sbatch(slurm_cluster, tmp_path, water_dataset, epochs)
    run_dir = tmp_path / "runs" / job_id
    assert wait_for(lambda: len(epochs_logged(run_dir)) >= 2, JOB_SECONDS), job_output(tmp_path, job_id)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job_id)
    assert wait_for(lambda: slurm_cluster.job_field(job_id, "JobState") == "PENDING", 60)
    assert len(epochs_logged(run_dir)) < epochs, "the job ended before it was requeued; nothing to resume"
    # Slurm holds a requeued job for about two minutes before it may start again; skip that,
    # but not within the second of the requeue: slurmd compares a credential's creation time
    # with the revocation of the job's previous one to the second, and refuses a start in the
    # same second ("Job credential revoked": the job then fails instead of running; seen here).
    time.sleep(2)
    slurm_cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
    assert wait_for(lambda: slurm_cluster.job_field(job_id, "JobState") == "COMPLETED", JOB_SECONDS), (
        slurm_cluster.describe(job_id) + job_output(tmp_path, job_id)
    )

    assert slurm_cluster.job_field(job_id, "Restarts") == "1"
    metrics = assert_one_run_of(run_dir, epochs)
    assert metrics["resumed_from_epoch"]
    # --open-mode=append keeps the output of the run before the requeue.
    assert "requeueing job" in job_output(tmp_path, job_id)
