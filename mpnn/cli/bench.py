"""``mpnn-bench`` (also ``python -m mpnn.cli.bench``): the flags of each benchmark of
`mpnn.bench` -> its options (`LoaderBenchOptions`, `PrepBenchOptions`, `TrainBenchOptions`)
-> its ``run`` -> the report, printed as a table and written as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Sequence

import mpnn.bench
from mpnn.bench import loader, prep, train
from mpnn.bench.common import make_report, write_report
from mpnn.bench.loader import LoaderBenchOptions
from mpnn.bench.prep import PrepBenchOptions
from mpnn.bench.train import TrainBenchOptions
from mpnn.cli.flags import add_legacy_family_flag
from mpnn.cli.runner import run
from mpnn.config import Engine, ModelName
from mpnn.errors import UsageError

PROG = "mpnn-bench"

log = logging.getLogger(PROG)


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


def default(options: type, name: str) -> Any:
    """The default of field `name` of the options dataclass `options`: the flag's default."""
    found = next(f for f in dataclasses.fields(options) if f.name == name)
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return found.default


def add_loader_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data set (manifest.json or its directory)")
    parser.add_argument("--split", default=default(LoaderBenchOptions, "split"), help="split to read (default train)")
    parser.add_argument(
        "--batch-sizes", type=positive_int, nargs="+", default=list(default(LoaderBenchOptions, "batch_sizes")),
        metavar="B", help="graphs per batch (default %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=default(LoaderBenchOptions, "repeats"),
        help="timed passes (default %(default)s); the median is reported",
    )
    parser.add_argument(
        "--warmup-batches", type=non_negative_int, default=default(LoaderBenchOptions, "warmup_batches"),
        help="untimed batches before the first pass (default %(default)s)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=default(LoaderBenchOptions, "threads"),
        help="parallel reads and parse calls of the 'threads' setting (default: usable cores, %(default)s)",
    )
    parser.add_argument(
        "--settings", nargs="+", choices=loader.SETTING_NAMES, default=list(loader.SETTING_NAMES),
        help="settings to measure",
    )
    parser.add_argument("--shuffle", action="store_true", help="shuffle the records as training does")


def loader_options(args: argparse.Namespace) -> LoaderBenchOptions:
    return LoaderBenchOptions(
        data=args.data, split=args.split, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats,
        warmup_batches=args.warmup_batches, threads=args.threads, settings=tuple(args.settings), shuffle=args.shuffle,
    )


def add_prep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--converter", choices=sorted(prep.CONVERTERS), default=default(PrepBenchOptions, "converter"),
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
        "--workers", type=positive_int, nargs="+", default=list(default(PrepBenchOptions, "workers")), metavar="N",
        help="process counts to compare: conversion processes, or MPI ranks with --mpi (default %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=default(PrepBenchOptions, "repeats"),
        help="runs per worker count; the median is reported",
    )
    parser.add_argument(
        "--mpi", action="store_true",
        help="the N processes are MPI ranks (mpirun -np N <converter> --mpi --workers 1: each rank converts its "
        "share and writes its own shards) instead of this process and N - 1 spawned workers",
    )
    parser.add_argument(
        "--keep-output", metavar="DIR",
        help="move the data set converted by the last run to DIR (replacing DIR), e.g. to time the loader on it",
    )
    parser.add_argument(
        "--prep-args", default="", metavar="ARGS",
        help="further options of the converter, one quoted string: e.g. \"--shards 4 --test-every 10\"; "
        "for pdbbind \"--cutoff 4.5\" (index files go in --index)",
    )


def prep_options(args: argparse.Namespace) -> PrepBenchOptions:
    try:
        prep_args = tuple(shlex.split(args.prep_args))
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"argument --prep-args: {exc}") from None
    return PrepBenchOptions(
        inputs=tuple(args.inputs), converter=args.converter, index=tuple(args.index), workers=tuple(args.workers),
        repeats=args.repeats, mpi=args.mpi, keep_output=args.keep_output, prep_args=prep_args,
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared data set (manifest.json or its directory)")
    parser.add_argument("--family", dest="model", default=default(TrainBenchOptions, "family"),
                        choices=ModelName.values(), help="model family, or auto (the manifest's default)")
    add_legacy_family_flag(parser, PROG, dest="model")
    parser.add_argument("--widths", type=positive_int, nargs="+", default=list(default(TrainBenchOptions, "widths")),
                        metavar="W", help="model widths (default %(default)s)")
    parser.add_argument("--message-steps", type=positive_int, help="message steps of the mpnn (default: the model's)")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+",
                        default=list(default(TrainBenchOptions, "batch_sizes")), metavar="B",
                        help="graphs per batch on each rank (default %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=default(TrainBenchOptions, "steps"),
                        help="timed training steps (default %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=default(TrainBenchOptions, "repeats"),
                        help="timed runs of --steps steps per variant, interleaved across variants "
                             "(default %(default)s)")
    parser.add_argument("--variants", nargs="+", default=list(default(TrainBenchOptions, "variants")),
                        metavar="OPTIONS",
                        help="model variants to compare: 'default' or comma-separated model options and "
                             "batch_cut, e.g. batch_cut=1 (default: default)")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=default(TrainBenchOptions, "warmup_steps"),
                        help="untimed steps first (default %(default)s)")
    parser.add_argument("--intra-op", type=non_negative_int, default=default(TrainBenchOptions, "intra_op"),
                        help="intra-op threads (0: mpnn-train's choice, see mpnn.distributed.thread_plan)")
    parser.add_argument("--inter-op", type=non_negative_int, default=default(TrainBenchOptions, "inter_op"),
                        help="inter-op threads (0: mpnn-train's choice, see mpnn.distributed.thread_plan)")
    parser.add_argument("--baseline", metavar="FILE.json",
                        help="report of a 1-rank run of the same sweep: each result then gets its scaling "
                             "efficiency, graphs/s / (ranks x the baseline's graphs/s); for weak scaling run both "
                             "with the same per-rank batch and threads")
    parser.add_argument("--engine", default=default(TrainBenchOptions, "engine"), choices=Engine.values(),
                        help="distributed engine, as mpnn-train's --engine (default auto)")
    parser.add_argument("--data-threads", type=non_negative_int, default=default(TrainBenchOptions, "data_threads"),
                        help="tf.data thread pool size per rank (0: tf.data's default, one per core)")


def train_options(args: argparse.Namespace) -> TrainBenchOptions:
    return TrainBenchOptions(
        data=args.data, family=args.model, widths=tuple(args.widths), message_steps=args.message_steps,
        batch_sizes=tuple(args.batch_sizes), steps=args.steps, repeats=args.repeats, variants=tuple(args.variants),
        warmup_steps=args.warmup_steps, intra_op=args.intra_op, inter_op=args.inter_op, baseline=args.baseline,
        engine=args.engine, data_threads=args.data_threads,
    )


@dataclass(frozen=True)
class Benchmark:
    """A sub-command: the library module (its ``run(options)`` and ``format_report``), its
    flags, and how they become the module's options."""

    module: ModuleType
    add_arguments: Callable[[argparse.ArgumentParser], None]
    options: Callable[[argparse.Namespace], Any]


BENCHMARKS = {
    "loader": Benchmark(loader, add_loader_arguments, loader_options),
    "prep": Benchmark(prep, add_prep_arguments, prep_options),
    "train": Benchmark(train, add_train_arguments, train_options),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=mpnn.bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, benchmark in BENCHMARKS.items():
        doc = benchmark.module.__doc__
        sub = commands.add_parser(name, help=doc.splitlines()[0], description=doc,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        benchmark.add_arguments(sub)
        sub.add_argument("--output", metavar="FILE.json", help=f"JSON report (default bench-{name}.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: bench(args), data=getattr(args, "data", None))


def bench(args: argparse.Namespace) -> int:
    """Run the benchmark of `args`; rank 0 (the only process of most) prints its table and
    writes its report."""
    benchmark = BENCHMARKS[args.command]
    results = benchmark.module.run(benchmark.options(args))
    if results is None:  # a Horovod rank other than 0
        return 0
    report = make_report(args.command, results)
    print(benchmark.module.format_report(report))
    output = args.output or f"bench-{args.command}.json"
    write_report(output, report)
    log.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
