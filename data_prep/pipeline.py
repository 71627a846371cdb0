"""Run a conversion end to end, in one process (with worker processes) or across MPI ranks.

With MPI (``mpirun -np K mpnn-prep-water ... --mpi``), rank r converts every K-th task,
sends rank 0 only the small per-record metadata (never the records), rank 0 computes the
global split and sends each rank the positions of its records in each split, each rank
writes its own shards (``<split>-r<rank>-...``), and rank 0 writes the manifest. The
result holds the same records in the same splits as a single-process run with the same
seed.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from data_prep import records
from data_prep.processes import ConversionProcesses

log = logging.getLogger(__name__)

TASK_CHUNKS_PER_WORKER = 32


@dataclass(frozen=True)
class OutputOptions:
    """Where and how to write: see ``mpnn-prep-water --help``."""

    output: str
    shards: int = 4
    compression: str = "GZIP"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    test_every: int | None = None
    workers: int = 1
    strict: bool = False
    show_progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OutputOptions":
        """From the options of `add_output_arguments`."""
        return cls(
            output=args.output,
            shards=args.shards,
            compression=args.compression,
            fractions=tuple(args.fractions),
            seed=args.seed,
            test_every=args.test_every,
            workers=args.workers,
            strict=args.strict,
            show_progress=not args.quiet,
        )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The output, split and execution options every ``mpnn-prep-*`` command shares."""
    parser.add_argument("-o", "--output", required=True, help="output directory (shards + manifest.json)")
    parser.add_argument("--shards", type=int, default=4, help="shards per split (default 4)")
    parser.add_argument("--compression", choices=list(records.COMPRESSIONS), default="GZIP")
    parser.add_argument(
        "--fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VALID", "TEST")
    )
    parser.add_argument(
        "--test-every",
        type=int,
        metavar="K",
        help="records 0, K, 2K, ... (input order) form the test set; the rest is split by --fractions",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="conversion processes (default 1)")
    parser.add_argument("--strict", action="store_true", help="stop at the first input that cannot be converted")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--mpi",
        action="store_true",
        help="spread the work over the ranks of mpirun/srun; each rank writes max(1, SHARDS // ranks) "
        "shards per split and rank 0 the manifest",
    )


def prepare_dataset(
    tasks: Sequence[Any],
    converter: Callable[[Any], list[records.Converted | records.Skipped]],
    spec: records.DatasetSpec,
    sources: Sequence[str],
    out: OutputOptions,
    manifest_options: dict[str, Any],
    comm: Any = None,
    assign: Callable[[list[records.Converted]], dict[str, np.ndarray]] | None = None,
    processes: ConversionProcesses | None = None,
) -> dict[str, Any] | None:
    """Convert `tasks`, split, write shards and the manifest.

    Args:
        comm: an mpi4py communicator to spread the work over its ranks, or None.
        processes: the conversion processes of this rank, or None for this one only.
        assign: computes the split from the records in global order (with MPI, those of
            other ranks than 0 with their ``example`` emptied), returning indices into that
            list per split like `records.assign_splits`; called on rank 0 only. None: split
            by `out.fractions`, `out.seed` and `out.test_every`.

    Returns:
        the manifest (on rank 0; None on other ranks). Its ``timing`` section holds rank
        0's wall-clock and CPU seconds (all threads of this process, not the workers') of
        the conversion and of writing the shards.

    Raises:
        records.NothingConvertedError: when no task produced a record (on every rank).
        records.StrictModeError: with `out.strict`, at the first skipped input (every rank).
    """
    if comm is not None and comm.Get_size() == 1:
        comm = None  # one rank: nothing to gather
    rank, size = rank_and_size(comm)
    # Everything alive now (TensorFlow's ~250,000 objects from its import, the tasks) outlives
    # the conversion: keep the garbage collector from scanning it again and again (a full
    # collection takes about 0.1 s) while the records pile up.
    gc.freeze()
    my_positions = [position for position in range(len(tasks)) if owns_task(position, rank, size)]
    error = None
    convert_timer = _Timer()
    try:
        converted, skipped, task_of = records.convert_all(
            [tasks[i] for i in my_positions],
            converter,
            processes,
            strict=out.strict,
            show_progress=out.show_progress and rank == 0,
            # Handing out and collecting a task costs this process about 0.7 ms; with
            # many small tasks (one per structure file) workers take them in chunks, still
            # about TASK_CHUNKS_PER_WORKER per worker so that the load stays balanced.
            chunksize=max(1, len(my_positions) // (TASK_CHUNKS_PER_WORKER * out.workers)),
        )
    except records.StrictModeError as exc:
        error, converted, skipped, task_of = str(exc), [], [], []
    convert_timer.stop()
    errors = [e for e in (comm.allgather(error) if comm is not None else [error]) if e]
    if errors:
        raise records.StrictModeError(errors[0])

    # Global order: task position, then the record's index within its file.
    my_keys = np.array([(my_positions[t], r.index) for t, r in zip(task_of, converted)], dtype=np.int64)
    my_keys = my_keys.reshape(-1, 2)
    if comm is None:
        plan = _plan_splits([(my_keys, converted, skipped)], out, assign, len(sources))
        local_splits = plan.local_splits[0]
    else:
        # Only rank 0 needs every record's metadata (to split and for the manifest): the
        # other ranks send theirs without the serialised graphs, rank 0 plans the splits
        # and hands each rank the positions of its own records in each split.
        mine = (my_keys, records.metadata_columns(converted), skipped) if rank else None
        parts = comm.gather(mine, root=0)
        plan, shares = None, None
        if rank == 0:
            parts = [(keys, records.from_metadata_columns(columns), part_skipped)
                     for keys, columns, part_skipped in parts[1:]]
            parts.insert(0, (my_keys, converted, skipped))
            try:
                plan = _plan_splits(parts, out, assign, len(sources))
                shares = plan.local_splits
            except records.NothingConvertedError as exc:
                shares = [str(exc)] * size
        local_splits = comm.scatter(shares, root=0)
        if isinstance(local_splits, str):
            raise records.NothingConvertedError(local_splits)
    prefix = f"r{rank:04d}-" if size > 1 else ""
    write_timer = _Timer()
    section = records.write_splits(
        converted, local_splits, out.output, max(1, out.shards // size), out.compression, out.workers, prefix
    )
    write_timer.stop()
    if comm is not None:
        section = _merge_sections(comm.gather(section, root=0)) if rank == 0 else comm.gather(section, root=0)
    if rank != 0:
        return None
    manifest = records.build_manifest(
        spec, plan.metadata, plan.skipped, plan.global_splits, section, sources, out.compression, manifest_options
    )
    manifest["ranks"] = size
    manifest["timing"] = {**convert_timer.report("convert"), **write_timer.report("write")}
    records.write_manifest(out.output, manifest)
    return manifest


def rank_and_size(comm: Any) -> tuple[int, int]:
    """This rank and the number of ranks of `comm` (an mpi4py communicator), or (0, 1)."""
    return (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)


def owns_task(position: int, rank: int, size: int) -> bool:
    """Whether `rank` of `size` ranks converts the task at `position` of the task list:
    every size-th task, from its rank on (tasks in file order spread evenly)."""
    return position % size == rank


@dataclass(frozen=True)
class _SplitPlan:
    """The split of all records (see `_plan_splits`)."""

    metadata: list[records.Converted]  # every record, in global order
    skipped: list[records.Skipped]
    global_splits: dict[str, np.ndarray]  # indices into `metadata` per split
    local_splits: list[dict[str, np.ndarray]]  # per part: indices into that part's records per split


def _plan_splits(
    parts: Sequence[tuple[np.ndarray, Sequence[records.Converted], list[records.Skipped]]],
    out: OutputOptions,
    assign: Callable[[list[records.Converted]], dict[str, np.ndarray]] | None,
    n_sources: int,
) -> _SplitPlan:
    """Split the records of all `parts` (one per rank: ``(keys [n, 2], records, skipped)``,
    keys = (task position, index in its file)) in their global order, the order of the keys.

    Kept in NumPy arrays: with millions of records, Python dicts of keys would cost
    seconds.

    Raises:
        records.NothingConvertedError: when no part holds a record.
    """
    skipped = [s for _, _, part_skipped in parts for s in part_skipped]
    sizes = [len(part_records) for _, part_records, _ in parts]
    if not sum(sizes):
        raise records.NothingConvertedError(f"nothing converted from {n_sources} file(s); {len(skipped)} skipped")
    keys = np.concatenate([part_keys for part_keys, _, _ in parts])
    everything = [r for _, part_records, _ in parts for r in part_records]
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # global position -> position in `everything`
    metadata = [everything[i] for i in order]
    if assign is None:
        global_splits = records.assign_splits(len(metadata), out.fractions, out.seed, out.test_every)
    else:
        global_splits = assign(metadata)
    part_of = np.repeat(np.arange(len(parts)), sizes)
    index_in_part = np.concatenate([np.arange(n) for n in sizes])
    local_splits: list[dict[str, np.ndarray]] = [{} for _ in parts]
    for split, indices in global_splits.items():
        positions = order[np.asarray(indices, dtype=np.int64)]
        # Grouped by part with a stable sort (each part keeps the split's order): one pass
        # over the split whatever the number of ranks.
        owners = part_of[positions]
        grouped = index_in_part[positions[np.argsort(owners, kind="stable")]]
        ends = np.cumsum(np.bincount(owners, minlength=len(parts)))
        for share, local in zip(local_splits, np.split(grouped, ends[:-1])):
            share[split] = local
    return _SplitPlan(metadata, skipped, global_splits, local_splits)


class _Timer:
    """Wall-clock and CPU seconds (this process) from creation to `stop`."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self._wall, self._cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu

    def report(self, phase: str) -> dict[str, float]:
        return {f"{phase}_seconds": round(self._wall, 3), f"{phase}_cpu_seconds": round(self._cpu, 3)}


def _merge_sections(sections: list[dict[str, dict]]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for section in sections:
        for split, entry in section.items():
            target = merged.setdefault(split, {"records": 0, "shards": []})
            target["records"] += entry["records"]
            target["shards"].extend(entry["shards"])
    return merged


def run_command(
    args: argparse.Namespace,
    prepare: Callable[[argparse.Namespace, Any, ConversionProcesses], dict[str, Any] | None],
    summary: Callable[[dict[str, Any]], str],
    command_log: logging.Logger,
) -> int:
    """The body of every ``mpnn-prep-*`` command: prepare (over MPI with ``--mpi``) with
    ``--workers`` conversion processes, whose pool starts first so that its workers start up
    while this process reads and plans; print `summary` of the manifest on rank 0; exit
    status 1 with the error logged when nothing converts, on a strict-mode skip, or on an
    unreadable input."""
    comm = mpi_communicator() if args.mpi else None
    try:
        with ConversionProcesses(args.workers) as processes:
            manifest = prepare(args, comm, processes)
    except (records.StrictModeError, records.NothingConvertedError, OSError) as exc:
        command_log.error("%s", exc)
        return 1
    if manifest is not None:  # None on MPI ranks other than 0
        print(summary(manifest))
    return 0


def mpi_communicator() -> Any:
    """The MPI world communicator (imports mpi4py, which initialises MPI)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD

