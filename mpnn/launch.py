"""``mpnn-launch``: start the workers of a tf.distribute run (`mpnn.engines.tf_distribute`).

Three ways, as HPC users launch::

    mpnn-launch -np 2 mpnn-train --data ... --engine tf-distribute     # this machine
    srun mpnn-launch --slurm mpnn-train --data ...                     # each Slurm task
    mpiexec -n 8 ... mpnn-launch --pbs mpnn-train --data ...           # each PBS rank

- ``-np K``: K workers on this machine, each with its ``TF_CONFIG`` (free localhost ports);
  their output prefixed by rank as horovodrun does (``[1]<stderr>:``); SIGINT, SIGTERM,
  SIGUSR1 and SIGUSR2 forwarded to every worker; when a worker fails the others are stopped
  (they would wait for it in the next all-reduce); exits with the worst exit status.
- ``--slurm`` / ``--pbs``: this process is one task that srun / mpiexec started; it writes
  its ``TF_CONFIG`` from the scheduler's variables (`mpnn.cluster_env`) and becomes the
  command (exec), so srun's and mpiexec's own signal handling and exit status apply.

Missing what a mode needs (no ``SLURM_*``, no node file) is one line and exit 2. TensorFlow
is never imported here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import IO, Sequence

from mpnn import cluster_env

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# Seconds the other workers get to stop after one has failed, before they are killed.
STOP_GRACE_SECONDS = 20


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on localhost (held open together while chosen)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("localhost", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _prefix_lines(source: IO[bytes], sink: IO[bytes], prefix: bytes, lock: threading.Lock) -> None:
    for line in iter(source.readline, b""):
        with lock:
            sink.write(prefix + line)
            sink.flush()


def worst_status(statuses: Sequence[int]) -> int:
    """The exit status of the launch: 0 if every worker succeeded, else the largest status
    (a worker killed by signal N counts as 128 + N, as a shell reports it)."""
    return max((128 - status if status < 0 else status for status in statuses), default=0)


def launch_local(workers: int, command: Sequence[str]) -> int:
    """Run `command` as `workers` tf.distribute workers on this machine; the worst status."""
    cluster_ports = free_ports(workers)
    processes: list[subprocess.Popen] = []
    lock = threading.Lock()
    threads = []
    for index in range(workers):
        env = {**os.environ, "TF_CONFIG": cluster_env.local_cluster(cluster_ports, index).tf_config()}
        process = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        processes.append(process)
        for stream, sink, name in ((process.stdout, sys.stdout.buffer, b"stdout"), (process.stderr, sys.stderr.buffer, b"stderr")):
            thread = threading.Thread(target=_prefix_lines, args=(stream, sink, b"[%d]<%s>:" % (index, name), lock),
                                      daemon=True)
            thread.start()
            threads.append(thread)

    def forward(signum, _frame):
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        statuses = _wait_all(processes)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for thread in threads:
        thread.join(timeout=5)
    return worst_status(statuses)


def _wait_all(processes: list[subprocess.Popen]) -> list[int]:
    """Wait for every process; once one fails, stop the others (SIGTERM, then SIGKILL after
    `STOP_GRACE_SECONDS`). Returns as soon as the last one has exited."""
    pending = set(range(len(processes)))
    killer: threading.Timer | None = None
    while pending:
        for index in sorted(pending):
            try:
                status = processes[index].wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            pending.discard(index)
            if status != 0 and killer is None:
                print(f"mpnn-launch: worker {index} exited with status {status}; stopping the others",
                      file=sys.stderr, flush=True)
                for other in pending:
                    processes[other].terminate()
                killer = threading.Timer(STOP_GRACE_SECONDS, lambda: [p.kill() for p in processes if p.poll() is None])
                killer.start()
    if killer is not None:
        killer.cancel()  # else the launcher would wait out the grace period after its workers
    return [process.returncode for process in processes]


def exec_as_task(cluster: cluster_env.Cluster, command: Sequence[str]) -> None:
    """Become `command` with this task's ``TF_CONFIG`` (does not return)."""
    os.environ["TF_CONFIG"] = cluster.tf_config()
    os.execvp(command[0], list(command))


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m mpnn.launch: the command is mpnn-launch (or python -m mpnn.cli.launch)")
