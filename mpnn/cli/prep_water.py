"""``mpnn-prep-water``: the command-line shell of `data_prep.prep_water.prepare_water`
(water clusters from anything ASE reads, or the tutorial's TFRecords, into sharded records
and a manifest). TensorFlow-free."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import data_prep.prep_water
from data_prep.pipeline import split_counts
from data_prep.prep_water import WaterOptions, prepare_water
from mpnn.cli.flags import add_settings_flags
from mpnn.cli.prep import add_output_flags, convert, output_options
from mpnn.cli.runner import run
from mpnn.graph_format.manifest import Manifest

PROG = "mpnn-prep-water"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=data_prep.prep_water.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="structure files, directories, globs or tutorial TFRecords")
    add_output_flags(parser)
    add_settings_flags(parser, WaterOptions)
    parser.add_argument("--no-distance", action="store_true", help="leave out the edge distance feature")
    parser.add_argument(
        "--test-inputs",
        nargs="+",
        default=[],
        metavar="INPUT",
        help="structure files, directories or globs that form the test split (e.g. a set made with another seed); "
        "the inputs are then split into train and valid by --fractions",
    )
    parser.add_argument(
        "--test-groups",
        type=group_range,
        metavar="LO-HI",
        help="clusters of LO to HI waters (inclusive; or one number) form the test set, e.g. 10-11 to test "
        "extrapolation to sizes not trained on; the rest is split by --test-every / --fractions",
    )
    return parser


def group_range(text: str) -> tuple[int, int]:
    """``--test-groups``: ``"LO-HI"`` or ``"N"`` -> (LO, HI), argparse's type."""
    parts = text.split("-")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, -1)
    except ValueError:
        low, high = 0, -1
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected LO-HI with 0 <= LO <= HI (e.g. 10-11), got {text!r}")
    return low, high


def summary(manifest: Manifest) -> str:
    """``converted N, skipped N (train N, valid N, test N) -> path``."""
    return (
        f"converted {manifest.summary.converted}, skipped {manifest.summary.skipped} "
        f"({split_counts(manifest)}) -> {manifest.path}"
    )


def prep_water(args: argparse.Namespace) -> int:
    options = WaterOptions(
        output_options(args, args.test_groups), args.energy_unit, not args.no_distance, args.cutoff, args.forces,
        tuple(args.test_inputs),
    )
    return convert(lambda comm: prepare_water(args.inputs, options, comm), summary, options.output.mpi)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: prep_water(args))


if __name__ == "__main__":
    sys.exit(main())
