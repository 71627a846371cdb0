"""Run directories under stress: one job at a time (the lock), a full disk, a read-only
directory, and a diverging run; each with its one line, exit status and what is left on disk.

The disk cases mount a file system of their own (`small_filesystem`, `read_only_view` in
tests/conftest.py) and are skipped where mounting is not allowed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mpnn import run_lock
from mpnn.run_lock import Holder, RunLock, RunLockedError, holder_is_alive
from tests.helpers import HOROVODRUN_TWO_RANKS, file_digests, fill_disk, poison_energies, read_log

SMALL = ["--batch-size", "4", "--width", "16", "--message-steps", "2", "--verbose", "0"]
HOST = socket.gethostname()


# -- the lock -------------------------------------------------------------------------


def _holder_process(run_dir: Path, **env: str) -> subprocess.Popen:
    """A process that takes the lock of `run_dir` and sleeps (started when it returns)."""
    code = "import sys, time; from mpnn.run_lock import RunLock; lock = RunLock(sys.argv[1]); lock.acquire(); " \
           "print('held', flush=True); time.sleep(300)"
    process = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, **env})
    assert process.stdout.readline() == "held\n"
    return process


def _killed(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return process.pid


@pytest.fixture
def no_job(monkeypatch):
    """This process outside any scheduler job."""
    for name in ("SLURM_JOB_ID", "PBS_JOBID", "COBALT_JOBID", "LSB_JOBID", "SLURM_RESTART_COUNT",
                 "HOROVOD_GLOO_RENDEZVOUS_ADDR", "HOROVOD_GLOO_RENDEZVOUS_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_a_second_holder_is_refused_naming_the_first(tmp_path, no_job):
    holder = _holder_process(tmp_path, SLURM_JOB_ID="4242")
    try:
        with pytest.raises(RunLockedError) as refused:
            RunLock(str(tmp_path)).acquire()
    finally:
        _killed(holder)
    assert re.fullmatch(
        rf"{tmp_path}: run directory in use by host {re.escape(HOST)}, pid {holder.pid}, job 4242, since \S+ "
        rf"\(lock {tmp_path}/run.lock\); wait for that job, or use another --run-dir",
        str(refused.value),
    )


def test_ensure_takes_the_lock_once_and_is_refused_while_another_job_holds_it(tmp_path, no_job):
    """What a worker that becomes rank 0 of an elastic run calls at each (re)start."""
    lock = RunLock(str(tmp_path))
    lock.ensure()
    lock.ensure()  # held already: nothing
    lock.release()
    holder = _holder_process(tmp_path)
    try:
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(str(tmp_path)).ensure()
    finally:
        _killed(holder)


def test_ensure_leaves_the_lock_to_a_worker_of_the_same_launch(tmp_path, monkeypatch, no_job):
    """An elastic run whose rank 0 moved to another worker: the earlier one, alive, still
    holds the lock; the new rank 0 goes on. Another launch (a second job) is refused."""
    holder = _holder_process(tmp_path, HOROVOD_GLOO_RENDEZVOUS_ADDR="10.0.0.1", HOROVOD_GLOO_RENDEZVOUS_PORT="4000")
    try:
        monkeypatch.setenv("HOROVOD_GLOO_RENDEZVOUS_ADDR", "10.0.0.1")
        monkeypatch.setenv("HOROVOD_GLOO_RENDEZVOUS_PORT", "4000")
        RunLock(str(tmp_path)).ensure()  # the same launch: no error
        monkeypatch.setenv("HOROVOD_GLOO_RENDEZVOUS_PORT", "4001")
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(str(tmp_path)).ensure()
    finally:
        _killed(holder)
    assert json.loads((tmp_path / "run.lock").read_text())["launch"] == "10.0.0.1:4000"


def test_a_released_lock_is_empty_and_taken_again_without_a_warning(tmp_path, caplog, no_job):
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert (tmp_path / "run.lock").read_text() == ""
    again = RunLock(str(tmp_path))
    again.acquire()
    again.release()
    assert not [r for r in caplog.records if r.name == run_lock.__name__]


def test_the_lock_of_a_killed_job_is_taken_over_with_a_warning(tmp_path, caplog, no_job):
    pid = _killed(_holder_process(tmp_path))
    lock = RunLock(str(tmp_path))
    lock.acquire()  # the kernel dropped the dead job's flock
    lock.release()
    [warning] = _warnings(caplog)
    assert re.fullmatch(
        rf"{tmp_path}/run.lock: taking over the lock of a job that ended without releasing it "
        rf"\(host {re.escape(HOST)}, pid {pid}, since \S+\)",
        warning,
    )


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_requeued_slurm_job_starts_after_the_old_one_died(tmp_path, caplog, monkeypatch, no_job):
    """Slurm requeues a job under its id; the new start must not wait for the old one."""
    pid = _killed(_holder_process(tmp_path, SLURM_JOB_ID="77"))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["restart"] == "1"
    lock.release()
    [warning] = _warnings(caplog)
    assert f"(host {HOST}, pid {pid}, job 77, since " in warning


def _me(**changes) -> Holder:
    return Holder(**{**dict(host=HOST, pid=os.getpid(), job_id=None, restart=None, since="t"), **changes})


@pytest.mark.parametrize(
    "holder, me, alive",
    [
        (dict(pid=1), {}, True),  # init: a live process on this host
        (dict(pid=2**22 + 1), {}, False),  # above Linux's pid_max default: gone
        (dict(host="elsewhere", pid=2**22 + 1), {}, True),  # cannot be checked from here
        (dict(host="elsewhere", job_id="9", restart=None), dict(job_id="9", restart="1"), False),  # requeued
        (dict(host="elsewhere", job_id="9", restart="1"), dict(job_id="9", restart="1"), True),
    ],
    ids=["live pid", "dead pid", "other host", "earlier run of our requeued job", "same run of our job"],
)
def test_without_flock_the_holder_is_judged_by_its_name(holder, me, alive):
    assert holder_is_alive(_me(**holder), _me(**me)) is alive


def test_where_flock_is_unsupported_a_dead_holder_is_taken_over_and_a_live_one_refused(tmp_path, monkeypatch, no_job):
    """As on Lustre mounted with -o noflock: the file's content decides."""

    def unsupported(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    lock_file = tmp_path / "run.lock"
    lock_file.write_text(json.dumps({"host": HOST, "pid": 2**22 + 1, "job_id": None, "restart": None, "since": "t"}))
    RunLock(str(tmp_path)).acquire()  # dead: taken over
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock_file.write_text(json.dumps({"host": "node7", "pid": 12, "job_id": "5", "restart": None, "since": "t"}))
    with pytest.raises(RunLockedError, match="in use by host node7, pid 12, job 5, since t "):
        RunLock(str(tmp_path)).acquire()


def test_mpnn_train_on_a_run_directory_in_use_is_exit_1_and_writes_nothing(minima_dataset, tmp_path, capsys, no_job):
    from mpnn.cli import train

    run_dir = tmp_path / "run"
    holder = _holder_process(run_dir, SLURM_JOB_ID="4242")
    try:
        assert train.main(["--data", str(minima_dataset), "--run-dir", str(run_dir), "--epochs", "1", *SMALL]) == 1
    finally:
        _killed(holder)
    line = _one_error_line(capsys)
    assert line.startswith(f"{run_dir}: run directory in use by host {HOST}, pid {holder.pid}, job 4242, since ")
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mpnn-train: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0][len("mpnn-train: error: "):]


# -- full disk, read-only directory, divergence: real (short) training runs -----------------


def _train(data: Path, run_dir: Path, *flags: str) -> int:
    from mpnn.cli import train

    return train.main(["--data", str(data), "--run-dir", str(run_dir), *SMALL, *flags])


def _checkpoint_files(run_dir: Path) -> dict[str, str]:
    return file_digests(run_dir / "checkpoints")


@pytest.mark.integration
def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_last_checkpoint_resumes(
    minima_dataset, small_filesystem, capsys
):
    run_dir = small_filesystem / "run"
    assert _train(minima_dataset, run_dir, "--epochs", "1") == 0
    before = _checkpoint_files(run_dir)
    fill_disk(small_filesystem / "filler", leave_bytes=48 * 1024)  # room for the small files, not the weights
    capsys.readouterr()

    assert _train(minima_dataset, run_dir, "--epochs", "3", "--resume") == 1
    assert _one_error_line(capsys) == f"cannot write {run_dir}/checkpoints/best.weights.h5: No space left on device"
    assert _checkpoint_files(run_dir) == before  # epoch 1's checkpoint as it was, no temporary file
    assert [row["epoch"] for row in read_log(run_dir)] == ["0", "1"]  # epoch 2 logged, not checkpointed

    (small_filesystem / "filler").unlink()
    assert _train(minima_dataset, run_dir, "--epochs", "3", "--resume") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["epochs_run"], metrics["resumed_from_epoch"]) == (3, [1])
    assert [row["epoch"] for row in read_log(run_dir)] == ["0", "1", "2"]


@pytest.mark.integration
def test_a_read_only_run_directory_is_one_line_naming_the_file_and_is_left_as_it_was(
    minima_dataset, tmp_path, read_only_view, capsys
):
    assert _train(minima_dataset, tmp_path / "run", "--epochs", "1") == 0
    run_dir = read_only_view(tmp_path / "run")
    before = file_digests(run_dir)
    capsys.readouterr()
    assert _train(minima_dataset, run_dir, "--epochs", "2", "--resume") == 1
    assert _one_error_line(capsys) == f"cannot write {run_dir}/run.lock: Read-only file system"
    assert file_digests(run_dir) == before


@pytest.mark.integration
def test_divergence_stops_naming_epoch_and_step_keeps_the_last_good_checkpoint_and_resumes(
    minima_dataset, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO)
    run_dir = tmp_path / "run"
    assert _train(minima_dataset, run_dir, "--epochs", "1") == 0
    before = _checkpoint_files(run_dir)
    capsys.readouterr()

    assert _train(minima_dataset, run_dir, "--epochs", "3", "--resume", "--learning-rate", "1e30") == 1
    line = _one_error_line(capsys)
    assert re.fullmatch(
        r"training diverged at epoch 2, step \d of 4: loss is (nan|inf) \(learning rate \S+\); the run directory "
        r"keeps epoch 1, the last good one: continue it with --resume and a lower --learning-rate", line
    ), line
    assert _checkpoint_files(run_dir) == before  # no NaN weights over last.weights.h5 or the state
    assert [row["epoch"] for row in read_log(run_dir)] == ["0"]

    assert _train(minima_dataset, run_dir, "--epochs", "3", "--resume", "--learning-rate", "5e-4") == 0
    assert any(r.getMessage().startswith("learning rate 0.0005 instead of the checkpoint's ") for r in caplog.records)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["epochs_run"], metrics["resumed_from_epoch"], metrics["learning_rate"]) == (3, [1], 5e-4)
    assert all(float(row["loss"]) < 1e3 for row in read_log(run_dir))


@pytest.mark.integration
def test_two_ranks_stop_together_at_the_step_of_a_poisoned_record(minima_dataset, tmp_path):
    """A record with a NaN energy (written by another tool) makes one rank's loss NaN while
    the other's is finite at that step; the ranks reduce the flag every step, so both stop
    there with a line naming it, and no rank waits alone in the next gradient allreduce."""
    data = Path(shutil.copytree(minima_dataset, tmp_path / "data"))
    manifest = json.loads((data / "manifest.json").read_text())
    [entry] = manifest["splits"]["train"]["shards"]
    shard = data / entry["file"]
    poison_energies(shard, {1})  # NaN (record 1 of 14)
    entry.update(bytes=shard.stat().st_size, sha256=hashlib.sha256(shard.read_bytes()).hexdigest())
    (data / "manifest.json").write_text(json.dumps(manifest))
    command = [
        *HOROVODRUN_TWO_RANKS, sys.executable, "-m", "mpnn.cli.train", "--data", str(data),
        "--run-dir", str(tmp_path / "run"), *SMALL, "--epochs", "2",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    lines = sorted(re.findall(r"mpnn-train: error: training diverged at (epoch 1, step \d+ of \d+): ([^(]+) \(", output))
    assert len(lines) == 2 and lines[0][0] == lines[1][0], output[-3000:]  # one line per rank, the same step
    assert [what for _, what in lines] == ["loss is nan", "the loss is not finite on another rank"], output[-3000:]
    assert not re.search(r"\[\d\]<stderr>:Traceback", output), output[-3000:]  # (horovodrun prints its own)
    assert not (tmp_path / "run" / "checkpoints" / "last.weights.h5").exists()
