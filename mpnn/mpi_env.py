"""The environment of an Open MPI launch (``mpirun``, ``horovodrun --mpi``) from Python."""

from __future__ import annotations

import os


def mpi_launch_environment() -> dict[str, str]:
    """This process's environment; as root (containers, CI), with Open MPI's consent to run
    as root, which it refuses otherwise (as `jobs/common.sh` does for the job scripts)."""
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env
