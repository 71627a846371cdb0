"""Where the workers of a tf.distribute run are: ``TF_CONFIG`` read, and written from what a
launcher or scheduler says (one machine, Slurm, PBS). TensorFlow-free, so `mpnn.launch`
starts fast and these rules are tested without a cluster.

``TF_CONFIG`` is TensorFlow's multi-worker description::

    {"cluster": {"worker": ["node1:20000", "node1:20001", "node2:20000"]},
     "task": {"type": "worker", "index": 1}}

Every worker gets the same list and its own index (its rank). Under Slurm and PBS the list
is built by each task from the scheduler's variables, with no exchange between them, so
all must derive the same ports: `job_port_base` of the job id, plus the task's index among
the tasks of its node.

Why our own ``TF_CONFIG`` for Slurm rather than TensorFlow's `SlurmClusterResolver`: the
resolver gives every job the same port base (8888), so two jobs sharing a node collide; it
runs ``scontrol`` on every compute node and sets ``CUDA_VISIBLE_DEVICES`` itself, against
our one-GPU-per-local-rank pinning (`mpnn.distributed.init`); and it lives inside
TensorFlow, whereas the cluster must be known before TensorFlow starts (the thread plan
needs the ranks per node). The same block rule (tasks 0..n-1 on the first node, ...) is
used, and checked against the task's own host name.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from typing import Mapping

from mpnn.errors import UsageError

# Ports of a job's workers: PORT_BASE_LOW + (job id mod PORT_JOB_SLOTS) * PORTS_PER_JOB + task
# on its node (below 65,536 and above the usual ephemeral-free range start).
PORT_BASE_LOW = 20000
PORTS_PER_JOB = 128
PORT_JOB_SLOTS = 300
# Variables in which MPI launchers give a process its rank and the world size.
MPI_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "PALS_RANKID")
MPI_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PALS_SIZE")


@dataclass(frozen=True)
class Cluster:
    """The workers of a run (``host:port`` each, in rank order) and this worker's index."""

    workers: tuple[str, ...]
    index: int

    @property
    def size(self) -> int:
        return len(self.workers)

    def _host(self, worker: str) -> str:
        return worker.rsplit(":", 1)[0]

    @property
    def local_ranks(self) -> list[int]:
        """Indices of the workers on this worker's host, in rank order."""
        mine = self._host(self.workers[self.index])
        return [i for i, worker in enumerate(self.workers) if self._host(worker) == mine]

    @property
    def local_rank(self) -> int:
        return self.local_ranks.index(self.index)

    @property
    def local_size(self) -> int:
        return len(self.local_ranks)

    def tf_config(self) -> str:
        return json.dumps({"cluster": {"worker": list(self.workers)}, "task": {"type": "worker", "index": self.index}})


def cluster_from_tf_config(text: str) -> Cluster | None:
    """The cluster ``TF_CONFIG`` `text` describes (None when empty); `UsageError` if it is
    not a worker list with this task's index."""
    if not text:
        return None
    try:
        config = json.loads(text)
        workers = tuple(config["cluster"]["worker"])
        index = int(config["task"]["index"])
        if config["task"].get("type", "worker") != "worker" or not 0 <= index < len(workers):
            raise ValueError("task is not one of the workers")
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"TF_CONFIG: not a worker cluster with this task's index ({exc})") from None
    return Cluster(workers, index)


def check_alone(environ: Mapping[str, str]) -> None:
    """A process without ``TF_CONFIG`` is a rank alone: `UsageError` when a launcher started
    it as one of several tasks (srun, mpiexec), which would each train alone."""
    for variable in ("SLURM_STEP_NUM_TASKS", *MPI_SIZE_VARIABLES):
        if int(environ.get(variable, "1") or 1) > 1:
            raise UsageError(
                f"--engine tf-distribute: started as one of {environ[variable]} tasks ({variable}) without TF_CONFIG; "
                "start each task through mpnn-launch (--slurm under srun, --pbs under mpiexec)"
            )


def local_cluster(ports: list[int], index: int) -> Cluster:
    """Worker `index` of ``len(ports)`` workers on this machine (localhost)."""
    return Cluster(tuple(f"localhost:{port}" for port in ports), index)


def job_port_base(job_id: str) -> int:
    """The first port of a scheduler job's workers (its numeric part; array jobs' ``_N`` kept)."""
    digits = int("".join(re.findall(r"\d", job_id)) or 0)
    return PORT_BASE_LOW + (digits % PORT_JOB_SLOTS) * PORTS_PER_JOB


def _workers(hosts: list[str], port_base: int) -> tuple[str, ...]:
    """``host:port`` per task slot, the k-th slot of a host at ``port_base + k``."""
    seen: dict[str, int] = {}
    workers = []
    for host in hosts:
        slot = seen.get(host, 0)
        if slot >= PORTS_PER_JOB:
            raise UsageError(f"more than {PORTS_PER_JOB} workers on {host}: not supported")
        seen[host] = slot + 1
        workers.append(f"{host}:{port_base + slot}")
    return tuple(workers)


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list (``node[01-03,07],gpu1``) as host names, in order."""
    hosts: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            if not last:
                hosts.append(prefix + first)
                continue
            hosts.extend(f"{prefix}{number:0{len(first)}d}" for number in range(int(first), int(last) + 1))
    return hosts


def expand_tasks_per_node(text: str) -> list[int]:
    """Slurm's tasks per node (``2(x3),1``) as one count per node (``[2, 2, 2, 1]``)."""
    counts: list[int] = []
    for count, repeat in re.findall(r"(\d+)(?:\(x(\d+)\))?", text):
        counts.extend([int(count)] * int(repeat or 1))
    return counts


def _short(host: str) -> str:
    return host.split(".")[0]


def slurm_cluster(environ: Mapping[str, str]) -> Cluster:
    """This Slurm task's cluster: the step's nodes (``SLURM_STEP_NODELIST``, else the job's),
    its tasks per node, block distribution, rank ``SLURM_PROCID``.

    Raises:
        UsageError: not inside a Slurm job step (a variable missing), or a task distribution
            other than block (this task's host is not the one the block rule gives it).
    """
    needed = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS")
    missing = [name for name in needed if not environ.get(name)]
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    tasks = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    if not nodelist:
        missing.append("SLURM_JOB_NODELIST")
    if not tasks:
        missing.append("SLURM_TASKS_PER_NODE")
    if missing:
        raise UsageError(
            f"--slurm: no {', '.join(missing)}: not a Slurm task (run it as 'srun mpnn-launch --slurm ...' in a job)"
        )
    nodes = expand_nodelist(nodelist)
    counts = expand_tasks_per_node(tasks)
    if len(counts) != len(nodes):
        raise UsageError(f"--slurm: {len(nodes)} nodes in {nodelist!r} but tasks per node {tasks!r}")
    hosts = [node for node, count in zip(nodes, counts) for _ in range(count)]
    size, index = int(environ["SLURM_NTASKS"]), int(environ["SLURM_PROCID"])
    if len(hosts) != size:
        raise UsageError(f"--slurm: SLURM_NTASKS={size} but {tasks!r} tasks per node give {len(hosts)}")
    here = _short(environ.get("SLURMD_NODENAME") or socket.gethostname())
    if _short(hosts[index]) != here:
        raise UsageError(
            f"--slurm: task {index} runs on {here}, block distribution puts it on {hosts[index]}: "
            "launch with srun --distribution=block"
        )
    return Cluster(_workers(hosts, job_port_base(environ["SLURM_JOB_ID"])), index)


def pbs_cluster(environ: Mapping[str, str]) -> Cluster:
    """This PBS rank's cluster: one worker per line of ``$PBS_NODEFILE`` (a host per rank
    slot, grouped by host, as ``mpiexec`` maps ranks by node), rank from the MPI launcher.

    Raises:
        UsageError: no node file, an empty one, no rank variable, or a rank count other
            than the node file's.
    """
    path = environ.get("PBS_NODEFILE", "")
    try:
        with open(path) as handle:
            hosts = [line.strip() for line in handle if line.strip()]
    except OSError:
        raise UsageError(
            f"--pbs: PBS_NODEFILE={path!r} is not a readable file: not inside a PBS job (submit with qsub)"
        ) from None
    if not hosts:
        raise UsageError(f"--pbs: {path} lists no hosts")
    rank_variable = next((name for name in MPI_RANK_VARIABLES if environ.get(name)), None)
    if rank_variable is None:
        raise UsageError(
            f"--pbs: no rank from the MPI launcher ({', '.join(MPI_RANK_VARIABLES)}): run it under mpiexec"
        )
    size_variable = next((name for name in MPI_SIZE_VARIABLES if environ.get(name)), None)
    if size_variable is not None and int(environ[size_variable]) != len(hosts):
        raise UsageError(f"--pbs: {environ[size_variable]} ranks ({size_variable}) but {len(hosts)} lines in {path}")
    return Cluster(_workers(hosts, job_port_base(environ.get("PBS_JOBID", "0"))), int(environ[rank_variable]))
