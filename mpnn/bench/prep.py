"""``mpnn-bench prep``: conversion rate of ``mpnn-prep-water`` or ``mpnn-prep-pdbbind`` with 1, 2, ... processes.

Each run calls the converter command's ``main`` (``--converter water``: `mpnn.cli.prep_water`;
``pdbbind``: `mpnn.cli.prep_pdbbind`) in a fresh Python process with the inputs, a fresh
temporary output directory and ``--workers N --quiet`` (plus ``--index`` for pdbbind and
``--prep-args``), and times it end to end after its imports: planning, conversion and
writing of the shards (by that process and N - 1 spawned workers, each streaming its
records into its own shards) and the manifest. The rate is converted
records (for pdbbind: complexes) per second, the median over `repeats`; the speed-up is
relative to the smallest worker count measured. With ``--mpi`` the N processes are MPI
ranks instead (``mpirun -np N``, each running the converter with ``--mpi --workers 1``:
each rank reads the inputs, converts its share of the tasks and writes its own shards;
rank 0 writes the manifest), timed between barriers after every rank's imports. The
workers' start-up (and whatever they import) is part of the time, as it is for a user.
Each run also reports figures that depend less on the machine's load: the serial seconds
(outside the conversion phase) and the CPU seconds of the converting process and of its
workers.

With ``--converter pdbbind`` the ``--inputs`` are PDBbind roots (``ROOT/<pdbid>/``) and
``--index FILE ...`` names their index files, e.g. for a tree made by
``benchmarks/make_pdbbind_tree.py``::

    python -m mpnn.cli.bench prep --converter pdbbind --inputs /tmp/pdbbind-1000 \\
        --index /tmp/pdbbind-1000/index/INDEX_general_PL_data.2020 --workers 1 2 --prep-args "--cutoff 4.5"
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from mpnn.bench.common import BenchError, format_table, median, mib
from mpnn.graph_format.manifest import Manifest
from mpnn.mpi_env import mpi_launch_environment
from mpnn.settings import AT_LEAST_1, EACH_AT_LEAST_1, setting
from mpnn.settings import check as check_settings

log = logging.getLogger("mpnn-bench.prep")


@dataclass(frozen=True)
class Converter:
    """A data-preparation command: its name, the module whose ``main(argv)`` runs it, and
    what one of its records is (the unit of the rate)."""

    command: str
    module: str
    unit: str


# Per-run figures reported as their median over the repeats (see `measure_in_this_process`).
MEDIANS = ("serial_seconds", "serial_cpu_seconds", "parent_cpu_seconds", "workers_cpu_seconds")

CONVERTERS = {
    "water": Converter("mpnn-prep-water", "mpnn.cli.prep_water", "records"),
    "pdbbind": Converter("mpnn-prep-pdbbind", "mpnn.cli.prep_pdbbind", "complexes"),
}
# Converter flags the benchmark sets itself (`PrepBenchOptions.prep_args` may not).
SET_BY_THE_BENCHMARK = {"-o", "--output", "--workers", "--quiet", "--mpi", "--index"}


@dataclass(frozen=True)
class PrepBenchOptions:
    """What ``mpnn-bench prep`` measures (`run`).

    Attributes:
        inputs: the converter's inputs: water files, directories or globs; for ``pdbbind``
            PDBbind roots holding ``<pdbid>/`` directories.
        converter: a key of `CONVERTERS`: ``water`` (rate in records/s) or ``pdbbind``
            (complexes/s).
        index: PDBbind index files (``--index`` of ``mpnn-prep-pdbbind``); required with
            ``pdbbind``, none otherwise.
        workers: process counts compared: conversion processes (this one and N - 1 spawned
            workers), or MPI ranks with `mpi`.
        repeats: timed runs per process count; the median is reported.
        mpi: the processes are MPI ranks (``mpirun -np N``).
        keep_output: a directory the data set of the last run is moved to (replacing it).
        prep_args: further converter arguments, one word each (none of
            `SET_BY_THE_BENCHMARK`).

    Raises:
        BenchError: `prep_args` sets what the benchmark sets, or `index` does not fit
            `converter`.
    """

    inputs: tuple[str, ...] = setting(
        help="inputs of the converter: water files, dirs or globs; PDBbind roots holding <pdbid>/ directories"
    )
    converter: str = setting(
        "water", "mpnn-prep-water (records/s) or mpnn-prep-pdbbind (complexes/s) (default water)",
        choices=tuple(sorted(CONVERTERS)),
    )
    index: tuple[str, ...] = setting(
        (), "PDBbind index file(s), passed as mpnn-prep-pdbbind --index (required with --converter pdbbind)"
    )
    workers: tuple[int, ...] = setting(
        (1, 2), "process counts to compare: conversion processes, or MPI ranks with --mpi (default 1 2)",
        EACH_AT_LEAST_1,
    )
    repeats: int = setting(1, "runs per worker count; the median is reported", AT_LEAST_1)
    mpi: bool = setting(
        False,
        "the N processes are MPI ranks (mpirun -np N <converter> --mpi --workers 1: each rank converts its share "
        "and writes its own shards) instead of this process and N - 1 spawned workers",
    )
    keep_output: str | None = setting(
        None, "move the data set converted by the last run to DIR (replacing DIR), e.g. to time the loader on it"
    )
    prep_args: tuple[str, ...] = setting(
        (), "further options of the converter (one word each)", flag=False
    )

    def __post_init__(self) -> None:
        check_settings(self)
        forbidden = SET_BY_THE_BENCHMARK & {a.split("=")[0] for a in self.prep_args}
        if forbidden:
            raise BenchError(
                f"--prep-args may not set {sorted(forbidden)}: the benchmark sets them (index files: --index)"
            )
        if self.converter == "pdbbind" and not self.index:
            raise BenchError("--converter pdbbind needs --index FILE (the PDBbind index files of the inputs)")
        if self.converter != "pdbbind" and self.index:
            raise BenchError(f"--index applies to --converter pdbbind only, not {self.converter}")


def convert_once(
    converter: Converter, inputs: list[str], processes: int, extra: list[str], mpi: bool = False,
    keep: str | None = None,
) -> dict[str, Any]:
    """One timed run of `converter` with `processes` processes into a temporary directory,
    in a fresh Python process (with `mpi`: `processes` MPI ranks started by ``mpirun``).
    With `keep`, the converted data set is moved there afterwards (replacing what was there),
    so that a run at scale need not be converted a second time to be loaded or trained on.

    A fresh process, started with ``python -c``: spawned workers re-import the main
    module of their parent, and ``mpnn-bench``'s imports TensorFlow (about 2 s per worker)
    where ``mpnn-prep-*``'s do not. It also keeps one run's warm caches out of the next.
    """
    with tempfile.TemporaryDirectory(prefix="mpnn-bench-prep-") as output:
        workers = ["--mpi", "--workers", "1"] if mpi else ["--workers", str(processes)]
        argv = [*inputs, "-o", output, *extra, *workers, "--quiet"]
        result_path = os.path.join(output, "bench-result.json")
        code = f"import sys; from {__name__} import measure_in_this_process as m; m(*sys.argv[1:])"
        command = [sys.executable, "-c", code, converter.module, result_path, json.dumps(argv)]
        child = subprocess.run(
            mpirun_command(processes) + command if mpi else command, capture_output=True, text=True,
            env=mpi_launch_environment() if mpi else None,
        )
        log.debug("%s: %s", converter.command, child.stdout.strip())
        if child.returncode != 0:
            raise BenchError(
                f"{converter.command} {shlex.join(argv)} failed (exit status {child.returncode}):\n"
                f"{child.stderr[-3000:]}"
            )
        with open(result_path) as handle:
            result = json.load(handle)
        if keep is not None:
            os.remove(result_path)
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(output, keep)
            os.makedirs(output)  # for TemporaryDirectory's clean-up
        return result


def mpirun_command(ranks: int) -> list[str]:
    """``mpirun`` for `ranks` ranks on this machine, not bound to cores (so that one rank
    may use every core for its threads, as one process of the ``--workers`` mode does)."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise BenchError("--mpi needs mpirun on the PATH (Open MPI: Debian's openmpi-bin)")
    return [mpirun, "-np", str(ranks), "--bind-to", "none"]


def measure_in_this_process(module: str, result_path: str, argv_json: str) -> None:
    """Run ``module.main(argv)`` and write its timing, CPU use and memory to `result_path` (JSON).

    The module is imported before the clock starts (as a user's command imports it before
    it converts; the converters import no TensorFlow). CPU seconds are user + system:
    ``parent`` of this process, ``workers`` of its children (the spawned conversion
    processes, reaped when they end) or, with ``--mpi`` in `argv`, of the other ranks.
    Under MPI every rank runs this; the clock starts and stops at barriers (the run takes
    as long as its slowest rank) and rank 0 writes the result. ``serial_seconds`` is the
    wall time outside the conversion phase (planning, merging the parts' summaries,
    manifest), ``serial_cpu_seconds`` this process's CPU time in it. ``parts`` lists every
    conversion process (parent, spawned workers, other ranks) with its CPU seconds and its
    own peak RSS (``VmHWM``), as the manifest reports them.
    """
    main = importlib.import_module(module).main
    argv = json.loads(argv_json)
    comm = None
    if "--mpi" in argv:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    load = os.getloadavg()[0]
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    if comm is not None:
        comm.Barrier()
    start = time.perf_counter()
    code = main(argv)
    if comm is not None:
        comm.Barrier()
    seconds = time.perf_counter() - start
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    if code != 0:
        sys.exit(code)
    parent_cpu, workers_cpu = (a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
    if comm is not None:
        ranks = comm.gather(parent_cpu + workers_cpu, root=0)
        if comm.Get_rank() != 0:
            return
        workers_cpu += sum(ranks[1:])
    manifest = Manifest.load(argv[argv.index("-o") + 1])
    parts = manifest.timing["parts"]
    result = {
        "seconds": seconds,
        "converted": manifest.summary.converted,
        "skipped": manifest.summary.skipped,
        "serial_seconds": seconds - manifest.timing["convert_seconds"],
        "serial_cpu_seconds": parent_cpu - manifest.timing["convert_cpu_seconds"],
        "timing": {k: v for k, v in manifest.timing.items() if k != "parts"},
        "parent_cpu_seconds": parent_cpu,
        "workers_cpu_seconds": workers_cpu,
        "load_average": load,
        "peak_rss_kib": parts[0]["peak_rss_kib"],
        "peak_rss_worker_kib": max((p["peak_rss_kib"] for p in parts[1:]), default=None),
        "parts": [{k: p[k] for k in ("part", "cpu_seconds", "peak_rss_kib")} for p in parts],
    }
    with open(result_path, "w") as handle:
        json.dump(result, handle)


def run(options: PrepBenchOptions) -> dict[str, Any]:
    """Run the comparison; returns the report's benchmark-specific part (rates in records,
    or complexes, per second; times in seconds; peak memory in KiB;
    `mpnn.bench.common.make_report` completes it)."""
    converter = CONVERTERS[options.converter]
    extra = list(options.prep_args)
    index_args = [a for path in options.index for a in ("--index", path)]
    results = []
    for workers in options.workers:
        runs = [
            convert_once(
                converter, list(options.inputs), workers, [*index_args, *extra], options.mpi, options.keep_output
            )
            for _ in range(options.repeats)
        ]
        worker_peaks = [r["peak_rss_worker_kib"] for r in runs if r["peak_rss_worker_kib"] is not None]
        records = runs[0]["converted"]
        result = {
            "workers": workers,
            "records": records,
            "skipped": runs[0]["skipped"],
            "seconds": [r["seconds"] for r in runs],
            "records_per_second": median([r["converted"] / r["seconds"] for r in runs]),
            **{key: median([r[key] for r in runs]) for key in MEDIANS},
            "load_average": [r["load_average"] for r in runs],
            "timing": [r["timing"] for r in runs],
            "peak_rss_kib": max(r["peak_rss_kib"] for r in runs),
            "peak_rss_worker_kib": max(worker_peaks) if worker_peaks else None,
            "parts": [r["parts"] for r in runs],
        }
        log.info("workers %d: %d %s, %.1f %s/s", workers, records, converter.unit, result["records_per_second"],
                 converter.unit)
        results.append(result)
    base = min(results, key=lambda r: r["workers"])
    for result in results:
        result["speedup"] = result["records_per_second"] / base["records_per_second"]
    return {
        "converter": options.converter,
        "inputs": list(options.inputs),
        "parameters": {
            "index": list(options.index),
            "workers": list(options.workers),
            "repeats": options.repeats,
            "mpi": options.mpi,
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
    how = "MPI ranks" if parameters.get("mpi") else "process(es): this one and spawned workers"
    title = (
        f"prep: {command}; median of {parameters['repeats']} run(s), "
        f"speed-up over {parameters['speedup_baseline_workers']} {how}"
    )
    rows = [
        (
            r["workers"],
            f"{r['records']:,}",
            f"{median(r['seconds']):,.2f}",
            f"{r['records_per_second']:,.1f}",
            f"{r['speedup']:.2f}",
            f"{r['serial_seconds']:.2f}",
            f"{r['serial_cpu_seconds']:.2f}",
            f"{r['parent_cpu_seconds']:.2f}",
            f"{r['workers_cpu_seconds']:.2f}",
            " ".join(f"{load:.1f}" for load in r["load_average"]),
            mib(r["peak_rss_kib"]),
            "-" if r["peak_rss_worker_kib"] is None else mib(r["peak_rss_worker_kib"]),
        )
        for r in report["results"]
    ]
    unit = converter.unit
    headers = (
        "workers", unit, "seconds", f"{unit}/s", "speed-up", "serial s", "serial CPU s", "parent CPU s",
        "workers CPU s", "load", "peak RSS MiB", "worker MiB",
    )
    note = (
        "serial: wall (and the converting process's CPU) seconds outside the conversion phase\n"
        "(reading, splitting, writing, manifest);\n"
        "CPU: user + system seconds of the converting process and of all its workers together (medians);\n"
        "load: 1-minute load average at the start of each run; peak RSS: the parent (rank 0's) conversion\n"
        "process's own VmHWM; worker: the largest of the other conversion processes (spawned workers, other\n"
        "ranks); every process's CPU seconds and peak are in the JSON report under results[].parts"
    )
    return f"{title}\n\n{format_table(headers, rows)}\n\n{note}"
