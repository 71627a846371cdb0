"""The PBS CPU script run for real under OpenMPI's mpiexec, with the variables PBS sets."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.cluster

from mpnn.engines import horovod_installed
from tests.helpers import REPO
from tests.jobs.conftest import SMALL_MODEL, job_env

# The engine of the stack running the tests (tf-distribute: each rank runs mpnn-launch --pbs).
ENGINE = "horovod" if horovod_installed() else "tf-distribute"


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec on PATH")
def test_pbs_cpu_script_under_mpiexec(water_dataset, tmp_path):
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("localhost\nlocalhost\n")  # what -l select=1:mpiprocs=2 gives
    env = job_env(
        PBS_JOBID="4242.pbs-test",
        PBS_JOBNAME="mpnn-cpu",
        PBS_O_WORKDIR=str(tmp_path),
        PBS_NODEFILE=str(nodefile),
        PBS_ENVIRONMENT="PBS_BATCH",
        DATA=str(water_dataset),
        TRAIN_ARGS=f"--epochs 1 {SMALL_MODEL}",
        MPNN_ENGINE=ENGINE,
    )
    for name in ("RUN_DIR", "RANKS_PER_NODE", "DEPTH", "NCPUS", "MPIEXEC_FLAVOUR"):
        env.pop(name, None)
    # PBS starts a job in the home directory; the script must find its way to PBS_O_WORKDIR.
    done = subprocess.run(["bash", str(REPO / "jobs" / "pbs" / "train-cpu.pbs")], env=env, cwd="/",
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--hostfile" in done.stderr  # the OpenMPI branch ran
    metrics = json.loads((tmp_path / "runs" / "4242" / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["engine"]["name"] == ENGINE
    assert metrics["epochs_run"] == 1
