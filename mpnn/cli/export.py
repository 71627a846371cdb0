"""``mpnn-export --model RUN -o DIR``: the command-line shell of `mpnn.export.export_run`
(a trained run as a TensorFlow SavedModel and its metadata JSON)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import mpnn.export
from mpnn.cli.flags import add_run_flag, run_argument
from mpnn.cli.runner import run
from mpnn.export import export_run

PROG = "mpnn-export"
RUN_ARGUMENT = "a run directory of a finished mpnn-train, or its model.keras"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=mpnn.export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_flag(parser, RUN_ARGUMENT)
    parser.add_argument("-o", "--output", required=True, help="export directory to write")
    return parser


def export(args: argparse.Namespace) -> int:
    """Export, print where."""
    model = run_argument(args, PROG, RUN_ARGUMENT)
    metadata_path = export_run(model, args.output)
    print(f"exported {model} -> {args.output} (metadata {metadata_path})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: export(args))


if __name__ == "__main__":
    sys.exit(main())
