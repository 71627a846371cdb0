"""``mpnn-prep-pdbbind``: the command-line shell of `data_prep.prep_pdbbind.prepare_pdbbind`
(PDBbind complexes into sharded records and a manifest). TensorFlow-free."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import data_prep.prep_pdbbind
from data_prep.pipeline import split_counts
from data_prep.prep_pdbbind import PdbbindOptions, prepare_pdbbind
from mpnn.cli.flags import add_settings_flags
from mpnn.cli.prep import add_output_flags, convert, output_options
from mpnn.cli.runner import run
from mpnn.graph_format.manifest import Manifest
from mpnn.settings import settings_of

PROG = "mpnn-prep-pdbbind"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=data_prep.prep_pdbbind.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="+", help="directories holding <pdbid>/ complex directories")
    parser.add_argument(
        "--index", action="append", required=True, metavar="FILE", help=settings_of(PdbbindOptions)["index"].help
    )
    add_output_flags(parser)
    add_settings_flags(parser, PdbbindOptions)
    return parser


def summary(manifest: Manifest) -> str:
    """Converted and skipped (by reason), the splits, atoms and edges, the path."""
    totals = manifest.totals
    reasons = ", ".join(f"{reason} {n}" for reason, n in totals.skipped_by_reason.items())
    return (
        f"converted {manifest.summary.converted}, skipped {manifest.summary.skipped}"
        f"{f' ({reasons})' if reasons else ''}; {split_counts(manifest)}; {totals.atoms} atoms, "
        f"{totals.edges} edges -> {manifest.path}"
    )


def prep_pdbbind(args: argparse.Namespace) -> int:
    options = PdbbindOptions(
        output_options(args), tuple(args.index), args.cutoff, args.hydrogens, args.drop_ic50,
        args.drop_inequalities, args.split, args.core_index, args.test_from_year,
    )
    return convert(lambda comm: prepare_pdbbind(args.roots, options, comm), summary, options.output.mpi)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: prep_pdbbind(args))


if __name__ == "__main__":
    sys.exit(main())
