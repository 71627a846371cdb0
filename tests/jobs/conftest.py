"""Fixtures of the job-script tests: the environment a batch job gets, and a real one-node
Slurm cluster on this machine (Debian's slurm-wlm and munge, installed when missing and root).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.helpers import REPO

log = logging.getLogger(__name__)

SMALL_MODEL = "--batch-size 32 --width 16 --message-steps 2 --verbose 2"


def job_env(**variables: str) -> dict[str, str]:
    """This process's environment plus what a job script needs to find this checkout.

    MPNN_HOME is the checkout under test (also first on PYTHONPATH, so a worktree's code is
    imported), MPNN_VENV the Python environment running the tests.
    """
    env = dict(os.environ)
    env["MPNN_HOME"] = str(REPO)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    venv = Path(sys.prefix)
    if (venv / "bin" / "activate").is_file():
        env["MPNN_VENV"] = str(venv)
    else:
        env["MPNN_VENV"] = "none"
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env.update(variables)
    return env


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll `condition` every `interval` seconds for up to `timeout` seconds; its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


@dataclass
class SlurmCluster:
    """A running one-node cluster: its slurm.conf, and an environment that points at it."""

    root: Path
    conf: Path
    env: dict[str, str]

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command (squeue, scontrol, ...) against this cluster."""
        return subprocess.run(command, env=self.env, check=check, capture_output=True, text=True, timeout=60)

    def job_field(self, job_id: str, name: str) -> str:
        """One field of `scontrol show job` (e.g. JobState, Restarts), '' if unknown."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
        return fields.get(name, "")

    def describe(self, job_id: str) -> str:
        """The job's and the node's state and the daemons' logs, for failure messages."""
        job = self.run("scontrol", "show", "job", job_id, check=False).stdout
        nodes = self.run("scontrol", "show", "node", check=False).stdout
        return f"{job}\n{nodes}\n{self.logs()}\n"

    def logs(self) -> str:
        """The end of the daemons' logs, for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-20:]))
        return "\n".join(parts)


def _require_slurm() -> None:
    """Skip unless Slurm and munge are installed (scripts/test.sh installs them as root)."""
    if not (shutil.which("slurmctld") and shutil.which("munged")):
        pytest.skip("Slurm is not installed (slurmctld, munged): as root, scripts/test.sh installs slurm-wlm and munge")


def _munge_works() -> bool:
    encode = subprocess.run(["munge", "-n"], capture_output=True)
    if encode.returncode != 0:
        return False
    return subprocess.run(["unmunge"], input=encode.stdout, capture_output=True).returncode == 0


def _start_munge() -> int | None:
    """Make sure munged runs; return its pid if this call started it."""
    if _munge_works():
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        shutil.chown(key, "munge", "munge")
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    # munged refuses to run as root with a key owned by the munge user.
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
    if not wait_for(_munge_works, 20):
        pytest.fail("munged started but does not answer (munge -n | unmunge)")
    return int((run_dir / "munged.pid").read_text())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_line(host: str) -> str:
    """This machine as a Slurm node: `slurmd -C`'s CPU layout, 90% of its memory (so that
    slurmd's own later count never falls below it and drains the node)."""
    detected = subprocess.run(["slurmd", "-C"], check=True, capture_output=True, text=True).stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in detected.split())
    layout = " ".join(f"{key}={fields[key]}" for key in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                                         "ThreadsPerCore"))
    memory = int(int(fields["RealMemory"]) * 0.9)
    return f"NodeName={host} NodeAddr=127.0.0.1 {layout} RealMemory={memory} State=UNKNOWN"


def write_slurm_conf(root: Path) -> Path:
    """A slurm.conf for one node (this machine) with all state, spool, pid and log files under `root`."""
    host = socket.gethostname().split(".")[0]
    for name in ("state", "spool"):
        (root / name).mkdir(exist_ok=True)
    settings = {
        "ClusterName": "mpnntest",
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmctldPort": _free_port(),
        "SlurmdPort": _free_port(),
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log",
        "SlurmdLogFile": root / "slurmd.log",
        # No cgroups in a container: track processes through /proc; bind CPUs with
        # sched_setaffinity (task/affinity), which srun --cpu-bind=cores needs.
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/affinity",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "MpiDefault": "none",  # the job scripts ask for --mpi=pmix themselves
        "ReturnToService": 2,
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "KillWait": 5,
        # A requeued or cancelled job's TensorFlow ranks can take more than the default 60 s
        # to exit on loaded cores; past this, Slurm drains the node and nothing runs again.
        "UnkillableStepTimeout": 300,
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append(_node_line(host))
    lines.append(f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP")
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    log.warning("%s (pid %d) did not stop on SIGTERM", pid_file.stem, pid)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """slurmctld and slurmd for this machine, started with a generated slurm.conf; stopped
    (with munged, if this fixture started it) at the end of the session."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the Slurm tests need Linux")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    _require_slurm()
    root = tmp_path_factory.mktemp("slurm")
    munged = _start_munge()
    conf = write_slurm_conf(root)
    cluster = SlurmCluster(root, conf, {**os.environ, "SLURM_CONF": str(conf)})
    try:
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=cluster.env, check=True, timeout=60)

        def node_idle() -> bool:
            return cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip() == "idle"

        if not wait_for(node_idle, 60):
            pytest.fail("the Slurm node is not idle 60 s after starting the daemons:\n" + cluster.logs())
        yield cluster
    finally:
        jobs = cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if jobs:
            cluster.run("scancel", *jobs, check=False)
        _stop(root / "slurmd.pid")
        _stop(root / "slurmctld.pid")
        if munged is not None:
            os.kill(munged, 15)
