"""``mpnn-verify DIR``: the command-line shell of `mpnn.verify.problems` (every shard of a
prepared data set checked against its manifest; exit status 1 when anything is wrong)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

import mpnn.verify
from mpnn.cli.runner import run
from mpnn.verify import problems

PROG = "mpnn-verify"
log = logging.getLogger(PROG)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=mpnn.verify.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="prepared data set (its directory or manifest.json)")
    parser.add_argument("--split", action="append", help="check only this split (repeatable; default: all)")
    return parser


def verify(args: argparse.Namespace) -> int:
    """Print each problem on its own line; 1 if there is any."""
    found = problems(args.data, args.split)
    for line in found:
        print(line)
    if not found:
        log.info("%s: every shard matches the manifest", args.data)
    return 1 if found else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: verify(args))


if __name__ == "__main__":
    sys.exit(main())
