"""Run a conversion end to end: plan tasks once, convert them in parts that stream their
records into their own shards, gather small summaries, write the manifest.

- Planning (`prepare_dataset`'s `plan`) runs once, on this process or MPI rank 0, and its
  tasks are broadcast: each task knows the global input position of its first structure.
- P *parts* = MPI ranks x ``--workers`` processes per rank (this process is one of them;
  with one part no child process at all). Task t goes to part t % P. Each part converts
  its tasks one by one and writes every record at once into its own shards
  (``max(1, shards // P)`` per split, `data_prep.records.PartWriter`), so a process never
  holds more than the record being written (memory does not grow with the data set).
- The split of each record is decided in the part (`records.SplitRule`), so the same
  records are in the same splits whatever P is.
- Each part returns a `records.PartSummary`; rank 0 gathers them (mpi4py), merges and
  writes the manifest.

Worker processes are spawned (a forked child of a process running threads can deadlock),
through `concurrent.futures.ProcessPoolExecutor`; they import the converter's module,
which imports no TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from tqdm import tqdm

from data_prep import records
from mpnn import host, settings
from mpnn.errors import UsageError
from mpnn.graph_format.manifest import Manifest
from mpnn.graph_format.tfrecord import COMPRESSIONS
from mpnn.settings import AT_LEAST_1, Allowed, setting

log = logging.getLogger(__name__)

Converter = Callable[[Any], Iterable["records.Converted | records.Skipped"]]


@dataclass(frozen=True)
class OutputOptions:
    """Where and how to write, and how to split: see ``mpnn-prep-water --help``. Each
    setting declares its help and allowed values (`mpnn.settings`); checked when made.

    Attributes:
        workers: conversion processes per MPI rank (this one and workers - 1 spawned).
        mpi: spread the work over the ranks of mpirun / srun.
    """

    output: str = setting(help="output directory (shards + manifest.json)", flag=False)
    shards: int = setting(4, "shards per split (default 4), shared by the parts", AT_LEAST_1)
    compression: str = setting("GZIP", "compression of the shards", choices=COMPRESSIONS)
    fractions: tuple[float, float, float] = setting(
        (0.8, 0.1, 0.1), "TRAIN VALID TEST fractions of a seeded split (sum 1)", flag=False
    )
    seed: int = setting(0, "seed of the split (default 0)")
    test_every: int | None = setting(
        None,
        "structures 0, K, 2K, ... (input order, skipped ones counted) form the test set; the rest is split into "
        "train and valid by the first two --fractions",
        Allowed(lambda v: v >= 2, "a whole number >= 2 (structures 0, K, 2K, ... are test)"),
    )
    test_groups: tuple[int, int] | None = setting(None, "groups (LO, HI) that form the test set", flag=False)
    workers: int = setting(1, "conversion processes (per MPI rank with --mpi; default 1)", AT_LEAST_1)
    strict: bool = setting(False, "stop at the first input that cannot be converted")
    show_progress: bool = setting(True, "a progress bar on stderr", flag=False)
    mpi: bool = setting(
        False,
        "spread the work over the ranks of mpirun/srun; each of the ranks x workers parts writes "
        "max(1, SHARDS // parts) shards per split and rank 0 the manifest",
    )

    def __post_init__(self) -> None:
        """Raise `UsageError` naming the flag of a setting out of range (`check_fractions`
        for the fractions), or a split rule that cannot be made."""
        settings.check(self)
        check_fractions(self.fractions, self.test_every)
        try:
            records.SplitRule(tuple(self.fractions), self.seed, self.test_every, test_groups=self.test_groups)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def as_options(self) -> dict[str, Any]:
        """The manifest's record of these options (the command-line names)."""
        return {
            "output": self.output, "shards": self.shards, "compression": self.compression,
            "fractions": list(self.fractions), "test_every": self.test_every, "seed": self.seed,
            "test_groups": list(self.test_groups) if self.test_groups else None,
            "workers": self.workers, "strict": self.strict, "mpi": self.mpi,
        }


# Fractions may miss 1 by this much (the decimal numbers users type are not exact in binary).
FRACTION_SUM_TOLERANCE = 1e-6


def check_fractions(fractions: Sequence[float], test_every: int | None = None) -> None:
    """``--fractions TRAIN VALID TEST``: three numbers >= 0 that sum to 1 (within
    `FRACTION_SUM_TOLERANCE`). Not renormalised: ``0.5 0.5 0.5`` is more likely a typo
    than a wish for thirds, so it is an error rather than a silent change. With
    ``--test-every`` the rest is split by TRAIN : VALID, so they must not both be 0."""
    values = " ".join(f"{f:g}" for f in fractions)
    if len(fractions) != 3 or any(not f >= 0 for f in fractions) or abs(sum(fractions) - 1) > FRACTION_SUM_TOLERANCE:
        raise UsageError(
            f"argument --fractions: must be three numbers >= 0 (TRAIN VALID TEST) that sum to 1, got {values}"
        )
    if test_every is not None and fractions[0] + fractions[1] <= 0:
        raise UsageError(
            f"argument --fractions: TRAIN and VALID must not both be 0 with --test-every (the rest of the "
            f"structures is split by them), got {values}"
        )


@dataclass(frozen=True)
class Plan:
    """The work of a conversion: its tasks in input order, the input files (for the
    manifest's ``sources``), what the data set is, and the files passed over while the
    inputs were listed (skip entries for the manifest, never an error, even with
    ``--strict``: e.g. a ``README.txt`` in an input directory)."""

    tasks: Sequence[Any]
    sources: Sequence[str]
    spec: records.DatasetSpec
    passed_over: Sequence[records.Skipped] = ()


@dataclass(frozen=True)
class PartJob:
    """What one part converts and where it writes (picklable: sent to spawned workers).

    Attributes:
        part: this part's number; `n_parts`: all parts of the run.
        tasks: the part's tasks, in order.
        n_types: size of the atom vocabulary (for the target statistics).
    """

    part: int
    n_parts: int
    tasks: tuple[Any, ...]
    converter: Converter
    rule: records.SplitRule
    out_dir: str
    shards_per_split: int
    compression: str
    n_types: int
    strict: bool = False
    show_progress: bool = False


def run_part(job: PartJob) -> records.PartSummary:
    """Convert `job.tasks` one by one, each record straight into its split's shards.

    Raises:
        records.StrictModeError: with `job.strict`, at the first skipped input (the part's
            unfinished shards are removed).
    """
    cpu = time.process_time()
    summary = records.PartSummary(job.part, records.TargetSums(job.n_types))
    writer = records.PartWriter(
        job.out_dir, job.shards_per_split, job.compression, job.part if job.n_parts > 1 else None
    )
    try:
        for task in tqdm(job.tasks, unit="task", disable=not job.show_progress):
            for item in job.converter(task):
                if isinstance(item, records.Skipped):
                    if job.strict:
                        raise records.StrictModeError(f"{item.source} [{item.index}]: {item.reason}")
                    log.warning("skipped %s [%d]: %s", item.source, item.index, item.reason)
                    summary.skipped.append(item)
                    continue
                split = job.rule.split_of(item.position, item.record_id, item.group, item.source)
                writer.write(split, item.example)
                if split == "train":
                    summary.train_sums.add(item.target, item.atom_type_counts)
                summary.per_source[item.source] += 1
                if item.note:
                    summary.notes[item.note] += 1
                summary.converted += 1
                summary.per_atom.add(item.target, item.n_atom)
                summary.atoms += item.n_atom
                summary.edges += item.n_bond
    except BaseException:
        writer.abort()
        raise
    summary.shards = writer.close()
    summary.train_sums.flush()
    summary.process = {
        "part": job.part,
        "pid": os.getpid(),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        "peak_rss_kib": host.peak_rss_kib(),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    return summary


def run_parts(jobs: Sequence[PartJob]) -> list[records.PartSummary]:
    """Run `jobs[0]` in this process and the others in spawned worker processes.

    Every part runs to its end even when another fails; then the first error is raised
    and the shards of the parts that finished are removed.
    """
    if len(jobs) == 1:
        return [run_part(jobs[0])]
    with _spawn_executor(len(jobs) - 1) as executor:
        with _one_blas_thread():  # the executor's processes start on submit
            futures = [executor.submit(run_part, job) for job in jobs[1:]]
        results: list[records.PartSummary | BaseException] = []
        try:
            results.append(run_part(jobs[0]))
        except Exception as exc:  # the others still finish (and are cleaned up) below
            results.append(exc)
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                results.append(exc)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        remove_shards([r for r in results if isinstance(r, records.PartSummary)], jobs[0].out_dir)
        raise errors[0]
    return results  # type: ignore[return-value]


def remove_shards(summaries: Iterable[records.PartSummary], out_dir: str) -> None:
    """Delete the shard files of `summaries` (after a failed run)."""
    for summary in summaries:
        for shards in summary.shards.values():
            for shard in shards:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(out_dir, shard.file))


def _spawn_executor(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


@contextlib.contextmanager
def _one_blas_thread():
    """Worker processes started inside use one OpenBLAS thread each (unless the user chose
    otherwise): the processes are the parallelism, and on a molecule's small matrices
    OpenBLAS's own threads only spin (they cost the structure-file path about 30% of its
    CPU time). Workers read the variable when they start."""
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = blas_threads or "1"
    try:
        yield
    finally:
        if blas_threads is None:
            del os.environ["OPENBLAS_NUM_THREADS"]


def prepare_dataset(
    plan: Callable[[int], Plan],
    converter: Converter,
    out: OutputOptions,
    rule: records.SplitRule,
    options: dict[str, Any],
    comm: Any = None,
) -> Manifest | None:
    """Plan, convert in parts, write shards and the manifest.

    Args:
        plan: ``plan(n_parts)`` -> the `Plan` (run once, on rank 0, and broadcast).
        rule: the split of each record.
        comm: an mpi4py communicator to spread the parts over its ranks, or None.

    Returns:
        the manifest (on rank 0; None on other ranks). Its ``timing`` holds rank 0's
        wall-clock and CPU seconds of planning, converting (with writing) and finishing,
        and per part its process's CPU seconds and peak RSS.

    Raises:
        records.NothingConvertedError: when no task produced a record (on every rank).
        records.StrictModeError: with `out.strict`, at the first skipped input (every rank).
        OSError: an unreadable input found while planning (every rank).
    """
    if comm is not None and comm.Get_size() == 1:
        comm = None
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    workers = max(1, out.workers)
    n_parts = size * workers
    timer = _Timer()
    planned: Plan | BaseException | None = None
    if rank == 0:
        try:
            planned = plan(n_parts)
        except (OSError, ValueError) as exc:
            planned = exc
    if comm is not None:
        planned = comm.bcast(planned, root=0)
    if isinstance(planned, BaseException):
        raise planned
    tasks, spec = planned.tasks, planned.spec
    timing = timer.lap("plan")
    os.makedirs(out.output, exist_ok=True)
    shards_per_split = max(1, out.shards // n_parts)
    jobs = [
        PartJob(
            part, n_parts, tuple(tasks[part::n_parts]), converter, rule, out.output, shards_per_split,
            out.compression, len(spec.vocab["atom"]), out.strict, out.show_progress and part == 0,
        )
        for part in range(rank * workers, (rank + 1) * workers)
    ]
    try:
        mine: list[records.PartSummary] | str = run_parts(jobs)
    except records.StrictModeError as exc:
        mine = str(exc)
    timing.update(timer.lap("convert"))
    gathered = comm.gather(mine, root=0) if comm is not None else [mine]
    error: BaseException | None = None
    if rank == 0:
        failures = [g for g in gathered if isinstance(g, str)]
        summaries = [s for g in gathered if not isinstance(g, str) for s in g]
        merged = records.merge_summaries(summaries, len(spec.vocab["atom"]))
        merged.skipped.extend(planned.passed_over)
        if failures:
            remove_shards(summaries, out.output)
            error = records.StrictModeError(failures[0])
        elif not merged.converted:
            error = records.NothingConvertedError(
                f"nothing converted from {len(planned.sources)} file(s); {len(merged.skipped)} skipped"
            )
    if comm is not None:
        error = comm.bcast(error, root=0)
    if error is not None:
        raise error
    if rank != 0:
        return None
    warnings = spec.check(merged) if spec.check is not None else []
    for warning in warnings:
        log.warning("%s", warning)
    manifest = records.build_manifest(spec, merged, planned.sources, out.compression, options, size, warnings)
    timing = {**timing, **timer.lap("finish"), "parts": [s.process for s in summaries]}
    return dataclasses.replace(manifest, timing=timing).save(out.output)


class _Timer:
    """Wall-clock and CPU seconds (this process) of consecutive phases."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        report = {f"{phase}_seconds": round(wall - self._wall, 3), f"{phase}_cpu_seconds": round(cpu - self._cpu, 3)}
        self._wall, self._cpu = wall, cpu
        return report


def split_counts(manifest: Manifest) -> str:
    """``train N, valid N, test N`` of a manifest (for the commands' summary line)."""
    return ", ".join(f"{s} {manifest.split_records(s)}" for s in records.SPLITS)


def mpi_communicator() -> Any:
    """The MPI world communicator (imports mpi4py, which initialises MPI)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD
