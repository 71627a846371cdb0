"""What every benchmark report shares: the environment, peak memory, JSON and tables."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
from typing import Any, Sequence

from mpnn import rundir


class BenchError(RuntimeError):
    """A benchmark that cannot run (the message says which input and why)."""


def environment() -> dict[str, Any]:
    """Date (UTC), command line, machine and library versions of this benchmark run."""
    info = rundir.host_info(ranks=1, local_ranks=1)
    versions = info.pop("versions")
    date = info.pop("started")
    for key in ("ranks", "local_ranks"):
        info.pop(key, None)
    info["usable_cores"] = rundir.usable_cores()
    return {"date": date, "command": list(sys.argv), "machine": info, "versions": versions}


def peak_rss_kib(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size in KiB (Linux units of ``ru_maxrss``).

    For ``RUSAGE_SELF`` it is the peak of this process so far, so it never decreases over
    a sweep; for ``RUSAGE_CHILDREN`` the largest of the terminated, waited-for children.
    """
    return int(resource.getrusage(who).ru_maxrss)


class ChildrenPeakMemory:
    """Samples the peak resident memory (``VmHWM``) of this process's live children.

    ``RUSAGE_CHILDREN`` cannot tell a worker's own peak: on Linux a child starts from its
    parent's high-water mark (fork and exec carry it over), so it reports at least the
    parent's size at spawn time. ``VmHWM`` of the child's own address space does not. Use
    as a context manager around the work; `peak_kib` stays None when not `enabled` (the
    sampling thread costs the parent a little CPU) or where /proc is unavailable.
    """

    def __init__(self, enabled: bool = True, interval: float = 0.1) -> None:
        self.enabled = enabled
        self.interval = interval
        self.peak_kib: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="children-peak-memory", daemon=True)

    def __enter__(self) -> "ChildrenPeakMemory":
        if self.enabled and os.path.isdir("/proc/self"):
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        parent = os.getpid()
        while True:
            for pid in _children_of(parent):
                hwm = _vm_hwm_kib(pid)
                if hwm is not None and (self.peak_kib is None or hwm > self.peak_kib):
                    self.peak_kib = hwm
            if self._stop.wait(self.interval):
                return


def _children_of(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write `report` as JSON to `path`, creating its directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    rundir.write_json(path, report)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"
