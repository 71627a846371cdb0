"""The run directory: where a training run writes its configuration, logs and results.

Layout: ``config.json``, ``host_info.json``, ``log.csv``, ``checkpoints/``, ``model.keras``,
``metrics.json``, ``test_predictions.csv``. Only rank 0 writes.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
from typing import Any

from mpnn import atomic

RUNS_ROOT = "runs"
# Job-id variables of the schedulers we run under, in order of preference.
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "COBALT_JOBID", "LSB_JOBID")


def default_run_dir() -> str:
    """``runs/<job id>`` under a scheduler, else ``runs/<UTC time stamp>``."""
    for variable in JOB_ID_VARIABLES:
        if os.environ.get(variable):
            return os.path.join(RUNS_ROOT, os.environ[variable].split(".")[0])
    return os.path.join(RUNS_ROOT, _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S"))


def write_json(path: str, content: Any) -> None:
    """Write `content` as JSON via a temporary file and rename (never half-written)."""
    atomic.write_json(path, content)


def usable_cores() -> int:
    """Cores this process may run on (its CPU binding or the scheduler's allocation, not
    the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def host_info(ranks: int, local_ranks: int) -> dict[str, Any]:
    """Host, CPU, memory, GPUs, rank counts and library versions of this run."""
    import horovod
    import numpy
    import tensorflow as tf

    import mpnn

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "ranks": ranks,
        "local_ranks": local_ranks,
        "job_id": next((os.environ[v] for v in JOB_ID_VARIABLES if os.environ.get(v)), None),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "horovod": horovod.__version__,
            "numpy": numpy.__version__,
            "mpnn": mpnn.__version__,
        },
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None
