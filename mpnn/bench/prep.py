"""``mpnn-bench prep``: conversion rate of ``mpnn-prep-water`` with 1, 2, ... processes.

Each run calls `data_prep.prep_water.main` with the inputs, a fresh temporary output
directory and ``--workers N --quiet`` (plus ``--prep-args``), and times it end to end:
reading, conversion in the spawned pool, splitting and writing the shards and manifest.
The rate is converted records per second, the median over `repeats`; the speed-up is
relative to the smallest worker count measured. Spawned workers import TensorFlow, so
their start-up is part of the time (as it is for a user).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import shlex
import tempfile
import time
from typing import Any

from mpnn.bench.common import (
    BenchError,
    ChildrenPeakMemory,
    format_table,
    median,
    mib,
    peak_rss_kib,
    positive_int,
)

log = logging.getLogger("mpnn-bench.prep")


def convert_once(inputs: list[str], workers: int, extra: list[str]) -> dict[str, Any]:
    """One timed ``mpnn-prep-water`` run into a temporary directory."""
    from data_prep import prep_water

    with tempfile.TemporaryDirectory(prefix="mpnn-bench-prep-") as output:
        argv = [*inputs, "-o", output, *extra, "--workers", str(workers), "--quiet"]
        captured = io.StringIO()
        start = time.perf_counter()
        # Its summary line goes to the log: our table owns stdout.
        with ChildrenPeakMemory(enabled=workers > 1) as workers_memory, contextlib.redirect_stdout(captured):
            code = prep_water.main(argv)
        seconds = time.perf_counter() - start
        log.debug("mpnn-prep-water: %s", captured.getvalue().strip())
        if code != 0:
            raise BenchError(f"mpnn-prep-water {shlex.join(argv)} failed (exit status {code}); see the log above")
        with open(os.path.join(output, "manifest.json")) as handle:
            summary = json.load(handle)["summary"]
    return {
        "seconds": seconds,
        "converted": int(summary["converted"]),
        "skipped": int(summary["skipped"]),
        "peak_rss_worker_kib": workers_memory.peak_kib,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", nargs="+", required=True, help="inputs of mpnn-prep-water (files, dirs, globs)")
    parser.add_argument(
        "--workers", type=positive_int, nargs="+", default=[1, 2], metavar="N",
        help="worker process counts to compare (default %(default)s)",
    )
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs per worker count; the median is reported")
    parser.add_argument(
        "--prep-args", default="", metavar="ARGS",
        help="further mpnn-prep-water options, one quoted string, e.g. \"--shards 4 --test-every 10\"",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison; returns the report's benchmark-specific part."""
    extra = shlex.split(args.prep_args)
    forbidden = {"-o", "--output", "--workers", "--quiet", "--mpi"} & {a.split("=")[0] for a in extra}
    if forbidden:
        raise BenchError(f"--prep-args may not set {sorted(forbidden)}: the benchmark sets them")
    results = []
    for workers in args.workers:
        runs = [convert_once(list(args.inputs), workers, extra) for _ in range(args.repeats)]
        worker_peaks = [r["peak_rss_worker_kib"] for r in runs if r["peak_rss_worker_kib"] is not None]
        records = runs[0]["converted"]
        result = {
            "workers": workers,
            "records": records,
            "skipped": runs[0]["skipped"],
            "seconds": [r["seconds"] for r in runs],
            "records_per_second": median([r["converted"] / r["seconds"] for r in runs]),
            "peak_rss_kib": peak_rss_kib(),
            "peak_rss_children_kib": peak_rss_kib(resource.RUSAGE_CHILDREN),
            "peak_rss_worker_kib": max(worker_peaks) if worker_peaks else None,
        }
        log.info("workers %d: %d records, %.1f records/s", workers, records, result["records_per_second"])
        results.append(result)
    base = min(results, key=lambda r: r["workers"])
    for result in results:
        result["speedup"] = result["records_per_second"] / base["records_per_second"]
    return {
        "inputs": list(args.inputs),
        "parameters": {
            "workers": list(args.workers),
            "repeats": args.repeats,
            "prep_args": extra,
            "speedup_baseline_workers": base["workers"],
        },
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    parameters = report["parameters"]
    command = " ".join(["mpnn-prep-water", *report["inputs"], *parameters["prep_args"]])
    title = (
        f"prep: {command}; median of {parameters['repeats']} run(s), "
        f"speed-up over {parameters['speedup_baseline_workers']} worker(s)"
    )
    rows = [
        (
            r["workers"],
            f"{r['records']:,}",
            f"{median(r['seconds']):,.2f}",
            f"{r['records_per_second']:,.1f}",
            f"{r['speedup']:.2f}",
            mib(r["peak_rss_kib"]),
            mib(r["peak_rss_children_kib"]),
            "-" if r["peak_rss_worker_kib"] is None else mib(r["peak_rss_worker_kib"]),
        )
        for r in report["results"]
    ]
    headers = ("workers", "records", "seconds", "records/s", "speed-up", "peak RSS MiB", "children MiB", "worker MiB")
    note = (
        "peak RSS: this process so far (RUSAGE_SELF); children: largest finished child so far (RUSAGE_CHILDREN,\n"
        "never below the parent's size when it spawned them); worker: largest pool worker's own VmHWM in this run"
    )
    return f"{title}\n\n{format_table(headers, rows)}\n\n{note}"
