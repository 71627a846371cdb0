"""``mpnn-scaling run --local``: train a study's runs one after another on this machine.

Each run is ``horovodrun -np K -H localhost:K --gloo python -m mpnn.cli.train ARGS --resume``,
the command `jobs/local/train.sh` runs (called directly here so that it uses this Python
environment wherever the package is installed). A run whose ``metrics.json`` exists is
skipped and an unfinished one continues from its last checkpoint (``--resume``), so an
interrupted study goes on where it stopped; a failed run is logged and the study goes on
with the next one. Each run's output goes to ``DIR/logs/<run id>.log``.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from mpnn.mpi_env import mpi_launch_environment
from mpnn.rundir import RunDir
from mpnn.scaling.plan import Run, Study

log = logging.getLogger("mpnn-scaling")

LOGS_SUBDIR = "logs"
CONTROLLERS = ("gloo", "mpi")


@dataclass
class Outcome:
    """What happened to one run: ``done``, ``skipped`` (finished before) or ``failed``.
    `seconds` is the wall time of the launcher, start-up included."""

    run_id: str
    status: str
    seconds: float
    log_file: str


def is_finished(run: Run, study_dir: str) -> bool:
    """Whether the run wrote its results (`RunDir.has_metrics`)."""
    return RunDir(os.path.join(study_dir, run.run_dir)).has_metrics()


def horovodrun_path() -> str:
    """The ``horovodrun`` of this Python environment, else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    found = beside if os.access(beside, os.X_OK) else shutil.which("horovodrun")
    if not found:
        raise FileNotFoundError("horovodrun not found next to this Python nor on PATH; install Horovod")
    return found


def local_command(run: Run, study: Study, study_dir: str, controller: str = "gloo") -> list[str]:
    """The horovodrun command line of `run` on this machine."""
    return [horovodrun_path(), "-np", str(run.ranks), "-H", f"localhost:{run.ranks}", f"--{controller}",
            sys.executable, "-m", "mpnn.cli.train", *run.mpnn_train_args(study, study_dir), "--resume"]


def run_local(study: Study, runs: list[Run], study_dir: str, controller: str = "gloo",
              dry_run: bool = False) -> list[Outcome]:
    """Train the unfinished runs in order; returns one `Outcome` per run."""
    env = mpi_launch_environment()
    logs = os.path.join(study_dir, LOGS_SUBDIR)
    if not dry_run:
        os.makedirs(logs, exist_ok=True)
    outcomes = []
    for number, run in enumerate(runs, 1):
        log_file = os.path.join(logs, f"{run.id}.log")
        if is_finished(run, study_dir):
            log.info("[%d/%d] %s: finished before, skipped", number, len(runs), run.id)
            outcomes.append(Outcome(run.id, "skipped", 0.0, log_file))
            continue
        command = local_command(run, study, study_dir, controller)
        if dry_run:
            print(shlex.join(command))
            continue
        log.info("[%d/%d] %s: %s", number, len(runs), run.id, shlex.join(command))
        started = time.perf_counter()
        with open(log_file, "w") as output:
            returncode = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env).returncode
        seconds = time.perf_counter() - started
        if returncode == 0 and is_finished(run, study_dir):
            log.info("[%d/%d] %s: done in %.0f s", number, len(runs), run.id, seconds)
            outcomes.append(Outcome(run.id, "done", seconds, log_file))
        else:
            log.error("[%d/%d] %s: failed (exit code %d) after %.0f s; see %s",
                      number, len(runs), run.id, returncode, seconds, log_file)
            outcomes.append(Outcome(run.id, "failed", seconds, log_file))
    return outcomes
