"""``mpnn-evaluate``: metrics of a trained model on one split of a prepared data set
(`mpnn.evaluate`), with the errors per range of sizes beside a linear fit for water
clusters (`mpnn.extrapolation`)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mpnn import atomic, distributed, extrapolation, settings, verify
from mpnn.cli.flags import add_settings_flags
from mpnn.cli.runner import run
from mpnn.errors import UsageError
from mpnn.evaluate import EvaluateOptions, check_records_fit, predict_split, predict_split_with, split_metrics, write_predictions_csv
from mpnn.graph_format.manifest import Manifest
from mpnn.models import load_model, type_counts
from mpnn.report import format_split
from mpnn.predict import load_trained
from mpnn.rundir import MODEL_ARGUMENT, RunDir, locate_model
from mpnn.settings import check_choice

PROG = "mpnn-evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--model", required=True, help=MODEL_ARGUMENT)
    parser.add_argument("--data", required=True, help="prepared data set (manifest.json or its directory)")
    add_settings_flags(parser, EvaluateOptions)
    parser.add_argument("--output", help="write the predictions to this CSV file")
    parser.add_argument("--json", help="write the metrics (and the size report) to this JSON file")
    parser.add_argument(
        "--linear-baseline",
        metavar="TRAIN_DATA",
        help="water clusters: also report the MAE per range of sizes (--size-ranges) beside the linear fit "
        "energy ~ waters + hydrogen bonds on the training split of TRAIN_DATA (the model's training data set)",
    )
    parser.add_argument(
        "--size-ranges",
        nargs="+",
        default=[f"{low}-{high}" for low, high in extrapolation.DEFAULT_RANGES],
        help="inclusive ranges of cluster sizes for --linear-baseline (default 3-11 12-30)",
    )
    return parser


def evaluate(args: argparse.Namespace) -> int:
    """Check the inputs, predict on every rank, print (and write) the metrics on rank 0."""
    options = EvaluateOptions(args.split, args.batch_size)
    settings.check(options)
    verify.check_data_path(args.data)
    try:
        ranges = extrapolation.parse_ranges(args.size_ranges)
    except ValueError as exc:
        raise UsageError(f"argument --size-ranges: {exc}") from None
    manifest = Manifest.load(args.data)
    if args.linear_baseline:
        verify.check_data_path(args.linear_baseline)
    train_manifest = Manifest.load(args.linear_baseline) if args.linear_baseline else None
    check_choice("split", args.split, sorted(manifest.splits))
    verify.check_shards(args.data, [args.split])
    location = locate_model(args.model)
    distributed.init()
    if location.kind == "export":
        trained = load_trained(location.path)
        check_records_fit(args.model, trained.metadata.get("kind"), trained.metadata.get("vocab"), manifest)
        predictions = predict_split_with(
            trained.input_names, trained.forward, manifest, options.split, options.batch_size,
            forward_forces=trained.forward_forces,
        )  # fmt: skip
    else:
        model = load_model(location.model_file)
        trained_on = RunDir(location.path).manifest()  # None when the training data set cannot be read
        kind, vocab = (trained_on.kind, trained_on.vocab) if trained_on is not None else (None, None)
        check_records_fit(args.model, kind, vocab, manifest, type_counts(model))
        predictions = predict_split(model, manifest, options.split, options.batch_size)
    if not distributed.is_root():
        return 0
    units = manifest.target.units
    metrics = split_metrics(predictions, manifest.group_name)
    print(format_split(args.split, metrics, units))
    if train_manifest is not None:
        try:
            baseline = extrapolation.LinearBaseline.fit(extrapolation.hydrogen_bond_counts(train_manifest, "train"))
            counts = extrapolation.hydrogen_bond_counts(manifest, args.split)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        metrics["size_ranges"] = extrapolation.range_metrics(predictions, counts, baseline, ranges)
        print(extrapolation.format_ranges(metrics["size_ranges"], units))
    if args.output:
        write_predictions_csv(args.output, predictions, manifest.group_name or "group")
    if args.json:
        atomic.write_json(args.json, metrics)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: evaluate(args), data=lambda: args.data)


if __name__ == "__main__":
    sys.exit(main())
