"""``mpnn-launch``: the command-line shell of `mpnn.launch` (start the workers of a
tf.distribute run: K on this machine, or this process as one Slurm task or PBS rank)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import mpnn.launch
from mpnn import cluster_env
from mpnn.cli.runner import run
from mpnn.errors import UsageError
from mpnn.launch import exec_as_task, launch_local

PROG = "mpnn-launch"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=mpnn.launch.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("-np", "--num-proc", dest="np", type=int, help="workers on this machine")
    mode.add_argument(
        "--slurm", action="store_true", help="this process is a Slurm task (srun): TF_CONFIG from SLURM_*"
    )
    mode.add_argument("--pbs", action="store_true", help="this process is a PBS rank (mpiexec): TF_CONFIG from "
                      "$PBS_NODEFILE and the MPI rank")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command each worker runs (e.g. mpnn-train ...)")
    return parser


def launch(args: argparse.Namespace) -> int:
    """Launch `args.command`: K local workers (their worst exit status), or become the task."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("no command to launch (e.g. mpnn-launch -np 2 mpnn-train --data ...)")
    if args.np is not None and args.np < 1:
        raise UsageError(f"argument -np: must be a whole number >= 1, got {args.np}")
    try:
        if args.np is not None:
            return launch_local(args.np, command)
        cluster = cluster_env.slurm_cluster(os.environ) if args.slurm else cluster_env.pbs_cluster(os.environ)
        exec_as_task(cluster, command)
    except FileNotFoundError as exc:
        raise UsageError(f"{command[0]}: command not found ({exc.strerror})") from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: launch(args))


if __name__ == "__main__":
    sys.exit(main())
