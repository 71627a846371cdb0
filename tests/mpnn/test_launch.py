"""``mpnn-launch``: workers with their TF_CONFIG, output by rank, signals forwarded, the worst
exit status, and one line when the environment a mode needs is missing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from mpnn.launch import STOP_GRACE_SECONDS, worst_status

LAUNCH = [sys.executable, "-m", "mpnn.cli.launch"]


def _launch(*arguments: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *arguments], capture_output=True, text=True, timeout=120, **kwargs)


def test_worst_status_counts_signals_as_a_shell_does():
    assert worst_status([0, 0]) == 0
    assert worst_status([0, 3, 1]) == 3
    assert worst_status([0, -signal.SIGTERM]) == 128 + signal.SIGTERM


@pytest.mark.integration  # worker processes
def test_each_worker_gets_its_own_index_and_the_same_free_ports():
    code = "import os, sys; print(os.environ['TF_CONFIG']); print('err', file=sys.stderr)"
    done = _launch("-np", "3", sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    configs = {}
    for line in done.stdout.splitlines():
        prefix, _, text = line.partition(":")
        configs[prefix] = json.loads(text)
    assert set(configs) == {"[0]<stdout>", "[1]<stdout>", "[2]<stdout>"}
    assert [configs[f"[{i}]<stdout>"]["task"]["index"] for i in range(3)] == [0, 1, 2]
    workers = {tuple(config["cluster"]["worker"]) for config in configs.values()}
    assert len(workers) == 1 and len(set(next(iter(workers)))) == 3
    assert sorted(done.stderr.splitlines()) == ["[0]<stderr>:err", "[1]<stderr>:err", "[2]<stderr>:err"]


@pytest.mark.integration  # worker processes
def test_a_failing_worker_stops_the_others_and_sets_the_exit_status():
    code = ("import json, os, time; i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
            "time.sleep(0.5) if i == 1 else time.sleep(60); raise SystemExit(3 if i == 1 else 0)")
    started = time.monotonic()
    done = _launch("-np", "2", sys.executable, "-c", code)
    # Worker 0 did not sleep its 60 s, and the launcher did not wait out the grace period of
    # the SIGKILL that worker 0 no longer needs once it has stopped.
    assert time.monotonic() - started < STOP_GRACE_SECONDS
    assert done.returncode == 128 + signal.SIGTERM  # worker 0, stopped, is the worst
    assert "worker 1 exited with status 3; stopping the others" in done.stderr


@pytest.mark.integration  # worker processes
def test_signals_reach_every_worker():
    code = ("import json, os, signal, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
            "signal.signal(signal.SIGUSR1, lambda *a: (print('usr1', i, flush=True), sys.exit(10 + i)))\n"
            "print('ready', flush=True); time.sleep(60)")
    launcher = subprocess.Popen([*LAUNCH, "-np", "2", sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    ready = 0
    while ready < 2:
        ready += "ready" in launcher.stdout.readline()
    launcher.send_signal(signal.SIGUSR1)
    signalled = time.monotonic()
    out, _ = launcher.communicate(timeout=60)
    assert time.monotonic() - signalled < STOP_GRACE_SECONDS  # ends with its workers
    assert {"[0]<stdout>:usr1 0", "[1]<stdout>:usr1 1"} <= set(out.splitlines())
    assert launcher.returncode == 11


@pytest.mark.parametrize("mode, message", [
    ("--slurm", "mpnn-launch: error: --slurm: no SLURM_JOB_ID"),
    ("--pbs", "mpnn-launch: error: --pbs: PBS_NODEFILE='' is not a readable file"),
])
def test_a_mode_without_its_environment_is_one_line_and_exit_2(mode, message, monkeypatch, capsys):
    from mpnn.cli.launch import main

    for name in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST",
                 "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "PBS_NODEFILE"):
        monkeypatch.delenv(name, raising=False)
    assert main([mode, "mpnn-train", "--data", "x"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1


def test_no_command_and_unknown_commands_are_one_line(capsys):
    from mpnn.cli.launch import main

    assert main(["-np", "2"]) == 2
    assert main(["-np", "1", "no-such-command-mpnn"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["mpnn-launch: error: no command to launch (e.g. mpnn-launch -np 2 mpnn-train --data ...)",
                      "mpnn-launch: error: no-such-command-mpnn: command not found (No such file or directory)"]
