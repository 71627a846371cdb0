"""mpnn-train --elastic under horovodrun: a worker killed mid-epoch, and the worker back.

Two host names that resolve to this machine (``localhost`` and its host name), one slot
each, so Horovod starts both workers locally without ssh, and a discovery script that
prints a file the test rewrites (see /work/shared/notes/horovod-elastic-on-one-machine.md).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import tensorflow as tf

from mpnn import checkpoint

HOSTS_FILE = "hosts.txt"
LOST_RANK0_WORKER = Path(__file__).with_name("rank0_lost_worker.py")
SMALL = ["--batch-size", "32", "--width", "16", "--message-steps", "2", "--verbose", "2"]


def _epochs_done(run_dir: Path) -> int:
    pointer = tf.train.get_checkpoint_state(checkpoint.state_directory(str(run_dir)))
    return int(pointer.model_checkpoint_path.rsplit("-", 1)[1]) if pointer else 0


def _workers() -> dict[int, str]:
    """The mpnn-train workers Horovod started: ``{pid: host name}`` (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        hosts = [v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"HOROVOD_HOSTNAME=")]
        if b"mpnn.cli.train" in cmdline and b"--elastic" in cmdline and hosts:  # not horovodrun itself
            found[int(entry)] = hosts[0]
    return found


def _worker_on(host: str) -> int | None:
    """The pid of the mpnn-train worker Horovod started for `host`."""
    return next((pid for pid, name in _workers().items() if name == host), None)


def _wait(condition, job: subprocess.Popen, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if job.poll() is not None:
            raise AssertionError(f"horovodrun ended (exit {job.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _start(
    water_dataset: Path, tmp_path: Path, epochs: int, worker: Sequence[str] = ("-m", "mpnn.cli.train")
) -> tuple[subprocess.Popen, Path, Path, Path, str]:
    """Start ``horovodrun`` elastic training of `epochs` on two local workers with a constant
    learning rate, each worker ``python WORKER mpnn-train-arguments``; returns the job, the
    hosts file the discovery script prints (`HOSTS_FILE` in `tmp_path`), the run directory,
    the log file and the second worker's host name."""
    other_host = socket.gethostname()
    assert other_host != "localhost"
    hosts = tmp_path / HOSTS_FILE
    hosts.write_text(f"localhost:1\n{other_host}:1\n")
    discover = tmp_path / "discover.sh"
    discover.write_text(f"#!/bin/sh\ncat {hosts}\n")
    discover.chmod(0o755)
    run_dir = tmp_path / "run"
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    command = [
        horovodrun, "-np", "2", "--min-np", "1", "--max-np", "2", "--host-discovery-script", str(discover),
        "--network-interface", "lo", "--blacklist-cooldown-range", "1", "2",
        sys.executable, *worker, "--elastic", "--data", str(water_dataset), "--epochs", str(epochs),
        "--run-dir", str(run_dir), "--lr-decay", "none", "--warmup-epochs", "0", *SMALL,
    ]  # fmt: skip
    log_path = tmp_path / "horovodrun.log"
    with open(log_path, "w") as log:
        job = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return job, hosts, run_dir, log_path, other_host


def _finished(job: subprocess.Popen, log_path: Path, run_dir: Path, water_dataset: Path, epochs: int,
              status: int = 0) -> str:
    """Check that the job ended with `status` and a complete run directory; returns its output."""
    output = log_path.read_text()
    assert job.returncode == status, output[-5000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((water_dataset / "manifest.json").read_text())
    assert metrics["epochs_run"] == epochs
    assert metrics["test"]["count"] == manifest["splits"]["test"]["records"]
    with open(run_dir / "log.csv") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == list(range(epochs))
    return output


@pytest.mark.integration
def test_elastic_training_survives_a_killed_worker_and_takes_it_back(water_dataset, tmp_path):
    epochs = 20  # at a constant rate an epoch takes about 1.5 s here; a new worker needs some 15 s to join
    job, hosts, run_dir, log_path, other_host = _start(water_dataset, tmp_path, epochs)
    try:
        _wait(lambda: _epochs_done(run_dir) >= 1, job, 600, "the first epoch")
        time.sleep(0.5)  # into the second epoch
        victim = _worker_on(other_host)  # rank 0 or 1: Horovod orders the discovered hosts as a set
        assert victim is not None
        hosts.write_text("localhost:1\n")
        os.kill(victim, signal.SIGKILL)
        killed_after = _epochs_done(run_dir)
        assert killed_after < epochs - 2, "training ended too soon to test a worker coming back"
        # The survivor goes on alone; then the host comes back and a new worker joins.
        _wait(lambda: _epochs_done(run_dir) > killed_after, job, 600, "an epoch on the surviving worker")
        hosts.write_text(f"localhost:1\n{other_host}:1\n")
        job.wait(timeout=900)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    output = _finished(job, log_path, run_dir, water_dataset, epochs)
    assert "elastic: training on 1 rank(s)" in output, output[-5000:]
    assert output.index("elastic: training on 1 rank(s)") < output.rindex("elastic: training on 2 rank(s)")
    # The membership policy: the per-rank batch (32) and the learning rate (1e-3 scaled once,
    # linearly, for the 2 ranks at the start: 2e-3) are kept, so the global batch follows the
    # workers and every epoch, on 1 rank too, ran at 2e-3.
    policy = set(re.findall(r"elastic: (\d) rank\(s\) x 32 graphs: global batch (\d+), learning rate (\S+) ", output))
    assert policy == {("2", "64", "0.002"), ("1", "32", "0.002")}, output[-5000:]
    with open(run_dir / "log.csv") as handle:
        rates = [float(row["lr"]) for row in csv.DictReader(handle)]
    assert rates == [pytest.approx(2e-3)] * epochs


@pytest.mark.integration
@pytest.mark.parametrize("point", ["before-log", "after-checkpoint"])
def test_a_rank_0_lost_at_the_end_of_an_epoch_leaves_every_epoch_logged_once(water_dataset, tmp_path, point):
    """Rank 0 lost at the end of epoch 1, after the epoch's collectives (the worker kills
    itself there, see rank0_lost_worker.py): the survivor rolls back to the commit of epoch 0
    and trains epoch 1 again, whether or not the lost rank 0 had written its row and
    checkpoint. Before the fix the survivor committed epoch 1 unwritten (log.csv without its
    row), or kept the lost rank 0's row and wrote a second one."""
    epochs = 3
    hosts = tmp_path / HOSTS_FILE
    worker = [str(LOST_RANK0_WORKER), point, "1", str(hosts)]
    job, _, run_dir, log_path, _ = _start(water_dataset, tmp_path, epochs, worker=worker)
    try:
        job.wait(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert hosts.with_name(HOSTS_FILE + ".lost").exists(), f"rank 0 was never lost: nothing was tested\n{output[-3000:]}"
    assert "elastic: training on 1 rank(s) from epoch 1" in output, output[-5000:]
    _finished(job, log_path, run_dir, water_dataset, epochs)


@pytest.mark.integration
def test_a_worker_lost_during_the_final_evaluation_changes_nothing(water_dataset, tmp_path):
    epochs = 2
    job, hosts, run_dir, log_path, other_host = _start(water_dataset, tmp_path, epochs)
    try:
        # The last checkpoint is written as training ends: both workers are leaving the
        # elastic loop for the final evaluation, where the second one is killed.
        _wait(lambda: _epochs_done(run_dir) >= epochs, job, 600, "the last epoch")
        rank0 = json.loads((run_dir / "run.lock").read_text())["pid"]  # rank 0 holds the run directory
        victim, host = next(((pid, host) for pid, host in _workers().items() if pid != rank0), (None, None))
        if victim is not None:
            hosts.write_text("".join(f"{name}:1\n" for name in ("localhost", other_host) if name != host))
            os.kill(victim, signal.SIGKILL)
        job.wait(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert victim is not None, "the second worker had ended before it could be killed: nothing was tested"
    # Rank 0 evaluates alone and writes every result. horovodrun's own status is Horovod's
    # race: 1, naming the killed worker's 137, when its driver records the failure before the
    # discovery script drops the host; 0 when the host is gone first (the driver then ignores
    # a worker of an unlisted host). The run directory is complete either way.
    output = log_path.read_text()
    assert job.returncode in (0, 1), output[-5000:]
    if job.returncode == 1:
        assert output.rstrip().endswith("one or more processes exited with non-zero status, thus causing the job "
                                        f"to be terminated. The first process to do so was:\nProcess name: {host}[0]"
                                        "\nExit code: 137"), output[-3000:]
    output = _finished(job, log_path, run_dir, water_dataset, epochs, status=job.returncode)
    assert f"{epochs} epochs in " in output  # rank 0's summary
    assert json.loads((run_dir / "metrics.json").read_text())["weights_identical_across_ranks"] is None
