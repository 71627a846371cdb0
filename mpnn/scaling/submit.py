"""``mpnn-scaling submit``: one batch job per run, from the scripts in ``jobs/``.

Slurm: ``sbatch --nodes N --ntasks-per-node R [--gpus-per-node R] --export=ALL,DATA=...,
RUN_DIR=...,TRAIN_ARGS=... jobs/slurm/train-{gpu,cpu}.sbatch`` (the flags override the
script's ``#SBATCH`` lines). PBS Pro: ``qsub -l select=N:ncpus=R:mpiprocs=R[:ngpus=R] -v
DATA=...,RANKS_PER_NODE=R,... jobs/pbs/train-{gpu,cpu}.pbs``. A run of K ranks takes
``ceil(K / per-node)`` nodes, where per-node is ``--gpus-per-node`` (GPU script, one rank
per GPU) or ``--cpus-per-node`` (CPU script, one rank per core); K must fill its nodes
evenly. Site settings (account, queue, wall time, file systems) go in ``--scheduler-args``.

The job ids are recorded in ``DIR/jobs.json``. Runs that finished (``metrics.json``) or
were submitted before are skipped unless ``--resubmit`` (the job scripts pass ``--resume``,
so a resubmitted run continues from its last checkpoint).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mpnn
from mpnn import atomic
from mpnn.errors import UserError
from mpnn.scaling.local import is_finished
from mpnn.scaling.plan import Run, Study, read_json

log = logging.getLogger("mpnn-scaling")

SCHEDULERS = ("slurm", "pbs")
SCRIPTS = {
    ("slurm", "gpu"): "slurm/train-gpu.sbatch",
    ("slurm", "cpu"): "slurm/train-cpu.sbatch",
    ("pbs", "gpu"): "pbs/train-gpu.pbs",
    ("pbs", "cpu"): "pbs/train-cpu.pbs",
}
JOBS_FILE = "jobs.json"


class SubmitError(UserError, RuntimeError):
    """A run that cannot be submitted (the message says which and why)."""


@dataclass(frozen=True)
class Layout:
    """How a run's ranks sit on nodes: `nodes` x `ranks_per_node`, one GPU or core each."""

    nodes: int
    ranks_per_node: int
    device: str  # "gpu" or "cpu"


def node_layout(ranks: int, gpus_per_node: int | None = None, cpus_per_node: int | None = None) -> Layout:
    """Place `ranks` on as few nodes as hold them, one rank per GPU (or per core)."""
    if (gpus_per_node is None) == (cpus_per_node is None):
        raise SubmitError("give exactly one of --gpus-per-node (GPU jobs) and --cpus-per-node (CPU jobs)")
    capacity = gpus_per_node if gpus_per_node is not None else cpus_per_node
    if capacity < 1:
        raise SubmitError(f"devices per node must be positive, got {capacity}")
    per_node = min(ranks, capacity)
    if ranks % per_node:
        raise SubmitError(f"{ranks} ranks do not fill nodes of {capacity} evenly")
    return Layout(ranks // per_node, per_node, "gpu" if gpus_per_node is not None else "cpu")


def default_jobs_dir() -> str:
    """``jobs/`` of the checkout this package runs from."""
    return str(Path(mpnn.__file__).resolve().parents[1] / "jobs")


def job_variables(run: Run, study: Study, study_dir: str) -> dict[str, str]:
    """The variables the job scripts read (see the top of each script)."""
    if any(not arg or any(c.isspace() for c in arg) for arg in run.train_args):
        raise SubmitError(f"{run.id}: the job scripts word-split TRAIN_ARGS, so {run.train_args} "
                          "must not hold empty arguments or whitespace")
    variables = {"DATA": study.data, "RUN_DIR": os.path.join(os.path.abspath(study_dir), run.run_dir),
                 "TRAIN_ARGS": " ".join(run.train_args)}
    if study.config:
        variables["CONFIG"] = study.config
    # The scripts source $MPNN_HOME/jobs/common.sh (default: the submit directory): point them
    # at this package's checkout, wherever the user submits from and whatever --jobs-dir is.
    checkout = Path(default_jobs_dir()).parent
    if "MPNN_HOME" not in os.environ and (checkout / "jobs" / "common.sh").is_file():
        variables["MPNN_HOME"] = str(checkout)
    return variables


def submit_command(scheduler: str, run: Run, study: Study, study_dir: str, layout: Layout,
                   jobs_dir: str, scheduler_args: list[str]) -> list[str]:
    """The sbatch or qsub command line of one run."""
    script = os.path.join(jobs_dir, SCRIPTS[scheduler, layout.device])
    if not os.path.isfile(script):
        raise SubmitError(f"{script}: no such job script (choose the scripts' directory with --jobs-dir)")
    variables = job_variables(run, study, study_dir)
    nodes, per_node = layout.nodes, layout.ranks_per_node
    if scheduler == "pbs":
        variables["RANKS_PER_NODE"] = str(per_node)
    # Both schedulers split the variable list on commas; a comma inside a value would cut it.
    with_comma = [name for name, value in variables.items() if "," in value]
    if with_comma:
        raise SubmitError(f"{run.id}: {with_comma} contain a comma, which sbatch --export and qsub -v cannot pass")
    listing = ",".join(f"{name}={value}" for name, value in variables.items())
    if scheduler == "slurm":
        resources = [f"--nodes={nodes}", f"--ntasks-per-node={per_node}"]
        if layout.device == "gpu":
            resources.append(f"--gpus-per-node={per_node}")
        return ["sbatch", "--parsable", f"--job-name={run.id}", *resources, *scheduler_args,
                f"--export=ALL,{listing}", script]
    device = f"ngpus={per_node}" if layout.device == "gpu" else f"ncpus={per_node}"
    return ["qsub", "-N", run.id, "-l", f"select={nodes}:mpiprocs={per_node}:{device}", *scheduler_args,
            "-v", listing, script]


def submit(scheduler: str, study: Study, runs: list[Run], study_dir: str, *, gpus_per_node: int | None = None,
           cpus_per_node: int | None = None, jobs_dir: str | None = None, scheduler_args: list[str] | None = None,
           resubmit: bool = False, dry_run: bool = False) -> dict[str, str]:
    """Submit the runs that need it; returns {run id: job id} of this call's jobs (with
    `dry_run` the commands are printed and nothing is submitted or written)."""
    if scheduler not in SCHEDULERS:
        raise SubmitError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    jobs_dir = jobs_dir or default_jobs_dir()
    jobs_path = os.path.join(study_dir, JOBS_FILE)
    records = read_json(jobs_path) if os.path.exists(jobs_path) else {}
    submitted = {}
    for run in runs:
        if is_finished(run, study_dir) or (run.id in records and not resubmit):
            log.info("%s: %s, not submitted", run.id, "finished" if is_finished(run, study_dir) else
                     f"submitted before as job {records[run.id]['job_id']} (--resubmit to submit again)")
            continue
        layout = node_layout(run.ranks, gpus_per_node, cpus_per_node)
        command = submit_command(scheduler, run, study, study_dir, layout, jobs_dir, scheduler_args or [])
        if dry_run:
            print(shlex.join(command))
            continue
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SubmitError(f"{run.id}: {command[0]} failed (exit code {result.returncode}): "
                              f"{result.stderr.strip() or result.stdout.strip()}")
        job_id = result.stdout.strip().split(";")[0]  # sbatch --parsable: "id" or "id;cluster"
        log.info("%s: job %s (%d node(s) x %d rank(s))", run.id, job_id, layout.nodes, layout.ranks_per_node)
        records[run.id] = {"job_id": job_id, "scheduler": scheduler, "command": command,
                           "submitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        atomic.write_json(jobs_path, records)  # after every job, so a later failure keeps the record
        submitted[run.id] = job_id
    return submitted
