"""Entry point of ``mpnn-bench`` / ``python -m mpnn.bench`` (see `mpnn.bench`)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

import mpnn.bench
from mpnn.bench import loader, prep, train
from mpnn.bench.common import BenchError, environment, write_report

log = logging.getLogger("mpnn-bench")

SUBCOMMANDS = {"loader": loader, "prep": prep, "train": train}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpnn-bench", description=mpnn.bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, module in SUBCOMMANDS.items():
        sub = commands.add_parser(
            name, help=module.__doc__.splitlines()[0], description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.add_argument("--output", metavar="FILE.json", help=f"JSON report (default bench-{name}.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    module = SUBCOMMANDS[args.command]
    output = args.output or f"bench-{args.command}.json"
    try:
        from mpnn.data import ManifestError

        results = module.run(args)
        if results is None:  # a Horovod rank other than 0
            return 0
        report = {"benchmark": args.command, **environment(), **results}
    except (BenchError, ManifestError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    print(module.format_report(report))
    write_report(output, report)
    log.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
