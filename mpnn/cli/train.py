"""``mpnn-train``: the command-line shell of `mpnn.training.train`.

Parses the flags (and a ``--config`` file) into a `TrainConfig` (each flag comes from a
declared setting of `TrainConfig` or of a model family's options), checks them (a bad value
is one line naming the flag, exit 2), trains, and prints the summary of the metrics on rank
0. Runs unchanged as one process, under ``horovodrun -np K``, ``mpirun`` or ``srun``
(Horovod), and under ``mpnn-launch`` (tf.distribute); ``--engine`` chooses (`mpnn.engines`).
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any, Sequence

from mpnn import engines, models, verify
from mpnn.cli.flags import add_legacy_family_flag, add_setting_flag, add_settings_flags
from mpnn.cli.runner import run
from mpnn.config import TrainConfig, config_from_values
from mpnn.errors import UsageError
from mpnn.report import format_summary
from mpnn.training import train

PROG = "mpnn-train"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The flags of ``mpnn-train``: ``--config`` and one per declared setting of
    `TrainConfig` and of the families' architecture options (`mpnn.models.option_settings`);
    only the flags given appear in the parsed namespace."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train an MPNN on prepared graph records, single process or under horovodrun/mpirun.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="JSON or YAML file of settings; flags override it")
    add_settings_flags(parser, TrainConfig)
    add_legacy_family_flag(parser, prog)
    architecture = parser.add_argument_group("architecture (the family's options; others are an error)")
    for name, declared in models.option_settings().items():
        add_setting_flag(architecture, name, _option_type(name), declared)
    return parser


def parse_config(argv: Sequence[str] | None, prog: str = PROG) -> TrainConfig:
    """The `TrainConfig` of the command line `argv` (defaults < a resumed run's config.json
    < ``--config`` < flags), checked.

    Raises:
        UsageError: a value out of its range or choices, naming the flag.
        InputError: a ``--config`` file that cannot be read.
    """
    given = vars(build_parser(prog).parse_args(argv))
    config = config_from_values(given, frozenset(models.option_settings()))
    models.check_options(config.family, config.model_options)
    if config.elastic and not config.run_dir:
        raise UsageError("argument --run-dir: required with --elastic (workers that join later must use the same one)")
    engines.check_elastic(engines.resolve(config.engine), config.elastic)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config: list[TrainConfig] = []

    def work() -> int:
        config.append(parse_config(argv))
        verify.check_data_path(config[0].data)
        result = train(config[0])
        if result.metrics is not None:
            print(format_summary(result.metrics, result.run_dir))
        return 0

    return run(PROG, work, data=lambda: config[0].data if config else None)


def _option_type(name: str) -> Any:
    """The type of architecture option `name` (the same in every family that has it)."""
    for family in models.FAMILIES.values():
        hints = typing.get_type_hints(family.options)
        if name in hints:
            return hints[name]
    raise KeyError(name)


if __name__ == "__main__":
    sys.exit(main())
