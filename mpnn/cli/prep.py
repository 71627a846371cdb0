"""What the two converter commands (``mpnn-prep-water``, ``mpnn-prep-pdbbind``) share: the
output, split and execution flags of `data_prep.pipeline.OutputOptions`, and the run of a
conversion (over MPI with ``--mpi``) with its summary line. TensorFlow-free."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from data_prep.pipeline import OutputOptions, mpi_communicator
from mpnn.cli.flags import add_settings_flags
from mpnn.graph_format.manifest import Manifest
from mpnn.settings import settings_of


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``-o/--output``, ``--fractions``, ``--quiet`` and the declared flags of `OutputOptions`."""
    declared = settings_of(OutputOptions)
    parser.add_argument("-o", "--output", required=True, help=declared["output"].help)
    add_settings_flags(parser, OutputOptions)
    parser.add_argument(
        "--fractions", type=float, nargs=3, default=OutputOptions.__dataclass_fields__["fractions"].default,
        metavar=("TRAIN", "VALID", "TEST"), help=declared["fractions"].help,
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def output_options(args: argparse.Namespace, test_groups: tuple[int, int] | None = None) -> OutputOptions:
    """The `OutputOptions` of the flags of `add_output_flags` (checked: `UsageError`)."""
    return OutputOptions(
        output=args.output, shards=args.shards, compression=args.compression, fractions=tuple(args.fractions),
        seed=args.seed, test_every=args.test_every, test_groups=test_groups, workers=args.workers,
        strict=args.strict, show_progress=not args.quiet, mpi=args.mpi,
    )


def convert(prepare: Callable[[Any], Manifest | None], summary: Callable[[Manifest], str], mpi: bool) -> int:
    """``prepare(comm)`` (over MPI with `mpi`), then `summary` of the manifest printed on rank 0."""
    manifest = prepare(mpi_communicator() if mpi else None)
    if manifest is not None:  # None on MPI ranks other than 0
        print(summary(manifest))
    return 0
