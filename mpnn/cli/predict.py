"""``mpnn-predict``: the command-line shell of `mpnn.predict.predict_files` (energies, and
from a geometry model forces, of water clusters from a trained model)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from data_prep.structures import KCAL_PER_MOL_PER
from mpnn import settings
from mpnn.cli.flags import add_settings_flags
from mpnn.cli.runner import run
import mpnn.predict
from mpnn.predict import EXTXYZ_SUFFIX, PredictOptions, load_trained, predict_files
from mpnn.rundir import MODEL_ARGUMENT

PROG = "mpnn-predict"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=mpnn.predict.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="structure files, directories, globs or tutorial TFRecords"
    )
    parser.add_argument("--model", required=True, help=MODEL_ARGUMENT)
    parser.add_argument(
        "-o",
        "--output",
        default="predictions.csv",
        help="file to write: CSV of energies (default predictions.csv), or NAME.extxyz: each structure with its "
        "energy (eV) and forces (eV/Angstrom), for a model that sees geometry",
    )
    add_settings_flags(parser, PredictOptions)
    parser.add_argument(
        "--energy-unit", choices=list(KCAL_PER_MOL_PER), default="kcal/mol", help="unit of energies in the inputs"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def predict(args: argparse.Namespace) -> int:
    """Load the model, predict every input structure, print the summary line."""
    options = PredictOptions(args.batch_size, args.energy_unit, not args.quiet)
    settings.check(options)
    model = load_trained(args.model)
    summary = predict_files(model, args.inputs, args.output, options)
    units = "eV, eV/Angstrom" if summary.output.lower().endswith(EXTXYZ_SUFFIX) else model.units
    print(f"predicted {summary.predicted}, skipped {summary.skipped} ({units}) -> {summary.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: predict(args))


if __name__ == "__main__":
    sys.exit(main())
