"""The conversion processes of a command: this one and a pool of spawned workers.

``--workers N`` means N conversion processes: this one and N - 1 spawned workers, all
taking tasks from the same list. The parent converts a task itself whenever no worker's
result is waiting for it: it would otherwise sit idle, and one worker fewer saves that
worker's start-up and the pickling of its records both ways (on the tutorial file about
0.3 CPU s per worker, a sixth of the work each process does).
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import multiprocessing.pool
import os
import threading
from typing import Any, Callable, Iterator, Sequence

# Chunks of tasks per worker handed out and not yet collected: the next is waiting when a
# worker finishes one.
_CHUNKS_IN_FLIGHT = 2


class ConversionProcesses:
    """`processes` conversion processes; use as a context manager (starts and stops the
    pool). Outside one, or with one process, `imap` runs in this process only.

    Spawn rather than fork: the parent may already run TensorFlow threads, and forking a
    multi-threaded process can deadlock the child. A spawned worker imports the module of
    the converter (and the command's main module), so those modules import TensorFlow only
    inside the functions that run in the parent.
    """

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._pool: multiprocessing.pool.Pool | None = None
        self._closing = threading.Event()

    def __enter__(self) -> "ConversionProcesses":
        if self.processes > 1:
            self._pool = _spawn_pool(self.processes - 1)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._closing.set()  # lets a feeder blocked in `imap` end, so the pool can stop
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def imap(self, function: Callable[[Any], Any], tasks: Sequence[Any], chunksize: int = 1) -> Iterator[Any]:
        """``function(task)`` for each of `tasks`, in order; the workers take `chunksize`
        tasks at a time, this process one."""
        if self._pool is None:
            yield from map(function, tasks)
            return
        positions, take_lock = iter(range(len(tasks))), threading.Lock()

        def take(count: int) -> list[int]:
            with take_lock:
                return list(itertools.islice(positions, count))

        in_flight = threading.Semaphore(_CHUNKS_IN_FLIGHT * (self.processes - 1))
        done = threading.Event()

        def feed() -> Iterator[list[tuple[int, Any]]]:  # runs in the pool's task-handler thread
            while not (done.is_set() or self._closing.is_set()):
                if in_flight.acquire(timeout=0.1):
                    chunk = take(chunksize)
                    if not chunk:
                        return
                    yield [(position, tasks[position]) for position in chunk]

        results = self._pool.imap_unordered(functools.partial(_with_positions, function), feed())
        finished: dict[int, Any] = {}
        try:
            for position in range(len(tasks)):
                while position not in finished:
                    chunk = _next_result(results, wait=False)
                    if chunk is None:
                        mine = take(1)
                        if mine:
                            finished[mine[0]] = function(tasks[mine[0]])
                            continue
                        chunk = _next_result(results, wait=True)
                    in_flight.release()
                    finished.update(chunk)
                yield finished.pop(position)
        finally:
            done.set()


def _with_positions(function: Callable[[Any], Any], chunk: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return [(position, function(task)) for position, task in chunk]


def _next_result(results: multiprocessing.pool.IMapIterator, wait: bool) -> list[tuple[int, Any]] | None:
    """A worker's next finished chunk of ``(position, result)``; None if none is ready and not `wait`."""
    try:
        return results.next(timeout=None if wait else 0)
    except multiprocessing.TimeoutError:
        return None


def _spawn_pool(workers: int) -> multiprocessing.pool.Pool:
    """A spawned pool whose workers use one OpenBLAS thread each (unless the user chose
    otherwise): the pool is the parallelism, and on a molecule's small matrices (ASE's
    neighbour lists) OpenBLAS's own threads only spin, which cost the structure-file path
    about 30% of its CPU time. Workers read the variable when they start, so it is set for
    the pool's start only."""
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = blas_threads or "1"
    try:
        return multiprocessing.get_context("spawn").Pool(workers)
    finally:
        if blas_threads is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
