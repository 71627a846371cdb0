"""``mpnn-report --model RUN``: a run's results (``metrics.json``) as the terminal summary
and Markdown tables (`mpnn.report`)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mpnn.cli.flags import add_run_flag, run_argument
from mpnn.cli.runner import run
from mpnn.report import format_summary, markdown
from mpnn.rundir import RunDir, locate_model

PROG = "mpnn-report"
RUN_ARGUMENT = "a run directory of mpnn-train (or its model.keras)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_run_flag(parser, RUN_ARGUMENT)
    return parser


def report(args: argparse.Namespace) -> int:
    """Print the summary and the tables of the run's metrics."""
    given = run_argument(args, PROG, RUN_ARGUMENT)
    run_dir = RunDir(given) if not given.endswith(".keras") else locate_model(given).run
    metrics = run_dir.metrics()
    print(format_summary(metrics, run_dir.path))
    print()
    print(markdown(metrics))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
