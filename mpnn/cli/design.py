"""``mpnn-design``: the command-line shell of `mpnn.design.search.search` (reward-guided
search over hydrogen-bond networks; see that module for the algorithm)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from mpnn import settings
from mpnn.cli.flags import add_settings_flags
from mpnn.cli.runner import run
from mpnn.design.reward import PenaltyWeights, score
from mpnn.design.search import Found, SearchOptions, read_start, search, write_results
from mpnn.errors import UsageError, require_path
from mpnn.predict import load_trained
from mpnn.rundir import MODEL_ARGUMENT

PROG = "mpnn-design"
STRUCTURE_OR_NETWORK = "a structure file or a network JSON"


def build_parser() -> argparse.ArgumentParser:
    import mpnn.design.search

    parser = argparse.ArgumentParser(
        prog=PROG, description=mpnn.design.search.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help=MODEL_ARGUMENT + " (of a model trained without distances)")
    parser.add_argument(
        "--start", required=True, help="start structure (xyz, extxyz, ASE db: the first) or network JSON"
    )
    add_settings_flags(parser, SearchOptions)
    parser.add_argument(
        "--weight", action="append", default=[], metavar="NAME=VALUE",
        help=f"penalty weight, repeatable; names: {', '.join(PenaltyWeights.names())} (default 20 each)",
    )
    parser.add_argument(
        "--reference", help="a structure or network JSON to score with the same reward, for comparison "
        "(e.g. the known minimum of the target size)"
    )
    parser.add_argument("-o", "--output", required=True, help="directory for best-NN.json and search.json")
    return parser


def parse_weights(items: Sequence[str]) -> PenaltyWeights:
    """``--weight NAME=VALUE`` items -> `PenaltyWeights` (the others at their defaults)."""
    values = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in PenaltyWeights.names():
            raise UsageError(f"argument --weight: unknown penalty {name!r}; known: {', '.join(PenaltyWeights.names())}")
        try:
            values[name] = float(value)
        except ValueError:
            raise UsageError(f"argument --weight: {item}: not a number") from None
    return PenaltyWeights(**values)


def design(args: argparse.Namespace) -> int:
    """Search, write the results, print what was found."""
    options = SearchOptions(
        args.target_waters, args.branching, args.beam, args.top, args.max_steps, args.new_water_bonds,
        parse_weights(args.weight),
    )
    settings.check(options)
    require_path(args.start, "--start", STRUCTURE_OR_NETWORK)
    if args.reference:
        require_path(args.reference, "--reference", STRUCTURE_OR_NETWORK)
    start = read_start(args.start)
    reference_network = read_start(args.reference) if args.reference else None
    model = load_trained(args.model)
    result = search(start, model, options)
    reference = None
    if reference_network is not None:
        reference = Found(reference_network, score([reference_network], model, options.weights)[0], ())
    paths = write_results(result, options, args.output, model, reference)
    print(f"{len(result.steps)} steps, {result.candidates} candidates in {result.seconds:.1f} s; "
          f"start reward {result.start.reward.reward:.3f} ({model.units})")
    for path, found in zip(paths, result.results):
        flag = "" if found.reward.penalty_free else "  penalties: " + ", ".join(
            f"{k} {v:g}" for k, v in found.reward.penalties.items() if v)
        print(f"  {os.path.basename(path)}: reward {found.reward.reward:.3f}, energy {found.reward.energy:.3f}{flag}")
    if reference is not None:
        print(f"  reference {args.reference} ({reference_network.n_waters} waters): reward "
              f"{reference.reward.reward:.3f}, penalty-free {reference.reward.penalty_free}")
    if not result.results:
        print(f"  no network with {options.target_waters} waters found; try more --max-steps")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: design(args), data=None)


if __name__ == "__main__":
    sys.exit(main())
