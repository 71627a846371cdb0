"""``mpnn-bench prep``: conversion rate of ``mpnn-prep-water`` or ``mpnn-prep-pdbbind`` with 1, 2, ... processes.

Each run calls the converter's ``main`` (``--converter water``: `data_prep.prep_water`;
``pdbbind``: `data_prep.prep_pdbbind`) with the inputs, a fresh temporary output directory
and ``--workers N --quiet`` (plus ``--index`` for pdbbind and ``--prep-args``), and times
it end to end: reading, conversion in the spawned pool, splitting and writing the shards
and manifest (for pdbbind also its count of atoms and edges over the written shards).
The rate is converted records (for pdbbind: complexes) per second, the median over
`repeats`; the speed-up is relative to the smallest worker count measured. Spawned
workers import TensorFlow, so their start-up is part of the time (as it is for a user).

With ``--converter pdbbind`` the ``--inputs`` are PDBbind roots (``ROOT/<pdbid>/``) and
``--index FILE ...`` names their index files, e.g. for a tree made by
``benchmarks/make_pdbbind_tree.py``::

    python -m mpnn.bench prep --converter pdbbind --inputs /tmp/pdbbind-1000 \\
        --index /tmp/pdbbind-1000/index/INDEX_general_PL_data.2020 --workers 1 2 --prep-args "--cutoff 4.5"
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import resource
import shlex
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Converter:
    """A data-preparation command: its name, the module whose ``main(argv)`` runs it, and
    what one of its records is (the unit of the rate)."""

    command: str
    module: str
    unit: str


CONVERTERS = {
    "water": Converter("mpnn-prep-water", "data_prep.prep_water", "records"),
    "pdbbind": Converter("mpnn-prep-pdbbind", "data_prep.prep_pdbbind", "complexes"),
}


def convert_once(converter: Converter, inputs: list[str], workers: int, extra: list[str]) -> dict[str, Any]:
    """One timed run of `converter` into a temporary directory."""
    main = importlib.import_module(converter.module).main
    with tempfile.TemporaryDirectory(prefix="mpnn-bench-prep-") as output:
        argv = [*inputs, "-o", output, *extra, "--workers", str(workers), "--quiet"]
        captured = io.StringIO()
        start = time.perf_counter()
        # Its summary line goes to the log: our table owns stdout.
        with ChildrenPeakMemory(enabled=workers > 1) as workers_memory, contextlib.redirect_stdout(captured):
            code = main(argv)
        seconds = time.perf_counter() - start
        log.debug("%s: %s", converter.command, captured.getvalue().strip())
        if code != 0:
            raise BenchError(f"{converter.command} {shlex.join(argv)} failed (exit status {code}); see the log above")
        with open(os.path.join(output, "manifest.json")) as handle:
            summary = json.load(handle)["summary"]
    return {
        "seconds": seconds,
        "converted": int(summary["converted"]),
        "skipped": int(summary["skipped"]),
        "peak_rss_worker_kib": workers_memory.peak_kib,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--converter", choices=sorted(CONVERTERS), default="water",
        help="mpnn-prep-water (records/s) or mpnn-prep-pdbbind (complexes/s) (default %(default)s)",
    )
    parser.add_argument(
        "--inputs", nargs="+", required=True,
        help="inputs of the converter: water files, dirs or globs; PDBbind roots holding <pdbid>/ directories",
    )
    parser.add_argument(
        "--index", nargs="+", default=[], metavar="FILE",
        help="PDBbind index file(s), passed as mpnn-prep-pdbbind --index (required with --converter pdbbind)",
    )
    parser.add_argument(
        "--workers", type=positive_int, nargs="+", default=[1, 2], metavar="N",
        help="worker process counts to compare (default %(default)s)",
    )
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs per worker count; the median is reported")
    parser.add_argument(
        "--prep-args", default="", metavar="ARGS",
        help="further options of the converter, one quoted string: e.g. \"--shards 4 --test-every 10\"; "
        "for pdbbind \"--cutoff 4.5\" (index files go in --index)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison; returns the report's benchmark-specific part."""
    converter = CONVERTERS[args.converter]
    extra = shlex.split(args.prep_args)
    forbidden = {"-o", "--output", "--workers", "--quiet", "--mpi", "--index"} & {a.split("=")[0] for a in extra}
    if forbidden:
        raise BenchError(f"--prep-args may not set {sorted(forbidden)}: the benchmark sets them (index files: --index)")
    if args.converter == "pdbbind" and not args.index:
        raise BenchError("--converter pdbbind needs --index FILE (the PDBbind index files of the inputs)")
    if args.converter != "pdbbind" and args.index:
        raise BenchError(f"--index applies to --converter pdbbind only, not {args.converter}")
    index_args = [a for path in args.index for a in ("--index", path)]
    results = []
    for workers in args.workers:
        runs = [convert_once(converter, list(args.inputs), workers, [*index_args, *extra]) for _ in range(args.repeats)]
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
        log.info("workers %d: %d %s, %.1f %s/s", workers, records, converter.unit, result["records_per_second"],
                 converter.unit)
        results.append(result)
    base = min(results, key=lambda r: r["workers"])
    for result in results:
        result["speedup"] = result["records_per_second"] / base["records_per_second"]
    return {
        "converter": args.converter,
        "inputs": list(args.inputs),
        "parameters": {
            "index": list(args.index),
            "workers": list(args.workers),
            "repeats": args.repeats,
            "prep_args": extra,
            "speedup_baseline_workers": base["workers"],
        },
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    parameters = report["parameters"]
    converter = CONVERTERS[report["converter"]]
    index_args = [a for path in parameters["index"] for a in ("--index", path)]
    command = " ".join([converter.command, *report["inputs"], *index_args, *parameters["prep_args"]])
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
    unit = converter.unit
    headers = ("workers", unit, "seconds", f"{unit}/s", "speed-up", "peak RSS MiB", "children MiB", "worker MiB")
    note = (
        "peak RSS: this process so far (RUSAGE_SELF); children: largest finished child so far (RUSAGE_CHILDREN,\n"
        "never below the parent's size when it spawned them); worker: largest pool worker's own VmHWM in this run"
    )
    return f"{title}\n\n{format_table(headers, rows)}\n\n{note}"
