"""Conversion processes: the parent and spawned workers share the tasks, results in order."""

from __future__ import annotations

import os
import time

import pytest

from data_prep.processes import ConversionProcesses


def _pid_and_square(x: int) -> tuple[int, int]:
    time.sleep(0.002 * (x % 5))  # uneven task lengths
    return os.getpid(), x * x


def _fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError("task 7 is bad")
    return x


@pytest.mark.parametrize("chunksize", [1, 4])
def test_results_come_in_task_order_from_the_parent_and_the_workers(chunksize):
    tasks = list(range(200))
    with ConversionProcesses(3) as processes:
        results = list(processes.imap(_pid_and_square, tasks, chunksize))
    assert [square for _, square in results] == [x * x for x in tasks]
    pids = {pid for pid, _ in results}
    assert os.getpid() in pids and len(pids) >= 2  # the parent converted some, a worker others


def test_one_process_converts_in_this_process_without_a_pool():
    with ConversionProcesses(1) as processes:
        assert {pid for pid, _ in processes.imap(_pid_and_square, range(20))} == {os.getpid()}


def test_an_error_stops_the_conversion_and_the_pool():
    started = time.perf_counter()
    with pytest.raises(ValueError, match="task 7"), ConversionProcesses(2) as processes:
        list(processes.imap(_fail_on_seven, range(100)))
    assert time.perf_counter() - started < 60
