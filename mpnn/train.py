"""``mpnn-train``: the command-line shell of `mpnn.training.train`.

Parses the flags (and a ``--config`` file) into a `TrainConfig`, checks them (a bad value is
one line naming the flag, exit 2), trains, and prints the summary of the metrics on rank 0.
Runs unchanged as one process, under ``horovodrun -np K``, ``mpirun`` or ``srun`` (Horovod),
and under ``mpnn-launch`` (tf.distribute); ``--engine`` chooses (`mpnn.engines`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from mpnn import cli_checks, engines
from mpnn.config import build_parser, config_from_args
from mpnn.report import format_summary
from mpnn.training import train


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli_checks.check_ranges(vars(build_parser(exit_on_error=False).parse_args(argv)))  # names the flag
        config = config_from_args(argv)
        cli_checks.check_ranges({**config.to_json(), **config.model_options})  # and --config's values
        cli_checks.check_elastic(config.elastic, config.run_dir)
        engines.check_elastic(engines.resolve(config.engine), config.elastic)
    except (ValueError, OSError, argparse.ArgumentError) as exc:
        print(f"mpnn-train: error: {exc}", file=sys.stderr)
        return 2

    def train_and_summarise() -> int:
        cli_checks.check_data_path(config.data)
        result = train(config)
        if result.metrics is not None:
            print(format_summary(result.metrics, result.run_dir))
        return 0

    return cli_checks.run("mpnn-train", train_and_summarise, config.data)


if __name__ == "__main__":
    sys.exit(main())
