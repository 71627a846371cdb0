"""``mpnn-bench`` (also ``python -m mpnn.cli.bench``): the flags of each benchmark of
`mpnn.bench` -> its options (`LoaderBenchOptions`, `PrepBenchOptions`, `TrainBenchOptions`)
-> its ``run`` -> the report, printed as a table and written as JSON."""

from __future__ import annotations

import argparse
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
from mpnn.cli.flags import add_legacy_family_flag, add_settings_flags, options_from_args
from mpnn.cli.runner import run
from mpnn.errors import UsageError

PROG = "mpnn-bench"

log = logging.getLogger(PROG)


def add_loader_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, LoaderBenchOptions)


def loader_options(args: argparse.Namespace) -> LoaderBenchOptions:
    return options_from_args(LoaderBenchOptions, args)


def add_prep_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, PrepBenchOptions)
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
    return options_from_args(PrepBenchOptions, args, prep_args=prep_args)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, TrainBenchOptions)
    add_legacy_family_flag(parser, PROG)


def train_options(args: argparse.Namespace) -> TrainBenchOptions:
    return options_from_args(TrainBenchOptions, args)


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
