"""The job scripts parse, build the mpnn-train command a user expects, and fail clearly."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import REPO
from tests.jobs.conftest import job_env

SCRIPTS = sorted(
    path
    for pattern in ("*.sh", "*/*.sh", "*/*.sbatch", "*/*.pbs")
    for path in (REPO / "jobs").glob(pattern)
)


def test_every_interface_script_exists():
    names = {str(path.relative_to(REPO / "jobs")) for path in SCRIPTS}
    assert {"common.sh", "local/train.sh", "slurm/train-gpu.sbatch", "slurm/train-cpu.sbatch",
            "pbs/train-gpu.pbs", "pbs/train-cpu.pbs", "cray/train-knl.pbs"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(REPO)))
def test_bash_parses(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_arguments_from_variables(tmp_path):
    """DATA, RUN_DIR, CONFIG and RESUME become flags; TRAIN_ARGS come after the script's own
    defaults, so a user's --intra-op-threads wins."""
    (tmp_path / "data").mkdir()
    (tmp_path / "settings.yaml").write_text("epochs: 3\n")
    shell = f"source {REPO}/jobs/common.sh; mpnn_setup; mpnn_train_args --intra-op-threads 4; "
    shell += 'printf "%s\\n" "${MPNN_ARGS[@]}"'
    env = job_env(DATA="data", CONFIG="settings.yaml", TRAIN_ARGS="--epochs 2  --intra-op-threads 1",
                  SLURM_JOB_ID="77", SLURM_SUBMIT_DIR=str(tmp_path))
    env.pop("RUN_DIR", None)
    env.pop("RESUME", None)
    env.pop("MPNN_ENGINE", None)
    done = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [
        "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "runs" / "77"), "--engine", "horovod",
        "--config", str(tmp_path / "settings.yaml"), "--resume",
        "--intra-op-threads", "4", "--epochs", "2", "--intra-op-threads", "1",
    ]


@pytest.mark.parametrize("script", ["slurm/train-cpu.sbatch", "pbs/train-cpu.pbs", "cray/train-knl.pbs"])
def test_missing_data_is_named(script, tmp_path):
    env = job_env(PBS_O_WORKDIR=str(tmp_path))
    env.pop("DATA", None)
    done = subprocess.run(["bash", str(REPO / "jobs" / script)], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 1
    assert "set DATA to a prepared data set" in done.stderr


def test_an_unknown_engine_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    env = job_env(DATA="data", MPNN_ENGINE="mpi", SLURM_SUBMIT_DIR=str(tmp_path))
    done = subprocess.run(["bash", "-c", f"source {REPO}/jobs/common.sh; mpnn_setup"], env=env, capture_output=True,
                          text=True, cwd="/")
    assert done.returncode == 1
    assert done.stderr.strip().endswith("MPNN_ENGINE must be horovod or tf-distribute, got 'mpi'")


def test_tf_distribute_tasks_go_through_mpnn_launch(tmp_path):
    """Under Slurm and PBS each task of tf-distribute runs mpnn-launch in its scheduler's mode."""
    shell = (f"source {REPO}/jobs/common.sh; for engine in horovod tf-distribute; do MPNN_ENGINE=$engine; "
             "for mode in slurm pbs; do mpnn_task_prefix $mode; echo \"$engine $mode: ${MPNN_TASK[*]}\"; done; done")
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True)
    assert done.stdout.splitlines() == ["horovod slurm: ", "horovod pbs: ", "tf-distribute slurm: mpnn-launch --slurm",
                                        "tf-distribute pbs: mpnn-launch --pbs"]
