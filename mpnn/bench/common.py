"""What every benchmark report shares: the environment, peak memory, JSON and tables."""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any, Sequence

from mpnn import atomic, host
from mpnn.errors import UserError


class BenchError(UserError, RuntimeError):
    """A benchmark that cannot run (the message says which input and why)."""


def environment() -> dict[str, Any]:
    """Date (UTC), command line, machine and library versions of this benchmark run."""
    info = host.host_info(ranks=1, local_ranks=1)
    versions = info.pop("versions")
    date = info.pop("started")
    for key in ("ranks", "local_ranks"):
        info.pop(key, None)
    info["usable_cores"] = host.usable_cores()
    return {"date": date, "command": list(sys.argv), "machine": info, "versions": versions}


def make_report(benchmark: str, results: dict[str, Any]) -> dict[str, Any]:
    """The complete report of one benchmark run: its name (``loader``, ``prep``, ``train``),
    the `environment` and `results`, the benchmark-specific part its ``run`` returned."""
    return {"benchmark": benchmark, **environment(), **results}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write `report` as JSON to `path`, creating its directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    atomic.write_json(path, report)


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
